"""Budget parsing, relative budgets resolved against the original model, and the misses report."""
from __future__ import annotations

import pytest

from edge_compress.compress.search.budget import Budget, BudgetSpec, Metrics, Quantity, parse_quantity
from edge_compress.compress.errors import InputError
from helpers_units import one_line

ORIGINAL = Metrics(latency_ms=20.0, latency_kind="measured", memory_mb=80.0, macs=40_000_000, params=1_000_000)


@pytest.mark.parametrize("text,suffix,expected", [
    ("2", False, Quantity(2.0, False)),
    ("2.5", False, Quantity(2.5, False)),
    (" 7 ", False, Quantity(7.0, False)),
    ("50%", False, Quantity(0.5, True)),
    ("100%", False, Quantity(1.0, True)),
    ("0.5x", False, Quantity(0.5, True)),
    ("0.5X", False, Quantity(0.5, True)),
    ("40M", True, Quantity(40e6, False)),
    ("40m", True, Quantity(40e6, False)),
    ("1.5k", True, Quantity(1500.0, False)),
    ("2G", True, Quantity(2e9, False)),
    ("1e3", False, Quantity(1000.0, False)),
    (3, False, Quantity(3.0, False)),
    (0.25, False, Quantity(0.25, False)),
])
def test_parse_quantity(text, suffix, expected):
    assert parse_quantity(text, "--opt", allow_suffix=suffix) == expected


@pytest.mark.parametrize("text", ["40M", "1.5k", "2g"])
def test_suffix_refused_where_not_allowed(text):
    with pytest.raises(InputError) as exc:
        parse_quantity(text, "--latency-ms")
    msg = one_line(str(exc.value))
    assert "--latency-ms" in msg and repr(text) in msg and "50%" in msg
    assert "K/M/G" not in msg


@pytest.mark.parametrize("text", ["", "abc", "fast", "10ms", "1.2.3", "50%%", "x", "%", "5 k m", "-3"])
def test_bad_strings(text):
    with pytest.raises(InputError) as exc:
        parse_quantity(text, "--macs", allow_suffix=True)
    msg = one_line(str(exc.value))
    assert "--macs" in msg and "K/M/G" in msg


@pytest.mark.parametrize("value", [0, -1, -0.5, "0", "0%", "0x", float("nan"), float("inf"), "1e999"])
def test_zero_negative_and_non_finite_refused(value):
    with pytest.raises(InputError) as exc:
        parse_quantity(value, "--params")
    assert "must be positive" in one_line(str(exc.value))


@pytest.mark.parametrize("text", ["150%", "1.5x", "101%"])
def test_more_than_the_original_refused(text):
    with pytest.raises(InputError) as exc:
        parse_quantity(text, "--memory-mb")
    msg = one_line(str(exc.value))
    assert "more than the original" in msg and "100%" in msg


def test_quantity_resolve():
    assert Quantity(0.25, True).resolve(80.0) == 20.0
    assert Quantity(5.0, False).resolve(80.0) == 5.0


# ---- BudgetSpec ----------------------------------------------------------------------------------

def test_latency_and_speedup_together_refused():
    with pytest.raises(InputError) as exc:
        BudgetSpec.from_options(latency_ms="5", speedup=2)
    msg = one_line(str(exc.value))
    assert "--latency-ms" in msg and "--speedup" in msg and "not both" in msg


@pytest.mark.parametrize("speedup", [1, 1.0, 0.5, "1", 0, float("nan")])
def test_speedup_must_exceed_one(speedup):
    with pytest.raises(InputError) as exc:
        BudgetSpec.from_options(speedup=speedup)
    assert "--speedup must be greater than 1" in one_line(str(exc.value))


def test_relative_budget_resolves_against_metrics():
    spec = BudgetSpec.from_options(speedup=4, memory_mb="50%", macs="0.25x", params="0.5x")
    budget = spec.resolve(ORIGINAL)
    assert budget == Budget(latency_ms=5.0, memory_mb=40.0, macs=10_000_000, params=500_000)


