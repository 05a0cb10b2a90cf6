"""Worker processes for the math-verify fallback, with a hard per-task deadline.

math-verify bounds its own time with ``signal.alarm``, which only works in the main thread; from
any other thread it must run with no timeout, and one pathological pair can spend forever in
sympy (some C-level calls ignore signals even in the main thread). So the scorer runs math-verify
in worker processes it owns: started with the spawn context (no forked copy of the caller's
threads or CUDA state), lazily on first use, reused across calls and shut down at exit. A task
past its deadline has its worker killed and replaced; the task comes back as ``"timeout"``. The
same code path serves every calling thread, and several threads at once (each call checks out
its own idle workers).

    pool = scoring_pool.get_pool()
    pool.run([("verdict", (gold, response, 5)), ...])   # [("ok", True), ("timeout", None), ...]
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import multiprocessing as mp
import os
import runpy
import threading
import time
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Optional

__all__ = ["FallbackConfig", "FallbackPool", "WorkerStartError", "configure", "get_pool", "shutdown"]

_WORKER_FILE = str(Path(__file__).with_name("_mv_worker.py"))


@dataclasses.dataclass(frozen=True)
class FallbackConfig:
    """Settings of the fallback pool.

    workers: processes (0: one per core, at most 8). deadline_s: hard wall-clock bound per task,
    counted from when a started worker picks it up. startup_s: bound on a worker's start (spawn +
    math-verify import). mv_timeout_s: math-verify's own timeouts inside a worker (its default,
    5 s, so verdicts match math-verify's main-thread ones)."""

    workers: int = 0
    deadline_s: float = 10.0
    startup_s: float = 60.0
    mv_timeout_s: int = 5

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"FallbackConfig.workers must be an int >= 0 (0: one per core), got {self.workers!r}")
        for key in ("deadline_s", "startup_s"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"FallbackConfig.{key} must be a number > 0, got {v!r}")
        if not isinstance(self.mv_timeout_s, int) or self.mv_timeout_s < 1:
            raise ValueError(f"FallbackConfig.mv_timeout_s must be an int >= 1, got {self.mv_timeout_s!r}")

    @property
    def n_workers(self) -> int:
        return self.workers or max(1, min(8, os.cpu_count() or 1))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=runpy.run_path, args=(_WORKER_FILE,),
                                kwargs={"init_globals": {"_paced_conn": child}, "run_name": "__paced_mv_worker__"},
                                name="paced-mv-worker", daemon=True)
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(5)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(2)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


class WorkerStartError(RuntimeError):
    """A fallback worker process could not start."""


