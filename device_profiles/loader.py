"""Finding and loading profiles: built-in names, user files, and `extends:` over a built-in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .schema import DeviceProfile, ProfileError, parse_profile

BUILTIN_DIR = Path(__file__).resolve().parent


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
        raise ProfileError(f"unknown target {text!r}; {_known()} (or pass a path to a profile YAML file)")
    data = _read_yaml(path)
    where = str(path)
    if path.parent == BUILTIN_DIR and data.get("name") != path.stem:
        raise ProfileError(f"profile {where}: key 'name' is {data.get('name')!r} but must be "
                           f"{path.stem!r}, the file's name")
    if "extends" in data and data["extends"] is not None:
        data = _merge(_base_data(data["extends"], where), data)
    return parse_profile(data, where, source_file=where)


def _known() -> str:
    return "known targets: " + ", ".join(profile_names())


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.endswith((".yaml", ".yml"))
            or Path(text).expanduser().exists())


def _base_data(base: Any, where: str) -> dict[str, Any]:
    # Only built-ins can be extended, and they extend nothing, so chains and cycles cannot occur.
    if not isinstance(base, str) or base not in profile_names():
        raise ProfileError(f"profile {where}: key 'extends' is {base!r}, not a built-in target; "
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
    """SafeLoader that rejects duplicate keys, which plain YAML loading silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise _DuplicateKey(f"duplicate key {key!r} (line {mark.line + 1}); "
                                    "keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


def _read_yaml(path: Path) -> dict[str, Any]:
    where = f"profile {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{where}: file not found; pass an existing YAML file or a built-in "
                           f"target name ({', '.join(profile_names())})") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProfileError(f"{where}: cannot read the file: {reason}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise ProfileError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML{_yaml_position(exc)}: {_yaml_reason(exc)}") from None
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
    return problem or str(exc).splitlines()[0]
