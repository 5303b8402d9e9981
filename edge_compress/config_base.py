"""The one config mechanism: strict, frozen pydantic models, and their errors as one readable line.

    class Pruning(Config):
        channel_multiple: Annotated[int, Rule("an integer >= 1", lambda v: v >= 1)]

    try:
        Pruning.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: {error_line(exc, Pruning, data)}") from None

`error_line` words the first error as "key 'a.b' must be <what>, got <value>", "missing required key
'a.b'" or "unknown key 'a.c'; did you mean 'a.b'? (allowed: ...)". `Rule` carries both a check and the
words that describe it, so the message says "an integer >= 1" rather than pydantic's own wording.
This module imports nothing of the project, so every package can build its configs on it.
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

__all__ = ["Config", "Rule", "Items", "RuleBroken", "error_line", "excerpt"]


class Config(BaseModel):
    """Base of every config: unknown keys are errors, values are immutable, and nothing is coerced
    (YAML's `true` is not 1, `"8"` is not 8, a float is never NaN or infinite; an int may stand for a
    float and becomes one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class RuleBroken(ValueError):
    """Raise it in a model validator for a rule that involves more than one key: its message is the
    whole line error_line gives, naming the keys and the fix."""


class _ValueBroken(ValueError):
    def __init__(self, expect: str):
        super().__init__(f"must be {expect}")
        self.expect = expect


class Rule:
    """`Annotated` metadata: what a value must be, in words for messages ("an integer >= 1"), and an
    optional check of it. None passes the check (an optional key left null). `attr` names the part of
    the value the rule is about, so a message can name that key (`hardware.cpu.value`)."""

    def __init__(self, expect: str, ok: Callable[[Any], bool] | None = None, attr: str | None = None):
        self.expect, self.ok, self.attr = expect, ok, attr

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        if self.ok is None:
            return handler(source)
        return AfterValidator(self._check).__get_pydantic_core_schema__(source, handler)

    def _check(self, value: Any) -> Any:
        part = getattr(value, self.attr) if self.attr and value is not None else value
        if part is not None and not self.ok(part):
            raise _ValueBroken(self.expect)
        return value

    def __repr__(self) -> str:
        return f"Rule({self.expect!r})"


def _list_to_tuple(value: Any) -> Any:
    # YAML and JSON give lists; the models hold tuples so that configs stay hashable values.
    return tuple(value) if isinstance(value, list) else value


_Item = TypeVar("_Item")
Items = Annotated[tuple[_Item, ...], BeforeValidator(_list_to_tuple)]
"""`Items[str]`: a list of strings in the file, a tuple in the model."""


# ---- one line per error ------------------------------------------------------------------------------

_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 2, 60, 60
_EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxdict = _EXCERPT.maxset = 4


def excerpt(value: Any, limit: int = 80) -> str:
    """A short repr of a value read from a file, for a one-line message: bounded work, at most `limit` chars.

    reprlib stops at a few items per level and a few levels, so a value that expands to millions of
    items (YAML aliases) costs no more than a small one.
    """
    text = _EXCERPT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UNKNOWN = ("extra_forbidden", "invalid_key")   # a key not in the model; a key that is not even a string


def error_line(exc: ValidationError, model: type[BaseModel], prefix: str = "", data: Any = None) -> str:
    """The most useful error of `exc` (raised validating `data` as `model`) as one line naming the key
    and the fix.

    An unknown key comes first (a misspelt key also makes its right spelling missing); otherwise the
    first error in the order of the fields. `prefix` is the dotted path of the data inside its file.
    """
    errors = exc.errors(include_url=False)
    err = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    raised = (err.get("ctx") or {}).get("error")
    if isinstance(raised, RuleBroken):
        return str(raised)
    if kind in _UNKNOWN:
        return _unknown_key(model, loc, prefix)
    key, hint, rule, depth = _walk(model, loc, prefix)
    if depth < len(loc) and data is not None:
        value = _input_at(data, loc[:depth], value)   # a rule's key: quote its whole value, not one item
    if kind == "missing":
        return f"missing required key '{key}'"
    if isinstance(raised, _ValueBroken):   # a Rule's check failed
        if rule is not None and rule.attr:
            key, value = f"{key}.{rule.attr}", _part(value, rule.attr)
        return _type_line(key, raised.expect, value)
    if rule is not None and not _is_model(_strip_none(hint)):
        optional = " or null" if type(None) in typing.get_args(hint) else ""
        return _type_line(key, rule.expect + optional, value)
    return _type_line(key, _describe(hint), value)


def _part(value: Any, attr: str) -> Any:
    return value.get(attr) if isinstance(value, dict) else getattr(value, attr, value)


def _type_line(key: str, expect: str, value: Any) -> str:
    hint = ""
    if "string" in expect and isinstance(value, (int, float)) and not isinstance(value, bool):
        hint = f' (quote it: "{excerpt(value)}")'
    return f"key '{key}' must be {expect}, got {excerpt(value)}{hint}"


def _unknown_key(model: type[BaseModel], loc: tuple, prefix: str) -> str:
    parent = _walk(model, loc[:-1], prefix)[0]
    owner = _model_at(model, loc[:-1])
    known = list(owner.model_fields) if owner is not None else []
    name = loc[-1] if isinstance(loc[-1], str) else excerpt(loc[-1])
    path = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name[:100], known, n=1)
    guess = f"; did you mean '{path}{close[0]}'?" if close else ""
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f"unknown key '{path}{shown}'{guess} (allowed: {', '.join(known)})"


