"""Greedy CMI channel selection: a synthetic layer with a known answer, the fast path against explicit
Renyi computations, conditioning across layers, the cutoffs, determinism and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edge_compress.compress.metrics import cmi, renyi
from edge_compress.compress.metrics.kmeans import xmeans_cut

pytestmark = pytest.mark.usefixtures("one_thread")

N_CLASSES = 8


def synthetic(n: int = 256, seed: int = 0):
    """(N, 11, 8, 8) features, labels y in 0..7.

    Channels 0-2 carry bit k of y (relu(bit * pattern * 6 + 0.05 noise)), so together they determine y;
    channels 3-5 are exact copies of 0-2; channels 6-10 are pure noise relu(randn).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    bits = []
    for k in range(3):
        pattern = torch.rand(8, 8, generator=g, dtype=torch.float64) + 0.5
        bit = ((y >> k) & 1).to(torch.float64).view(n, 1, 1)
        bits.append(torch.relu(bit * pattern * 6 + 0.05 * torch.randn(n, 8, 8, generator=g, dtype=torch.float64)))
    noise = [torch.relu(torch.randn(n, 8, 8, generator=g, dtype=torch.float64)) for _ in range(5)]
    return torch.stack(bits + [b.clone() for b in bits] + noise, 1).float(), y


def one_of_six(y: torch.Tensor, seed: int = 11) -> torch.Tensor:
    """(N, 6, 8, 8): channel 2 determines y by itself (amplitude 6 per class), the other five are noise."""
    n = len(y)
    g = torch.Generator().manual_seed(seed)
    pattern = torch.rand(8, 8, generator=g, dtype=torch.float64) + 0.5
    label = torch.relu(y.to(torch.float64).view(n, 1, 1) * pattern * 6
                       + 0.05 * torch.randn(n, 8, 8, generator=g, dtype=torch.float64))
    noise = [torch.relu(torch.randn(n, 8, 8, generator=g, dtype=torch.float64)) for _ in range(5)]
    return torch.stack(noise[:2] + [label] + noise[2:], 1).float()


def bits_of(channels) -> set[int]:
    """Which bit each label channel (0-5: originals and copies) carries; noise channels map to -1."""
    return {c % 3 if c < 6 else -1 for c in channels}


def kept_channels(res, copies: bool = False) -> set[int]:
    """The channels `res` keeps; with `copies` (a synthetic() layer) a copy 3-5 counts as its original 0-2:
    which of two identical channels wins their tie is float rounding, not information."""
    return {c % 3 if copies and c < 6 else c for c in res.order[:res.keep]}


def assert_same_selection(got, want, copies: bool = False, atol: float = 1e-5):
    """`got` and `want` keep the same channels with the same curve, to float tolerance.

    Only the kept prefix of the order is compared: past it every candidate adds ~0 nats (the curve's flat
    tail wobbles by ~1e-6 in float32), so which one the greedy search picks next is decided by rounding, which
    differs with the thread count, the CPU's vector kernels and the device. The curve and objective are
    compared with a tolerance for the same reason (e.g. 1.3535980607063545 against ...554 across threads)."""
    assert got.keep == want.keep
    assert kept_channels(got, copies) == kept_channels(want, copies)
    np.testing.assert_allclose(got.curve, want.curve, atol=atol, rtol=0)
    np.testing.assert_allclose(got.objective, want.objective, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def layer():
    f, y = synthetic()
    d2, sigma = cmi.layer_distances(f)
    return d2, sigma, renyi.label_gram(y)


@pytest.fixture(scope="module")
def results(layer):
    d2, sigma, ky = layer
    return {cut: cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(cutoff=cut)) for cut in cmi.CUTOFFS}


# -- the synthetic layer ---------------------------------------------------------------------------------

def test_synthetic_first_three_picks_cover_the_three_bits(results):
    for res in results.values():
        assert bits_of(res.order[:3]) == {0, 1, 2}  # one channel of each original/copy pair, no noise
        assert sorted(res.order) == list(range(11))


