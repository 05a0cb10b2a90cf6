"""paced_kernels.weights against hand-computed values (method.md sections 1-3)."""
import numpy as np
import pytest

from paced_kernels import weights as W


def test_beta_default_is_bernoulli_variance():
    p = np.array([0.0, 0.25, 0.5, 1.0])
    # p(1-p) = 0, 3/16, 1/4, 0 ; mean = (3/16 + 4/16) / 4 = 7/64
    raw = W.beta_weights(p, normalize=False)
    np.testing.assert_allclose(raw, [0.0, 3 / 16, 1 / 4, 0.0], rtol=0, atol=1e-15)
    w = W.beta_weights(p)
    np.testing.assert_allclose(w, [0.0, (3 / 16) / (7 / 64), (1 / 4) / (7 / 64), 0.0], rtol=1e-14)
    assert w.mean() == pytest.approx(1.0)


def test_beta_general_exponents_and_peak():
    p = np.array([0.5, 0.75])
    # alpha=2, beta=1: 0.25*0.5 = 0.125 ; 0.5625*0.25 = 0.140625
    np.testing.assert_allclose(W.beta_weights(p, alpha=2, beta=1, normalize=False), [0.125, 0.140625])
    grid = np.linspace(0, 1, 1001)
    w = W.beta_weights(grid, alpha=2, beta=1, normalize=False)
    assert grid[np.argmax(w)] == pytest.approx(2 / 3, abs=1e-3)  # p* = alpha / (alpha + beta)


def test_flat_kernel_and_zero_power():
    p = np.array([0.0, 0.3, 1.0])
    np.testing.assert_array_equal(W.beta_weights(p, alpha=0, beta=0, normalize=False), [1.0, 1.0, 1.0])


def test_hard_filter_and_uniform():
    p = np.array([0.0, 0.125, 0.5, 1.0])
    np.testing.assert_array_equal(W.hard_filter_weights(p, normalize=False), [0, 1, 1, 0])
    np.testing.assert_allclose(W.hard_filter_weights(p), [0, 2, 2, 0])  # mean 1/2 -> x2
    np.testing.assert_array_equal(W.uniform_weights(p), [1, 1, 1, 1])
    assert W.uniform_weights(p).dtype == np.float64


def test_all_zero_weights_warn_and_stay_zero():
    with pytest.warns(RuntimeWarning, match="all weights are zero"):
        w = W.beta_weights([0.0, 1.0, 1.0])
    np.testing.assert_array_equal(w, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [[0.5, np.nan], [-0.1], [1.5], [[0.2, 1.2]]])
def test_invalid_pass_rates_raise(bad):
    for fn in (W.beta_weights, W.hard_filter_weights, W.uniform_weights):
        with pytest.raises(ValueError, match=r"\[0, 1\]|NaN"):
            fn(bad)
    with pytest.raises(ValueError):
        W.moment_matched_exponents(bad, 0.125)


@pytest.mark.parametrize("kw", [dict(alpha=-1), dict(beta=np.inf), dict(alpha="x")])
def test_invalid_exponents_raise(kw):
    with pytest.raises(ValueError, match="alpha|beta"):
        W.beta_weights([0.5], **kw)


def test_moment_matching_reference_checks():
    # method.md: uniform on [0,1] (mu=1/2, s2=1/12) -> alpha=beta=0 ; mu=1/2, s2=1/20 -> alpha=beta=1
    # p in {a, 1-a} equally often has mu=1/2, s2=(1/2-a)^2.
    a12 = 0.5 - np.sqrt(1 / 12)
    a20 = 0.5 - np.sqrt(1 / 20)
    al, be = W.moment_matched_exponents([a12, 1 - a12] * 3, eps=0.0)
    assert al == pytest.approx(0.0, abs=1e-12) and be == pytest.approx(0.0, abs=1e-12)
    al, be = W.moment_matched_exponents([a20, 1 - a20] * 3, eps=0.0)
    assert al == pytest.approx(1.0) and be == pytest.approx(1.0)


def test_moment_matching_hand_example_and_zone():
    # K = 8, eps = 1/8: the zone drops p = 0 and p = 1.
    p = np.array([0.0, 1.0, 0.25, 0.5, 0.5, 0.75, 0.5, 0.5])
    # zone {0.25, .5, .5, .75, .5, .5}: mu = 0.5, s2 = (2 * 0.0625) / 6 = 1/48
    # nu = 0.25 * 48 - 1 = 11 ; alpha = beta = 5.5 - 1 = 4.5
    al, be = W.moment_matched_exponents(p, eps=1 / 8)
    assert al == pytest.approx(4.5) and be == pytest.approx(4.5)
    np.testing.assert_array_equal(W.zone_mask(p, 1 / 8), [False, False, True, True, True, True, True, True])
    # skewed: zone {1/8, 1/8, 1/4}: mu = 1/6, s2 = ((1/24)^2*2 + (1/12)^2)/3 = 1/288
    # nu = (1/6)(5/6)*288 - 1 = 39 ; alpha = 39/6 - 1 = 5.5 ; beta = 39*5/6 - 1 = 31.5
    al, be = W.moment_matched_exponents([0.125, 0.125, 0.25, 0.0], eps=1 / 8)
    assert al == pytest.approx(5.5) and be == pytest.approx(31.5)


def test_moment_matching_flat_fallbacks():
    # more spread than uniform -> negative exponents -> flat
    assert W.moment_matched_exponents([0.125, 0.875] * 4, eps=1 / 8) == (0.0, 0.0)
    # empty zone, single element, constant zone
    assert W.moment_matched_exponents([0.0, 1.0], eps=1 / 8) == (0.0, 0.0)
    assert W.moment_matched_exponents([0.5], eps=1 / 8) == (0.0, 0.0)
    assert W.moment_matched_exponents([0.5, 0.5, 0.5], eps=1 / 8) == (0.0, 0.0)
    with pytest.raises(ValueError, match="eps"):
        W.moment_matched_exponents([0.5, 0.25], eps=0.7)


def test_zone_boundary_is_inclusive_for_k_over_k():
    k = 3
    p = np.arange(k + 1) / k
    np.testing.assert_array_equal(W.zone_mask(p, 1 / k), [False, True, True, False])


def test_two_phase_screening():
    c1 = np.array([0, 4, 2, 1, 3])
    need = W.needs_second_phase(c1, k1=4)
    np.testing.assert_array_equal(need, [False, False, True, True, True])
    # second phase: 4 more samples (K = 8) for the three continuing problems
    p = W.combine_two_phase(c1, 4, [3, 0, 4], k=8)
    np.testing.assert_allclose(p, [0.0, 1.0, 5 / 8, 1 / 8, 7 / 8])
    # full-length form: entries of screened-out problems are ignored
    p_full = W.combine_two_phase(c1, 4, [4, 4, 3, 0, 4], k=8)
    np.testing.assert_allclose(p_full, p)


def test_two_phase_errors():
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        W.needs_second_phase([5], k1=4)
    with pytest.raises(ValueError, match="k1"):
        W.needs_second_phase([1], k1=0)
    with pytest.raises(ValueError, match="whole numbers"):
        W.needs_second_phase([0.5], k1=4)
    with pytest.raises(ValueError, match="entries"):
        W.combine_two_phase([1, 2, 0], 4, [1], k=8)
    with pytest.raises(ValueError, match="smaller"):
        W.combine_two_phase([1], 4, [1], k=4)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        W.combine_two_phase([1], 4, [5], k=8)