def test_absolute_and_relative_latency():
    assert BudgetSpec.from_options(latency_ms="7.5").resolve(ORIGINAL).latency_ms == 7.5
    assert BudgetSpec.from_options(latency_ms="25%").resolve(ORIGINAL).latency_ms == 5.0
    spec = BudgetSpec.from_options(macs="20M", params="1.5k")
    assert spec.resolve(ORIGINAL) == Budget(macs=20e6, params=1500.0)
    assert spec.resolve(ORIGINAL).to_dict() == {"macs": 20e6, "params": 1500.0}


def test_latency_fraction_only_for_relative_latency():
    """What the pipeline judges as a ratio, timing the original and the candidate interleaved."""
    assert BudgetSpec.from_options(speedup=4).latency_fraction == 0.25
    assert BudgetSpec.from_options(latency_ms="75%").latency_fraction == 0.75
    assert BudgetSpec.from_options(latency_ms="7.5").latency_fraction is None
    assert BudgetSpec.from_options(macs="50%").latency_fraction is None


def test_memory_does_not_take_suffixes():
    with pytest.raises(InputError):
        BudgetSpec.from_options(memory_mb="2k")


def test_profile_defaults_used_when_nothing_given():
    spec = BudgetSpec.from_options(default_latency_ms=10.0, default_memory_mb=2000)
    assert spec.latency_ms == Quantity(10.0, False) and spec.memory_mb == Quantity(2000.0, False)
    assert spec.speedup is None and spec.macs is None and spec.params is None
    assert spec.resolve(ORIGINAL) == Budget(latency_ms=10.0, memory_mb=2000.0)
    only_memory = BudgetSpec.from_options(default_memory_mb=512)
    assert only_memory.latency_ms is None and only_memory.memory_mb == Quantity(512.0, False)


def test_options_override_profile_defaults():
    spec = BudgetSpec.from_options(macs="50%", default_latency_ms=10.0, default_memory_mb=2000)
    assert spec.latency_ms is None and spec.memory_mb is None and spec.macs == Quantity(0.5, True)


def test_no_budget_at_all_is_an_error():
    with pytest.raises(InputError) as exc:
        BudgetSpec.from_options()
    msg = one_line(str(exc.value))
    assert "no budget" in msg and "--latency-ms" in msg and "--memory-mb" in msg
    with pytest.raises(InputError):
        BudgetSpec.from_options(default_latency_ms=None, default_memory_mb=None)


# ---- Budget.misses -------------------------------------------------------------------------------

def _metrics(latency=10.0, memory=50.0, macs=1000, params=100) -> Metrics:
    return Metrics(latency_ms=latency, latency_kind="predicted", memory_mb=memory, macs=macs, params=params)


def test_misses_lists_exactly_the_violated_constraints():
    budget = Budget(latency_ms=10.0, memory_mb=50.0, macs=1000, params=100)
    assert budget.misses(_metrics()) == []  # equal to the limit is met
    assert budget.misses(_metrics(latency=12.0)) == ["latency 12 ms > 10 ms"]
    assert budget.misses(_metrics(memory=60.0, params=101)) == ["memory 60 MB > 50 MB", "params 101 > 100"]
    missed = budget.misses(_metrics(latency=11, memory=51, macs=1001, params=101))
    assert [m.split()[0] for m in missed] == ["latency", "memory", "MACs", "params"]


def test_misses_ignores_unset_constraints_and_applies_latency_margin():
    budget = Budget(macs=1000)
    assert budget.misses(_metrics(latency=1e9, memory=1e9, params=10**9)) == []
    assert budget.misses(_metrics(macs=2000)) == ["MACs 2 k > 1 k"]
    lat = Budget(latency_ms=10.0)
    assert lat.misses(_metrics(latency=10.5)) == ["latency 10.5 ms > 10 ms"]
    assert lat.misses(_metrics(latency=10.5), latency_margin=1.1) == []
    assert lat.misses(_metrics(latency=11.5), latency_margin=1.1) == ["latency 11.5 ms > 11 ms"]


def test_metrics_to_dict():
    assert _metrics().to_dict() == {"latency_ms": 10.0, "latency_kind": "predicted", "memory_mb": 50.0,
                                    "macs": 1000, "params": 100}