def test_synthetic_curve_starts_at_h_y_and_drops_one_bit_per_pick(layer, results):
    _, _, ky = layer
    curve = results["permutation"].curve
    assert len(curve) == 12
    # the layer determines y: I(Y; layer) = H(Y) (the delta label kernel makes H(Y) exact)
    assert curve[0] == pytest.approx(float(renyi.entropy(ky, 2)), abs=1e-5)
    for t in range(3):  # each pick removes about one bit (log 2 nats) of what is left
        assert curve[t] - curve[t + 1] == pytest.approx(math.log(2), abs=0.05)
    assert abs(curve[3]) < 1e-3 * curve[0]
    assert curve[-1] == 0.0
    # the objective I(Y; S_t) climbs to H(Y) over the same three steps
    assert results["permutation"].objective[2] == pytest.approx(curve[0], abs=1e-5)


def test_synthetic_curve_is_non_increasing_up_to_float32_rounding(results):
    # Not monotone to 1e-9: the alpha = 2 path sums float32 Gram entries, and in the flat tail after the
    # three label channels the curve wobbles by up to ~1.5e-6 nats (both signs; curve values ~ +-1e-6).
    curve = np.asarray(results["none"].curve)
    rises = np.diff(curve)
    assert rises.max() < 1e-5
    assert (rises[:3] < -0.5).all()


def test_eigenvalue_path_curve_is_non_increasing_to_1e_9():
    # alpha != 2 goes through float64 eigvalsh: there the curve is monotone to rounding of float64
    f, y = synthetic(192)
    d2, sigma = cmi.layer_distances(f)
    ky = renyi.label_gram(y)
    res = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(alpha=1.01, cutoff="none"))
    assert np.diff(res.curve).max() < 1e-9
    assert res.curve[0] == pytest.approx(float(renyi.entropy(ky, 1.01)), abs=1e-9)
    # alpha = 1.01 picks the same three channels as alpha = 2 on this layer
    fast = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(cutoff="none"))
    assert bits_of(res.order[:3]) == {0, 1, 2}
    assert set(res.order[:3]) == set(fast.order[:3])
    # (At N = 96 alpha = 1.01 ranks the 64-dimensional noise channels first: the estimator's small-sample
    # bias gives a noise channel I(X; Y) ~ 0.77 nats against ~0.70 for a one-bit label channel. That is a
    # property of the estimator near alpha = 1, not of the search, so N = 192 is used here.)


def test_permutation_cutoff_keeps_exactly_three(results):
    res = results["permutation"]
    eta = cmi.CmiConfig().eta
    assert res.keep == 3
    assert len(res.p_values) == 4  # testing stops at the first non-significant step
    assert all(p < eta for p in res.p_values[:3])
    assert res.p_values[3] >= eta


def test_scree_cutoff_keeps_three(results):
    assert results["scree"].scree_candidates[0] == 3
    assert results["scree"].keep == 3
    assert results["permutation"].scree_candidates == results["scree"].scree_candidates


def test_xmeans_cutoff_is_between_one_and_four(results):
    # On this curve (2.05, 1.35, 0.67, 0, ..., 0) x-means returns 2: t = 0, 1 form the first cluster and
    # t = 2 joins the flat tail, one channel short of the three the labels need (see the step-curve test).
    assert 1 <= results["xmeans"].keep <= 4


def test_cutoff_none_keeps_all(results):
    assert results["none"].keep == 11
    assert results["none"].p_values == [] and results["scree"].p_values == []


def test_scores_rank_kept_above_the_rest(results):
    for res in (results["permutation"], results["none"]):
        s = res.scores()
        assert s.shape == (11,)
        kept, rest = res.order[:res.keep], res.order[res.keep:]
        assert all(0.5 < float(s[c]) <= 1.0 for c in kept)
        assert all(0.0 <= float(s[c]) < 0.5 for c in rest)
        by_pick = s[res.order]
        assert (by_pick[1:] < by_pick[:-1]).all()  # strictly decreasing in the order of the picks
        assert float(by_pick[0]) == 1.0


def test_to_dict_round_trips_the_result(results):
    d = results["permutation"].to_dict()
    assert d["keep"] == 3 and d["channels"] == 11 and d["order"] == results["permutation"].order
    assert d["curve"][0] == pytest.approx(results["permutation"].curve[0], abs=1e-6)


# -- the fast path against explicit Renyi computations ---------------------------------------------------

def _gram_of(d2: torch.Tensor, channels, sigma: float) -> torch.Tensor:
    """Hadamard product of the channels' own Gaussian Grams (all ones for the empty set)."""
    k = torch.ones(d2.shape[-2:], dtype=torch.float64)
    for c in channels:
        k = k * renyi.gram_from_sq_dist(d2[c], sigma)
    return k


