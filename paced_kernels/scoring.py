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
Pairs the C++ side still cannot decide are "unknown": by default they are sent to math-verify in Python
(in the calling thread, with math-verify's own timeouts where it can use them), otherwise
(``fallback=False``) they count as wrong. Inputs that would exceed a work limit (exponent towers,
huge factorials, answers over 4 KB, ...) are judged wrong without a fallback: math-verify times out
on them. :func:`last_stats` reports how the last call's verdicts were reached.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Optional, Sequence

import numpy as np

__all__ = ["verify", "verify_batch", "pass_rates", "extract_answer", "last_stats", "math_verify_verdict"]

# responses longer than this are never handed to math-verify (its regexes and sympy can take
# unbounded time on them); they keep the C++ verdict ("unknown" counts as wrong)
FALLBACK_MAX_CHARS = 65536
FALLBACK_TIMEOUT_S = 5

_CODE_FALSE, _CODE_TRUE, _CODE_UNKNOWN, _CODE_LIMIT = 0, 1, 2, 3
_stats_lock = threading.Lock()
_last_stats: dict = {}


def _ext():
    try:
        from . import _scorer
    except ImportError as e:  # pragma: no cover - a broken install
        raise ImportError(
            "paced_kernels._scorer (the C++ scorer) is not built; run `pip install -e .` "
            f"(or `python setup.py build_ext --inplace`): {e}") from e
    return _scorer


def _wrap_gold(gold: str) -> str:
    if any(t in gold for t in ("$", "\\boxed", "\\fbox", "\\(", "\\[")):
        return gold
    return f"${gold}$"


def math_verify_verdict(gold: str, response: str, timeout: Optional[int] = None) -> bool:
    """The reference verdict: math-verify on the same inputs (gold read as ``$gold$`` when it has
    no math delimiters). ``timeout`` seconds use math-verify's signal-based timeouts, which only
    work in the main thread; ``None`` disables them."""
    from math_verify import parse, verify as mv_verify

    mv_log = logging.getLogger("math_verify")
    old = mv_log.level
    mv_log.setLevel(logging.ERROR)
    try:
        g = parse(_wrap_gold(gold), parsing_timeout=timeout)
        r = parse(response, parsing_timeout=timeout)
        return bool(mv_verify(g, r, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - math-verify's own convention: an error is a wrong answer
        return False
    finally:
        mv_log.setLevel(old)


@functools.lru_cache(maxsize=4096)
def _gold_from_math_verify(gold: str, timeout: Optional[int]):
    """math-verify's reading of a gold the C++ side cannot parse, as ``(expr_latex, string)`` for
    the C++ scorer, or None when its parsed answer is not a plain number (then every pair with this
    gold goes to the fallback)."""
    import sympy
    from math_verify import parse

    mv_log = logging.getLogger("math_verify")
    old = mv_log.level
    mv_log.setLevel(logging.ERROR)
    try:
        items = parse(_wrap_gold(gold), parsing_timeout=timeout)
    except Exception:  # noqa: BLE001 - an unparseable gold: every verdict is False
        items = []
    finally:
        mv_log.setLevel(old)
    expr = text = None
    for item in items:
        if isinstance(item, str):
            if text is None:
                text = item
        elif expr is not None:
            return None
        elif isinstance(item, sympy.Integer):
            expr = str(int(item))
        elif isinstance(item, sympy.Rational):
            p, q = int(item.p), int(item.q)
            expr = ("-" if p < 0 else "") + f"\\frac{{{abs(p)}}}{{{q}}}"
        else:
            return None
    return expr, text


def _resolve_golds(golds: Sequence, stats: dict) -> Optional[dict]:
    """Golds the C++ side cannot read are parsed once by math-verify (not once per response)."""
    uniq = list(dict.fromkeys(g for g in golds if isinstance(g, str)))
    if not uniq:
        return None
    codes = np.asarray(_ext().gold_codes(uniq))
    timeout = FALLBACK_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    resolved = {}
    for g, code in zip(uniq, codes):
        if code != _CODE_UNKNOWN or len(g) > FALLBACK_MAX_CHARS:
            continue
        r = _gold_from_math_verify(g, timeout)
        if r is not None:
            resolved[g] = r
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
    """Turns verdict codes into booleans, running the fallback on the undecided ones."""
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
        "fallback_skipped_long": 0,
    }
    if fallback and unknown.size:
        timeout = FALLBACK_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
        for i in unknown:
            resp = responses_of(int(i))
            if len(resp) > FALLBACK_MAX_CHARS:
                stats["fallback_skipped_long"] += 1
                continue
            ok = math_verify_verdict(golds_of(int(i)), resp, timeout=timeout)
            stats["fallback_used"] += 1
            stats["fallback_true"] += int(ok)
            verdicts[i] = ok
    return verdicts, stats


def _set_stats(stats: dict) -> None:
    global _last_stats
    with _stats_lock:
        _last_stats = dict(stats)


def last_stats() -> dict:
    """How the last verify / verify_batch / pass_rates call reached its verdicts:
    ``n`` pairs, ``decided`` in C++, ``unknown`` (undecided in C++), ``fallback_used`` (sent to
    math-verify), ``fallback_true``, ``fallback_skipped_long``, ``limit`` (judged wrong by a work
    limit), ``golds_resolved`` (distinct golds the C++ side could not read that math-verify parsed
    once, to a number or a string, so their pairs were decided in C++)."""
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

    When the C++ extractor cannot decide, math-verify's parse is used."""
    status, out = _ext().extract_answer(response)
    if status in (1, 2):
        return out.decode("utf-8", errors="replace")
    if status == 3:
        from math_verify import parse

        try:
            got = parse(_as_str(response, "response"), parsing_timeout=None)
        except Exception:  # noqa: BLE001
            return None
        return str(got[-1]) if got else None
    return None
