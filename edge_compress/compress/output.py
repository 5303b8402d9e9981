"""The output folder, written atomically: everything goes to a hidden sibling folder that is swapped into
place only when the run succeeded, so a failed run leaves nothing behind and a rerun replaces the
previous result in one step.

The folder is the tool's alone. An existing `--out` is replaced only when it is a previous compress output
(its manifest.json lists every file in it) or empty; never the current folder, a folder holding the inputs,
the home folder, `/` or a symbolic link (`check_out_dir`, which the pipeline calls before loading anything).
On Linux the swap is one `renameat2(RENAME_EXCHANGE)`, so there is no moment without an output.

A run marks its hidden folders with a `.compress-run` file (pid and host). Folders that a killed run left
beside the same `--out` are removed by the next run when their process is gone: only those that carry the
marker of a dead process on this host, or that are complete compress outputs themselves.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import stat
import sys
import uuid
from pathlib import Path

from edge_compress.deploy import current_umask

from .errors import InputError

MARKER = ".compress-run"           # inside a run's hidden folders: {"pid": ..., "host": ...}
MANIFEST = "manifest.json"
_MAX_MANIFEST_BYTES = 16 << 20
_SUFFIX = re.compile(r"\.(tmp|old)-[0-9a-f]{8}")
log = logging.getLogger("compress")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- which folder may be replaced --------------------------------------------------------------------

def _show(path: str | os.PathLike, limit: int = 80) -> str:
    text = os.fspath(path)
    text = text if text.isprintable() else ascii(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_out_dir(path: str | os.PathLike, inputs: list | tuple = ()) -> Path:
    """Resolve `--out` and refuse it unless compress may write it; returns the resolved folder.

    Allowed: a path that does not exist yet (its parent writable), an empty folder, or a previous compress
    output whose manifest.json lists every file in it. Refused with InputError: a symbolic link, `.` (the
    current folder) or any folder above it, `/`, the home folder, a folder holding any of `inputs` (or one of
    them), a file, and a folder holding anything compress did not write. Reads only; changes nothing.
    """
    raw = os.fspath(path)
    shown = _show(raw)
    if not raw:
        raise InputError("--out is empty; pass a folder name, e.g. --out compressed/my-model")
    bare = raw.rstrip("/" + os.sep) or raw
    if os.path.islink(bare):
        try:
            target = f" (to {_show(os.readlink(bare))})"
        except OSError:
            target = ""
        raise InputError(f"--out {shown} is a symbolic link{target}; compress replaces its output folder whole and "
                         "does not follow links: pass a new folder or the link's target")
    try:
        final = Path(raw).resolve()
    except (OSError, RuntimeError) as e:
        raise InputError(f"--out {shown}: cannot resolve the path ({e}); pass a plain folder path") from None
    if final == Path(final.anchor):
        raise InputError(f"--out {shown} is the root folder; pass a new folder, e.g. --out compressed/my-model")
    try:
        here = Path.cwd().resolve()
    except OSError:   # the current folder was deleted: nothing of it to protect
        here = None
    if here is not None and (final == here or final in here.parents):
        what = "the current folder" if final == here else "a folder above the current folder"
        raise InputError(f"--out {shown} is {what}; compress replaces its output folder whole: pass a new folder, "
                         "e.g. --out compressed/my-model")
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        home = None
    if home is not None and (final == home or final in home.parents):
        raise InputError(f"--out {shown} is your home folder{'' if final == home else ' or above it'}; compress "
                         "replaces its output folder whole: pass a new folder, e.g. --out compressed/my-model")
    for item in inputs or ():
        # Only inputs that are files or folders count: a built-in target or a module:callable names none.
        if item is None or not isinstance(item, (str, os.PathLike)) or not os.path.lexists(item):
            continue
        try:
            src = Path(item).resolve()
        except (OSError, RuntimeError, ValueError, TypeError):
            continue
        if final == src or final in src.parents:
            raise InputError(f"--out {shown} {'is' if final == src else 'holds'} the input {_show(item)}; compress "
                             "replaces its output folder whole: pass a new folder outside the inputs")
    _check_name_length(final, shown)
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        _check_writable(final, shown)
        return final
    except OSError as e:
        raise InputError(f"--out {shown}: cannot read it ({e.strerror}); pass a folder you can write") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"--out {shown} exists and is not a folder; choose another path")
    problem = _foreign_content(final)
    if problem:
        raise InputError(f"--out {shown} {problem}; choose a new folder or empty it")
    _check_writable(final, shown)
    return final


def _check_name_length(final: Path, shown: str) -> None:
    # The hidden sibling adds "." and ".tmp-xxxxxxxx" to the name.
    try:
        limit = os.pathconf(_existing_ancestor(final.parent), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(final.name)) + 14 > limit:
        raise InputError(f"--out {shown}: the folder name is {len(os.fsencode(final.name))} bytes, too long for the "
                         f"temporary folder beside it (at most {limit - 14}); choose a shorter name")


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable(final: Path, shown: str) -> None:
    parent = _existing_ancestor(final.parent)
    if not parent.is_dir():
        raise InputError(f"--out {shown}: {_show(parent)} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(parent) else "no write permission"
        raise InputError(f"--out {shown}: cannot write in {_show(parent)} ({why}); choose a folder you can write")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except OSError:
        return False


def _manifest_files(folder: Path) -> set[str] | None:
    """The relative paths a compress manifest.json in `folder` lists; None when there is none or it is not ours."""
    path = folder / MANIFEST
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_MANIFEST_BYTES:
            return None
        with open(path, "rb") as f:
            data = json.loads(f.read(_MAX_MANIFEST_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return set(files)


class _TooMany(Exception):
    pass


def _walk(folder: Path, limit: int):
    """(relative posix path, is_regular_file, is_dir) of everything under `folder`, links not followed;
    _TooMany past `limit` entries."""
    stack, seen = [(folder, "")], 0
    while stack:
        base, prefix = stack.pop()
        with os.scandir(base) as it:
            for entry in it:
                rel = prefix + entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                yield rel, entry.is_file(follow_symlinks=False), is_dir
                seen += 1
                if seen > limit:
                    raise _TooMany
                if is_dir:
                    stack.append((Path(entry.path), rel + "/"))


def _foreign_content(folder: Path) -> str | None:
    """None when `folder` is empty or holds only what a compress manifest in it lists; else what is wrong."""
    listed = _manifest_files(folder)
    try:
        entries = list(_walk(folder, limit=1000 if listed is None else len(listed) * 2 + 1000))
    except _TooMany:
        return "holds many more files than a compress manifest.json in it lists"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not entries:
        return None
    ours = listed is not None
    listed = listed or set()
    needed_dirs = {p.rsplit("/", i)[0] for p in listed for i in range(1, p.count("/") + 1)}
    foreign = []
    for rel, is_file, is_dir in entries:
        if rel in (MANIFEST, MARKER) and is_file and ours:
            continue
        ok = (is_file and rel in listed) or (is_dir and rel in needed_dirs)
        if not ok:
            foreign.append(rel + ("/" if is_dir else ""))
    if not foreign:
        return None
    names = ", ".join(_show(n, 40) for n in sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
    if not ours:
        return f"holds files compress did not write ({names}) and no compress manifest.json"
    return f"holds files compress did not write ({names})"


def is_compress_output(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a folder compress wrote: a manifest.json listing every file in it."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and _manifest_files(folder) is not None \
        and _foreign_content(folder) is None


# ---- run markers and leftovers of killed runs --------------------------------------------------------

def write_marker(folder: Path) -> None:
    """Mark `folder` as this process's work in progress (removed last, so a kill leaves it behind)."""
    with open(folder / MARKER, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)