def _walk(model: type[BaseModel], loc: Sequence[Any], prefix: str) -> tuple[str, Any, Rule | None, int]:
    """(dotted key, type hint, rule, parts of `loc` used) of the value at `loc`. Stops at a key with a
    rule on a plain value (its errors are worded by the rule) and at the tags pydantic adds for the arms
    of a union."""
    key, hint, rule, depth = prefix, model, None, 0
    for depth, part in enumerate(loc, 1):
        inner = _strip_none(hint)
        if isinstance(part, int) and typing.get_origin(inner) is tuple:
            key, hint, rule = f"{key}[{part}]", typing.get_args(inner)[0], None
            continue
        if not (isinstance(part, str) and _is_model(inner) and part in inner.model_fields):
            return key, hint, rule, depth - 1
        field = inner.model_fields[part]
        key = f"{key}.{part}" if key else part
        hint = field.annotation
        rule = next((m for m in field.metadata if isinstance(m, Rule)), None)
        if rule is not None and not _is_model(_strip_none(hint)):
            return key, hint, rule, depth
    return key, hint, rule, depth


def _input_at(data: Any, loc: Sequence[Any], default: Any) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    hint: Any = model
    for part in loc:
        inner = _strip_none(hint)
        if isinstance(part, int) and typing.get_origin(inner) is tuple:
            hint = typing.get_args(inner)[0]
        elif _is_model(inner) and part in inner.model_fields:
            hint = inner.model_fields[part].annotation
        else:
            return None
    inner = _strip_none(hint)
    return inner if _is_model(inner) else None


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def _strip_none(hint: Any) -> Any:
    hint = _unannotate(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(arms) == 1:
            return _unannotate(arms[0])
    return hint


def _unannotate(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               type(None): "null"}


def _describe(hint: Any) -> str:
    """What a value of type `hint` is, in words: "a list of strings", "a number, a string or null"."""
    hint = _unannotate(hint)
    if _is_model(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(hint)[0])[2:]}s"   # "a string" -> "strings"
    if origin in (Union, types.UnionType):
        args = [_unannotate(a) for a in typing.get_args(hint)]
        words = [_describe(a) for a in args if not (a is int and float in args)]   # ints are numbers
        return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))
