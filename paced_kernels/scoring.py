"""Batched pass-rate scoring: math-verify's verdicts from a C++ scorer, many threads, no hangs.

    from paced_kernels import scoring
    scoring.verify("\\frac{1}{2}", "... so the answer is $\\boxed{0.5}$")      # True
    scoring.pass_rates(golds, [[r1, ..., r8], ...])                           # np.ndarray

Each verdict is decided in C++ (``paced_kernels._scorer``, built by setup.py) by mirroring
math-verify: the same answer extraction (last ``\\boxed{}``, "final answer is", "Answer:", math
environments, bare numbers, in math-verify's priority order), the same LaTeX normalisation and the
same equivalence rules (see README, "Scoring"). The gold goes through the same extraction; a gold
without math delimiters is read as inline math (``$gold$``).

A gold the C++ side cannot read is first parsed once by math-verify; when that gives a plain
number (or only a string), the C++ side scores all of that gold's responses against it.
Pairs the C++ side still cannot decide are "unknown": by default they are sent to math-verify in
worker processes (``paced_kernels.scoring_pool``: spawn context, started on first use, reused, a
hard per-pair deadline enforced by killing the worker), so a call returns in bounded time from
any thread, and from several at once; otherwise (``fallback=False``) they count as wrong. A pair
past its deadline counts as wrong, math-verify's own convention for a timeout.
:func:`configure_fallback` sets the number of workers and the deadline. Inputs that would exceed a
work limit (exponent towers, huge factorials, answers over 4 KB, ...) are judged wrong without a
fallback: math-verify times out on them. :func:`last_stats` reports how the calling thread's last
call reached its verdicts.
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np

from . import scoring_pool
from ._mv_worker import mv_verdict, wrap_gold as _wrap_gold
from .scoring_pool import FallbackConfig

__all__ = ["verify", "verify_batch", "pass_rates", "extract_answer", "last_stats", "math_verify_verdict",
           "configure_fallback", "FallbackConfig"]

# responses longer than this are never handed to math-verify (its regexes and sympy can take
# unbounded time on them); they keep the C++ verdict ("unknown" counts as wrong)
FALLBACK_MAX_CHARS = 65536

_CODE_FALSE, _CODE_TRUE, _CODE_UNKNOWN, _CODE_LIMIT = 0, 1, 2, 3
_stats_lock = threading.Lock()
_last_stats: dict = {}
_thread_stats = threading.local()
# math-verify's reading of golds the C++ side cannot parse, per gold text (bounded: cleared when full)
_gold_cache: dict = {}
_GOLD_CACHE_MAX = 4096


def _ext():
    try:
        from . import _scorer
    except ImportError as e:  # pragma: no cover - a broken install
        raise ImportError(
            "paced_kernels._scorer (the C++ scorer) is not built; run `pip install -e .` "
            f"(or `python setup.py build_ext --inplace`): {e}") from e
    return _scorer


def math_verify_verdict(gold: str, response: str, timeout: Optional[int] = None) -> bool:
    """The reference verdict: math-verify in this process on the same inputs (gold read as
    ``$gold$`` when it has no math delimiters). ``timeout`` seconds use math-verify's
    signal-based timeouts, which only work in the main thread; ``None`` disables them."""
    return mv_verdict(gold, response, timeout)


def configure_fallback(config: Optional[FallbackConfig] = None, **changes) -> FallbackConfig:
    """Settings of the math-verify fallback: ``workers`` (processes, 0: one per core),
    ``deadline_s`` (hard bound per pair), ``startup_s``, ``mv_timeout_s`` (math-verify's own
    timeouts inside a worker). Takes a FallbackConfig or field=value changes; the running pool is
    restarted with them on the next call."""
    return scoring_pool.configure(config, **changes)


def _fallback_run(tasks: list, stats: dict, prefix: str) -> list:
    """Runs math-verify tasks in the pool; counts timeouts / crashes / errors under ``prefix``."""
    if not tasks:
        return []
    out = scoring_pool.get_pool().run(tasks)
    for status, _ in out:
        if status != "ok":
            key = f"{prefix}_{'timeout' if status == 'timeout' else 'failed'}"
            stats[key] = stats.get(key, 0) + 1
    return out


def _resolve_golds(golds: Sequence, stats: dict) -> Optional[dict]:
    """Golds the C++ side cannot read are parsed once by math-verify (not once per response), in
    the fallback pool. A gold whose parse times out or fails reads as nothing (every verdict False),
    as math-verify's parse returns nothing on a timeout."""
    uniq = list(dict.fromkeys(g for g in golds if isinstance(g, str)))
    stats.setdefault("golds_resolved", 0)
    stats.setdefault("gold_timeout", 0)
    stats.setdefault("gold_failed", 0)
    if not uniq:
        return None
    codes = np.asarray(_ext().gold_codes(uniq))
    todo = [g for g, c in zip(uniq, codes) if c == _CODE_UNKNOWN and len(g) <= FALLBACK_MAX_CHARS]
    missing = [g for g in todo if g not in _gold_cache]
    mv_t = scoring_pool.get_pool().config.mv_timeout_s if missing else None
    got = _fallback_run([("gold", (g, mv_t)) for g in missing], stats, "gold")
    if len(_gold_cache) + len(missing) > _GOLD_CACHE_MAX:
        _gold_cache.clear()
    for g, (status, value) in zip(missing, got):
        _gold_cache[g] = value if status == "ok" else (None, None)
    resolved = {g: _gold_cache[g] for g in todo if _gold_cache.get(g) is not None}
    stats["golds_resolved"] = len(resolved)
    return resolved or None


