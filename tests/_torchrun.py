"""Launch a script under ``torchrun --standalone --nproc_per_node N`` for a multi-rank CPU test.

One place for what every such test needs: the repository on PYTHONPATH, one thread per rank, no
launcher variables inherited from the calling process, a hard timeout (CI never hangs) and, on
failure, the tail of both streams in the assertion message.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for var in _LAUNCHER_VARS:
        env.pop(var, None)
    env.update(extra)
    return env


def run_torchrun(script: Path | str, *args: str, nproc: int = 2, cwd: Path | str = REPO, env: dict | None = None,
                 timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``script args`` on ``nproc`` ranks; fails the test on a non-zero exit or a timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(script), *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env if env is not None else torchrun_env(), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # never hang CI
        pytest.fail(f"torchrun timed out after {exc.timeout}s:\n{(exc.stdout or '')[-3000:]}\n{(exc.stderr or '')[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc
