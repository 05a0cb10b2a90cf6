"""Pass-rate stage (``paced_train.pass_rates``): sample K rollouts per training problem, verify them, p_i = correct_i / n_i.

Outputs (in ``out_dir``; ``summary.json`` is written last and marks the stage done):
  rollouts.parquet          one row per sampled response: id, sample, token_ids, text, finished, correct
  pass_rates.parquet/.jsonl one row per problem: id, n_samples, n_correct, pass_rate, screened, weight
  pass_rates.png            histogram of the pass rates with the weight kernel drawn over it
  summary.json              bins, mean, counts, weight statistics

Curriculum bins (``pass_rate.bins = [b0, b1]``, default [1/3, 2/3]):
  Low  p <= b0     (too hard for the student now)
  Med  b0 < p < b1 (the frontier)
  High p >= b1     (nearly mastered)
reported as shares of the problems, together with the mean pass rate and the counts at p = 0 and
p = 1 (which Paced weights give zero weight).

Verdicts come from ``paced_kernels.scoring.verify_batch`` (C++ scorer, math-verify semantics);
tests may pass their own verifier.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .logging_utils import is_main_process
from .parallel import barrier, decided_by_rank0
from .rollout import Generation, ProblemRollouts, SamplingSpec, sample_rollouts
from .tables import load_table, save_table

__all__ = ["PassRateResult", "default_verifier", "bin_stats", "run_pass_rate_stage", "load_pass_rates",
           "BIN_NAMES"]

BIN_NAMES = ("Low", "Med", "High")
_TOL = 1e-9


def default_verifier() -> Callable[[list[str], list[str]], list[bool]]:
    """``verify(golds, responses) -> verdicts`` from the project's scorer (paced_kernels.scoring)."""
    try:
        from paced_kernels import scoring as _scoring
    except ImportError as e:
        raise ImportError(f"the pass-rate stage needs paced_kernels.scoring (the math scorer): {e}") from e

    def verify(golds: list[str], responses: list[str]) -> list[bool]:
        return [bool(v) for v in _scoring.verify_batch(list(golds), list(responses))]
    return verify


@dataclass
class PassRateResult:
    ids: list[str]
    pass_rates: np.ndarray
    n_samples: np.ndarray
    n_correct: np.ndarray
    screened: np.ndarray
    rollouts: list[ProblemRollouts] = field(default_factory=list)
    weights: Optional[np.ndarray] = None
    summary: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.n_samples.max()) if len(self.n_samples) else 0