def _as_str(x, what: str) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    raise TypeError(f"{what} must be str, got {type(x).__name__}")


def _resolve(codes: np.ndarray, golds_of, responses_of, fallback: bool, pre: Optional[dict] = None
             ) -> tuple[np.ndarray, dict]:
    """Turns verdict codes into booleans, running the fallback pool on the undecided ones."""
    verdicts = codes == _CODE_TRUE
    unknown = np.flatnonzero(codes == _CODE_UNKNOWN)
    stats = {
        **(pre or {}),
        "n": int(codes.size),
        "decided": int(((codes == _CODE_TRUE) | (codes == _CODE_FALSE)).sum()),
        "unknown": int(unknown.size),
        "limit": int((codes == _CODE_LIMIT).sum()),
        "fallback": bool(fallback),
        "fallback_used": 0,
        "fallback_true": 0,
        "fallback_timeout": 0,
        "fallback_failed": 0,
        "fallback_skipped_long": 0,
    }
    if fallback and unknown.size:
        idx, tasks = [], []
        mv_t = scoring_pool.get_pool().config.mv_timeout_s
        for i in unknown:
            resp = responses_of(int(i))
            if len(resp) > FALLBACK_MAX_CHARS:
                stats["fallback_skipped_long"] += 1
                continue
            idx.append(int(i))
            tasks.append(("verdict", (golds_of(int(i)), resp, mv_t)))
        for i, (status, value) in zip(idx, _fallback_run(tasks, stats, "fallback")):
            ok = status == "ok" and bool(value)
            stats["fallback_used"] += 1
            stats["fallback_true"] += int(ok)
            verdicts[i] = ok
    return verdicts, stats


def _set_stats(stats: dict) -> None:
    global _last_stats
    _thread_stats.value = dict(stats)
    with _stats_lock:
        _last_stats = dict(stats)


