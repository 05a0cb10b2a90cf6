"""Paced weights from a dataset's pass-rate column (the math lives in `paced_kernels.weights`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import weights as W

__all__ = ["weights_from_pass_rates", "add_paced_weights"]

_SCHEMES = ("beta", "moment_matched", "hard_filter", "uniform")


def weights_from_pass_rates(pass_rates, scheme: str = "beta", alpha: float = 1.0, beta: float = 1.0,
                            eps: float | None = None, normalize: bool = True) -> np.ndarray:
    """Per-row weights from pass rates in [0, 1].

    scheme "beta": p^alpha (1-p)^beta; "moment_matched": exponents fitted on the zone
    eps <= p <= 1-eps (method.md section 3), rows outside the zone get 0; "hard_filter": 1 if 0<p<1;
    "uniform": 1. ``normalize`` rescales to unit mean over the rows.
    """
    p = np.asarray(pass_rates, dtype=np.float64) if not isinstance(pass_rates, np.ndarray) else pass_rates
    if scheme == "beta":
        return W.beta_weights(p, alpha=alpha, beta=beta, normalize=normalize)
    if scheme == "moment_matched":
        if eps is None:
            raise ValueError("scheme='moment_matched' needs eps (e.g. 1/K for K rollouts per problem)")
        a, b = W.moment_matched_exponents(p, eps)
        w = W.beta_weights(p, alpha=a, beta=b, normalize=False) * W.zone_mask(p, eps)
        return W.normalize_unit_mean(w) if normalize else w
    if scheme == "hard_filter":
        return W.hard_filter_weights(p, normalize=normalize)
    if scheme == "uniform":
        return W.uniform_weights(p)
    raise ValueError(f"scheme must be one of {_SCHEMES}, got {scheme!r}")


def add_paced_weights(dataset: Any, column: str = "pass_rate", weight_column: str = "paced_weight",
                      **kwargs) -> Any:
    """A copy of a `datasets.Dataset` with ``weight_column`` computed from ``column`` (see above)."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise ValueError(f"add_paced_weights takes a datasets.Dataset, got {type(dataset).__name__}")
    if column not in names:
        raise ValueError(f"dataset has no pass-rate column {column!r} (columns: {names})")
    w = weights_from_pass_rates(dataset[column], **kwargs)
    if weight_column in names:
        dataset = dataset.remove_columns(weight_column)
    return dataset.add_column(weight_column, [float(x) for x in w])
