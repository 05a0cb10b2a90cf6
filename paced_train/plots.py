"""PNG plots of a run (matplotlib, Agg backend, no display needed).

* ``pass_rate_histogram`` - share of problems at each pass rate, with the weight kernel drawn
  over it (right axis, scaled to unit mean over the problems, as used in training).
* ``curriculum_bars``     - Low / Med / High shares at each pass-rate computation.
* ``loss_curve``          - training loss per step, one line per stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["pass_rate_histogram", "curriculum_bars", "loss_curve"]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)


def pass_rate_histogram(p: Sequence[float], path: Path, k: Optional[int] = None,
                        kernel: Optional[tuple] = None, title: str = "pass rates") -> Path:
    """Histogram of ``p``; ``kernel = (grid, curve, label)`` (``weighting.kernel_overlay``) is drawn
    over it on a right axis. Takes the curve ready-made, so plotting needs nothing from weighting."""
    plt = _plt()
    p = np.asarray(p, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if k and k <= 64:  # one bar per attainable value i/K (screened problems land on 0 or 1)
        values = np.round(p * k).astype(int)
        counts = np.bincount(values, minlength=k + 1)[: k + 1]
        ax.bar(np.arange(k + 1) / k, counts / max(len(p), 1), width=0.8 / k, color="#4C72B0",
               label="problems")
    else:
        ax.hist(p, bins=20, range=(0, 1), weights=np.full(len(p), 1 / max(len(p), 1)), color="#4C72B0",
                label="problems")
    ax.set_xlabel("pass rate p")
    ax.set_ylabel("share of problems")
    ax.set_xlim(-0.05, 1.05)
    ax.set_title(f"{title} (n={len(p)}, mean={p.mean():.3f})" if len(p) else title)
    if kernel is not None:
        grid, curve, label = kernel
        ax2 = ax.twinx()
        ax2.plot(grid, curve, color="#C44E52", lw=2, label=label)
        ax2.set_ylabel("weight w(p)", color="#C44E52")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="upper right", fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def curriculum_bars(labels: Sequence[str], stats: Sequence[dict], path: Path) -> Path:
    """Stacked Low / Med / High shares (and the mean pass rate) per computation."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for key, color in (("low", "#C44E52"), ("med", "#DD8452"), ("high", "#55A868")):
        vals = np.array([s[key] for s in stats]) * 100
        ax.bar(x, vals, bottom=bottom, color=color, label=key.capitalize(), width=0.6)
        for xi, (b, v) in enumerate(zip(bottom, vals)):
            if v >= 6:
                ax.text(xi, b + v / 2, f"{v:.0f}%", ha="center", va="center", fontsize=8)
        bottom += vals
    ax.set_xticks(x, labels, rotation=15, fontsize=8)
    ax.set_ylabel("share of problems (%)")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.plot(x, [s["mean"] for s in stats], "ko-", label="mean p")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("mean pass rate")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("curriculum progression")
    _save(fig, path)
    plt.close(fig)
    return Path(path)


def loss_curve(losses: dict[str, Sequence[float]], path: Path) -> Path:
    """Loss per optimizer step; stages follow each other on the x axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    start = 0
    for name, vals in losses.items():
        vals = list(vals)
        if not vals:
            continue
        ax.plot(np.arange(start, start + len(vals)), vals, marker="." if len(vals) < 50 else None, label=name)
        start += len(vals)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weighted KL loss")
    ax.set_title("training loss")
    if losses:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return Path(path)
