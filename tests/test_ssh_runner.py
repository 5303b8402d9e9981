"""The SSH runner against a real OpenSSH server on 127.0.0.1, with ONNX Runtime as the device runtime.

The session fixture starts ``sshd`` with a temporary host key, user key, port and config; the
"device" is this machine, and its Python is this virtual environment's interpreter.
"""

from __future__ import annotations

import ast
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_compress.deploy.runners import device_bench
from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.runners.ort import OrtRunner
from edge_compress.deploy.runners.ssh import SshRunner
from edge_compress.deploy.runners.ssh_connection import (
    SshConnection,
    describe_target,
    parse_ssh_address,
    quote_command,
)
from edge_compress.device_profiles import SshTarget

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def _find_sshd() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((c for c in SSHD_CANDIDATES if os.access(c, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout_s} s")


class Sshd:
    def __init__(self, port: int, user: str, identity: Path, known_hosts: Path, root: Path) -> None:
        self.port, self.user, self.identity, self.known_hosts, self.root = port, user, identity, known_hosts, root

    def runner(self, **kwargs) -> SshConnection:
        kwargs.setdefault("identity_file", self.identity)
        kwargs.setdefault("known_hosts", self.known_hosts)
        kwargs.setdefault("remote_python", sys.executable)
        kwargs.setdefault("connect_timeout_s", 5)
        return SshConnection.from_address(f"{self.user}@127.0.0.1:{self.port}", **kwargs)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    sshd_bin = _find_sshd()
    if sshd_bin is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # Setup-time install only; a test never reaches the network otherwise.
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "openssh-server"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False,
        )
        sshd_bin = _find_sshd()
    if sshd_bin is None:
        pytest.skip(
            "no OpenSSH server: sshd is not on PATH nor in /usr/sbin, and it could not be installed "
            "(needs root and apt-get); install the openssh-server package to run the SSH runner tests"
        )
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool} on PATH: install the openssh-client package")

    root = tmp_path_factory.mktemp("sshd")
    host_key, user_key = root / "host_ed25519", root / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{user_key}.pub").read_text())
    authorized.chmod(0o600)
    port = _free_port()
    user = getpass.getuser()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {root / 'sshd.pid'}",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                # Only matters when the tests run as root; key logins only, like the default.
                "PermitRootLogin prohibit-password",
                f"AllowUsers {user}",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    # sshd refuses to start without its privilege-separation folder, which a container may lack.
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sshd_bin, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_port(port, proc)
    except RuntimeError as exc:
        proc.kill()
        proc.wait()
        pytest.skip(f"sshd could not start here: {exc}")
    host_pub = Path(f"{host_key}.pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    server = Sshd(port, user, user_key, known_hosts, root)
    # A key that sshd rejects (account locked, wrong user) would fail every test the same way:
    # say so once, with sshd's own reason.
    try:
        server.runner().run(["true"], timeout=20)
    except DeployError as exc:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        pytest.skip(f"cannot log in to the test sshd as {user}: {exc}; sshd says: {err.decode(errors='replace')[-500:]}")
    print(f"\nsshd on 127.0.0.1:{port} ready in {time.monotonic() - started:.2f} s")
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """Conv -> Relu -> global average pool: small, deterministic, float32, fixed batch 1."""
    rng = np.random.RandomState(1)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("onnx") / "tiny model.onnx"
    onnx.save(model, path)
    return path


# -- device_bench.py on its own --------------------------------------------------------------------


def test_device_bench_source_stays_python36_compatible():
    source = device_bench.__file__
    text = Path(source).read_text()
    tree = ast.parse(text, feature_version=(3, 6))
    imported = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [n])
    }
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
    assert imported <= allowed, imported - allowed
    assert "dataclasses" not in imported and "__future__" not in imported
    for node in ast.walk(tree):
        # The f-string "=" specifier (3.8) parses under feature_version; f-strings are refused outright.
        assert not isinstance(node, ast.JoinedStr), "device_bench.py must not use f-strings"


