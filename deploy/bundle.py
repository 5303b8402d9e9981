"""The script that goes into the device bundle and builds the engine on the device."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from deploy.atomic import atomic_write_text

_NOTES = (
    "Run this ON the target device: a TensorRT engine only works on the GPU model and TensorRT",
    "version that built it, so an engine built elsewhere will not load (or will be slow) there.",
    "On a Jetson, set maximum clocks before measuring: sudo nvpmodel -m 0 && sudo jetson_clocks",
    "Paths are relative to this script's folder.",
)


def render_build_script(argv: Sequence[str], description: str) -> str:
    """The text of the build script (see ``write_build_script``)."""
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ValueError(f"argv must be a non-empty list of non-empty strings, got {argv!r}")
    header = [f"# {line}".rstrip() for line in description.splitlines() or [""]]
    header += ["#"] + [f"# {line}" for line in _NOTES]
    tool = shlex.quote(argv[0])
    command = " \\\n    ".join(shlex.quote(a) for a in argv)
    lines = [
        "#!/usr/bin/env bash",
        *header,
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "",
        f"if ! command -v {tool} >/dev/null 2>&1; then",
        f"    echo {shlex.quote(f'error: cannot run {argv[0]}: not found or not executable.')}"
        " 'On JetPack trtexec is /usr/src/tensorrt/bin/trtexec:"
        " add /usr/src/tensorrt/bin to PATH or edit this script.' >&2",
        "    exit 127",
        "fi",
        "",
        f"exec {command}",
    ]
    return "\n".join(lines) + "\n"


def write_build_script(path: str | os.PathLike[str], argv: list[str], description: str) -> Path:
    """Write an executable bash script that runs ``argv`` (from ``trtexec_command``) on the device.

    Every argument is shell-quoted, so the script passes exactly ``argv``. The script changes to
    its own folder first, so relative paths in ``argv`` refer to files in the bundle. Written
    atomically with mode 0755.
    """
    return atomic_write_text(path, render_build_script(argv, description), mode=0o755)