class FallbackPool:
    """A set of math-verify worker processes shared by all threads of this process."""

    def __init__(self, config: Optional[FallbackConfig] = None):
        self.config = config or FallbackConfig()
        self._ctx = mp.get_context("spawn")
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._owned = 0  # idle + checked out
        self._waiting = 0
        self._closed = False
        self._pid = os.getpid()
        self.counters = collections.Counter()  # started / killed / crashed, over the pool's life

    # -- checkout / return -------------------------------------------------------------------------
    def _new_worker(self) -> _Worker:
        if mp.current_process().daemon:
            raise WorkerStartError(
                "the scoring fallback cannot start worker processes from a daemonic process (e.g. a "
                "multiprocessing.Pool worker): score in the parent, or pass fallback=False")
        self.counters["started"] += 1
        return _Worker(self._ctx)

    def _checkout(self, want: int, block: bool) -> list[_Worker]:
        got: list[Optional[_Worker]] = []
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the scoring fallback pool has been shut down")
                while self._idle and len(got) < want:
                    got.append(self._idle.pop())
                while self._owned < self.config.n_workers and len(got) < want:
                    self._owned += 1
                    got.append(None)
                if got or not block:
                    break
                self._waiting += 1
                try:
                    self._cond.wait(1.0)
                finally:
                    self._waiting -= 1
        out = []
        for i, w in enumerate(got):
            if w is None:
                try:
                    w = self._new_worker()
                except BaseException:
                    with self._cond:
                        self._owned -= len(got) - i
                        self._idle.extend(x for x in out)
                        self._cond.notify_all()
                    raise
            out.append(w)
        return out

    def _give_back(self, w: _Worker) -> None:
        with self._cond:
            if self._closed:
                self._owned -= 1
                w.stop()
                return
            self._idle.append(w)
            self._cond.notify()

    def _discard(self, w: _Worker, replace: bool) -> None:
        """Kill ``w``; with ``replace``, a fresh worker (starting in the background) takes its place."""
        w.kill()
        fresh = None
        if replace and not self._closed:
            try:
                fresh = self._new_worker()
            except Exception:  # noqa: BLE001 - the next checkout starts one instead
                fresh = None
        with self._cond:
            if fresh is not None and not self._closed:
                self._idle.append(fresh)
            else:
                self._owned -= 1
                if fresh is not None:
                    fresh.kill()
            self._cond.notify()

    # -- running tasks -----------------------------------------------------------------------------
    def run(self, tasks: list[tuple[str, tuple]]) -> list[tuple[str, object]]:
        """Runs ``(kind, args)`` tasks (kinds of ``_mv_worker.TASKS``); per task ``("ok", value)``,
        ``("timeout", None)`` (killed at the deadline), ``("crashed", None)`` (the worker died) or
        ``("error", message)`` (the task raised). Returns within about
        ``ceil(len(tasks) / workers) * deadline_s`` plus worker start-up."""
        cfg = self.config
        out: list = [None] * len(tasks)
        pending = collections.deque(range(len(tasks)))
        free: list[_Worker] = []
        busy: dict[_Worker, list] = {}  # worker -> [task index, deadline]
        try:
            while pending or busy:
                want = min(len(pending), cfg.n_workers) - len(free) - len(busy)
                if want > 0:
                    free += self._checkout(want, block=not (free or busy))
                while pending and free:
                    w = free.pop()
                    i = pending.popleft()
                    try:
                        w.conn.send(tasks[i])
                    except (OSError, ValueError):  # died while idle: replace it, retry the task
                        pending.appendleft(i)
                        self.counters["crashed"] += 1
                        self._discard(w, replace=True)
                        continue
                    now = time.monotonic()
                    busy[w] = [i, now + cfg.deadline_s if w.ready else w.started + cfg.startup_s]
                if not busy:
                    continue
                now = time.monotonic()
                timeout = max(0.0, min(d for _, d in busy.values()) - now)
                handles = {}
                for w in busy:
                    handles[w.conn] = w
                    handles[w.proc.sentinel] = w
                done = mp_wait(list(handles), timeout)
                seen = set()
                for h in done:
                    w = handles[h]
                    if w in seen or w not in busy:
                        continue
                    seen.add(w)
                    self._on_ready(w, busy, out, free, pending)
                now = time.monotonic()
                for w, (i, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[w]
                        if not w.ready:
                            self.counters["failed_start"] += 1
                            self._discard(w, replace=False)
                            raise WorkerStartError(
                                f"a scoring fallback worker did not start within {cfg.startup_s:g} s "
                                "(FallbackConfig.startup_s)")
                        out[i] = ("timeout", None)
                        self.counters["killed"] += 1
                        self._discard(w, replace=True)
        finally:
            for w in busy:  # an error or interrupt mid-call: their state is unknown
                self._discard(w, replace=False)
            for w in free:
                self._give_back(w)
        return out

    def _on_ready(self, w: _Worker, busy: dict, out: list, free: list, pending) -> None:
        i = busy[w][0]
        try:
            if not w.conn.poll():
                raise EOFError  # only the sentinel fired: the process exited
            msg = w.conn.recv()
        except (EOFError, OSError):
            del busy[w]
            if not w.ready:
                code = w.proc.exitcode
                self.counters["failed_start"] += 1
                self._discard(w, replace=False)
                raise WorkerStartError(
                    f"a scoring fallback worker exited while starting (exit code {code}); with the spawn "
                    "start method a script that scores must guard its entry point with "
                    "`if __name__ == '__main__':`")
            out[i] = ("crashed", None)
            self.counters["crashed"] += 1
            self._discard(w, replace=True)
            return
        if msg == ("ready",):
            w.ready = True
            busy[w][1] = time.monotonic() + self.config.deadline_s
            return
        del busy[w]
        out[i] = (msg[0], msg[1])
        if pending and not self._waiting:
            free.append(w)
        else:  # let a waiting caller have it
            self._give_back(w)

    def shutdown(self) -> None:
        """Stops every idle worker; later calls raise. Busy workers are stopped by their call."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._owned -= len(idle)
        for w in idle:
            w.stop()

    def alive_workers(self) -> int:
        with self._cond:
            return self._owned


_pool: Optional[FallbackPool] = None
_config = FallbackConfig()
_lock = threading.Lock()


def get_pool() -> FallbackPool:
    """The process-wide pool, created on first use (and afresh in a forked child)."""
    global _pool
    with _lock:
        if _pool is None or _pool._pid != os.getpid():
            _pool = FallbackPool(_config)
        return _pool


def configure(config: Optional[FallbackConfig] = None, **changes) -> FallbackConfig:
    """Sets the fallback settings (a FallbackConfig, or field=value changes to the current one);
    the running pool, if any, is shut down and the next call starts one with the new settings."""
    global _config, _pool
    new = config if config is not None else dataclasses.replace(_config, **changes)
    if not isinstance(new, FallbackConfig):
        raise TypeError(f"config must be a FallbackConfig, got {type(new).__name__}")
    with _lock:
        old, _pool, _config = _pool, None, new
    if old is not None and old._pid == os.getpid():
        old.shutdown()
    return new


def shutdown() -> None:
    """Stops the process-wide pool's workers (also run at interpreter exit)."""
    global _pool
    with _lock:
        old, _pool = _pool, None
    if old is not None and old._pid == os.getpid():
        old.shutdown()


atexit.register(shutdown)