def _marker_owner_gone(folder: Path) -> bool:
    """True when `folder` carries a marker whose process is not running on this host."""
    path = folder / MARKER
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
            return False
        with open(path, "rb") as f:
            data = json.loads(f.read(4097))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("host") != socket.gethostname():
        return False
    pid = data.get("pid")
    if type(pid) is not int or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


def remove_marked(folder: Path) -> None:
    """Remove a folder of ours, its marker last: a kill part-way leaves a marked folder the next run removes."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name == MARKER:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    try:
        os.unlink(folder / MARKER)
    except OSError:
        pass
    try:
        os.rmdir(folder)
    except OSError:
        pass


def clean_dead_runs(parent: Path, prefix: str, pattern: re.Pattern | None = None,
                    complete_outputs: bool = False) -> list[Path]:
    """Remove folders in `parent` named `prefix` + `pattern` that killed runs left: those marked by a process
    gone from this host, and (with `complete_outputs`) unmarked ones that are whole compress outputs. Folders
    of other users, of live runs, and anything else are left alone. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or (pattern is not None and not pattern.fullmatch(name[len(prefix):])):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        folder = Path(entry.path)
        if _marker_owner_gone(folder):
            remove_marked(folder)
        elif complete_outputs and not (folder / MARKER).exists() and _manifest_files(folder) \
                and _foreign_content(folder) is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            continue
        removed.append(folder)
        log.debug("removed %s, left by a run that was killed", folder)
    return removed