def _random_layer(n=48, c=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, c, 3, 3, generator=g))
    y = torch.randint(0, 3, (n,), generator=g)
    kz = renyi.gaussian_gram(torch.randn(n, 2, generator=g, dtype=torch.float64))
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(3)])
    return f, y, kz, perms


# alpha = 2 runs in float32 (1e-6); the eigenvalue path is float64 throughout when the distances are
# float64 (1e-9). With the float32 distances layer_distances returns, alpha = 1.01 agrees to ~3e-9 only:
# the float32 sum D_S + D_j differs from the float64 product of Grams, and 1/(1 - alpha) = -100 amplifies it.
@pytest.mark.parametrize("alpha,dtype,tol", [(2.0, torch.float32, 1e-6), (1.01, torch.float64, 1e-9),
                                             (1.01, torch.float32, 1e-8)])
@pytest.mark.parametrize("conditioned", [False, True])
def test_joint_matches_explicit_hadamard_grams(alpha, dtype, tol, conditioned):
    f, y, kz, perms = _random_layer()
    d2, sigma = cmi.layer_distances(f)
    d2 = d2.to(dtype)
    ky = renyi.label_gram(y)
    joint = cmi._Joint(d2, sigma, alpha, ky, kz if conditioned else None)
    kz_ = kz if conditioned else torch.ones_like(ky)
    chosen, rest = [1, 3], [0, 2, 4]
    d_s = d2[chosen].sum(0)

    h = joint.candidates(d_s, rest)
    assert h.shape == (3, 2)
    for i, j in enumerate(rest):
        kx = _gram_of(d2, chosen + [j], sigma)
        assert float(h[i, 0]) == pytest.approx(float(renyi.joint_entropy(kz_, kx, alpha=alpha)), abs=tol)
        assert float(h[i, 1]) == pytest.approx(float(renyi.joint_entropy(ky, kz_, kx, alpha=alpha)), abs=tol)

    kx = _gram_of(d2, chosen, sigma)
    h1 = joint.of(d_s)
    assert h1.shape == (2,)
    assert float(h1[0]) == pytest.approx(float(renyi.joint_entropy(kz_, kx, alpha=alpha)), abs=tol)
    assert float(h1[1]) == pytest.approx(float(renyi.joint_entropy(ky, kz_, kx, alpha=alpha)), abs=tol)
    # the empty set: H(Z) and H(Y, Z)
    h0 = joint.of(torch.zeros_like(d_s))
    assert float(h0[0]) == pytest.approx(float(renyi.entropy(kz_, alpha)), abs=tol)
    assert float(h0[1]) == pytest.approx(float(renyi.joint_entropy(ky, kz_, alpha=alpha)), abs=tol)

    # permuted: channel 2 with its samples permuted (rows and columns of its Gram) joined to two bases
    bases = [chosen, [0, 4]]
    hp = joint.permuted(torch.stack([d2[b].sum(0) for b in bases]), 2, perms)
    assert hp.shape == (2, 3, 2)
    for b, base in enumerate(bases):
        for p, pi in enumerate(perms):
            kj = renyi.gram_from_sq_dist(d2[2][pi][:, pi], sigma)
            kb = _gram_of(d2, base, sigma)
            assert float(hp[b, p, 0]) == pytest.approx(float(renyi.joint_entropy(kz_, kb, kj, alpha=alpha)), abs=tol)
            assert float(hp[b, p, 1]) == pytest.approx(float(renyi.joint_entropy(ky, kz_, kb, kj, alpha=alpha)),
                                                       abs=tol)


def _brute_greedy(d2, sigma, ky, alpha):
    """The reference algorithm, rebuilding every Gram per candidate: order, curve, objective."""
    c = d2.shape[0]
    h_y = float(renyi.entropy(ky, alpha))
    everything = _gram_of(d2, range(c), sigma)

    def left(chosen):  # I(Y; R | S) = H(S, R) + H(Y, S) - H(Y, S, R) - H(S); S u R = all channels
        ks = _gram_of(d2, chosen, sigma)
        return float(renyi.entropy(everything, alpha) + renyi.joint_entropy(ky, ks, alpha=alpha)
                     - renyi.joint_entropy(ky, everything, alpha=alpha) - renyi.entropy(ks, alpha))

    order, remaining, objective = [], list(range(c)), []
    curve = [left([])]
    while remaining:
        gains = []
        for j in remaining:
            kx = _gram_of(d2, order + [j], sigma)
            gains.append(h_y + float(renyi.entropy(kx, alpha)) - float(renyi.joint_entropy(ky, kx, alpha=alpha)))
        best = max(range(len(gains)), key=lambda i: (gains[i], -i))
        srt = sorted(gains, reverse=True)
        assert len(srt) == 1 or srt[0] - srt[1] > 1e-4  # the test layer has no near-ties
        order.append(remaining.pop(best))
        objective.append(gains[best])
        curve.append(left(order) if remaining else 0.0)
    return order, curve, objective


