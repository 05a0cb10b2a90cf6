"""Checkpoints: DCP round trip, half-written checkpoints, bitwise-identical resumption, final export."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import _distill_worker as W
from paced_train import checkpoint as ckpt

torch.set_num_threads(1)

# 8 problems, 4 per step -> 2 steps per epoch, 2 epochs, warmup so the scheduler state matters
RESUME_CFG = dict(global_batch_problems=4, micro_batch_problems=2, epochs=2, lr_schedule="warmup_constant",
                  warmup_steps=2, checkpoint_every=1, shuffle=True)


class _CrashAt:
    """A logger that kills the run (raises) when step ``n`` is logged, before that step is checkpointed."""

    def __init__(self, n: int):
        self.n = n

    def log(self, metrics, step, stage=""):
        if step == self.n:
            raise RuntimeError("simulated crash")

    def info(self, msg):
        pass

    def warning(self, msg):
        pass


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max {float((a[k] - b[k]).abs().max())})"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    result, student = W.train_tiny(tmp_path_factory.mktemp("full"), RESUME_CFG)
    assert result.steps == 4
    return result, _params(student)


def test_resume_after_crash_is_bitwise_identical(tmp_path, uninterrupted):
    full, full_params = uninterrupted
    with pytest.raises(RuntimeError, match="simulated crash"):
        W.train_tiny(tmp_path, RESUME_CFG, logger=_CrashAt(4))  # dies mid-epoch 2, after checkpoint 3
    root = tmp_path / "stage" / "checkpoints"
    assert ckpt.latest_checkpoint(root) == ckpt.checkpoint_dir(root, 3)
    # a half-written checkpoint (died while saving) must never be resumed from
    (ckpt.checkpoint_dir(root, 4) / "dcp").mkdir(parents=True)
    assert ckpt.latest_checkpoint(root) == ckpt.checkpoint_dir(root, 3)

    resumed, student = W.train_tiny(tmp_path, RESUME_CFG)  # fresh models, same config: resumes
    assert resumed.resumed_from_step == 3
    assert resumed.losses == full.losses  # exact: every step, including the 3 before the crash
    assert resumed.grad_norms == full.grad_norms
    assert resumed.lrs == full.lrs
    _assert_bitwise_equal(_params(student), full_params)
    # keep_last (default 2) pruned older checkpoints; the final one is complete
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [3, 4]


def test_resume_with_larger_step_budget_is_bitwise_identical(tmp_path, uninterrupted):
    full, full_params = uninterrupted
    first, _ = W.train_tiny(tmp_path, dict(RESUME_CFG, max_steps=2, checkpoint_every=0))
    assert first.steps == 2 and first.losses == full.losses[:2]
    resumed, student = W.train_tiny(tmp_path, RESUME_CFG)
    assert resumed.resumed_from_step == 2
    assert resumed.losses == full.losses
    _assert_bitwise_equal(_params(student), full_params)


def test_resume_on_different_data_fails_loudly(tmp_path):
    W.train_tiny(tmp_path, dict(RESUME_CFG, max_steps=1))
    with pytest.raises(ValueError, match="different training data.*data_fingerprint"):
        W.train_tiny(tmp_path, RESUME_CFG, weights=[1.0] * 8)
    with pytest.raises(ValueError, match="seed: saved 0, now 7"):
        W.train_tiny(tmp_path, dict(RESUME_CFG, seed=7))
    state = ckpt.read_train_state(ckpt.latest_checkpoint(tmp_path / "stage" / "checkpoints"))
    assert state["step"] == 1 and state["epoch"] == 0 and state["batch_in_epoch"] == 1
    assert sorted(state["sampler_order"]) == list(range(8)) and len(state["losses"]) == 1


def test_checkpoint_round_trip_restores_model_optimizer_scheduler_rng(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    for _ in range(2):
        model(torch.randn(3, 4)).square().sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    saved_params = _params(model)
    saved_opt = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state_dict()["state"].items()}
    path = ckpt.save_checkpoint(ckpt.checkpoint_dir(tmp_path, 2), model, opt, scheduler=sched,
                                train_state={"step": 2, "epoch": 0, "sampler_order": [2, 0, 1]})
    assert (path / ckpt.COMPLETE_MARKER).is_file()
    expected_draws = (torch.rand(3), np.random.rand(), random.random())

    # a fresh model/optimizer/scheduler and scrambled RNGs
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    model2 = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1, weight_decay=0.01)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    state = ckpt.load_checkpoint(path, model2, opt2, scheduler=sched2)

    assert state == {"step": 2, "epoch": 0, "sampler_order": [2, 0, 1]}
    _assert_bitwise_equal(_params(model2), saved_params)
    for k, v in opt2.state_dict()["state"].items():
        for n, t in v.items():
            assert torch.equal(t, saved_opt[k][n]), (k, n)
    assert sched2.last_epoch == sched.last_epoch and sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    draws = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(draws[0], expected_draws[0]) and draws[1:] == expected_draws[1:]


def test_incomplete_checkpoints_are_ignored_and_refused(tmp_path):
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    assert ckpt.latest_checkpoint(tmp_path / "nothing") is None
    for step in (1, 2, 3):
        ckpt.save_checkpoint(ckpt.checkpoint_dir(tmp_path, step), model, opt, train_state={"step": step}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]
    half = ckpt.checkpoint_dir(tmp_path, 7)
    half.mkdir()
    (tmp_path / "step_notanumber").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_dir(tmp_path, 3)
    with pytest.raises(ValueError, match="incomplete"):
        ckpt.load_checkpoint(half, model, opt)


@pytest.mark.parametrize("tie", [False, True])
def test_export_reloads_with_from_pretrained(tmp_path, tie):
    from transformers import AutoModelForCausalLM

    result, student = W.train_tiny(tmp_path, dict(max_steps=1, activation_checkpointing=True), tie=tie)
    reloaded = AutoModelForCausalLM.from_pretrained(result.student_dir)
    _assert_bitwise_equal(_params(reloaded), _params(student))
    # activation-checkpoint wrappers are gone from the in-memory student after the stage
    assert type(student.model.layers[0]).__name__ == "Qwen3DecoderLayer"
    if tie:
        assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert list(result.student_dir.glob("*.safetensors"))
