"""Information capacity and CHIP independence: known values, the eigen shortcut against SVDs, and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from edge_compress.compress.metrics import capacity as cap


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _reference_independence(m: torch.Tensor) -> torch.Tensor:
    """CHIP by definition: (N, C, P) -> (C,), one SVD per sample and zeroed row."""
    m = m.to(torch.float64)
    out = torch.zeros(m.shape[1], dtype=torch.float64)
    for sample in m:
        full = torch.linalg.matrix_norm(sample, "nuc")
        for c in range(m.shape[1]):
            zeroed = sample.clone()
            zeroed[c] = 0
            out[c] += full - torch.linalg.matrix_norm(zeroed, "nuc")
    return out / m.shape[0]


def _with_duplicates(seed=0):
    """Six unique random maps plus exact copies of the first two (channels 0, 1, 6, 7 are duplicated)."""
    u = _randn(8, 6, 5, 5, seed=seed)
    return torch.cat([u, u[:, :2]], 1)


# -- capacity -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", cap.CAPACITY_METHODS)
def test_capacity_ranks_constant_channels_last_with_finite_scores(method):
    f = _randn(16, 5, 4, 4, seed=1)
    f[:, 1] = 0.0
    f[:, 3] = 2.5
    scores = cap.capacity_from_activations(f, method)
    assert scores.shape == (5,) and bool(torch.isfinite(scores).all())
    assert set(scores.argsort()[:2].tolist()) == {1, 3}


def test_gaussian_capacity_equals_formula_for_known_variance():
    signs = torch.tensor([1.0, -1.0]).repeat(8).reshape(4, 2, 2)  # +-1 over each channel: mean 0, variance 1
    f = torch.stack([3.0 * signs, 0.5 * signs], 1)
    expected = [0.5 * math.log(2 * math.pi * math.e * v) for v in (9.0, 0.25)]
    assert cap.capacity_from_activations(f).tolist() == pytest.approx(expected, abs=1e-12)


def test_histogram_capacity_approaches_gaussian_entropy_on_gaussian_data():
    f = 2.0 * _randn(4000, 1, 3, 3, seed=2)
    expected = 0.5 * math.log(2 * math.pi * math.e * 4.0)
    assert float(cap.capacity_from_activations(f, "histogram")[0]) == pytest.approx(expected, abs=0.05)


def test_capacity_from_weights_formula_and_constant_filter_last():
    w = _randn(4, 3, 3, 3, seed=3).double()
    w[2] = 0.7
    scores = cap.capacity_from_weights(w)
    expected = 0.5 * torch.log(2 * math.pi * math.e * w[0].reshape(-1).var(unbiased=False))
    assert float(scores[0]) == pytest.approx(float(expected), abs=1e-12)
    assert int(scores.argmin()) == 2 and bool(torch.isfinite(scores).all())


# -- independence ---------------------------------------------------------------------------------

def test_independence_ranks_duplicated_channels_below_unique_ones():
    ii = cap.independence_from_activations(_with_duplicates())
    duplicated, unique = ii[[0, 1, 6, 7]], ii[2:6]
    assert float(duplicated.max()) < float(unique.min())


@pytest.mark.parametrize("shape", [(4, 6, 4, 4), (4, 12, 2, 2), (3, 5, 1, 4), (3, 4, 3), (5, 1, 2, 2)],
                         ids=["C<HW", "C>HW", "HW=C-1", "1d-maps", "one-channel"])
def test_eigen_shortcut_equals_svd_reference(shape):
    f = _randn(*shape, seed=4)
    expected = _reference_independence(f.reshape(shape[0], shape[1], -1))
    torch.testing.assert_close(cap.independence_from_activations(f), expected, atol=1e-8, rtol=0)


def test_eigen_shortcut_equals_svd_reference_with_duplicated_and_dead_channels():
    f = _with_duplicates(seed=5).relu()
    f[:, 3] = 0.0
    expected = _reference_independence(f.reshape(8, 8, -1))
    torch.testing.assert_close(cap.independence_from_activations(f), expected, atol=1e-8, rtol=0)


def test_chunking_does_not_change_independence(monkeypatch):
    f = _randn(6, 7, 3, 3, seed=6)
    whole = cap.independence_from_activations(f)
    monkeypatch.setattr(cap, "CHUNK_ELEMENTS", 50)  # one sample and a few channels at a time
    torch.testing.assert_close(cap.independence_from_activations(f), whole, atol=1e-12, rtol=0)


def test_max_samples_uses_the_first_samples():
    f = _randn(6, 4, 3, 3, seed=7)
    assert torch.equal(cap.independence_from_activations(f, max_samples=3), cap.independence_from_activations(f[:3]))


def test_independence_from_weights_matches_reference_and_ranks_duplicates_low():
    u = _randn(5, 2, 3, 3, seed=8)
    w = torch.cat([u, u[:1]])
    ii = cap.independence_from_weights(w)
    torch.testing.assert_close(ii, _reference_independence(w.reshape(1, 6, -1)), atol=1e-8, rtol=0)
    assert float(ii[[0, 5]].max()) < float(ii[1:5].min())


def test_one_channel_layer_scores_its_mean_map_norm():
    f = _randn(5, 1, 2, 2, seed=9)
    ii = cap.independence_from_activations(f)
    assert float(ii[0]) == pytest.approx(float(f.reshape(5, -1).double().norm(dim=1).mean()), abs=1e-12)
    assert cap.capacity_from_activations(f).shape == (1,)
    assert cap.capacity_independence(cap.capacity_from_activations(f), ii).tolist() == [0.0]


# -- combined score -------------------------------------------------------------------------------

def test_capacity_independence_min_max_combination():
    c = torch.tensor([1.0, 2.0, 3.0])
    i = torch.tensor([10.0, 0.0, 5.0])
    assert cap.capacity_independence(c, i, balance=0.5).tolist() == pytest.approx([0.5, 0.5, 1.25])
    assert cap.capacity_independence(torch.full((3,), 4.0), i).tolist() == pytest.approx([1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="same length"):
        cap.capacity_independence(c, i[:2])


# -- bad input and determinism --------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises(bad):
    f = _randn(4, 3, 2, 2, seed=10)
    f[1, 2, 0, 1] = bad
    for fn in (cap.capacity_from_activations, cap.independence_from_activations):
        with pytest.raises(ValueError, match="check the calibration data"):
            fn(f)
    for fn in (cap.capacity_from_weights, cap.independence_from_weights):
        with pytest.raises(ValueError, match="NaN"):
            fn(f[1])


def test_too_few_samples_and_unknown_method_raise():
    f = _randn(1, 3, 2, 2, seed=11)
    for fn in (cap.capacity_from_activations, cap.independence_from_activations):
        with pytest.raises(ValueError, match="at least 2"):
            fn(f)
    with pytest.raises(ValueError, match="'kde'"):
        cap.capacity_from_activations(_randn(4, 3, 2, 2), "kde")


def test_results_identical_on_the_same_input():
    f, w = _randn(6, 5, 3, 3, seed=12), _randn(5, 4, 3, 3, seed=13)
    for method in cap.CAPACITY_METHODS:
        assert torch.equal(cap.capacity_from_activations(f, method), cap.capacity_from_activations(f, method))
    assert torch.equal(cap.independence_from_activations(f), cap.independence_from_activations(f))
    assert torch.equal(cap.capacity_from_weights(w), cap.capacity_from_weights(w))
    assert torch.equal(cap.independence_from_weights(w), cap.independence_from_weights(w))