def test_device_bench_runs_under_local_python(tiny_onnx, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, device_bench.__file__, str(tiny_onnx), "--warmup", "2", "--runs", "15",
         "--threads", "1", "--input-shape", "1x3x8x8", "--seed", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["runs"] == 15 and len(result["samples_ms"]) == 15 and result["warmup"] == 2
    assert result["provider"] == "CPUExecutionProvider"
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["p95_ms"]
    assert result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["median_ms"] == pytest.approx(float(np.median(result["samples_ms"])))
    assert result["p90_ms"] == pytest.approx(float(np.percentile(result["samples_ms"], 90)))
    for key in ("onnxruntime", "python", "hostname", "output_sha256"):
        assert result[key]
    assert result["input_shapes"] == {"x": [1, 3, 8, 8]}


def test_device_bench_checksum_matches_an_in_process_run(tiny_onnx, tmp_path):
    """The bundle's expected checksum can be computed on the host with the same helpers."""
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, device_bench.__file__, str(tiny_onnx), "--runs", "1", "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )
    feed = device_bench.fixed_feed([("x", "tensor(float)", [1, 3, 8, 8])], {}, seed=0)
    with OrtRunner(tiny_onnx) as runner:
        y = runner.infer(feed)["y"]
    assert json.loads(out.read_text())["output_sha256"] == device_bench.output_checksum(y)


def test_device_bench_rejects_a_bad_shape(tiny_onnx, tmp_path):
    proc = subprocess.run(
        [sys.executable, device_bench.__file__, str(tiny_onnx), "--input-shape", "1x0x8",
         "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2 and "bad input shape '1x0x8'" in proc.stderr


# -- target parsing (no server needed) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jetson@192.168.1.20", ("jetson", "192.168.1.20", 22)),
        ("jetson@nano.local:2222", ("jetson", "nano.local", 2222)),
        ("root@[fe80::1]:2200", ("root", "fe80::1", 2200)),
    ],
)
def test_target_parse(text, expected):
    assert parse_ssh_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nano.local", "expected user@host[:port]"),
        ("jetson@nano:0", "port '0' must be an integer 1-65535"),
        ("jetson@nano:ssh", "port 'ssh' must be an integer 1-65535"),
        ("-oProxyCommand=x@host", "is not a valid user name"),
        ("jetson@-oProxyCommand=x", "is not a host name"),
        ("a b@host", "is not a valid user name"),
    ],
)
def test_target_parse_rejects(text, message):
    with pytest.raises(DeployError, match="bad SSH target") as info:
        parse_ssh_address(text)
    assert message in str(info.value)


def test_target_str_names_user_host_and_port():
    assert SshConnection.from_address("jetson@nano.local").address == "jetson@nano.local:22"
    assert describe_target(SshTarget(host="::1", user="root", port=2, workdir="/tmp")) == "root@[::1]:2"


def test_connection_uses_the_profiles_target():
    """The profile's measurement.ssh is the connection's address: its key, interpreter and work folder."""
    target = SshTarget(host="nano.local", user="me", port=2222, key_file="/k/id", workdir="/data/bench",
                       python="/usr/bin/python3.6")
    conn = SshConnection(target)
    argv = conn.ssh_argv("true")
    assert argv[argv.index("-i") + 1] == "/k/id" and conn.remote_python == "/usr/bin/python3.6"
    assert conn.where == "ssh: me@nano.local:2222"


def test_ssh_argv_checks_host_keys_by_default():
    argv = SshConnection.from_address("jetson@nano.local:2222", known_hosts="/k h").ssh_argv("true")
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert "UserKnownHostsFile=/k h" in argv
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["--", "jetson@nano.local", "true"]


# -- against the local sshd -------------------------------------------------------------------------


