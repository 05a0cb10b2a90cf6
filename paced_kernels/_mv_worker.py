"""math-verify calls, and the loop a fallback worker process runs them in.

This file imports nothing from paced_kernels (nor torch): ``scoring_pool`` starts each worker with
``runpy.run_path`` on this file, so a worker costs only the math-verify + sympy import. In the
worker's main thread math-verify's own signal-based timeouts work; the hard per-task deadline is
enforced from outside, by the parent killing the process.

Protocol on the duplex pipe: the worker sends ``("ready",)`` once, then for each ``(kind, args)``
it receives replies ``("ok", value)`` (``("error", repr)`` when the task itself raised); ``None``
or a closed pipe ends the loop.
"""
from __future__ import annotations

import logging
from typing import Optional

# math-verify's default timeouts (seconds), used where signals work (a worker, or the main thread)
MV_TIMEOUT_S = 5


def wrap_gold(gold: str) -> str:
    """A gold without math delimiters is read as inline math, ``$gold$``."""
    if any(t in gold for t in ("$", "\\boxed", "\\fbox", "\\(", "\\[")):
        return gold
    return f"${gold}$"


class _quiet:
    """math-verify logs a warning per timeout / failed parse; the scorer counts them instead."""

    def __enter__(self):
        self.log = logging.getLogger("math_verify")
        self.old = self.log.level
        self.log.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.log.setLevel(self.old)


def mv_verdict(gold: str, response: str, timeout: Optional[int] = MV_TIMEOUT_S) -> bool:
    """math-verify's verdict (gold read as ``$gold$`` without delimiters); any error is False,
    math-verify's own convention. ``timeout=None`` disables its signal-based timeouts."""
    from math_verify import parse, verify

    with _quiet():
        try:
            g = parse(wrap_gold(gold), parsing_timeout=timeout)
            r = parse(response, parsing_timeout=timeout)
            return bool(verify(g, r, timeout_seconds=timeout))
        except Exception:  # noqa: BLE001
            return False


def mv_gold_reading(gold: str, timeout: Optional[int] = MV_TIMEOUT_S):
    """math-verify's reading of a gold as ``(expr_latex | None, string | None)`` for the C++
    scorer, or None when its parsed answer is not a single plain number (its pairs then go to
    the fallback one by one)."""
    import sympy
    from math_verify import parse

    with _quiet():
        try:
            items = parse(wrap_gold(gold), parsing_timeout=timeout)
        except Exception:  # noqa: BLE001 - an unparseable gold: every verdict is False
            items = []
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


def mv_extract(response: str, timeout: Optional[int] = MV_TIMEOUT_S) -> Optional[str]:
    """math-verify's last parsed answer of ``response`` as a string, or None."""
    from math_verify import parse

    with _quiet():
        try:
            got = parse(response, parsing_timeout=timeout)
        except Exception:  # noqa: BLE001
            return None
    return str(got[-1]) if got else None


def _sleep(seconds: float) -> bool:
    """A task that only takes time (tests of the deadline use it)."""
    import time

    time.sleep(seconds)
    return True


TASKS = {"verdict": mv_verdict, "gold": mv_gold_reading, "extract": mv_extract, "sleep": _sleep}


def serve(conn) -> None:
    """The worker loop: run each task received on ``conn`` and send its result back."""
    # one call before "ready" loads math-verify's lazy parts (grammar, sympy printers), so a task's
    # deadline never pays for them
    mv_verdict("\\frac{1}{2}", "$x = 0.5$", MV_TIMEOUT_S)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        kind, args = msg
        try:
            out = ("ok", TASKS[kind](*args))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which counts it as a failure
            out = ("error", repr(e)[:500])
        conn.send(out)


if __name__ == "__paced_mv_worker__":  # run by scoring_pool through runpy.run_path
    serve(globals()["_paced_conn"])
