"""Run logging: metrics to JSONL + TensorBoard (+ optional W&B), rich tables, progress bars.

One ``RunLogger`` per run. Only rank 0 writes files and prints; other ranks get a logger whose
methods are no-ops, so stage code can call it unconditionally.

Interface used by every stage (including distill.py):
  logger.info(msg) / logger.warning(msg)        - a line on the console (rank 0)
  logger.log(metrics: dict, step: int, stage: str) - one JSONL record + TensorBoard scalars
  logger.table(title, columns, rows)            - a rich table on the console (returns it as text)
  logger.progress(iterable, desc=..., total=...) - a progress bar (silent on other ranks)

Progress bars: a tqdm bar when stderr is a terminal; otherwise (a log file, CI, a job scheduler)
one plain line every ``PACED_PROGRESS_INTERVAL`` seconds (default 30) or 10% of the work,
whichever comes first, plus a final line - never thousands of carriage returns.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

__all__ = ["RunLogger", "get_rank", "get_world_size", "is_main_process", "progress", "progress_bar",
           "LineProgress"]


def get_rank() -> int:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except Exception:  # pragma: no cover - torch always present in practice
        pass
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except Exception:  # pragma: no cover
        pass
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return get_rank() == 0


def progress(iterable: Iterable, desc: str = "", total: Optional[int] = None, enabled: bool = True,
             unit: str = "it"):
    """Progress over ``iterable`` on rank 0 (see the module doc); the bare iterable elsewhere or when
    disabled."""
    if not enabled or not is_main_process():
        return iterable
    return progress_bar(iterable, desc=desc, total=total, unit=unit)


def progress_bar(iterable: Optional[Iterable] = None, *, desc: str = "", total: Optional[int] = None,
                 initial: int = 0, unit: str = "it", enabled: bool = True, stream=None):
    """A bar with tqdm's ``update`` / ``set_postfix`` / ``close`` (and iteration when ``iterable`` is
    given): tqdm on a terminal, :class:`LineProgress` otherwise, ``None``-like no-op when disabled
    or not on rank 0."""
    stream = stream if stream is not None else sys.stderr
    if not enabled or not is_main_process():
        return LineProgress(iterable, desc=desc, total=total, initial=initial, unit=unit, silent=True)
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, dynamic_ncols=True,
                    leave=True, file=stream)
    return LineProgress(iterable, desc=desc, total=total, initial=initial, unit=unit, stream=stream)


class LineProgress:
    """Progress as occasional log lines: ``desc: n/total (pct) rate, elapsed, postfix``."""

    def __init__(self, iterable: Optional[Iterable] = None, *, desc: str = "", total: Optional[int] = None,
                 initial: int = 0, unit: str = "it", stream=None, interval_s: Optional[float] = None,
                 silent: bool = False):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.desc, self.total, self.unit, self.silent = desc, total, unit, silent
        self.n = self._start = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = float(os.environ.get("PACED_PROGRESS_INTERVAL", 30)) if interval_s is None else interval_s
        self._t0 = self._last_t = time.monotonic()
        self._last_n = self.n
        self._postfix = ""
        self._closed = False
        self.lines = 0

    def __iter__(self):
        for x in self.iterable:  # type: ignore[union-attr]
            yield x
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def set_postfix(self, **kw) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        tenth = self.total and (self.n - self._last_n) * 10 >= self.total
        if now - self._last_t >= self.interval_s or tenth:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self._last_t, self._last_n = now, self.n
        if self.silent:
            return
        elapsed = now - self._t0
        done = self.n - self._start
        rate = f"{done / elapsed:.2f} {self.unit}/s" if elapsed > 0 and done else f"- {self.unit}/s"
        of = f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f", {self._postfix}" if self._postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}, {rate}, {elapsed:.0f}s elapsed{post}",
              file=self.stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._last_n or self.lines == 0:
                self._emit(time.monotonic())

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _scalar(v: Any) -> Optional[float]:
    try:
        import torch
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
    except Exception:  # pragma: no cover
        pass
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        import numpy as np
        if isinstance(v, np.generic):
            return float(v)
    except Exception:  # pragma: no cover
        pass
    return None


def _jsonable(v: Any) -> Any:
    s = _scalar(v)
    if s is not None and not isinstance(v, (str, bool)):
        if isinstance(v, int):
            return v
        return s if math.isfinite(s) else str(s)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, bool)) or v is None:
        return v
    return str(v)


class RunLogger:
    """Metrics JSONL + TensorBoard (+ W&B) in ``run_dir``; console output through ``rich``."""

    def __init__(self, run_dir: Optional[Path], tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "paced", wandb_entity: Optional[str] = None,
                 wandb_config: Optional[dict] = None, progress_bars: bool = True,
                 level: str = "info", run_name: Optional[str] = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.main = is_main_process()
        self.progress_bars = progress_bars
        self._tb = None
        self._wandb = None
        self._metrics_file = None
        self._log = logging.getLogger("paced_train")
        if not self._log.handlers:
            from rich.logging import RichHandler
            handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False,
                                  console=self._console())
            self._log.addHandler(handler)
            self._log.propagate = False
        self._log.setLevel(getattr(logging, level.upper()))
        if not self.main or self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except Exception as e:  # tensorboard is a dependency, but never fail a run for it
                self.warning(f"TensorBoard disabled: {type(e).__name__}: {e}")
        if wandb:
            try:
                import wandb as _wandb
            except ImportError:
                raise ValueError("logging.wandb=true needs the wandb package: pip install 'paced[wandb]'") from None
            self._wandb = _wandb.init(project=wandb_project, entity=wandb_entity, name=run_name,
                                      config=wandb_config, dir=str(self.run_dir))

    @staticmethod
    def _console():
        from rich.console import Console
        return Console(stderr=True)

    # ------------------------------------------------------------------ console
    def info(self, msg: str) -> None:
        if self.main:
            self._log.info(msg)

    def warning(self, msg: str) -> None:
        if self.main:
            self._log.warning(msg)

    def debug(self, msg: str) -> None:
        if self.main:
            self._log.debug(msg)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        """Print a table (rank 0) and return it as plain text (for saving next to the results)."""
        from rich.console import Console
        from rich.table import Table
        t = Table(title=title, show_lines=False)
        for i, c in enumerate(columns):
            t.add_column(str(c), justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*[_fmt(v) for v in r])
        if self.main:
            Console(stderr=False).print(t)
        plain = Console(record=True, width=200, file=open(os.devnull, "w"))
        plain.print(t)
        return plain.export_text()

    def progress(self, iterable: Iterable, desc: str = "", total: Optional[int] = None, unit: str = "it"):
        return progress(iterable, desc=desc, total=total, enabled=self.progress_bars, unit=unit)

    # ------------------------------------------------------------------ metrics
    def log(self, metrics: dict, step: int = 0, stage: str = "") -> None:
        """One record: JSONL line {"time", "stage", "step", **metrics}; scalars to TensorBoard/W&B."""
        if not self.main:
            return
        record = {"time": round(time.time(), 3), "stage": stage, "step": int(step)}
        record.update({str(k): _jsonable(v) for k, v in metrics.items()})
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(record) + "\n")
        scalars = {k: _scalar(v) for k, v in metrics.items()}
        scalars = {k: v for k, v in scalars.items() if v is not None}
        prefix = f"{stage}/" if stage else ""
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(prefix + k, v, global_step=int(step))
        if self._wandb is not None:
            self._wandb.log({prefix + k: v for k, v in scalars.items()})

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)
