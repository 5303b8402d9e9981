"""Finding and loading profiles: built-in names, user files, and `extends:` over a built-in."""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from edge_compress.config_base import excerpt

from .schema import DeviceProfile, ProfileError, parse_profile

BUILTIN_DIR = Path(__file__).resolve().parent

# Bounds on what a profile file may make us parse (a profile is a few hundred nodes and a few KiB).
MAX_PROFILE_BYTES = 1 << 20   # file size
MAX_ALIASES = 100             # YAML alias references (*name)
MAX_NODES = 100_000           # nodes of the document with every alias expanded ("billion laughs")
MAX_DEPTH = 64                # nesting of mappings and lists


def profile_names() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def list_profiles() -> list[DeviceProfile]:
    """Every built-in profile, sorted by name."""
    return [load_profile(name) for name in profile_names()]


def load_profile(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """Load a built-in profile by name, or a user profile from a YAML file path.

    A user file with `extends: <built-in name>` is deep-merged over that built-in profile: mappings
    merge key by key, anything else (lists included) replaces.
    """
    text = os.fspath(name_or_path)
    if text in profile_names():
        path = BUILTIN_DIR / f"{text}.yaml"
    elif _looks_like_path(text):
        path = Path(text).expanduser().resolve()
    else:
        raise ProfileError(f"unknown target {excerpt(text)}; {_known()} (or pass a path to a profile YAML file)")
    data = _read_yaml(path)
    where = str(path)
    if path.parent == BUILTIN_DIR and data.get("name") != path.stem:
        raise ProfileError(f"profile {where}: key 'name' is {excerpt(data.get('name'))} but must be "
                           f"{path.stem!r}, the file's name")
    if "extends" in data and data["extends"] is not None:
        data = _merge(_base_data(data["extends"], where), data)
    return parse_profile(data, where, source_file=where)


def _known() -> str:
    return "known targets: " + ", ".join(profile_names())


def _looks_like_path(text: str) -> bool:
    if os.sep in text or "/" in text or text.endswith((".yaml", ".yml")):
        return True
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):   # a name too long, a NUL byte: not a file we could read
        return False


def _base_data(base: Any, where: str) -> dict[str, Any]:
    # Only built-ins can be extended, and they extend nothing, so chains and cycles cannot occur.
    if not isinstance(base, str) or base not in profile_names():
        raise ProfileError(f"profile {where}: key 'extends' is {excerpt(base)}, not a built-in target; "
                           f"{_known()}")
    return _read_yaml(BUILTIN_DIR / f"{base}.yaml")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML loading silently overwrites, and bounds what a
    file can make it build: aliases, nesting depth, and the node count with every alias expanded (an alias
    chain of 9 levels of 9 is 9**9 nodes once printed or walked, from a file of 500 bytes)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._expanded = 0              # nodes so far, aliases counted as the size of what they expand to
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _TooComplex(f"more than {MAX_ALIASES} aliases (*name) (line {event.start_mark.line + 1}); "
                                  "write the values out")
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise _TooComplex(f"an alias refers to a node that contains it (line {event.start_mark.line + 1});"
                                      " remove the recursive alias")
                self._count(size, event)
            return super().compose_node(parent, index)
        event = self.peek_event()
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooComplex(f"nested more than {MAX_DEPTH} levels deep (line {event.start_mark.line + 1}); "
                              "a profile is a few levels of mappings")
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, event)
        self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, n: int, event) -> None:
        self._expanded += n
        if self._expanded > MAX_NODES:
            raise _TooComplex(f"more than {MAX_NODES} values once aliases are expanded (line "
                              f"{event.start_mark.line + 1}); a profile is a few hundred values, write them out")

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue   # SafeLoader's own error below: "found unhashable key"
            if key in seen:
                mark = key_node.start_mark
                raise _DuplicateKey(f"duplicate key {excerpt(key)} (line {mark.line + 1}); "
                                    "keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


class _TooComplex(Exception):
    pass


def _read_bounded(path: Path) -> str:
    """The file's text, refusing anything but a regular file of at most MAX_PROFILE_BYTES.

    Opened without blocking (a FIFO would wait for a writer) and checked on the open descriptor, so a path
    swapped between the check and the read cannot slip through; at most one byte over the limit is read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _NotRegular("is a folder; pass the YAML file itself")
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular("is not a regular file (a device, pipe or socket); pass a YAML profile file")
        if st.st_size > MAX_PROFILE_BYTES:
            raise _NotRegular(f"is {st.st_size} bytes, over the {MAX_PROFILE_BYTES >> 20} MiB limit for a profile; "
                              "pass a device profile (a few KiB of YAML)")
        chunks, size = [], 0
        while size <= MAX_PROFILE_BYTES:
            chunk = os.read(fd, MAX_PROFILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_PROFILE_BYTES:
        raise _NotRegular(f"is over the {MAX_PROFILE_BYTES >> 20} MiB limit for a profile; "
                          "pass a device profile (a few KiB of YAML)")
    return b"".join(chunks).decode("utf-8")


class _NotRegular(Exception):
    pass


def _read_yaml(path: Path) -> dict[str, Any]:
    where = f"profile {path}"
    try:
        text = _read_bounded(path)
    except FileNotFoundError:
        raise ProfileError(f"{where}: file not found; pass an existing YAML file or a built-in "
                           f"target name ({', '.join(profile_names())})") from None
    except _NotRegular as exc:
        raise ProfileError(f"{where} {exc}") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{where}: not UTF-8 text (byte {exc.start}); save the profile as UTF-8") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:120]
        raise ProfileError(f"{where}: cannot read the file: {reason}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except (_DuplicateKey, _TooComplex) as exc:
        raise ProfileError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML{_yaml_position(exc)}: {_yaml_reason(exc)}") from None
    except RecursionError:
        raise ProfileError(f"{where}: nested too deeply to parse; a profile is a few levels of mappings") from None
    if data is None:
        raise ProfileError(f"{where}: the file is empty; a profile is a mapping starting with "
                           "'schema_version: 1'")
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: the top level must be a mapping of keys (schema_version, "
                           f"name, ...), got a {type(data).__name__}")
    return data


def _yaml_position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    reason = problem or (str(exc).splitlines() or [type(exc).__name__])[0]
    return reason if len(reason) <= 160 else reason[:157] + "..."