# ---- the atomic swap ---------------------------------------------------------------------------------

_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` in one step (Linux renameat2 with RENAME_EXCHANGE).

    False, with nothing changed, where the OS or file system cannot; OSError for any other failure.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    pa, pb = os.fsencode(a), os.fsencode(b)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        rc = fn(_AT_FDCWD, pa, _AT_FDCWD, pb, _RENAME_EXCHANGE)
    else:
        nr = _SYS_RENAMEAT2.get(platform.machine().lower())
        if nr is None or not hasattr(libc, "syscall"):
            return False
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(pa), ctypes.c_int(_AT_FDCWD),
                          ctypes.c_char_p(pb), ctypes.c_uint(_RENAME_EXCHANGE))
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def normalise_modes(folder: Path) -> None:
    """Give every file and folder under `folder` the mode a plain open()/mkdir() would: 0666 (0777 for
    executables and folders) less the umask. Temp-file helpers create 0600 files; outputs are to be shared."""
    mask = current_umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)
        for name in files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, (0o777 if st.st_mode & stat.S_IXUSR else 0o666) & ~mask)
    os.chmod(folder, 0o777 & ~mask)


class OutputDir:
    def __init__(self, final: Path, inputs: list | tuple = ()):
        self.given = final
        self.inputs = list(inputs or ())
        self.final = check_out_dir(final, self.inputs)
        self.tmp = self.final.parent / f".{self.final.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.committed = False
        self._log: logging.Handler | None = None

    def __enter__(self) -> "OutputDir":
        # Leftovers of killed runs for this --out: theirs to clean, since their process is gone.
        clean_dead_runs(self.final.parent, f".{self.final.name}", _SUFFIX, complete_outputs=True)
        try:
            self.tmp.mkdir(parents=True)
            write_marker(self.tmp)
        except OSError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise InputError(f"--out {_show(self.given)}: cannot create a folder in {_show(self.final.parent)} "
                             f"({e.strerror or e}); choose a folder you can write") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_log()
        if not self.committed:
            remove_marked(self.tmp)

    def attach_log(self, logger: str, rel: str = "logs/compress.log") -> None:
        """Copy everything `logger` says into the folder; closed before the manifest is hashed."""
        self._log = logging.FileHandler(self.path(rel))
        self._log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._log.setLevel(logging.DEBUG)
        logging.getLogger(logger).addHandler(self._log)
        logging.getLogger(logger).setLevel(logging.DEBUG)
        self._logger = logger

    def _close_log(self) -> None:
        if self._log is not None:
            logging.getLogger(self._logger).removeHandler(self._log)
            self._log.close()
            self._log = None

    def path(self, rel: str) -> Path:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, rel: str, obj) -> Path:
        p = self.path(rel)
        p.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
        return p

    def artifacts(self) -> dict[str, str]:
        """sha256 of every file written so far, by path relative to the folder."""
        out = {}
        for p in sorted(self.tmp.rglob("*")):
            rel = p.relative_to(self.tmp).as_posix()
            if p.is_file() and rel not in (MANIFEST, MARKER):
                out[rel] = sha256_file(p)
        return out

    def commit(self) -> Path:
        self._close_log()
        normalise_modes(self.tmp)
        manifest = {"files": self.artifacts()}
        self.write_json(MANIFEST, manifest)
        os.chmod(self.tmp / MANIFEST, 0o666 & ~current_umask())
        old = None
        if os.path.lexists(self.final):
            # Checked again: the folder may have changed since the run started; nothing of the user's is replaced.
            check_out_dir(self.given, self.inputs)
            if exchange(self.tmp, self.final):
                old = self.tmp                       # now holds the previous output
            else:
                old = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(self.final, old)
            try:
                write_marker(old)   # a verified compress output: whole, the next run would remove it anyway
            except OSError:
                pass
            if old != self.tmp:
                os.rename(self.tmp, self.final)
        else:
            os.rename(self.tmp, self.final)
        self.committed = True
        try:
            os.unlink(self.final / MARKER)
        except OSError:
            pass
        if old is not None:
            remove_marked(old)
        return self.final


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