def last_stats() -> dict:
    """How the calling thread's last verify / verify_batch / pass_rates call reached its verdicts
    (a thread that has made none sees the last call of any thread): ``n`` pairs, ``decided`` in
    C++, ``unknown`` (undecided in C++), ``fallback_used`` (sent to math-verify),
    ``fallback_true``, ``fallback_timeout`` (killed at the deadline, counted wrong),
    ``fallback_failed`` (the worker crashed or math-verify raised, counted wrong),
    ``fallback_skipped_long``, ``limit`` (judged wrong by a work limit), ``golds_resolved``
    (distinct golds the C++ side could not read that math-verify parsed once, to a number or a
    string, so their pairs were decided in C++), ``gold_timeout`` / ``gold_failed``."""
    mine = getattr(_thread_stats, "value", None)
    if mine is not None:
        return dict(mine)
    with _stats_lock:
        return dict(_last_stats)


def verify_batch(golds: Sequence[str], responses: Sequence[str], num_threads: Optional[int] = None,
                 fallback: bool = True) -> list[bool]:
    """Verdict per (gold, response) pair; the C++ part releases the GIL and uses ``num_threads``
    threads (default: all cores)."""
    golds = list(golds)
    responses = list(responses)
    if len(golds) != len(responses):
        raise ValueError(f"golds and responses must have the same length, got {len(golds)} and {len(responses)}")
    pre = {"golds_resolved": 0}
    resolved = _resolve_golds(golds, pre) if fallback else None
    codes = np.asarray(_ext().verify_codes(golds, responses, num_threads, resolved))
    verdicts, stats = _resolve(codes, lambda i: _as_str(golds[i], "gold"),
                               lambda i: _as_str(responses[i], "response"), fallback, pre)
    _set_stats(stats)
    return [bool(v) for v in verdicts]


def verify(gold: str, response: str, fallback: bool = True) -> bool:
    """Is the answer given by ``response`` equal to ``gold``?"""
    return verify_batch([gold], [response], num_threads=1, fallback=fallback)[0]


def pass_rates(golds: Sequence[str], responses: Sequence[Sequence[str]], num_threads: Optional[int] = None,
               fallback: bool = True) -> np.ndarray:
    """Fraction of each problem's responses judged correct (float64, one per gold).

    ``responses[i]`` is the list of rollouts for ``golds[i]``; each gold is extracted once. A
    problem without responses raises ValueError (its pass rate is undefined)."""
    golds = list(golds)
    responses = [list(r) if not isinstance(r, (str, bytes)) else r for r in responses]
    if len(golds) != len(responses):
        raise ValueError(f"golds and responses must have the same length, got {len(golds)} and {len(responses)}")
    pre = {"golds_resolved": 0}
    resolved = _resolve_golds(golds, pre) if fallback else None
    codes, counts = _ext().pass_rate_codes(golds, responses, num_threads, resolved)
    codes = np.asarray(codes)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts == 0).any():
        raise ValueError(f"problem {int(np.flatnonzero(counts == 0)[0])} has no responses: its pass rate is undefined")
    owner = np.repeat(np.arange(len(golds)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts.size else np.zeros(0, dtype=np.int64)
    verdicts, stats = _resolve(
        codes, lambda i: _as_str(golds[owner[i]], "gold"),
        lambda i: _as_str(responses[owner[i]][i - starts[owner[i]]], "response"), fallback, pre)
    _set_stats(stats)
    if not counts.size:
        return np.zeros(0, dtype=np.float64)
    correct = np.bincount(owner, weights=verdicts.astype(np.float64), minlength=len(golds))
    return correct / counts


def extract_answer(response: str) -> Optional[str]:
    """The final answer ``response`` gives, as normalised LaTeX (``None`` when there is none).

    When the C++ extractor cannot decide, math-verify's parse is used (in the fallback pool, so
    bounded by its deadline; None on a timeout)."""
    status, out = _ext().extract_answer(response)
    if status in (1, 2):
        return out.decode("utf-8", errors="replace")
    if status == 3:
        text = _as_str(response, "response")
        if len(text) > FALLBACK_MAX_CHARS:
            return None
        pool = scoring_pool.get_pool()
        (st_, value), = pool.run([("extract", (text, pool.config.mv_timeout_s))])
        return value if st_ == "ok" else None
    return None
