"""argparse options generated from the configs (compress/config.py): flag, type, help, group and default come from
each field, so the command line, its --help and the Python API's keywords are one list. Values stay text until
`keywords` turns them into the API's keywords: a malformed value is one error line (exit 2), not a usage dump."""
from __future__ import annotations

import argparse
import json
import typing
from typing import Literal

from pydantic.fields import FieldInfo

from ..config import Config, extra_of, leaves
from ..errors import CompressError


def add_config_options(parser: argparse.ArgumentParser, config: type[Config], groups: dict | None = None) -> dict:
    """One argument per field of `config` (nested configs flattened), in argument groups titled by the configs."""
    groups = {} if groups is None else groups
    for _, kw, info, title in leaves(config):
        extra = extra_of(info)
        if not extra.get("cli", True):
            continue
        if extra.get("positional"):
            # optional: SUPPRESS keeps an empty match from overwriting a value set by the subcommand action
            optional = dict(nargs="?", default=argparse.SUPPRESS) if extra["positional"] == "optional" else {}
            parser.add_argument(kw, help=_help(info), **optional)
            continue
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        flags = [extra["short"]] if extra.get("short") else []
        flags.append("--" + kw.replace("_", "-"))
        if _base(info.annotation) is bool:
            group.add_argument(*flags, dest=kw, action="store_true", default=None, help=_help(info))
            continue
        kwargs: dict = dict(dest=kw, default=None, help=_help(info), metavar=extra.get("metavar"))
        choices = extra.get("choices") or _literal(info.annotation)
        if choices:
            kwargs.update(choices=choices, metavar=None)
        elif not extra.get("parse") and _base(info.annotation) in (int, float):
            kwargs["type"] = _base(info.annotation)
        if extra.get("parse") == "key_values":
            kwargs["action"] = "append"
        group.add_argument(*flags, **kwargs)
    return groups


def keywords(args: argparse.Namespace, config: type[Config]) -> dict:
    """The Python API's keywords for the options given on the command line (those not given keep their defaults)."""
    out = {}
    for _, kw, info, _ in leaves(config):
        value = getattr(args, kw, None)
        if value is None or not extra_of(info).get("cli", True):
            continue
        parse = extra_of(info).get("parse")
        out[kw] = PARSERS[parse](value, "--" + kw.replace("_", "-")) if parse else value
    return out


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    default = info.default
    shown = extra_of(info).get("show_default", True) and not extra_of(info).get("positional")
    if shown and default not in (None, False, {}, ()) and "default" not in text:
        text += f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
    return text.replace("%", "%%")   # argparse formats help with %


def _base(annotation):
    """The type of `X | None` (and of Annotated[X, ...])."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated:
        return _base(args[0])
    if len(args) == 1 and typing.get_origin(annotation) is not Literal:
        return _base(args[0])
    return annotation


def _literal(annotation) -> tuple | None:
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


# ---- text -> value, by the name a field's `parse` gives ------------------------------------------------------

def _shape(text: str, option: str):
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise CompressError(f"{option} {text!r} is not NxCxHxW, e.g. 1x3x32x32") from None


def _floats(text: str, option: str):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CompressError(f"{option} {text!r} is not a comma-separated list of numbers, e.g. 0.5,0.5,0.5") from None


def _json_dict(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompressError(f"{option} is not valid JSON ({e.msg}); pass e.g. '{{\"num_classes\": 100}}'") from None
    if not isinstance(value, dict):
        raise CompressError(f"{option} must be a JSON object, e.g. '{{\"num_classes\": 100}}'")
    return value


def _key_values(items: list[str], option: str) -> dict:
    """KEY=VALUE strings; the criterion registry checks the keys and converts the values."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CompressError(f"{option} {item!r} is not KEY=VALUE, e.g. {option} alpha=1.01")
        out[key.strip()] = value.strip()
    return out


PARSERS = {"shape": _shape, "floats": _floats, "json": _json_dict, "key_values": _key_values}
