"""Hostile files and users' data (issue 18): no file runs code, no user file is deleted or changed, every bad
input is exit 2 with one line, and nothing half-written or temporary is left behind.

Each case asserts the exit code (or the exception), the one-line message, that nothing was executed, that no
user file changed, and that no partial output or temp folder is left. Runs are in-process (compress.cli.main)
except the crafted model under the CLI, which mirrors the report exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from edge_compress.compress.archs import get_arch
from edge_compress.compress.cli import main
from edge_compress.compress.errors import InputError, ModelLoadError
from edge_compress.compress.model_io import PRUNED_FORMAT, load_model, load_pruned, save_pruned_bytes
from edge_compress.compress.output import MARKER, OutputDir, check_out_dir, exchange, is_compress_output
from edge_compress.device_profiles import ProfileError, load_profile

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']
FAST = ["--target", "jetson-nano", "--macs", "50%", "--criterion", "l1"]   # predicted: no timing involved


# ---- helpers --------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (hidden ones too, links not followed): content hash, mode, link target."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
    return out


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("compress: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("compress: error: "), err
    return lines[0]


def leftovers(*folders: Path) -> list[str]:
    """Hidden run folders beside an output and evaluator temp folders."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p.name for p in folder.iterdir()
                      if ".tmp-" in p.name or ".old-" in p.name or p.name.startswith("compress-eval-")]
    return found


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def mark(folder: Path, pid: int) -> None:
    import socket
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def fake_output(folder: Path, files: dict[str, str]) -> None:
    """A folder as compress leaves it: the files and a manifest listing them."""
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    manifest = {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in files.items()}
    (folder / "manifest.json").write_text(json.dumps({"files": manifest}))


