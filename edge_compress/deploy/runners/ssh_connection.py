"""Measure a model on a real device over SSH, with the system ``ssh`` client.

The device needs only sshd, a POSIX shell and, per method, python3 with numpy and onnxruntime or
trtexec. Every call is one ``ssh`` process started from an argument list (no local shell), and every
remote argument is ``shlex.quote``d, because sshd hands the command line to the remote login shell.

Files travel as byte streams through ``ssh ... cat`` rather than with ``scp``: legacy scp lets the
remote shell expand the remote path while OpenSSH 9's SFTP-based scp takes it literally, so no one
quoting of a path with spaces is right for both; a stream through ssh has one rule everywhere.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_compress.deploy.atomic import atomic_path
from edge_compress.deploy.errors import DeployError, DeviceError
from edge_compress.deploy.runners.stats import LatencyStats
from edge_compress.deploy.runners.trtexec_log import TrtexecResult, parse_trtexec_log

if TYPE_CHECKING:
    # The device profile's address (host, user, port, key_file, workdir, python). Only its fields are
    # read, so importing deploy does not load the profiles package.
    from edge_compress.device_profiles import SshTarget

DEVICE_BENCH = Path(__file__).with_name("device_bench.py")

# A user name as useradd accepts it; refusing a leading "-" keeps it from reading as an ssh option.
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_TARGET_RE = re.compile(r"(?P<user>[^@]+)@(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?")

# ssh's own failures (exit status 255), told apart from a remote command that exits 255.
_HOST_KEY_PATTERNS = (
    "Host key verification failed",
    "host key is known",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Host key for",
)
_UNREACHABLE_PATTERNS = (
    "Connection refused",
    "Connection timed out",
    "timed out",
    "No route to host",
    "Network is unreachable",
    "Could not resolve hostname",
    "Name or service not known",
    "Connection closed by",
    "Connection reset by",
    "kex_exchange_identification",
)

_INSTALL_HINTS = {
    "python3": "install Python 3 on the device (sudo apt-get install python3)",
    "numpy": "install numpy for the device's python3 (sudo apt-get install python3-numpy, or pip3 install numpy)",
    "onnxruntime": (
        "install onnxruntime for the device's python3 (pip3 install onnxruntime; on a Jetson use "
        "NVIDIA's onnxruntime-gpu wheel for its JetPack)"
    ),
    "trtexec": (
        "trtexec ships with TensorRT (on JetPack it is /usr/src/tensorrt/bin/trtexec): add its folder "
        "to PATH on the device or pass trtexec_path"
    ),
}


def parse_ssh_address(text: str) -> tuple[str, str, int]:
    """``user@host[:port]`` (IPv6 hosts in brackets) -> (user, host, port); a bad address is one line."""
    if not isinstance(text, str):
        raise DeviceError(f"bad SSH target {text!r}: expected a string user@host[:port]")
    match = _TARGET_RE.fullmatch(text.strip())
    if match is None:
        raise DeviceError(
            f"bad SSH target {text!r}: expected user@host[:port], e.g. jetson@192.168.1.20 or "
            f"jetson@nano.local:2222 (IPv6: user@[fe80::1]:22)"
        )
    user, port_text = match["user"], match["port"]
    host = match["ipv6"] or match["host"]
    if not _USER_RE.fullmatch(user):
        raise DeviceError(f"bad SSH target {text!r}: user {user!r} is not a valid user name")
    if match["host"] is not None and not _HOST_RE.fullmatch(host):
        raise DeviceError(f"bad SSH target {text!r}: host {host!r} is not a host name or IP address")
    if port_text is None:
        return user, host, 22
    if port_text.isdigit() and 1 <= int(port_text) <= 65535:
        return user, host, int(port_text)
    raise DeviceError(f"bad SSH target {text!r}: port {port_text!r} must be an integer 1-65535")


def describe_target(target: SshTarget) -> str:
    """``user@host:port``, IPv6 hosts in brackets."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.user}@{host}:{target.port}"


