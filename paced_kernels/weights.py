"""Per-problem training weights from pass rates (method.md sections 1-3).

All functions take pass rates ``p`` (array-like of floats in [0, 1]) and return float64 numpy
arrays of the same shape. Bad input (NaN, values outside [0, 1], negative exponents, ...) raises
``ValueError`` naming the problem.

- :func:`beta_weights`              w = p^alpha (1-p)^beta, optionally unit-mean normalised
- :func:`hard_filter_weights`       w = 1 if 0 < p < 1 else 0 (the hard-filter baseline)
- :func:`uniform_weights`           w = 1 (plain distillation)
- :func:`zone_mask`                 the zone of proximal development eps <= p <= 1 - eps
- :func:`moment_matched_exponents`  (alpha, beta) whose Beta(alpha+1, beta+1) density matches the
                                    mean and variance of p on the zone, flat (0, 0) fallback
- :func:`needs_second_phase`, :func:`combine_two_phase`  two-phase screening of rollouts
"""
from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "beta_weights",
    "hard_filter_weights",
    "uniform_weights",
    "normalize_unit_mean",
    "zone_mask",
    "moment_matched_exponents",
    "needs_second_phase",
    "combine_two_phase",
]

# pass rates are k/K; comparisons against eps = 1/K tolerate float round-off of that division
_ZONE_TOL = 1e-12


def _pass_rates(p, name: str = "p") -> np.ndarray:
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an array of numbers in [0, 1]: {e}") from None
    if arr.size and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN ({int(np.isnan(arr).sum())} entries); pass rates must lie in [0, 1]")
    if arr.size and ((arr < 0).any() or (arr > 1).any()):
        bad = arr[(arr < 0) | (arr > 1)]
        raise ValueError(f"{name} must lie in [0, 1]; got {bad.size} value(s) outside, e.g. {bad.flat[0]!r}")
    return arr


