"""Paced distillation under torchrun --nproc_per_node 2 (CPU, gloo): PacedDistillTrainer with DDP,
and ``distillation_loss`` in a user's loop with both models FSDP2-sharded. The step's loss and the
student's gradients equal a float64 full-logits reference over the same global batch (the
normaliser is global; weight-0 rows and the split over ranks change nothing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets")
pytest.importorskip("transformers")

from test_integrations_hf import _models, _reference, _rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "_hf_trainer_worker.py"


def _torchrun(tmp_path: Path, rows: list[dict], mode: str, direction: str) -> dict:
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(rows))
    out = tmp_path / "result.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           "--out", str(out), "--rows", str(rows_file), "--mode", mode, "--direction", direction]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun timed out:\n{(exc.stdout or '')[-3000:]}\n{(exc.stderr or '')[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode,direction", [("ddp", "forward"), ("fsdp2", "reverse")])
def test_two_ranks_equal_float64_reference(tmp_path, mode, direction):
    live = _rows([1.7, 0.4, 1.1, 0.8], seed=11)
    rows = live[:1] + _rows([0.0, 0.0], seed=12) + live[1:]  # filtered out before batching
    student, teacher = _models()
    ref_loss, ref_grads = _reference(student, teacher, live, direction, 1.0)
    got = _torchrun(tmp_path, rows, mode, direction)
    assert got["world_size"] == 2
    assert ("FSDP" in got["distributed_type"]) == (mode == "fsdp2"), got["distributed_type"]
    assert got["loss"] == pytest.approx(ref_loss, rel=1e-4)
    assert set(got["grads"]) == set(ref_grads)
    for name, g in got["grads"].items():
        scale = float(ref_grads[name].abs().max())
        torch.testing.assert_close(g, ref_grads[name], rtol=2e-4, atol=1e-5 * scale, msg=name)