def test_measure_onnx_over_ssh(sshd, tiny_onnx, tmp_path):
    runner = sshd.runner()
    stats = runner.measure_onnx(tiny_onnx, warmup=3, runs=25, threads=1, input_shape=(1, 3, 8, 8))
    assert stats.runs == 25 and stats.warmup_runs == 3
    assert stats.median_ms > 0 and stats.min_ms <= stats.median_ms <= stats.p99_ms <= stats.max_ms
    assert stats.where.startswith(f"ssh: {sshd.user}@127.0.0.1:{sshd.port}")
    assert socket.gethostname() in stats.where
    assert stats.method == "measured" and stats.provider == "CPUExecutionProvider"
    assert stats.runtime.startswith("onnxruntime ") and stats.threads == 1 and stats.batch_size == 1
    assert f"ssh: {sshd.user}@127.0.0.1:{sshd.port}" in str(stats)

    # The checksum the device reports equals a local run of the same script on the same input.
    local_out = tmp_path / "local.json"
    subprocess.run(
        [sys.executable, device_bench.__file__, str(tiny_onnx), "--runs", "1", "--input-shape", "1x3x8x8",
         "--out", str(local_out)],
        check=True, capture_output=True, timeout=120,
    )
    assert runner.last_result["output_sha256"] == json.loads(local_out.read_text())["output_sha256"]


def test_measure_onnx_removes_its_remote_folder(sshd, tiny_onnx):
    runner = sshd.runner()
    result = runner.bench_onnx(tiny_onnx, warmup=0, runs=2, keep_remote=True)
    remote_dir = result["remote_dir"]
    listing = runner.run(["ls", remote_dir]).stdout.split("\n")
    assert {"tiny model.onnx", "device_bench.py", "result.json"} <= set(listing)
    runner._remove_remote_dir(remote_dir)
    assert not Path(remote_dir).exists()  # the "device" is this machine


def test_scratch_folders_go_in_the_profiles_workdir(sshd, tiny_onnx, tmp_path):
    workdir = tmp_path / "bench dir" / "new"   # missing, with a space: made, and quoted
    runner = sshd.runner(workdir=str(workdir))
    result = runner.bench_onnx(tiny_onnx, warmup=0, runs=2, keep_remote=True)
    assert Path(result["remote_dir"]).parent == workdir and Path(result["remote_dir"]).is_dir()


def test_check_reports_tools(sshd):
    found = sshd.runner().check()
    assert found["python3"] == ".".join(map(str, sys.version_info[:3]))
    assert found["onnxruntime"] and found["numpy"]


def test_missing_trtexec_is_named(sshd, tiny_onnx):
    runner = sshd.runner()
    with pytest.raises(DeployError, match=r"trtexec is missing on .*127\.0\.0\.1.*TensorRT"):
        runner.check(require=("trtexec",), trtexec_path="trtexec-that-does-not-exist")
    with pytest.raises(DeployError, match="trtexec is missing"):
        runner.measure_trtexec(tiny_onnx, "8.2.1", "fp16", trtexec_path="trtexec-that-does-not-exist")


def test_the_factorys_ssh_runner_measures_on_the_device(sshd, tiny_onnx):
    """The runner the evaluator gets for an ssh target: the same Runner interface as a local one."""
    from edge_compress.deploy import RunnerConfig, make_runner

    config = RunnerConfig(engine="onnxruntime", precision="fp32", method="ssh", threads=1)
    with make_runner(tiny_onnx, config, sshd.runner()) as runner:
        feed = {runner.input_names[0]: np.zeros((1, 3, 8, 8), np.float32)}
        stats = runner.measure(feed, warmup_runs=2, timed_runs=10)
    assert isinstance(runner, SshRunner) and stats.runs == 10 and stats.warmup_runs == 2
    assert stats.where.startswith(f"ssh: {sshd.user}@127.0.0.1:{sshd.port}")


