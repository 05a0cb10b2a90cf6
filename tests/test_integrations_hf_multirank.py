"""Paced distillation under torchrun --nproc_per_node 2 (CPU, gloo): PacedDistillTrainer with DDP,
and ``distillation_loss`` in a user's loop with both models FSDP2-sharded. The step's loss and the
student's gradients equal a float64 full-logits reference over the same global batch (the
normaliser is global; weight-0 rows and the split over ranks change nothing)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets")
pytest.importorskip("transformers")

from _torchrun import run_torchrun  # noqa: E402
from test_integrations_hf import _models, _reference, _rows  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_hf_trainer_worker.py"


def _torchrun(tmp_path: Path, rows: list[dict], mode: str, direction: str) -> dict:
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(rows))
    out = tmp_path / "result.pt"
    run_torchrun(WORKER, "--out", str(out), "--rows", str(rows_file), "--mode", mode, "--direction", direction,
                 cwd=tmp_path, timeout=300)
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
