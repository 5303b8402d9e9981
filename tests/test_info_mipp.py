"""MIPP selection on a synthetic layer whose redundant channels are known by construction."""
from __future__ import annotations

import json

import pytest
import torch

from edge_compress.compress.metrics import renyi
from edge_compress.compress.metrics.mipp import MippResult, _visit_order, mipp_select

HW = 4              # 4x4 feature maps
N_LABEL = 3         # label-carrying channels 0..2, their exact copies 3..5
N_NOISE = 3         # pure-noise channels 6..8
ORIGINALS = list(range(N_LABEL))
COPIES = list(range(N_LABEL, 2 * N_LABEL))
NOISE = list(range(2 * N_LABEL, 2 * N_LABEL + N_NOISE))
# The regime in which the matrix-Renyi MI at one fixed width behaves like the Shannon MI of the class
# partition: class separation (SEP) far above the kernel width, within-class variation far below it. Only
# there are an exact copy and a pure-noise channel redundant to the estimator: at a width of the order of
# the layer's median distance a copy doubles its channel's weight in the summed distances and counts.
SEP = 3.0
LABEL_NOISE = 0.02
NOISE_STD = 0.3


def synthetic_layer(seed: int = 0, n: int = 128, noise_std: float = NOISE_STD):
    """(features (N, C, HW, HW), target Gram (N, N), layer sigma) of a layer with known redundancy.

    Channel k < N_LABEL is SEP * [y == k] plus small noise (three different functions of the 4-class
    label, each needed to tell all classes apart); channels N_LABEL.. are exact copies of those; the last
    N_NOISE are pure noise. The target is the Gram of a "next layer": a fixed random mix of the
    label-carrying channels plus small noise.
    """
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 4)[torch.randperm(n, generator=g)]
    label = torch.stack([SEP * (y == k).double()[:, None] + LABEL_NOISE * _randn(g, n, HW * HW)
                         for k in range(N_LABEL)], 1)
    noise = noise_std * _randn(g, n, N_NOISE, HW * HW)
    features = torch.cat([label, label, noise], 1).reshape(n, -1, HW, HW)
    mix = _randn(g, 8, N_LABEL)
    nxt = torch.einsum("ok,nkd->nod", mix, label) + LABEL_NOISE * _randn(g, n, 8, HW * HW)
    target = renyi.gaussian_gram(nxt, renyi.paper_sigma(n, nxt[0].numel()))
    return features, target, renyi.paper_sigma(n, HW * HW)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def explicit_mi(features: torch.Tensor, channels: list[int], target: torch.Tensor, sigma: float,
                alpha: float = 2.0) -> float:
    """I(channels; target) with every channel's Gram rebuilt from its features and Hadamard-multiplied."""
    n = features.shape[0]
    gram = torch.ones(n, n, dtype=torch.float64)
    for c in channels:
        flat = features[:, c].reshape(n, -1).to(torch.float64)
        gram = gram * torch.exp(-torch.cdist(flat, flat) ** 2 / (2 * sigma * sigma))
    return float(renyi.mutual_information(gram, target, alpha))


def run(data_seed: int = 0, n: int = 128, noise_std: float = NOISE_STD, **kwargs) -> MippResult:
    features, target, sigma = synthetic_layer(data_seed, n, noise_std)
    return mipp_select(renyi.channel_sq_distances(features), target, sigma, **kwargs)


# -- selection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keeps_exactly_one_of_each_pair_and_drops_noise(seed):
    r = run(seed)
    for orig, copy in zip(ORIGINALS, COPIES):
        assert (orig in r.keep) != (copy in r.keep), (orig, copy, r.keep)
    assert not set(NOISE) & set(r.keep)
    assert len(r.keep) == N_LABEL
    assert sorted(r.keep + r.removed) == list(range(2 * N_LABEL + N_NOISE))


