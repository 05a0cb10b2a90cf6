"""Weights stage: pass rates -> per-problem training weights (fixed for a training stage).

Schemes (``weights.scheme``), the math from ``paced_kernels.weights``:
  beta     w = p^alpha (1-p)^beta                      (Paced; default alpha = beta = 1)
  auto     alpha, beta by moment matching on the zone eps <= p <= 1-eps (eps default 1/K);
           weights outside the zone are 0; falls back to the flat kernel on the zone when the
           matched exponents would be negative
  uniform  w = 1                                        (plain distillation)
  hard     w = 1 if 0 < p < 1 else 0                    (hard filter)
then normalised to unit mean over the training set (``weights.normalize``).

Outputs in the stage folder: weights.parquet / weights.jsonl (id, pass_rate, weight) and
weights.json (scheme, exponents, counts). Zero-weight problems are never loaded by distillation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .logging_utils import is_main_process
from .parallel import barrier, decided_by_rank0
from .tables import load_table, save_table

__all__ = ["compute_weights", "run_weight_stage", "kernel_curve", "kernel_overlay"]


def _wmod():
    try:
        from paced_kernels import weights as w
    except ImportError as e:
        raise ImportError(f"the weights stage needs paced_kernels.weights: {e}") from e
    return w


def _np(x) -> np.ndarray:
    try:
        import torch
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=np.float64)


def compute_weights(p: Sequence[float], cfg, k: int) -> tuple[np.ndarray, dict]:
    """Weights for pass rates ``p`` under WeightConfig ``cfg`` (K rollouts per problem).

    Returns (weights, info) where info records the scheme, exponents actually used (for
    ``auto``), the kernel description and zero-weight counts.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no pass rates to weight")
    w = _wmod()
    info: dict = {"scheme": cfg.scheme, "normalize": cfg.normalize}
    zone = None
    if cfg.scheme == "uniform":
        raw = _np(w.uniform_weights(p))
        info["description"] = "uniform (w = 1)"
    elif cfg.scheme == "hard":
        raw = _np(w.hard_filter_weights(p, normalize=False))
        info["description"] = "hard filter (w = 1 if 0 < p < 1)"
    elif cfg.scheme in ("beta", "auto"):
        alpha, beta = float(cfg.alpha), float(cfg.beta)
        if cfg.scheme == "auto":
            eps = cfg.eps if cfg.eps is not None else 1.0 / max(k, 1)
            zone = np.asarray(w.zone_mask(p, eps), dtype=bool)
            if not zone.any():
                alpha = beta = 0.0
                info["auto_fallback"] = "empty zone"
            else:
                alpha, beta = (float(v) for v in w.moment_matched_exponents(p, eps))
            info["eps"] = eps
        raw = _np(w.beta_weights(p, alpha=alpha, beta=beta, normalize=False))
        if zone is not None:
            raw = np.where(zone, raw, 0.0)
        info.update(alpha=alpha, beta=beta,
                    description=f"{'auto ' if cfg.scheme == 'auto' else ''}beta kernel "
                                f"p^{alpha:.3g} (1-p)^{beta:.3g}")
    else:  # pragma: no cover - the config validates the scheme
        raise ValueError(f"unknown weight scheme {cfg.scheme!r}")
    if raw.shape != p.shape or not np.isfinite(raw).all() or (raw < 0).any():
        raise ValueError(f"weight scheme {cfg.scheme!r} gave invalid weights")
    total = float(raw.sum())
    if cfg.normalize and total > 0:
        weights = raw / raw.mean()
    else:
        weights = raw
    info["n_zero_weight"] = int((weights == 0).sum())
    info["n_positive_weight"] = int((weights > 0).sum())
    info["all_zero"] = bool(total == 0)
    info["mean_raw"] = float(raw.mean())
    info["max_weight"] = float(weights.max())
    return weights, info


def kernel_curve(info: dict, grid: np.ndarray) -> np.ndarray:
    """The (unnormalised) kernel of ``info`` on ``grid`` in [0, 1], for plots."""
    scheme = info.get("scheme", "beta")
    if scheme == "uniform":
        return np.ones_like(grid)
    if scheme == "hard":
        return ((grid > 0) & (grid < 1)).astype(np.float64)
    a, b = info.get("alpha", 1.0), info.get("beta", 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.power(grid, a) * np.power(1 - grid, b)
    if scheme == "auto" and "eps" in info:
        eps = info["eps"]
        y = np.where((grid >= eps - 1e-12) & (grid <= 1 - eps + 1e-12), y, 0.0)
    return y


def kernel_overlay(info: dict, p: Sequence[float]) -> tuple[np.ndarray, np.ndarray, str]:
    """(grid, curve, label) of the kernel for ``plots.pass_rate_histogram``: scaled to unit mean
    over the problems' pass rates ``p`` when the weights are normalised (as used in training)."""
    grid = np.linspace(0, 1, 201)
    curve = kernel_curve(info, grid)
    p = np.asarray(p, dtype=np.float64)
    raw_mean = kernel_curve(info, p).mean() if len(p) else 0
    if info.get("normalize", True) and raw_mean > 0:
        curve = curve / raw_mean
    return grid, curve, info.get("description", "kernel")


def run_weight_stage(out_dir: Path, ids: Sequence[str], pass_rates: np.ndarray, cfg, k: int,
                     logger, label: str = "weights", formats: Sequence[str] = ("parquet", "jsonl"),
                     plot: bool = True) -> tuple[np.ndarray, dict]:
    """Compute (or reload) and save the weights of a training stage."""
    out_dir = Path(out_dir)
    marker = out_dir / "weights.json"
    if decided_by_rank0(marker.exists, "weights"):
        info = json.loads(marker.read_text())
        rows = _load_rows(out_dir)
        if [r["id"] for r in rows] != list(ids):
            raise ValueError(f"{out_dir}: saved weights are for other problems; delete the folder to recompute")
        logger.info(f"{label}: reusing {marker}")
        return np.array([r["weight"] for r in rows], dtype=np.float64), info
    weights, info = compute_weights(pass_rates, cfg, k)
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"id": pid, "pass_rate": float(p), "weight": float(w)}
                for pid, p, w in zip(ids, pass_rates, weights)]
        save_table(out_dir, "weights", rows, formats)
        if plot:
            from .plots import pass_rate_histogram
            pass_rate_histogram(pass_rates, out_dir / "weights.png", k=k, kernel=kernel_overlay(info, pass_rates),
                                title=label)
        marker.write_text(json.dumps(info, indent=2))
    barrier()
    n = len(weights)
    logger.info(f"{label}: {info['description']}; {info['n_zero_weight']}/{n} problems have weight 0 "
                f"(never loaded by distillation)")
    return weights, info


def _load_rows(out_dir: Path) -> list[dict]:
    return load_table(out_dir, "weights")
