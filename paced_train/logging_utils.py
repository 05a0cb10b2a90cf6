"""Run logging: metrics to JSONL + TensorBoard (+ optional W&B), rich tables, progress bars.

One ``RunLogger`` per run. Only rank 0 writes files and prints; other ranks get a logger whose
methods are no-ops, so stage code can call it unconditionally.

Interface used by every stage (including distill.py):
  logger.info(msg) / logger.warning(msg)        - a line on the console (rank 0)
  logger.log(metrics: dict, step: int, stage: str) - one JSONL record + TensorBoard scalars
  logger.table(title, columns, rows)            - a rich table on the console (returns it as text)
  logger.progress(iterable, desc=..., total=...) - a tqdm progress bar (silent on other ranks)
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

__all__ = ["RunLogger", "get_rank", "get_world_size", "is_main_process", "progress"]


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
    """A tqdm bar on rank 0 (stderr); the bare iterable elsewhere or when disabled."""
    if not enabled or not is_main_process():
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True, leave=True,
                file=sys.stderr)


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