def bin_stats(p: Sequence[float], bins: Sequence[float] = (1 / 3, 2 / 3)) -> dict:
    """Shares of Low / Med / High (see module doc), mean pass rate, counts at 0 and 1."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no pass rates to bin")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("pass rates must lie in [0, 1]")
    b0, b1 = bins
    low = p <= b0 + _TOL
    high = (p >= b1 - _TOL) & ~low
    med = ~low & ~high
    n = p.size
    return {
        "n": int(n),
        "low": float(low.sum() / n), "med": float(med.sum() / n), "high": float(high.sum() / n),
        "mean": float(p.mean()),
        "n_zero": int((p <= _TOL).sum()), "n_one": int((p >= 1 - _TOL).sum()),
        "n_mixed": int(((p > _TOL) & (p < 1 - _TOL)).sum()),
        "bins": [float(b0), float(b1)],
    }


def _result_from_rollouts(ids: list[str], rollouts: list[ProblemRollouts]) -> PassRateResult:
    return PassRateResult(
        ids=list(ids),
        pass_rates=np.array([r.pass_rate for r in rollouts], dtype=np.float64),
        n_samples=np.array([r.n for r in rollouts], dtype=np.int64),
        n_correct=np.array([r.n_correct for r in rollouts], dtype=np.int64),
        screened=np.array([r.screened for r in rollouts], dtype=bool),
        rollouts=rollouts)


# ===================================================================== save / load
def _save(out_dir: Path, res: PassRateResult, formats: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = {"id": [], "sample": [], "token_ids": [], "text": [], "finished": [], "correct": []}
    for pid, r in zip(res.ids, res.rollouts):
        for j, (g, c) in enumerate(zip(r.generations, r.correct)):
            rows["id"].append(pid)
            rows["sample"].append(j)
            rows["token_ids"].append(g.token_ids)
            rows["text"].append(g.text)
            rows["finished"].append(g.finished)
            rows["correct"].append(bool(c))
    table = pa.table({**rows, "token_ids": pa.array(rows["token_ids"], type=pa.list_(pa.int32()))})
    tmp = out_dir / "rollouts.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out_dir / "rollouts.parquet")
    save_table(out_dir, "pass_rates", _pass_rate_rows(res), formats)


def _pass_rate_rows(res: PassRateResult) -> list[dict]:
    rows = []
    for i, pid in enumerate(res.ids):
        row = {"id": pid, "n_samples": int(res.n_samples[i]), "n_correct": int(res.n_correct[i]),
               "pass_rate": float(res.pass_rates[i]), "screened": bool(res.screened[i])}
        if res.weights is not None:
            row["weight"] = float(res.weights[i])
        rows.append(row)
    return rows


def load_pass_rates(out_dir: Path) -> PassRateResult:
    """Reload a finished pass-rate stage (rollouts with token ids included)."""
    import pyarrow.parquet as pq
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    prs = load_table(out_dir, "pass_rates")
    ids = [r["id"] for r in prs]
    pos = {pid: i for i, pid in enumerate(ids)}
    rollouts = [ProblemRollouts(screened=bool(r["screened"])) for r in prs]
    for row in pq.read_table(out_dir / "rollouts.parquet").to_pylist():
        r = rollouts[pos[row["id"]]]
        r.generations.append(Generation(list(row["token_ids"]), row["text"], bool(row["finished"])))
        r.correct.append(bool(row["correct"]))
    res = _result_from_rollouts(ids, rollouts)
    if not np.allclose(res.pass_rates, [r["pass_rate"] for r in prs]):
        raise ValueError(f"{out_dir}: rollouts.parquet and pass_rates disagree (a corrupted stage output?)")
    if prs and "weight" in prs[0]:
        res.weights = np.array([r["weight"] for r in prs], dtype=np.float64)
    res.summary = summary
    return res


# ===================================================================== the stage
def run_pass_rate_stage(out_dir: Path, ids: Sequence[str], prompts: Sequence[Sequence[int]],
                        golds: Sequence[str], engine_factory: Callable, spec: SamplingSpec,
                        k1: Optional[int], verify: Callable, logger, label: str = "pass rates",
                        bins: Sequence[float] = (1 / 3, 2 / 3), formats: Sequence[str] = ("parquet", "jsonl"),
                        weight_fn: Optional[Callable[[np.ndarray, int], tuple[np.ndarray, dict]]] = None,
                        plot: bool = True, step: int = 0) -> PassRateResult:
    """Rollouts -> verdicts -> pass rates (-> weights) -> files, table, histogram.

    Skipped (results reloaded) when ``out_dir/summary.json`` exists (decided on rank 0 and
    broadcast). ``engine_factory()`` is only called when sampling is needed; the engine is closed
    afterwards. ``weight_fn(p, K)`` returns
    (weights, weight info) to store next to the pass rates and to draw the kernel.
    """
    out_dir = Path(out_dir)
    if decided_by_rank0(lambda: (out_dir / "summary.json").exists(), "pass_rates"):
        res = load_pass_rates(out_dir)
        logger.info(f"{label}: reusing {out_dir} (stage already done)")
        _print_table(res.summary, label, logger)
        return res
    engine = engine_factory()
    try:
        rollouts = sample_rollouts(engine, prompts, golds, verify, spec, k1=k1, desc=label)
    finally:
        engine.close()
    res = _result_from_rollouts(list(ids), rollouts)
    stats = bin_stats(res.pass_rates, bins)
    n_rollouts = int(res.n_samples.sum())
    stats.update({"k": spec.n, "k1": k1, "n_rollouts": n_rollouts,
                  "rollouts_saved_by_screening": int(len(ids) * spec.n - n_rollouts),
                  "truncated_share": float(np.mean([not g.finished for r in rollouts for g in r.generations]))})
    winfo: dict = {}
    if weight_fn is not None:
        res.weights, winfo = weight_fn(res.pass_rates, spec.n)
        stats["weights"] = winfo
    res.summary = stats
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        _save(out_dir, res, formats)
        if plot:
            from .plots import pass_rate_histogram
            from .weighting import kernel_overlay
            pass_rate_histogram(res.pass_rates, out_dir / "pass_rates.png", k=spec.n,
                                kernel=kernel_overlay(winfo, res.pass_rates) if winfo else None, title=label)
        (out_dir / "summary.json").write_text(json.dumps(stats, indent=2))
    barrier()
    _print_table(stats, label, logger)
    logger.log({"pass_rate_mean": stats["mean"], "bin_low": stats["low"], "bin_med": stats["med"],
                "bin_high": stats["high"], "n_zero": stats["n_zero"], "n_one": stats["n_one"],
                "n_rollouts": n_rollouts}, step=step, stage=label.replace(" ", "_"))
    return res


def _print_table(stats: dict, label: str, logger) -> None:
    b0, b1 = stats["bins"]
    rows = [[f"Low (p <= {b0:.2f})", f"{100 * stats['low']:.1f}%"],
            [f"Med ({b0:.2f} < p < {b1:.2f})", f"{100 * stats['med']:.1f}%"],
            [f"High (p >= {b1:.2f})", f"{100 * stats['high']:.1f}%"],
            ["mean pass rate", f"{stats['mean']:.3f}"],
            ["p = 0 / p = 1 / mixed", f"{stats['n_zero']} / {stats['n_one']} / {stats['n_mixed']}"]]
    w = stats.get("weights")
    if w:
        rows.append(["weight scheme", w.get("description", w.get("scheme", ""))])
        rows.append(["problems with weight 0", f"{w.get('n_zero_weight', 0)} / {stats['n']}"])
    logger.table(f"{label}: {stats['n']} problems", ["curriculum", "value"], rows)