@pytest.mark.parametrize("alpha,tol", [(2.0, 1e-5), (1.5, 1e-7)])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_equals_brute_force(alpha, tol, seed):
    g = torch.Generator().manual_seed(seed)
    n, c, k = 64, 6, 4
    y = torch.randint(0, k, (n,), generator=g)
    strength = torch.linspace(0.2, 2.0, c)[torch.randperm(c, generator=g)]
    means = torch.randn(k, c, 4, generator=g)
    f = torch.relu(torch.randn(n, c, 4, generator=g) + strength.view(1, c, 1) * means[y])
    d2, sigma = cmi.layer_distances(f)
    ky = renyi.label_gram(y)
    order, curve, objective = _brute_greedy(d2, sigma, ky, alpha)
    res = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(alpha=alpha, cutoff="none"))
    assert res.order == order
    np.testing.assert_allclose(res.curve, curve, atol=tol, rtol=0)
    np.testing.assert_allclose(res.objective, objective, atol=tol, rtol=0)


# -- conditioning and layer order ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_layers():
    """a: the synthetic layer (keeps 3 of 11); b: exact copies of a's label channels; c: needs 1 of 6."""
    f, y = synthetic()
    feats = {"a": f, "b": f[:, :3].clone(), "c": one_of_six(y)}
    cache = {name: cmi.layer_distances(v) for name, v in feats.items()}
    ky = renyi.label_gram(y)

    def run(layers, **kw):
        seen = []

        def distances(name):
            seen.append(name)
            return cache[name]

        out = cmi.rank_layers(layers, distances, ky, cmi.CmiConfig(**kw), progress=None)
        return out, seen

    per_layer, _ = run(["a", "b", "c"])
    return run, per_layer, float(renyi.entropy(ky, 2))


def test_per_layer_keeps(three_layers):
    _, per, h_y = three_layers
    assert [per[n].keep for n in "abc"] == [3, 3, 1]
    assert [per[n].channels for n in "abc"] == [11, 3, 6]
    assert per["c"].order[0] == 2
    for n in "abc":
        assert per[n].conditioned_on == []
        assert per[n].curve[0] == pytest.approx(h_y, abs=1e-5)  # each layer alone determines y


@pytest.mark.parametrize("conditioning", ["compact", "full"])
def test_forward_conditioning_removes_what_earlier_layers_explain(three_layers, conditioning):
    run, per, h_y = three_layers
    res, seen = run(["a", "b", "c"], conditioning=conditioning, order="forward")
    assert seen == ["a", "b", "c"]
    assert list(res) == ["a", "b", "c"]
    assert res["a"].conditioned_on == []
    assert_same_selection(res["a"], per["a"], copies=True)   # conditioning on nothing is the per-layer search
    assert res["b"].conditioned_on == ["a"]
    assert abs(res["b"].curve[0]) < 1e-4 * h_y      # given a's kept channels b has nothing left to say
    assert per["b"].curve[0] > 0.9 * h_y             # ... but alone it determines y
    if conditioning == "compact":
        assert res["c"].conditioned_on == ["b"]
        # b's kept channels are bits of y, so c still has about H(Y) - (b's kept bits) to add
        kept_bits = len(bits_of(res["b"].order[:res["b"].keep])) * math.log(2)
        assert res["c"].curve[0] == pytest.approx(max(h_y - kept_bits, 0.0), abs=0.05)
    else:
        assert res["c"].conditioned_on == ["a", "b"]
        assert abs(res["c"].curve[0]) < 1e-4 * h_y


@pytest.mark.parametrize("conditioning", ["compact", "full"])
def test_backward_order_starts_unconditioned_at_the_last_layer(three_layers, conditioning):
    run, per, h_y = three_layers
    res, seen = run(["a", "b", "c"], conditioning=conditioning, order="backward")
    assert seen == ["c", "b", "a"]
    assert list(res) == ["a", "b", "c"]  # returned in execution order
    assert res["c"].conditioned_on == []
    assert_same_selection(res["c"], per["c"])
    assert res["b"].conditioned_on == ["c"]
    assert abs(res["b"].curve[0]) < 1e-4 * h_y
    assert res["a"].conditioned_on == (["b"] if conditioning == "compact" else ["c", "b"])