def quote_command(argv: Sequence[str]) -> str:
    """One command line for the remote shell that gives the remote program exactly ``argv``."""
    if isinstance(argv, str) or not argv:
        raise ValueError(f"argv must be a non-empty list of strings, got {argv!r}")
    return " ".join(shlex.quote(str(a)) for a in argv)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


class SshConnection:
    """Runs commands and benchmarks on the device ``target`` through the system ``ssh`` client.

    ``target`` is the device profile's ``SshTarget``: its ``key_file`` is the identity, its ``python``
    the interpreter that runs the benchmark script, its ``workdir`` the folder the run's scratch
    folders are made in. Host keys are checked by default (``StrictHostKeyChecking=yes``) against
    ``known_hosts`` when given (then only that file is trusted), else the user's own.
    ``BatchMode=yes``: a password or passphrase prompt would hang an unattended run, so key
    authentication must work on its own.
    """

    def __init__(
        self,
        target: SshTarget,
        known_hosts: str | Path | None = None,
        strict_host_key_checking: bool = True,
        connect_timeout_s: float = 10,
        command_timeout_s: float = 600,
        ssh: str = "ssh",
    ) -> None:
        self._probed: dict[str, dict[str, str | None]] = {}
        self.target = target
        self.identity_file = Path(target.key_file) if target.key_file is not None else None
        self.known_hosts = Path(known_hosts) if known_hosts is not None else None
        self.strict_host_key_checking = bool(strict_host_key_checking)
        if connect_timeout_s <= 0 or command_timeout_s <= 0:
            raise ValueError("connect_timeout_s and command_timeout_s must be > 0")
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.remote_python = target.python
        self.ssh = ssh
        # The raw device_bench result of the latest measure_onnx (checksum, versions, samples).
        self.last_result: dict[str, Any] | None = None

    @classmethod
    def from_address(
        cls,
        address: str,
        identity_file: str | Path | None = None,
        remote_python: str = "python3",
        workdir: str = "/tmp",
        **options: Any,
    ) -> SshConnection:
        """A connection to ``user@host[:port]`` (``--device``), as a profile's ``measurement.ssh`` would give."""
        from edge_compress.device_profiles import SshTarget  # noqa: PLC0415 - only this entry point needs it

        user, host, port = parse_ssh_address(address)
        key = str(identity_file) if identity_file is not None else None
        return cls(SshTarget(host=host, user=user, port=port, key_file=key, workdir=workdir, python=remote_python),
                   **options)

    @property
    def address(self) -> str:
        """``user@host:port`` of the device."""
        return describe_target(self.target)

    @property
    def where(self) -> str:
        return f"ssh: {self.address}"

    # -- transport -----------------------------------------------------------------------------

    def ssh_argv(self, remote_command: str) -> list[str]:
        """The local argv that runs the (already quoted) ``remote_command`` on the target."""
        argv = [
            self.ssh,
            "-p", str(self.target.port),
            "-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={'yes' if self.strict_host_key_checking else 'no'}",
            "-o", f"ConnectTimeout={max(1, round(self.connect_timeout_s))}",
            # A device that vanishes mid-run (power, Wi-Fi) ends the call instead of hanging it.
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
        ]
        if self.known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.identity_file is not None:
            argv += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        # "--" ends the options, so neither the destination nor the command can be read as one.
        return argv + ["--", f"{self.target.user}@{self.target.host}", remote_command]

    def _ssh(
        self, remote_command: str, timeout: float | None, stdin: bytes | None = None, what: str = ""
    ) -> subprocess.CompletedProcess[bytes]:
        timeout = self.command_timeout_s if timeout is None else timeout
        argv = self.ssh_argv(remote_command)
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise DeviceError(
                f"cannot run {self.ssh!r}: the OpenSSH client is not installed on this machine "
                f"(sudo apt-get install openssh-client)"
            ) from None
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"{what or 'remote command'} on {self.address} timed out after {timeout:g} s "
                f"(raise the timeout if the device is just slow)"
            ) from None
        if proc.returncode == 255:
            self._raise_ssh_failure(proc.stderr.decode(errors="replace"))
        return proc

    def _raise_ssh_failure(self, stderr: str) -> None:
        """Raise for ssh's own failures; return when exit status 255 came from the remote command."""
        detail = _last_line(stderr)
        if any(p in stderr for p in _HOST_KEY_PATTERNS):
            where = self.known_hosts if self.known_hosts is not None else "~/.ssh/known_hosts"
            raise DeviceError(
                f"host key of {self.address} is not in known_hosts ({where}) or does not match it "
                f"({detail}): after checking its fingerprint, add it, e.g. "
                f"ssh-keyscan -p {self.target.port} {self.target.host} >> {where}"
            )
        if "Permission denied" in stderr or "Too many authentication failures" in stderr:
            key = self.identity_file if self.identity_file is not None else "your default key"
            raise DeviceError(
                f"cannot log in to {self.address} over SSH ({detail}): check the user name and that "
                f"the public key of {key} is in the device's ~/.ssh/authorized_keys"
            )
        if any(p in stderr for p in _UNREACHABLE_PATTERNS) or stderr.lstrip().startswith("ssh:"):
            raise DeviceError(
                f"cannot reach {self.address} over SSH ({detail}): check the address, that sshd runs, "
                f"and the key"
            )

    def run(
        self, argv: Sequence[str], timeout: float | None = None, *, cwd: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the device (optionally in remote folder ``cwd``); stdout/stderr as text.

        A non-zero exit raises ``DeployError`` with the last line of stderr. ``timeout`` defaults
        to ``command_timeout_s``. On a timeout the local ssh is killed; sshd then closes the
        session's pipes, which stops a remote program as soon as it writes output.
        """
        command = quote_command(argv)
        if cwd is not None:
            command = f"cd {shlex.quote(cwd)} && {command}"
        proc = self._ssh(command, timeout, what=f"{argv[0]!r}")
        stdout = proc.stdout.decode(errors="replace")
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise DeviceError(
                f"{argv[0]!r} failed on {self.address} with exit status {proc.returncode}: "
                f"{_last_line(stderr or stdout)}"
            )
        return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)

    def push(self, local_files: Sequence[str | Path], remote_dir: str, timeout: float | None = None) -> list[str]:
        """Create ``remote_dir`` and copy ``local_files`` into it under their own names.

        Returns the remote paths. Each file is written as ``name.part`` and renamed, so that an
        interrupted copy never leaves a truncated model that looks complete.
        """
        if isinstance(local_files, (str, Path)):
            local_files = [local_files]
        paths = [Path(f) for f in local_files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DeviceError(f"cannot copy to {self.address}: no such local file(s) {missing}")
        self.run(["mkdir", "-p", "--", remote_dir], timeout)
        remote_paths = []
        for path in paths:
            remote = f"{remote_dir.rstrip('/') or '/'}/{path.name}"
            part = remote + ".part"
            command = f"cat > {shlex.quote(part)} && mv -f -- {shlex.quote(part)} {shlex.quote(remote)}"
            proc = self._ssh(command, timeout, stdin=path.read_bytes(), what=f"copying {path.name}")
            if proc.returncode != 0:
                raise DeviceError(
                    f"copying {path} to {self.address}:{remote} failed: "
                    f"{_last_line(proc.stderr.decode(errors='replace'))}"
                )
            remote_paths.append(remote)
        return remote_paths

    def fetch(self, remote_path: str, local_path: str | Path, timeout: float | None = None) -> Path:
        """Copy ``remote_path`` from the device to ``local_path`` (written atomically)."""
        proc = self._ssh(f"cat -- {shlex.quote(remote_path)}", timeout, what=f"fetching {remote_path}")
        if proc.returncode != 0:
            raise DeviceError(
                f"cannot fetch {self.address}:{remote_path}: {_last_line(proc.stderr.decode(errors='replace'))}"
            )
        with atomic_path(local_path) as tmp:
            tmp.write_bytes(proc.stdout)
        return Path(local_path)

    # -- what the device has -------------------------------------------------------------------

    def check(self, require: Sequence[str] = ("python3", "numpy", "onnxruntime"), trtexec_path: str = "trtexec") -> dict[str, str | None]:
        """Reach the device and report its tools; raise ``DeployError`` if one in ``require`` is missing.

        Known tools: python3, numpy, onnxruntime, trtexec. Returns each tool's version or path,
        None where missing. One ssh call the first time; the device's tools do not change during a run,
        so later checks (one per measurement) reuse what it found.
        """
        unknown = sorted(set(require) - set(_INSTALL_HINTS))
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(_INSTALL_HINTS)}")
        found = self._probed.get(trtexec_path) or self._probe(trtexec_path)
        for tool in require:
            if found[tool] is None:
                name = self.remote_python if tool == "python3" else tool
                raise DeviceError(f"{name} is missing on {self.address}: {_INSTALL_HINTS[tool]}")
        return dict(found)

    def _probe(self, trtexec_path: str) -> dict[str, str | None]:
        py = shlex.quote(self.remote_python)
        probe = (
            "import sys\n"
            "print('python3=' + sys.version.split()[0])\n"
            "for name in ('numpy', 'onnxruntime'):\n"
            "    try:\n"
            "        print(name + '=' + __import__(name).__version__)\n"
            "    except Exception:\n"
            "        pass\n"
        )
        trt = shlex.quote(trtexec_path)
        script = (
            f"if command -v {py} >/dev/null 2>&1; then {py} -c {shlex.quote(probe)}; fi; "
            f"t=$(command -v {trt} 2>/dev/null) && echo \"trtexec=$t\"; "
            f"[ -n \"$t\" ] || {{ [ -x /usr/src/tensorrt/bin/trtexec ] && echo trtexec=/usr/src/tensorrt/bin/trtexec; }}; "
            "echo probe=done"
        )
        proc = self._ssh(script, self.connect_timeout_s + 60, what="checking the device's tools")
        found: dict[str, str | None] = dict.fromkeys(_INSTALL_HINTS)
        lines = proc.stdout.decode(errors="replace").splitlines()
        if "probe=done" not in lines:
            raise DeviceError(
                f"checking the tools on {self.address} failed: "
                f"{_last_line(proc.stderr.decode(errors='replace'))}"
            )
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key in found:
                found[key] = value.strip()
        self._probed[trtexec_path] = found
        return found

    # -- measurements --------------------------------------------------------------------------

    def _make_remote_dir(self) -> str:
        # Inside the profile's workdir (created if missing), in one round trip.
        parent = self.target.workdir.rstrip("/") or "/"
        command = (f"{quote_command(['mkdir', '-p', '--', parent])} && "
                   f"{quote_command(['mktemp', '-d', f'{parent}/compress-bench.XXXXXX'])}")
        proc = self._ssh(command, self.connect_timeout_s + 30, what="making a scratch folder")
        if proc.returncode != 0:
            raise DeviceError(f"cannot make a scratch folder in {parent} on {self.address}: "
                              f"{_last_line(proc.stderr.decode(errors='replace'))}")
        remote_dir = proc.stdout.decode(errors="replace").strip()
        # A relative workdir is relative to the login folder, where every ssh command starts.
        if not remote_dir or "\n" in remote_dir:
            raise DeviceError(f"mktemp on {self.address} gave no folder: {proc.stdout!r}")
        return remote_dir

    def _remove_remote_dir(self, remote_dir: str) -> None:
        try:
            self.run(["rm", "-rf", "--", remote_dir], self.connect_timeout_s + 30)
        except DeployError:
            pass  # Cleanup failing must not hide the measurement or the error it follows.

    def bench_onnx(
        self,
        onnx_path: str | Path,
        warmup: int = 20,
        runs: int = 200,
        threads: int | None = 1,
        input_shape: Sequence[int] | str | None = None,
        *,
        seed: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        timeout: float | None = None,
        keep_remote: bool = False,
    ) -> dict[str, Any]:
        """Run device_bench.py on the device; return its JSON result (samples, checksum, versions)."""
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise DeviceError(f"ONNX model not found: {onnx_path}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ValueError(f"runs must be an int >= 1, got {runs!r}")
        self.check(("python3", "numpy", "onnxruntime"))
        remote_dir = self._make_remote_dir()
        try:
            model_remote, script_remote = self.push([onnx_path, DEVICE_BENCH], remote_dir, timeout)
            result_remote = f"{remote_dir}/result.json"
            argv = [
                self.remote_python, script_remote, model_remote,
                "--warmup", str(warmup), "--runs", str(runs), "--seed", str(seed),
                "--providers", ",".join(providers), "--out", result_remote,
            ]
            if threads is not None:
                argv += ["--threads", str(threads)]
            if input_shape is not None:
                shape = input_shape if isinstance(input_shape, str) else "x".join(str(int(d)) for d in input_shape)
                argv += ["--input-shape", shape]
            self.run(argv, timeout)
            with tempfile.TemporaryDirectory() as tmp:
                local = self.fetch(result_remote, Path(tmp) / "result.json", timeout)
                result = json.loads(local.read_text(encoding="utf-8"))
        finally:
            if not keep_remote:
                self._remove_remote_dir(remote_dir)
        if keep_remote:
            result["remote_dir"] = remote_dir
        self.last_result = result
        return result

    def measure_onnx(
        self,
        onnx_path: str | Path,
        warmup: int = 20,
        runs: int = 200,
        threads: int | None = 1,
        input_shape: Sequence[int] | str | None = None,
        **kwargs: Any,
    ) -> LatencyStats:
        """Latency of ``onnx_path`` under ONNX Runtime on the device (see ``bench_onnx``).

        ``where`` says ``ssh: user@host:port`` and the device's host name; the raw result, with
        the output checksum, stays in ``last_result``.
        """
        result = self.bench_onnx(onnx_path, warmup, runs, threads, input_shape, **kwargs)
        return stats_from_result(result, where=f"{self.where} ({result.get('hostname', '?')})")

    def measure_trtexec(
        self,
        onnx_path: str | Path,
        trt_version: str,
        precision: str = "fp16",
        *,
        trtexec_path: str = "trtexec",
        timeout: float | None = None,
        keep_remote: bool = False,
        **trtexec_options: Any,
    ) -> TrtexecResult:
        """Build and time an engine with trtexec on the device; the parsed log.

        The command comes from ``builders.trtexec.trtexec_command`` for the device's TensorRT
        version (``trtexec_options`` go there: workspace_mb, shapes, iterations, ...). The engine
        stays on the device: it only runs on the GPU and TensorRT version that built it.
        """
        from edge_compress.deploy.builders.trtexec import trtexec_command

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise DeviceError(f"ONNX model not found: {onnx_path}")
        found = self.check(("trtexec",), trtexec_path=trtexec_path)
        tool = found["trtexec"] or trtexec_path
        remote_dir = self._make_remote_dir()
        try:
            self.push([onnx_path], remote_dir, timeout)
            argv = trtexec_command(
                onnx_path.name, "model.engine", trt_version, precision, trtexec_path=tool, **trtexec_options
            )
            # trtexec's log is the result, so a failing build must still hand it back to the user.
            command = f"cd {shlex.quote(remote_dir)} && {quote_command(argv)} 2>&1"
            proc = self._ssh(command, timeout, what="trtexec")
            log = proc.stdout.decode(errors="replace")
            if proc.returncode != 0:
                if proc.returncode == 127:
                    raise DeviceError(f"trtexec is missing on {self.address}: {_INSTALL_HINTS['trtexec']}")
                raise DeviceError(
                    f"trtexec failed on {self.address} with exit status {proc.returncode}: {_last_line(log)}"
                )
        finally:
            if not keep_remote:
                self._remove_remote_dir(remote_dir)
        return parse_trtexec_log(log)


def stats_from_result(result: Mapping[str, Any], where: str) -> LatencyStats:
    """``LatencyStats`` from a device_bench result, recomputed from its samples like a local run."""
    try:
        samples = result["samples_ms"]
        return LatencyStats.from_samples(
            samples,
            warmup_runs=int(result["warmup"]),
            batch_size=int(result["batch_size"]),
            runtime=f"onnxruntime {result['onnxruntime']}",
            provider=str(result["provider"]),
            threads=result["threads"],
            where=where,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DeviceError(f"the device's benchmark result is incomplete or invalid ({exc!r})") from None