def test_of_two_identical_channels_the_later_is_tested_first_and_goes():
    # The rule on exact ties, with ties built by hand: higher index first among equal MI.
    assert _visit_order([0.5, 0.2, 0.5, 0.2, 0.1]) == [4, 3, 1, 2, 0]
    # On the layer an exact copy gets its original's MI up to rounding; only where the arithmetic gives
    # both exactly the same value (identical data through identical kernels, as on x86 CPUs today) does
    # the rule decide which of the two goes. One of each pair stays either way (the test above).
    r = run()
    for orig, copy in zip(ORIGINALS, COPIES):
        assert r.unit_mi[copy] == pytest.approx(r.unit_mi[orig], rel=1e-12, abs=1e-15)
        if r.unit_mi[copy] == r.unit_mi[orig]:
            assert r.visit_order.index(copy) < r.visit_order.index(orig)
            assert orig in r.keep and copy not in r.keep


def test_visit_order_is_unit_mi_ascending():
    r = run()
    ordered = [r.unit_mi[c] for c in r.visit_order]
    assert ordered == sorted(ordered)
    # noise says almost nothing about the target; a class indicator says H_2(1/4, 3/4) = log(8/5) nats
    assert max(r.unit_mi[c] for c in NOISE) < 0.05
    assert min(r.unit_mi[c] for c in ORIGINALS) == pytest.approx(torch.log(torch.tensor(8 / 5)).item(), abs=0.01)


def test_kept_set_keeps_the_layer_information_within_the_threshold():
    features, target, sigma = synthetic_layer()
    r = mipp_select(renyi.channel_sq_distances(features, torch.float64), target, sigma)
    assert r.mi_full == pytest.approx(explicit_mi(features, list(range(features.shape[1])), target, sigma), abs=1e-9)
    kept_mi = explicit_mi(features, r.keep, target, sigma)
    assert r.threshold <= kept_mi <= r.mi_full
    # dropping any one kept channel as well would lose a class distinction: far below the threshold
    for c in r.keep:
        assert explicit_mi(features, [k for k in r.keep if k != c], target, sigma) < r.threshold - 0.1


@pytest.mark.parametrize("alpha", [2.0, 1.01])
def test_running_sum_equals_rebuilt_gram_for_one_removal(alpha):
    features, target, sigma = synthetic_layer(n=48)
    r = mipp_select(renyi.channel_sq_distances(features, torch.float64), target, sigma, alpha=alpha)
    first = r.visit_order[0]
    rest = [c for c in range(features.shape[1]) if c != first]
    assert r.tested_mi[0] == pytest.approx(explicit_mi(features, rest, target, sigma, alpha), abs=1e-9)


def test_alpha_1_01_on_a_small_case():
    r = run(n=64, noise_std=0.1, alpha=1.01)
    assert r.keep == ORIGINALS
    assert r.threshold < r.mi_full


# -- limits ---------------------------------------------------------------------------------------

def test_never_empties_a_layer_when_the_target_is_independent_noise():
    features, _, sigma = synthetic_layer()
    g = torch.Generator().manual_seed(9)
    noise_target = renyi.gaussian_gram(_randn(g, features.shape[0], 32))
    d2 = renyi.channel_sq_distances(features)
    assert len(mipp_select(d2, noise_target, sigma).keep) >= 1
    assert len(mipp_select(d2, noise_target, sigma, min_keep=4).keep) >= 4


@pytest.mark.parametrize("min_keep", [1, 2, 5])
def test_min_keep_is_the_floor_when_every_removal_is_free(min_keep):
    features, _, sigma = synthetic_layer()
    n = features.shape[0]
    dead_target = torch.ones(n, n, dtype=torch.float64)  # a next layer that carries nothing: every MI is 0
    r = mipp_select(renyi.channel_sq_distances(features), dead_target, sigma, min_keep=min_keep)
    assert r.mi_full == 0.0 and r.threshold == 0.0
    assert r.keep == sorted(r.visit_order[-min_keep:])


def test_single_channel_layer_keeps_its_channel():
    features, target, sigma = synthetic_layer()
    r = mipp_select(renyi.channel_sq_distances(features[:, :1]), target, sigma)
    assert r.keep == [0] and r.removed == [] and r.visit_order == [0]
    assert r.scores.tolist() == [0.0]


# -- threshold, scores, determinism ---------------------------------------------------------------

def test_higher_confidence_lowers_the_threshold():
    features, target, sigma = synthetic_layer()
    d2 = renyi.channel_sq_distances(features)
    thresholds = [mipp_select(d2, target, sigma, confidence=x).threshold for x in (0.5, 0.95, 0.99)]
    assert thresholds[0] == pytest.approx(mipp_select(d2, target, sigma).mi_full, abs=1e-12)
    assert thresholds[0] > thresholds[1] > thresholds[2]