def _exponent(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return v


def normalize_unit_mean(w) -> np.ndarray:
    """w / mean(w). All-zero weights stay zero (with a warning): no problem is worth training on."""
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        return w.copy()
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0 to be normalised")
    mean = float(w.mean())
    if mean == 0.0:
        warnings.warn("all weights are zero (every pass rate is 0 or 1?); returning zeros", RuntimeWarning,
                      stacklevel=3)
        return np.zeros_like(w)
    return w / mean


def beta_weights(p, alpha: float = 1.0, beta: float = 1.0, normalize: bool = True) -> np.ndarray:
    """Beta-kernel weights w(p) = p^alpha (1 - p)^beta (method.md section 2).

    The default alpha = beta = 1 is p(1 - p), the Bernoulli variance: zero at p = 0 and p = 1, peak
    at p* = alpha / (alpha + beta). ``normalize=True`` rescales to unit mean over the given set.
    0^0 is taken as 1, so alpha = beta = 0 is the flat kernel.
    """
    p = _pass_rates(p)
    a = _exponent(alpha, "alpha")
    b = _exponent(beta, "beta")
    w = np.power(p, a) * np.power(1.0 - p, b)
    return normalize_unit_mean(w) if normalize else w


def hard_filter_weights(p, normalize: bool = True) -> np.ndarray:
    """Hard-filter baseline: 1 for 0 < p < 1 (the problem is neither always nor never solved), else 0."""
    p = _pass_rates(p)
    w = ((p > 0.0) & (p < 1.0)).astype(np.float64)
    return normalize_unit_mean(w) if normalize else w


def uniform_weights(p) -> np.ndarray:
    """Uniform baseline (plain distillation): every problem gets weight 1 (already unit mean)."""
    p = _pass_rates(p)
    return np.ones_like(p)


def zone_mask(p, eps: float) -> np.ndarray:
    """Boolean mask of the zone of proximal development Z = {eps <= p <= 1 - eps}.

    With K rollouts, eps = 1/K keeps exactly the problems with 0 < p < 1.
    """
    p = _pass_rates(p)
    e = _exponent(eps, "eps")
    if e > 0.5:
        raise ValueError(f"eps must lie in [0, 0.5] (the zone is eps <= p <= 1 - eps), got {eps!r}")
    return (p >= e - _ZONE_TOL) & (p <= 1.0 - e + _ZONE_TOL)


def moment_matched_exponents(p, eps: float) -> tuple[float, float]:
    """Data-driven exponents (method.md section 3).

    On the zone Z = {eps <= p <= 1-eps}, with mu and s2 the mean and (population) variance of p,
    match the Beta(alpha+1, beta+1) density's mean and variance::

        nu = mu (1 - mu) / s2 - 1,   alpha = mu nu - 1,   beta = (1 - mu) nu - 1

    Returns ``(alpha, beta)``. Falls back to the flat kernel ``(0.0, 0.0)`` when the matched
    exponents would be negative (pass rates on Z no more concentrated than uniform), when Z holds
    fewer than two problems, or when p is constant on Z (zero variance: nothing to match).
    """
    p = _pass_rates(p)
    z = p[zone_mask(p, eps)]
    if z.size < 2:
        return 0.0, 0.0
    mu = float(z.mean())
    s2 = float(z.var())
    if s2 <= 0.0 or mu <= 0.0 or mu >= 1.0:
        return 0.0, 0.0
    nu = mu * (1.0 - mu) / s2 - 1.0
    alpha = mu * nu - 1.0
    beta = (1.0 - mu) * nu - 1.0
    if not (alpha >= 0.0 and beta >= 0.0) or not (math.isfinite(alpha) and math.isfinite(beta)):
        return 0.0, 0.0
    return float(alpha), float(beta)


def _counts(c, k: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(c)
    except Exception as e:  # pragma: no cover - np.asarray accepts almost anything
        raise ValueError(f"{name} must be an array of integers: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one count per problem), got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or
                         (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and
                          np.all(arr == np.round(arr)))):
        raise ValueError(f"{name} must hold whole numbers of correct responses, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and ((arr < 0).any() or (arr > k).any()):
        raise ValueError(f"{name} must lie in [0, {k}] (correct responses out of {k} samples)")
    return arr


def _k(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ValueError(f"{name} must be a positive integer number of samples, got {k!r}")
    return int(k)


def needs_second_phase(first_phase_correct_counts, k1: int) -> np.ndarray:
    """Two-phase screening (method.md section 1): which problems get the remaining K - K1 samples.

    A problem whose K1 first-phase responses are all correct (count == K1) or all wrong (count == 0)
    stops there; the rest (0 < count < K1) need the second phase.
    """
    k1 = _k(k1, "k1")
    c = _counts(first_phase_correct_counts, k1, "first_phase_correct_counts")
    return (c > 0) & (c < k1)


def combine_two_phase(first_phase_correct_counts, k1: int, second_phase_correct_counts, k: int) -> np.ndarray:
    """Pass rates after two-phase screening.

    Screened-out problems keep p = c1 / K1 (exactly 0 or 1); the others get
    p = (c1 + c2) / K with c2 correct out of the K - K1 second-phase samples.
    ``second_phase_correct_counts`` lists c2 either only for the problems that needed the second
    phase (in order, length ``needs_second_phase(...).sum()``) or for every problem (length n; the
    entries of screened-out problems are ignored).
    """
    k1 = _k(k1, "k1")
    k = _k(k, "k")
    if k1 >= k:
        raise ValueError(f"k1 must be smaller than k (first phase K1 < K total samples), got k1={k1}, k={k}")
    c1 = _counts(first_phase_correct_counts, k1, "first_phase_correct_counts")
    need = (c1 > 0) & (c1 < k1)
    c2 = _counts(second_phase_correct_counts, k - k1, "second_phase_correct_counts")
    m = int(need.sum())
    if c2.size == m:
        full = np.zeros_like(c1)
        full[need] = c2
    elif c2.size == c1.size:
        full = c2
    else:
        raise ValueError(f"second_phase_correct_counts has {c2.size} entries; expected {m} (problems in the "
                         f"second phase) or {c1.size} (all problems)")
    p = c1.astype(np.float64) / k1
    p[need] = (c1[need] + full[need]).astype(np.float64) / k
    return p