def test_missing_remote_python_is_named(sshd, tiny_onnx):
    runner = sshd.runner(remote_python="/nonexistent/python3")
    with pytest.raises(DeployError, match="/nonexistent/python3 is missing on .*install Python 3"):
        runner.measure_onnx(tiny_onnx, warmup=0, runs=1)


def test_unreachable_port(sshd):
    port = _free_port()
    runner = SshConnection.from_address(f"{sshd.user}@127.0.0.1:{port}", identity_file=sshd.identity,
                       known_hosts=sshd.known_hosts, connect_timeout_s=3)
    with pytest.raises(DeployError) as info:
        runner.run(["true"])
    message = str(info.value)
    assert message.startswith(f"cannot reach {sshd.user}@127.0.0.1:{port} over SSH (")
    assert "Connection refused" in message
    assert message.endswith("check the address, that sshd runs, and the key")


def test_unknown_host_key(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(DeployError, match=r"host key of .* is not in known_hosts") as info:
        sshd.runner(known_hosts=empty).run(["true"])
    assert str(empty) in str(info.value) and "ssh-keyscan" in str(info.value)


def test_wrong_key_is_refused(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(DeployError, match=r"cannot log in to .* \(.*Permission denied"):
        sshd.runner(identity_file=other).run(["true"])


def test_remote_arguments_pass_intact(sshd, tmp_path):
    runner = sshd.runner()
    tricky = ["a b", "it's", '"double"', "$HOME", "`id`", "; rm -rf x", "*", "", "tab\there", "new\nline"]
    out = runner.run([sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *tricky]).stdout
    assert json.loads(out) == tricky

    remote_dir = str(tmp_path / "dir with space 'and quote'")
    local = tmp_path / "payload with space.bin"
    payload = bytes(range(256)) * 4
    local.write_bytes(payload)
    [remote] = runner.push([local], remote_dir)
    assert remote == f"{remote_dir}/payload with space.bin"
    assert Path(remote).read_bytes() == payload
    back = runner.fetch(remote, tmp_path / "back.bin")
    assert back.read_bytes() == payload
    assert runner.run(["pwd"], cwd=remote_dir).stdout.strip() == remote_dir


def test_remote_failure_reports_last_stderr_line(sshd):
    with pytest.raises(DeployError, match=r"'sh' failed on .* exit status 3: the last line"):
        sshd.runner().run(["sh", "-c", "echo first >&2; echo 'the last line' >&2; exit 3"])
    # A remote exit status of 255 is the command's own, not an ssh failure.
    with pytest.raises(DeployError, match=r"exit status 255: boom"):
        sshd.runner().run(["sh", "-c", "echo boom >&2; exit 255"])


def test_fetch_missing_file(sshd, tmp_path):
    with pytest.raises(DeployError, match="cannot fetch .*/no/such/file"):
        sshd.runner().fetch("/no/such/file", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_timeout_is_honoured(sshd):
    start = time.monotonic()
    with pytest.raises(DeployError, match=r"timed out after 1 s"):
        sshd.runner().run(["sleep", "5"], timeout=1)
    assert time.monotonic() - start < 4


def test_default_command_timeout(sshd):
    with pytest.raises(DeployError, match="timed out"):
        sshd.runner(command_timeout_s=1).run(["sleep", "5"])


def test_quote_command_refuses_a_string():
    with pytest.raises(ValueError):
        quote_command("ls -l")


def test_missing_onnxruntime_on_the_device_is_named(sshd, tiny_onnx, tmp_path):
    # A python that cannot see site-packages stands in for a device without numpy/onnxruntime.
    bare = tmp_path / "bare python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    with pytest.raises(DeployError, match=r"numpy is missing on .*pip3 install numpy"):
        sshd.runner(remote_python=str(bare)).measure_onnx(tiny_onnx, warmup=0, runs=1)
    found = sshd.runner(remote_python=str(bare)).check(require=("python3",))
    assert found["python3"] and found["numpy"] is None and found["onnxruntime"] is None


def test_benchmark_failure_on_the_device_is_reported(sshd, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(DeployError, match=r"failed on .*127\.0\.0\.1.* exit status 1: .*(?i:protobuf|invalid|load)"):
        sshd.runner().measure_onnx(broken, warmup=0, runs=1)


# ---- the pipeline measuring over SSH ------------------------------------------------------------

_TINY = ["--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']


def _cli(args):
    from edge_compress.compress.cli import main

    return main([str(a) for a in args])


def test_pipeline_measures_on_the_device_over_ssh(sshd, tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = _cli(["--target", "host", *_TINY, "--calib", calib_file, "--macs", "70%",
                 "--device", f"{sshd.user}@127.0.0.1:{sshd.port}", "--ssh-key", sshd.identity,
                 "--known-hosts", sshd.known_hosts, "--device-python", sys.executable, "--out", out, tiny_model_file])
    _, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    where = f"ssh: {sshd.user}@127.0.0.1:{sshd.port}"
    assert where in report["final"]["latency_kind"] and report["final"]["latency_kind"].startswith("measured")
    assert where in report["original"]["latency_kind"]
    assert report["engine"]["measured_on"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert not (out / "model.ort.onnx").exists()   # the device optimises model.onnx itself


def test_pipeline_with_an_unreachable_device_is_an_input_error(sshd, tiny_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = _cli(["--target", "host", *_TINY, "--macs", "70%", "--device", f"{sshd.user}@127.0.0.1:1",
                 "--ssh-key", sshd.identity, "--known-hosts", sshd.known_hosts, "--out", out, tiny_model_file])
    _, err = capsys.readouterr()
    assert code == 2 and "cannot reach" in err and "over SSH" in err, err
    assert not out.exists()


def test_pipeline_with_a_tool_missing_on_the_device(sshd, tiny_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = _cli(["--target", "host", *_TINY, "--macs", "70%", "--device", f"{sshd.user}@127.0.0.1:{sshd.port}",
                 "--ssh-key", sshd.identity, "--known-hosts", sshd.known_hosts,
                 "--device-python", "/nonexistent/python3", "--out", out, tiny_model_file])
    _, err = capsys.readouterr()
    assert code == 2 and "missing on" in err, err
    assert not out.exists()


def test_jetson_nano_bundle_runs_on_the_device_over_ssh(sshd, tiny_model_file, calib_file, tmp_path, capsys):
    """The bundle of a TensorRT target: everything needed on the device, and its benchmark runs there."""
    out = tmp_path / "nano"
    code = _cli(["--target", "jetson-nano", *_TINY, "--calib", calib_file, "--macs", "70%", "--out", out,
                 tiny_model_file])
    _, err = capsys.readouterr()
    assert code == 0, err
    for name in ("model.onnx", "build_engine.sh", "device_bench.py", "expected_output.json", "README.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["bundle"]["input_shape"] == [1, 3, 32, 32]
    expected = json.loads((out / "expected_output.json").read_text())
    assert "python3 device_bench.py model.onnx" in (out / "README.md").read_text()

    runner = sshd.runner()
    remote = runner.run(["mktemp", "-d"]).stdout.strip()
    runner.push([out / "model.onnx", out / "device_bench.py"], remote)
    runner.run([sys.executable, f"{remote}/device_bench.py", f"{remote}/model.onnx", "--warmup", "2", "--runs", "5",
                "--input-shape", "1x3x32x32", "--seed", "0", "--out", f"{remote}/result.json"])
    result = json.loads(runner.fetch(f"{remote}/result.json", tmp_path / "result.json").read_text())
    runner.run(["rm", "-rf", remote])
    assert result["runs"] == 5 and result["median_ms"] > 0
    assert result["output_sha256"] == expected["output"]["sha256"]   # same runtime, same CPU: the same bytes