def test_same_seed_gives_identical_results():
    a, b = run(3, seed=5), run(3, seed=5)
    assert a.to_dict() == b.to_dict()
    features, target, sigma = synthetic_layer(3)
    other = mipp_select(renyi.channel_sq_distances(features), target, sigma, seed=6)
    assert other.threshold != a.threshold


def test_scores_rank_kept_above_removed():
    r = run()
    s = r.scores
    assert s.dtype == torch.float64 and s.shape == (len(r.unit_mi),)
    assert min(s[c] for c in r.keep) > max(s[c] for c in r.removed)
    assert [s[c].item() for c in r.removed] == sorted(s[c].item() for c in r.removed)
    kept_by_mi = sorted(r.keep, key=lambda c: r.unit_mi[c])
    assert [s[c].item() for c in kept_by_mi] == sorted(s[c].item() for c in r.keep)


def test_to_dict_is_json():
    r = run()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["keep"] == r.keep and d["removed"] == r.removed and d["scores"] == r.scores.tolist()
    assert d["threshold"] == r.threshold and len(d["tested_mi"]) == len(d["visit_order"])


# -- bad input ------------------------------------------------------------------------------------

def test_nan_in_distances_or_target_raises():
    features, target, sigma = synthetic_layer(n=16)
    d2 = renyi.channel_sq_distances(features)
    bad_d2, bad_target = d2.clone(), target.clone()
    bad_d2[2, 3, 4] = float("nan")
    bad_target[1, 5] = float("nan")
    with pytest.raises(ValueError, match="layer_d2 contains NaN"):
        mipp_select(bad_d2, target, sigma)
    with pytest.raises(ValueError, match="target_gram contains NaN"):
        mipp_select(d2, bad_target, sigma)


def test_fewer_than_four_samples_raises():
    features, target, sigma = synthetic_layer(n=3)
    with pytest.raises(ValueError, match="need at least 4 calibration samples"):
        mipp_select(renyi.channel_sq_distances(features), target, sigma)


@pytest.mark.parametrize("kwargs,match", [
    ({"confidence": 1.0}, "confidence"), ({"n_boot": 1}, "n_boot"), ({"min_keep": 0}, "min_keep"),
    ({"alpha": 0.0}, "alpha"), ({"sigma": 0.0}, "sigma"),
])
def test_bad_options_raise(kwargs, match):
    features, target, sigma = synthetic_layer(n=16)
    args = {"sigma": sigma, **kwargs}
    with pytest.raises(ValueError, match=match):
        mipp_select(renyi.channel_sq_distances(features), target, **args)


def test_target_without_unit_diagonal_raises():
    features, target, sigma = synthetic_layer(n=16)
    with pytest.raises(ValueError, match="unit diagonal"):
        mipp_select(renyi.channel_sq_distances(features), 2 * target, sigma)


# -- device ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path cannot be compared")
@pytest.mark.parametrize("alpha", [2.0, 1.01])
def test_cuda_matches_cpu(alpha):
    features, target, sigma = synthetic_layer(n=64, noise_std=0.1)
    d2 = renyi.channel_sq_distances(features)
    cpu = mipp_select(d2, target, sigma, alpha=alpha)
    gpu = mipp_select(d2.cuda(), target.cuda(), sigma, alpha=alpha)
    assert gpu.scores.device.type == "cuda"
    # Of a channel and its exact copy, which comes first is a tie each device's rounding may break its own
    # way: compare with every copy counted as its original.
    def pair(channels):
        return [c % N_LABEL if c < 2 * N_LABEL else c for c in channels]

    assert pair(gpu.visit_order) == pair(cpu.visit_order)
    assert sorted(pair(gpu.keep)) == sorted(pair(cpu.keep)) and pair(gpu.removed) == pair(cpu.removed)
    assert gpu.unit_mi == pytest.approx(cpu.unit_mi, abs=1e-6)
    assert gpu.tested_mi == pytest.approx(cpu.tested_mi, abs=1e-6)
    assert (gpu.mi_full, gpu.threshold) == pytest.approx((cpu.mi_full, cpu.threshold), abs=1e-6)
