"""One registry of criteria: one factory (`make_criterion`), one options model per criterion.

The public plugin interface: `register_criterion(name, description, options)` decorates a factory that
takes the validated options model and returns a `Criterion` (compress/criteria/base.py). Options are
pydantic models (`CriterionOptions`), so `make_criterion` refuses an unknown key or a bad value with
one line naming the key and what is accepted, and the CLI's help is generated from the same models.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable

from pydantic import ValidationError

from ..errors import InputError
from .base import Criterion, CriterionOptions, NoOptions

EXPERIMENTAL = "experimental:"   # the name prefix of criteria kept for studies, not recommended


@dataclass(frozen=True)
class CriterionEntry:
    name: str
    description: str
    options: type[CriterionOptions]
    build: Callable[[CriterionOptions], Criterion]


_REGISTRY: dict[str, CriterionEntry] = {}


def register_criterion(name: str, description: str, options: type[CriterionOptions] = NoOptions):
    """Decorator: register `factory(options) -> Criterion` under `name`.

    name: what `--criterion` takes (prefix studies' variants with "experimental:"); description: one line
    for `--list-criteria`; options: the CriterionOptions subclass `make_criterion` validates against.
    """
    def wrap(factory: Callable[[CriterionOptions], Criterion]):
        if name in _REGISTRY:
            raise ValueError(f"criterion {name!r} is registered twice")
        _REGISTRY[name] = CriterionEntry(name, description, options, factory)
        return factory
    return wrap


def make_criterion(name: str, options: dict | None = None) -> Criterion:
    """Build criterion `name` with its options (KEY: VALUE, values as strings or typed); an unknown name,
    key or value raises InputError naming it and what is accepted."""
    return _entry(name).build(parse_options(name, options or {}))


def parse_options(name: str, given: dict) -> CriterionOptions:
    """The validated options model of criterion `name` for `given`."""
    model = _entry(name).options
    if given and not model.model_fields:
        raise InputError(f"criterion {name!r} takes no --criterion-option (got {', '.join(given)})")
    try:
        return model(**given)
    except ValidationError as e:
        raise InputError(_explain(name, model, given, e)) from None


def criterion_names() -> list[str]:
    return sorted(_REGISTRY)


def describe_criterion(name: str) -> str:
    return _entry(name).description


def criterion_options(name: str) -> type[CriterionOptions]:
    """The options model of criterion `name` (fields, defaults and descriptions: the CLI's help)."""
    return _entry(name).options


def criterion_option_defaults(name: str) -> dict:
    """The options of criterion `name` with their defaults ({} for one without options)."""
    return {k: f.default for k, f in criterion_options(name).model_fields.items()}


def accepted_values(field) -> str:
    """What a field accepts, in words: its choices, or its type."""
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    kind = getattr(field.annotation, "__name__", str(field.annotation))
    return {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}.get(kind, kind)


def _entry(name: str) -> CriterionEntry:
    if name not in _REGISTRY:
        raise InputError(f"unknown --criterion {name!r}; available: {', '.join(criterion_names())}")
    return _REGISTRY[name]


def _explain(name: str, model: type[CriterionOptions], given: dict, error: ValidationError) -> str:
    first = error.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":
        return f"criterion {name!r} has no option {key!r}; its options: {', '.join(sorted(model.model_fields))}"
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "literal_error":
        return f"criterion {name!r}: unknown {key} {given.get(key)!r}; choose {accepted_values(model.model_fields[key])}"
    if key in model.model_fields:
        return (f"criterion {name!r}: --criterion-option {key}={given.get(key)}: {message}; "
                f"{key} takes {accepted_values(model.model_fields[key])}")
    return f"criterion {name!r}: {message}"