@pytest.mark.parametrize("conditioning", ["compact", "full"])
def test_bidirectional_starts_at_the_smallest_kept_fraction(three_layers, conditioning):
    run, per, h_y = three_layers
    # c (1 of 6) is in the middle: a (3 of 11) and b (3 of 3) lose less
    res, seen = run(["a", "c", "b"], conditioning=conditioning, order="bidirectional")
    assert seen[:3] == ["a", "c", "b"]           # the per-layer pass over every layer
    assert seen[3:] == ["b", "a"]                # then forward from c, then backward from c
    assert list(res) == ["a", "c", "b"]
    assert res["c"].conditioned_on == []
    assert_same_selection(res["c"], per["c"])
    assert res["b"].conditioned_on == ["c"]
    assert res["a"].conditioned_on == ["c"]
    for n in "ab":  # c determines y, so neither neighbour has anything left given c
        assert abs(res[n].curve[0]) < 1e-4 * h_y


def test_per_layer_conditioning_ignores_the_order(three_layers):
    run, per, _ = three_layers
    for order in ("backward", "bidirectional"):
        res, seen = run(["a", "b", "c"], order=order)
        assert seen == ["a", "b", "c"]
        for n in "abc":
            assert res[n].conditioned_on == []
            assert_same_selection(res[n], per[n], copies=n == "a")


def test_redundant_layer_keeps_one_channel_when_conditioned(three_layers):
    """BUG: b (exact copies of a's three label channels) has nothing to add given a (curve[0] ~ -2e-7), yet
    the permutation cutoff keeps all 3 of its channels: see test_layer_with_nothing_to_add_keeps_one_channel."""
    run, _, h_y = three_layers
    res, _ = run(["a", "b", "c"], conditioning="compact", order="forward")
    assert abs(res["b"].curve[0]) < 1e-4 * h_y
    assert res["b"].keep == 1


@pytest.mark.parametrize("n,seed", [(64, 0), (64, 4), (128, 4), (256, 1)])
def test_layer_with_nothing_to_add_keeps_one_channel(n, seed):
    """BUG (fails for (64, 4), (128, 4), (256, 1)): when the conditioning already determines y, every CMI
    of the search is float32 rounding noise (|cmi| ~ 1e-7); the permutation test's tolerance,
    _NEGLIGIBLE * curve[0], is then ~1e-11, below that rounding, so noise decides the test and noise channels
    come out 'significant' (keep 2, 2 and 11 of 11 here). A layer that adds nothing given Z should keep 1."""
    f, y = synthetic(n, seed)
    d2, sigma = cmi.layer_distances(f)
    ky = renyi.label_gram(y)
    res = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(), cond_gram=ky)  # Z = Y: nothing left to explain
    assert abs(res.curve[0]) < 1e-5
    assert res.keep == 1


# -- cutoff helpers ----------------------------------------------------------------------------------

def test_scree_ranks_the_cut_after_the_big_drop_first():
    # drops 0.5, 0.5, 7, 0.2, 0.2, 0.1: ratios t=1: 1, t=2: 0.07, t=3: 35, t=4: 1, t=5: 2
    assert cmi._scree([10, 9.5, 9, 2, 1.8, 1.6, 1.5]) == [3, 5, 1]
    # a flat tail's rounding-size drops do not make huge ratios: the cut stays after the real drop
    assert cmi._scree([1.0, 0.5, 1e-9, 0.0, 0.0]) == [2, 1]
    assert cmi._scree([1.0, 0.0]) == []


@pytest.mark.parametrize("step", [3, 5, 8])
def test_xmeans_cut_finds_the_boundary_of_a_two_level_curve(step):
    """BUG for step = 8: x-means on the points (t/11, cmi/1) with k <= 6 chosen by BIC splits the long
    first plateau along t (clusters 0-3, 4-7, 8-11), so the 'first index of the second cluster' is 4, in
    the middle of the plateau: the cutoff would keep 4 channels where 8 carry the information."""
    t = np.arange(12, dtype=float)
    curve = np.array([1.0] * step + [0.0] * (12 - step))
    assert xmeans_cut(t, curve) == step


