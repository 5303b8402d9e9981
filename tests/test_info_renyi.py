"""Matrix-based Renyi estimators: known values, identities between the fast and slow paths, and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from edge_compress.compress.metrics import renyi

ALPHAS = (0.5, 1, 1.01, 2, 3)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gram(seed, n=24, d=3):
    return renyi.gaussian_gram(_randn(n, d, seed=seed))


def _labels(values):
    return torch.tensor(values, dtype=torch.long)


# -- known values ---------------------------------------------------------------------------------

# alpha < 1 is the sensitive case: the ~1e-16 rounding noise of the zero eigenvalues of an all-ones Gram,
# raised to alpha = 0.5, would add ~2e-8 nats if entropy() did not zero eigenvalues at rounding level.
@pytest.mark.parametrize("alpha", [0.5, 1, 1.01, 2, 3])
def test_identical_samples_have_zero_entropy(alpha):
    k = renyi.gaussian_gram(torch.full((7, 3), 2.5), sigma=1.0)
    assert float(renyi.entropy(k, alpha)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_distant_samples_have_entropy_log_n(alpha):
    n = 9
    x = 100.0 * torch.arange(n, dtype=torch.float64).unsqueeze(1)
    k = renyi.gaussian_gram(x, sigma=1.0)
    assert float(renyi.entropy(k, alpha)) == pytest.approx(math.log(n), abs=1e-9)


def test_delta_label_entropy_is_renyi2_of_class_frequencies():
    y = _labels([0] * 5 + [1] * 3 + [2] * 2)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    k = renyi.label_gram(y, "delta")
    assert float(renyi.entropy(k, 2)) == pytest.approx(-math.log(float((p * p).sum())), abs=1e-12)
    assert float(renyi.entropy(k, 1)) == pytest.approx(float(-(p * p.log()).sum()), abs=1e-12)


def test_onehot_label_gram_is_psd_unit_diagonal_and_below_log_k():
    classes = 4
    y = torch.arange(40) % classes
    k = renyi.label_gram(y, "onehot", num_classes=classes)
    assert torch.equal(k.diagonal(), torch.ones(40, dtype=torch.float64))
    assert float(torch.linalg.eigvalsh(k).min()) > -1e-10
    assert float(renyi.entropy(k, 2)) < math.log(classes) - 0.1
    assert float(renyi.entropy(renyi.label_gram(y, "delta"), 2)) == pytest.approx(math.log(classes), abs=1e-12)


# -- fast paths equal slow paths ------------------------------------------------------------------

def test_alpha2_frobenius_path_equals_eigenvalue_path():
    k = torch.stack([_gram(seed) for seed in range(6)])
    a = k / k.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    slow = renyi.spectrum_entropy(torch.linalg.eigvalsh(a).clamp_min(0.0), 2)
    torch.testing.assert_close(renyi.entropy(k, 2), slow, atol=1e-9, rtol=0)


def test_entropy2_from_sq_dist_equals_entropy_of_gram():
    x = _randn(30, 5, seed=1)
    d2 = renyi.sq_distances(x)
    sigma = renyi.median_sigma(d2)
    slow = renyi.entropy(renyi.gram_from_sq_dist(d2, sigma), 2)
    assert float(renyi.entropy2_from_sq_dist(d2, sigma)) == pytest.approx(float(slow), abs=1e-9)
    ky = renyi.label_gram(torch.arange(30) % 3)
    joint = renyi.joint_entropy(renyi.gram_from_sq_dist(d2, sigma), ky, alpha=2)
    assert float(renyi.entropy2_from_sq_dist(d2, sigma, weight_sq=ky * ky)) == pytest.approx(float(joint), abs=1e-9)


def test_entropy2_from_sq_dist_batched_over_channels():
    d2 = renyi.channel_sq_distances(_randn(20, 4, 3, 3, seed=2), dtype=torch.float64)
    fast = renyi.entropy2_from_sq_dist(d2, 2.0)
    slow = renyi.entropy(renyi.gram_from_sq_dist(d2, 2.0), 2)
    assert fast.shape == (4,)
    torch.testing.assert_close(fast, slow, atol=1e-9, rtol=0)


def test_summed_distances_equal_product_of_gaussian_grams():
    xa, xb = _randn(16, 3, seed=3), _randn(16, 5, seed=4)
    sigma = 1.7
    prod = renyi.gaussian_gram(xa, sigma) * renyi.gaussian_gram(xb, sigma)
    summed = renyi.gram_from_sq_dist(renyi.sq_distances(xa) + renyi.sq_distances(xb), sigma)
    torch.testing.assert_close(summed, prod, atol=1e-12, rtol=0)


# -- properties -----------------------------------------------------------------------------------

def test_renyi_entropy_approaches_shannon_monotonically():
    k = _gram(5)
    shannon = float(renyi.entropy(k, 1))
    above = [float(renyi.entropy(k, a)) for a in (1.5, 1.2, 1.1, 1.01, 1.001)]
    below = [float(renyi.entropy(k, a)) for a in (0.5, 0.9, 0.99)]
    assert all(u < v for u, v in zip(above, above[1:])) and above[-1] <= shannon
    assert all(u > v for u, v in zip(below, below[1:])) and below[-1] >= shannon
    assert shannon - above[-1] < 1e-2 and below[-1] - shannon < 1e-1
    assert shannon - above[-1] < (shannon - above[-2]) / 5


def test_mi_of_a_discrete_variable_with_itself_is_its_entropy():
    k = renyi.label_gram(_labels([0, 0, 1, 2, 2, 2, 3, 1, 0, 3]))
    for alpha in (2, 1.01, 1):
        assert float(renyi.mutual_information(k, k, alpha)) == pytest.approx(float(renyi.entropy(k, alpha)), abs=1e-9)


def test_mi_of_a_gaussian_gram_with_itself_is_at_most_its_entropy():
    # K o K is a narrower kernel, not K: the estimator's I(X; X) = 2 S(K) - S(K o K) falls short of S(X)
    k = _gram(6)
    mi, s = float(renyi.mutual_information(k, k, 2)), float(renyi.entropy(k, 2))
    assert 0 < mi <= s


@pytest.mark.parametrize("alpha", (2, 1.01))
def test_mi_is_symmetric_and_non_negative(alpha):
    for seed in range(5):
        x = _randn(24, 3, seed=10 + seed)
        y = x[:, :2] + (seed / 2) * _randn(24, 2, seed=20 + seed)  # from dependent to nearly independent
        kx, ky = renyi.gaussian_gram(x), renyi.gaussian_gram(y)
        xy, yx = renyi.mutual_information(kx, ky, alpha), renyi.mutual_information(ky, kx, alpha)
        assert float(xy) == pytest.approx(float(yx), abs=1e-12)
        assert float(xy) >= -1e-12


@pytest.mark.parametrize("alpha", (2, 1.01, 1, 0.5))
def test_joint_entropy_is_at_least_the_largest_marginal(alpha):
    for seed in range(4):
        ka, kb = _gram(30 + seed), _gram(40 + seed, d=1)
        joint = float(renyi.joint_entropy(ka, kb, alpha=alpha))
        assert joint >= max(float(renyi.entropy(ka, alpha)), float(renyi.entropy(kb, alpha))) - 1e-9


@pytest.mark.parametrize("alpha", (2, 1.01))
def test_cmi_is_zero_when_y_is_a_function_of_z(alpha):
    z = torch.arange(24) % 6
    kx, kz = _gram(7), renyi.label_gram(z)
    for ky in (renyi.label_gram(z // 2), kz):  # a coarsening of Z, and Z itself
        assert float(renyi.conditional_mutual_information(kx, ky, kz, alpha)) == pytest.approx(0.0, abs=1e-9)
    unrelated = renyi.label_gram(torch.arange(24) // 12)  # constant within no class of Z: carries information
    assert float(renyi.conditional_mutual_information(unrelated, unrelated, kz, alpha)) > 0.1


# -- distances, widths and bad input --------------------------------------------------------------

def test_sq_distances_float64_exact_zero_diagonal():
    x = torch.randn(12, 7, generator=torch.Generator().manual_seed(8)) * 1e3 + 5e3
    d2 = renyi.sq_distances(x)
    assert d2.dtype == torch.float64
    assert torch.equal(d2.diagonal(), torch.zeros(12, dtype=torch.float64))
    direct = ((x[:, None].double() - x[None].double()) ** 2).sum(-1)
    torch.testing.assert_close(d2, direct, rtol=1e-9, atol=1e-6)


def test_median_sigma():
    assert renyi.median_sigma(torch.zeros(5, 5)) == 1.0
    d2 = renyi.sq_distances(torch.tensor([[0.0], [1.0], [3.0]]))  # off-diagonal 1, 4, 9 (twice each)
    assert renyi.median_sigma(d2) == pytest.approx(2.0)


def test_bad_rule_kind_and_alpha_raise():
    with pytest.raises(ValueError, match="'bogus'"):
        renyi.width_for(torch.zeros(3, 3), "bogus", 3, 1)
    with pytest.raises(ValueError, match="'cosine'"):
        renyi.label_gram(torch.arange(4), "cosine")
    for alpha in (0, -1.0):
        with pytest.raises(ValueError, match="alpha"):
            renyi.entropy(torch.eye(3), alpha)


def test_results_are_deterministic():
    x = _randn(32, 4, seed=9)
    d2 = renyi.sq_distances(x)
    for alpha in (2, 1.01):
        assert torch.equal(renyi.entropy(renyi.gaussian_gram(x), alpha), renyi.entropy(renyi.gaussian_gram(x), alpha))
    assert torch.equal(renyi.entropy2_from_sq_dist(d2, 1.3), renyi.entropy2_from_sq_dist(d2, 1.3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cpu_and_cuda_agree():
    x = _randn(40, 6, seed=11)
    d2 = renyi.sq_distances(x)
    torch.testing.assert_close(renyi.sq_distances(x.cuda()).cpu(), d2, atol=1e-6, rtol=1e-6)
    k = renyi.gram_from_sq_dist(d2, 2.0)
    for alpha in (2, 1.01, 1):
        torch.testing.assert_close(renyi.entropy(k.cuda(), alpha).cpu(), renyi.entropy(k, alpha), atol=1e-6, rtol=0)
    torch.testing.assert_close(renyi.entropy2_from_sq_dist(d2.cuda(), 2.0).cpu(),
                               renyi.entropy2_from_sq_dist(d2, 2.0), atol=1e-6, rtol=0)
