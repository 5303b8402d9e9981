"""The shared config base: strict, frozen models whose errors read as one line naming the key and the fix."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import ValidationError, model_validator

from edge_compress.config_base import Config, Items, Rule, RuleBroken, error_line


class Inner(Config):
    size_mb: Annotated[float, Rule("a number > 0", lambda v: v > 0)]
    label: str | None = None


class Outer(Config):
    runs: Annotated[int, Rule("an integer >= 1", lambda v: v >= 1)]
    warmup_runs: Annotated[int | None, Rule("an integer >= 0", lambda v: v >= 0)] = None
    mode: Annotated[Literal["fast", "exact"], Rule("one of fast, exact")] = "fast"
    names: Items[str] = ()
    inner: Inner | None = None
    items: Items[Inner] = ()
    value: float | int | str | None = None

    @model_validator(mode="after")
    def _exact_needs_warmup(self) -> Outer:
        if self.mode == "exact" and self.warmup_runs is None:
            raise RuleBroken("key 'warmup_runs' is required when mode is 'exact'; give warmup_runs")
        return self


def line(data: dict, prefix: str = "") -> str:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    text = error_line(info.value, Outer, prefix, data)
    assert "\n" not in text
    return text


def test_valid_data_builds_a_frozen_hashable_value():
    a = Outer.model_validate({"runs": 3, "names": ["x", "y"], "inner": {"size_mb": 2}, "value": 7})
    assert a.names == ("x", "y") and a.inner.size_mb == 2.0 and isinstance(a.inner.size_mb, float)
    assert a.value == 7 and isinstance(a.value, int)   # an int stays an int where int is allowed
    assert hash(a) == hash(Outer.model_validate({"runs": 3, "names": ["x", "y"], "inner": {"size_mb": 2.0},
                                                 "value": 7}))
    with pytest.raises(ValidationError, match="frozen"):
        a.runs = 4


@pytest.mark.parametrize("data, expected", [
    ({"runs": 1, "rnus": 2}, "unknown key 'rnus'; did you mean 'runs'? (allowed: runs, warmup_runs, mode, names, "
                             "inner, items, value)"),
    ({"runs": 1, "inner": {"size_mb": 1, "lable": "x"}}, "unknown key 'inner.lable'; did you mean 'inner.label'?"),
    ({"runs": 1, 3: "x"}, "unknown key '3'"),
    ({}, "missing required key 'runs'"),
    ({"runs": 1, "inner": {}}, "missing required key 'inner.size_mb'"),
    ({"runs": 0}, "key 'runs' must be an integer >= 1, got 0"),
    ({"runs": "8"}, "key 'runs' must be an integer >= 1, got '8'"),
    ({"runs": True}, "key 'runs' must be an integer >= 1, got True"),
    ({"runs": 1, "warmup_runs": "x"}, "key 'warmup_runs' must be an integer >= 0 or null, got 'x'"),
    ({"runs": 1, "mode": "slow"}, "key 'mode' must be one of fast, exact, got 'slow'"),
    ({"runs": 1, "names": "x"}, "key 'names' must be a list of strings, got 'x'"),
    ({"runs": 1, "names": ["x", 2.5]}, "key 'names[1]' must be a string, got 2.5 (quote it: \"2.5\")"),
    ({"runs": 1, "inner": 5}, "key 'inner' must be a mapping or null, got 5"),
    ({"runs": 1, "items": [{"size_mb": float("inf")}]}, "key 'items[0].size_mb' must be a number > 0, got inf"),
    ({"runs": 1, "value": float("nan")}, "key 'value' must be a number, a string or null, got nan"),
    ({"runs": 1, "mode": "exact"}, "key 'warmup_runs' is required when mode is 'exact'; give warmup_runs"),
])
def test_each_error_is_one_line_naming_the_key(data, expected):
    assert line(data).startswith(expected)


def test_an_unknown_key_is_reported_before_the_errors_it_causes():
    assert line({"rnus": 2}).startswith("unknown key 'rnus'")


def test_prefix_places_the_keys_inside_their_file():
    assert line({"runs": 0}, prefix="measure") == "key 'measure.runs' must be an integer >= 1, got 0"
    assert line({"runs": 1, "x": 1}, prefix="measure").startswith("unknown key 'measure.x'")


def test_a_rule_on_a_list_quotes_the_whole_list():
    class Picks(Config):
        picks: Annotated[Items[str], Rule("a non-empty list of names", lambda v: bool(v))]

    for data, got in (({"picks": []}, "[]"), ({"picks": ["a", 1]}, "['a', 1]")):
        with pytest.raises(ValidationError) as info:
            Picks.model_validate(data)
        assert error_line(info.value, Picks, data=data) == f"key 'picks' must be a non-empty list of names, got {got}"