def test_xmeans_cut_keeps_all_on_a_straight_line_of_two_points():
    # one cluster wins (too few points for two): the cut is the last index, i.e. keep all
    assert xmeans_cut(np.arange(2, dtype=float), np.array([1.0, 0.0])) == 1


# -- determinism ---------------------------------------------------------------------------------------

def test_same_seed_same_result_other_seed_same_order(layer):
    d2, sigma, ky = layer
    a = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(seed=0))
    b = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(seed=0))
    c = cmi.greedy_cmi(d2, sigma, ky, cmi.CmiConfig(seed=1))
    assert a.order == b.order and a.curve == b.curve and a.p_values == b.p_values and a.keep == b.keep
    assert c.order == a.order and c.curve == a.curve and c.keep == a.keep
    assert len(c.p_values) == len(a.p_values)


# -- bad and degenerate input -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_raise(bad):
    f, _ = synthetic(16)
    f[3, 2, 1, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        cmi.layer_distances(f)
    d2, sigma = cmi.layer_distances(synthetic(16)[0])
    d2[1, 0, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        cmi.greedy_cmi(d2, sigma, renyi.label_gram(torch.arange(16) % 2), cmi.CmiConfig())


@pytest.mark.parametrize("field,value", [("width", "wide"), ("cutoff", "elbow"), ("conditioning", "sometimes"),
                                         ("order", "sideways")])
def test_unknown_choices_raise_naming_the_value(field, value):
    with pytest.raises(ValueError, match=value):
        cmi.CmiConfig(**{field: value})


def test_bad_numbers_and_width_raise():
    with pytest.raises(ValueError, match="wide"):
        cmi.layer_distances(torch.rand(8, 2, 3), width="wide")
    for kw in ({"alpha": 0.0}, {"permutations": 0}, {"eta": 1.0}, {"eta": 0.0}):
        with pytest.raises(ValueError):
            cmi.CmiConfig(**kw)


@pytest.mark.parametrize("cutoff", cmi.CUTOFFS)
def test_single_channel_layer(cutoff):
    f, y = synthetic(64)
    d2, sigma = cmi.layer_distances(f[:, :1])
    res = cmi.greedy_cmi(d2, sigma, renyi.label_gram(y), cmi.CmiConfig(cutoff=cutoff))
    assert res.order == [0] and res.keep == 1 and len(res.curve) == 2
    assert res.curve[-1] == 0.0 and res.curve[0] > 0.5  # one bit of y
    assert float(res.scores()[0]) == 1.0


@pytest.mark.parametrize("cutoff", cmi.CUTOFFS)
def test_constant_layer_gives_a_finite_curve_and_keeps_at_least_one(cutoff):
    n = 32
    f = torch.ones(n, 4, 3, 3) * torch.tensor([0.0, 1.0, 2.0, 5.0]).view(1, 4, 1, 1)
    d2, sigma = cmi.layer_distances(f)
    assert sigma == 1.0 and float(d2.abs().max()) == 0.0
    res = cmi.greedy_cmi(d2, sigma, renyi.label_gram(torch.arange(n) % 4), cmi.CmiConfig(cutoff=cutoff))
    assert all(math.isfinite(v) for v in res.curve + res.objective + res.p_values)
    assert all(abs(v) < 1e-6 for v in res.curve)  # a constant carries no information
    assert 1 <= res.keep <= 4
    assert sorted(res.order) == [0, 1, 2, 3]


# -- devices -------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("alpha", [2.0, 1.01])
def test_cpu_and_cuda_agree(alpha):
    f, y = synthetic(64 if alpha != 2 else 256)
    ky = renyi.label_gram(y)
    d2, sigma = cmi.layer_distances(f)
    d2_gpu, sigma_gpu = cmi.layer_distances(f.cuda())
    assert d2_gpu.is_cuda
    assert sigma_gpu == pytest.approx(sigma, rel=1e-6)
    torch.testing.assert_close(d2_gpu.cpu(), d2, atol=1e-6 * float(d2.abs().max()), rtol=0)
    cfg = cmi.CmiConfig(alpha=alpha)
    cpu = cmi.greedy_cmi(d2, sigma, ky, cfg)
    gpu = cmi.greedy_cmi(d2.cuda(), sigma, ky.cuda(), cfg)
    assert_same_selection(gpu, cpu, copies=True)
    assert len(gpu.p_values) == len(cpu.p_values)
