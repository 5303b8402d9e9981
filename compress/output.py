"""The output folder, written atomically: everything goes to a hidden sibling folder that is renamed
into place only when the run succeeded, so a failed run leaves nothing behind and a rerun replaces the
previous result in one step.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from .errors import InputError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OutputDir:
    def __init__(self, final: Path):
        self.final = Path(final).resolve()
        if self.final.exists() and not self.final.is_dir():
            raise InputError(f"--out {final} exists and is not a folder; choose another path")
        self.tmp = self.final.parent / f".{self.final.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.committed = False
        self._log: logging.Handler | None = None

    def __enter__(self) -> "OutputDir":
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_log()
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

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
        return {p.relative_to(self.tmp).as_posix(): sha256_file(p)
                for p in sorted(self.tmp.rglob("*")) if p.is_file() and p.name != "manifest.json"}

    def commit(self) -> Path:
        self._close_log()
        manifest = {"files": self.artifacts()}
        self.write_json("manifest.json", manifest)
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