@pytest.fixture
def work(tmp_path, tiny_model_file, monkeypatch):
    """A user's working folder (the current folder) holding the model and some notes; temp dir private."""
    wd = tmp_path / "work"
    wd.mkdir()
    (wd / "tiny.pt").write_bytes(tiny_model_file.read_bytes())
    (wd / "notes.txt").write_text("my notes\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.chdir(wd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return wd


def run(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


# ---- 1. a pruned model file names no code that runs -------------------------------------------------

def _evil(path: Path, pwned: Path, arch: str = "os:system") -> Path:
    torch.save({"format": PRUNED_FORMAT, "arch": arch, "arch_kwargs": {"command": f"touch {pwned}"},
                "removed_blocks": [], "shapes": {}, "state_dict": {}, "info": {}}, path)
    return path


def test_crafted_pruned_model_runs_nothing_under_the_cli(tmp_path):
    wd, tmpdir = tmp_path / "work", tmp_path / "tmp"
    wd.mkdir(), tmpdir.mkdir()
    pwned = tmp_path / "PWNED"
    _evil(wd / "evil.pruned.pt", pwned)
    before = snapshot(wd)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TMPDIR": str(tmpdir)}
    proc = subprocess.run([sys.executable, "-m", "edge_compress", *FAST, "--out", "out", "evil.pruned.pt"], cwd=wd,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "evil.pruned.pt names the architecture 'os:system'" in line
    assert "pass --arch os:system if you trust it, or --trust-model" in line
    assert not pwned.exists()
    assert snapshot(wd) == before and not (wd / "out").exists()
    assert leftovers(wd, tmpdir) == []


@pytest.mark.parametrize("arch", ["os:system", "subprocess:getoutput", "builtins:exec", "shutil:rmtree"])
def test_crafted_pruned_model_refused_by_load_pruned_and_load_model(tmp_path, arch):
    pwned = tmp_path / "PWNED"
    path = _evil(tmp_path / "evil.pruned.pt", pwned, arch)
    for load in (lambda: load_pruned(path), lambda: load_model(path), lambda: load_pruned(path, arch="os:popen")):
        with pytest.raises(ModelLoadError) as exc:
            load()
        msg = str(exc.value)
        assert "\n" not in msg and f"names the architecture {arch!r}" in msg and "--trust-model" in msg
    assert not pwned.exists()


def test_crafted_pruned_model_quotes_a_short_excerpt(tmp_path):
    path = _evil(tmp_path / "evil.pruned.pt", tmp_path / "PWNED", "os:" + "x" * 100_000)
    with pytest.raises(ModelLoadError) as exc:
        load_pruned(path)
    msg = str(exc.value)
    assert len(msg) < 400 and "pass --arch <that name> if you trust it, or --trust-model" in msg


def test_crafted_layer_sizes_cannot_set_other_attributes(tmp_path):
    model = get_arch("example-cnn").factory(width=8).eval()
    ckpt = torch.load(__import__("io").BytesIO(save_pruned_bytes(model, "example-cnn", {"width": 8})),
                      weights_only=True)
    first = next(iter(ckpt["shapes"]))
    ckpt["shapes"][first] = {"forward": "os.system"}
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError) as exc:
        load_pruned(tmp_path / "bad.pt")
    assert "not a layer size" in str(exc.value) and "\n" not in str(exc.value)


def test_real_pruned_model_with_a_builtin_arch_loads_without_flags(tmp_path):
    model = get_arch("example-cnn").factory(width=8).eval()
    path = tmp_path / "model.pruned.pt"
    path.write_bytes(save_pruned_bytes(model, "example-cnn", {"width": 8}))
    reloaded = load_pruned(path)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(reloaded(x), model(x), atol=1e-5)
    assert load_model(path).kind == "pruned"


def test_own_arch_runs_only_when_named_or_trusted(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_hostile"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "import pathlib\nfrom edge_compress.compress.archs import get_arch\n"
        f"CALLS = pathlib.Path({str(tmp_path / 'calls')!r})\n"
        "def build(width=8):\n    CALLS.write_text(CALLS.read_text() + 'x' if CALLS.exists() else 'x')\n"
        "    return get_arch('example-cnn').factory(width=width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "userpkg_hostile.nets:build"
    from userpkg_hostile.nets import build
    path = tmp_path / "own.pruned.pt"
    path.write_bytes(save_pruned_bytes(build().eval(), spec, {}))
    (tmp_path / "calls").unlink()
    with pytest.raises(ModelLoadError) as exc:
        load_pruned(path)
    assert f"pass --arch {spec} if you trust it, or --trust-model" in str(exc.value)
    with pytest.raises(ModelLoadError):
        load_pruned(path, arch="example-cnn")             # another --arch does not vouch for this one
    assert not (tmp_path / "calls").exists()               # refused before anything was called
    load_pruned(path, arch=spec)
    load_pruned(path, trust_model=True)
    assert load_model(path, arch=spec).arch == spec
    assert (tmp_path / "calls").read_text() == "xxx"


# ---- 2. the output folder is the tool's alone ------------------------------------------------------

def test_out_dot_refused_and_nothing_changes(work, capsys):
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--out", ".", "tiny.pt"], capsys)
    assert code == 2
    assert "--out . is the current folder" in one_error_line(err)
    assert snapshot(work) == before and leftovers(work, work.parent, Path(tempfile.tempdir)) == []


def test_out_with_user_files_refused(work, capsys):
    data = work / "mydata"
    (data / "sub").mkdir(parents=True)
    (data / "thesis.txt").write_text("years of work\n")
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--out", "mydata", "tiny.pt"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "--out mydata holds files compress did not write (sub/, thesis.txt)" in line
    assert "choose a new folder or empty it" in line
    assert snapshot(work) == before and leftovers(work, Path(tempfile.tempdir)) == []


def test_out_symlink_refused_and_target_untouched(work, capsys):
    target = work.parent / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    (work / "link").symlink_to(target)
    before, before_target = snapshot(work), snapshot(target)
    for given in ("link", "link/"):
        code, err = run([*FAST, *TINY, "--out", given, "tiny.pt"], capsys)
        assert code == 2
        assert "is a symbolic link" in one_error_line(err)
    assert snapshot(work) == before and snapshot(target) == before_target
    assert leftovers(work, work.parent, Path(tempfile.tempdir)) == []


def test_out_holding_the_inputs_refused(work, capsys):
    models = work / "models"
    models.mkdir()
    os.replace(work / "tiny.pt", models / "tiny.pt")
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--out", "models", "models/tiny.pt"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "--out models" in line and ("holds the input" in line or "did not write (tiny.pt)" in line)
    assert snapshot(work) == before and leftovers(work, Path(tempfile.tempdir)) == []


def test_check_out_dir_refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / "proj").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "model.pt").write_text("x")
    forged = tmp_path / "forged"
    fake_output(forged, {"report.json": "{}"})
    (forged / "thesis.txt").write_text("mine")          # not in the manifest
    cases = {
        ".": "is the current folder",
        "/": "is the root folder",
        str(home): "is your home folder",
        "in": "holds the input",
        "in/model.pt": "is the input",
        "forged": "holds files compress did not write (thesis.txt)",
        "x" * 250: "too long for the temporary folder",
    }
    for given, words in cases.items():
        with pytest.raises(InputError) as exc:
            check_out_dir(given, [tmp_path / "in" / "model.pt"])
        assert words in str(exc.value) and "\n" not in str(exc.value), given
    assert check_out_dir("new/deeper", []) == tmp_path / "new" / "deeper"
    assert check_out_dir("jetson-nano", ["jetson-nano", "pkg.data:load"]) == tmp_path / "jetson-nano"  # names, not files
    fake_output(tmp_path / "previous", {"report.json": "{}", "logs/compress.log": ""})
    assert check_out_dir("previous", []) == tmp_path / "previous" and is_compress_output(tmp_path / "previous")
    assert not is_compress_output(forged)
    (tmp_path / "empty").mkdir()
    assert check_out_dir("empty", []) == tmp_path / "empty"


def test_previous_output_replaced_in_one_step_with_shared_modes(work, capsys):
    """A previous compress output is replaced (atomically), and every file honours the umask like open()."""
    out = work / "out"
    fake_output(out, {"report.json": "{}", "old-only.txt": "from the last run", "logs/compress.log": "x"})
    old = os.umask(0o002)
    try:
        code, err = run([*FAST, *TINY, "--out", "out", "tiny.pt"], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert not (out / "old-only.txt").exists() and not (out / MARKER).exists()
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert present == set(manifest) | {"manifest.json"}
    assert {"model.onnx", "README.md", "expected_output.json", "report.json"} <= present
    for rel in present:
        mode = stat.S_IMODE((out / rel).stat().st_mode)
        assert mode == (0o775 if rel.endswith(".sh") else 0o664), (rel, oct(mode))
    assert leftovers(work, Path(tempfile.tempdir)) == []
    assert (work / "notes.txt").read_text() == "my notes\n"


def test_output_dir_swap_uses_one_exchange_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if sys.platform.startswith("linux"):
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
        (tmp_path / "a" / "f").write_text("a"), (tmp_path / "b" / "f").write_text("b")
        assert exchange(tmp_path / "a", tmp_path / "b")
        assert (tmp_path / "a" / "f").read_text() == "b" and (tmp_path / "b" / "f").read_text() == "a"
    import edge_compress.compress.output as output
    for swap in (output.exchange, lambda a, b: False):    # renameat2, then the two-rename fallback
        monkeypatch.setattr(output, "exchange", swap)
        fake_output(tmp_path / "out", {"report.json": "old"})
        with OutputDir(Path("out")) as od:
            od.write_json("report.json", {"new": True})
            od.commit()
        assert json.loads((tmp_path / "out" / "report.json").read_text()) == {"new": True}
        assert leftovers(tmp_path) == []


def test_output_changed_by_the_user_during_the_run_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_output(tmp_path / "out", {"report.json": "old"})
    with pytest.raises(InputError) as exc:
        with OutputDir(Path("out")) as od:
            (tmp_path / "out" / "added.txt").write_text("mine")
            od.write_json("report.json", {})
            od.commit()
    assert "holds files compress did not write (added.txt)" in str(exc.value)
    assert (tmp_path / "out" / "added.txt").read_text() == "mine"
    assert (tmp_path / "out" / "report.json").read_text() == "old"
    assert leftovers(tmp_path) == []


# ---- 4. leftovers of killed runs: cleaned only when their process is gone ----------------------------

def test_leftovers_of_dead_runs_are_cleaned_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dead = tmp_path / ".out.tmp-deadbeef"                  # killed mid-run: marked, process gone
    mark(dead, dead_pid())
    (dead / "model.onnx").write_text("partial")
    unmarked = tmp_path / ".out.tmp-0badf00d"              # not ours to judge: no marker
    unmarked.mkdir()
    (unmarked / "thesis.txt").write_text("mine")
    live = tmp_path / ".out.old-12345678"                  # a run still going (our parent process)
    mark(live, os.getppid())
    whole = tmp_path / ".out.old-abcdef01"                 # killed between swap and removal: a whole output
    fake_output(whole, {"report.json": "{}"})
    other = tmp_path / ".other.tmp-deadbeef"               # another --out's leftover
    mark(other, dead_pid())
    with OutputDir(Path("out")) as od:
        od.write_json("report.json", {})
        od.commit()
    assert not dead.exists() and not whole.exists()
    assert (unmarked / "thesis.txt").read_text() == "mine" and live.is_dir() and other.is_dir()


def test_evaluator_temp_dirs_of_dead_runs_are_cleaned(tmp_path, monkeypatch):
    from edge_compress.compress.evaluate import LatencyEvaluator

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    dead = tmp / "compress-eval-dead1234"
    mark(dead, dead_pid())
    (dead / "eval.onnx").write_text("x")
    live = tmp / "compress-eval-live1234"
    mark(live, os.getppid())
    foreign = tmp / "compress-eval-mine"
    foreign.mkdir()
    (foreign / "data.txt").write_text("not compress's")
    evaluator = LatencyEvaluator(load_profile("jetson-nano"), torch.zeros(1, 3, 32, 32))
    ours = evaluator.workdir
    assert (ours / MARKER).is_file() and not dead.exists()
    assert live.is_dir() and (foreign / "data.txt").read_text() == "not compress's"
    evaluator.close()
    assert not ours.exists()


# ---- 3. bounded profile parsing ----------------------------------------------------------------------

def _billion_laughs(path: Path) -> Path:
    lines = ["schema_version: 1", "name: bomb", "a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path.write_text("\n".join(lines + ["description: *a8"]) + "\n")
    return path


def test_alias_bomb_profile_is_refused_cleanly(work, capsys):
    _billion_laughs(work / "bomb.yaml")
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--target", "bomb.yaml", "--out", "out", "tiny.pt"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "bomb.yaml" in line and "more than 100000 values once aliases are expanded" in line
    assert len(line) < 300
    assert snapshot(work) == before and leftovers(work, Path(tempfile.tempdir)) == []


def test_target_dev_zero_and_oversized_profile_refused(work, capsys):
    big = work / "big.yaml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    for target, words in (("/dev/zero", "is not a regular file"), ("big.yaml", "over the 1 MiB limit"),
                          (str(work), "is a folder")):
        code, err = run([*FAST, *TINY, "--target", target, "--out", "out", "tiny.pt"], capsys)
        assert code == 2
        assert words in one_error_line(err), target
    assert not (work / "out").exists() and leftovers(work, Path(tempfile.tempdir)) == []


@pytest.mark.parametrize("text, words", [
    ("a: &a x\nb: [" + ",".join(["*a"] * 101) + "]\n", "more than 100 aliases"),
    ("a: &a [*a]\n", "an alias refers to a node that contains it"),
    ("[" * 100_000, "nested more than 64 levels"),
    ("? [a, b]\n: 1\n", "found unhashable key"),
    ("schema_version: 1\nname: [" + ",".join(["x" * 50] * 5000) + "]\n", "key 'name' must be"),
    ("schema_version: 1\n? " + "k" * 100_000 + "\n: 1\n", "unknown key"),
    ("extends: " + "y" * 100_000 + "\n", "key 'extends' is"),
])
def test_bad_profile_values_are_quoted_short(tmp_path, text, words):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert words in msg and "\n" not in msg
    assert len(msg) < 200 + len(str(path)) + 150   # the allowed-keys list adds a fixed part


# ---- 5. file modes -------------------------------------------------------------------------------------

def test_atomic_writes_honour_the_umask(tmp_path):
    from edge_compress.deploy.atomic import atomic_path, atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_text(tmp_path / "b.sh", "x", mode=0o755)
        with atomic_path(tmp_path / "c.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.txt": 0o640, "b.sh": 0o750, "c.json": 0o640}
