"""Parallelism: process-group setup, activation checkpointing, and FSDP2 under torchrun (2 ranks, gloo)
against one process on the same global batch."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _distill_worker as W
from _torchrun import run_torchrun
from paced_train import parallel

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("_distill_worker.py")


def test_single_process_without_torchrun_has_no_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = parallel.init_distributed()
    assert not env.is_distributed and env.world_size == 1 and env.rank == 0 and env.is_main
    assert not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match="process group"):
        parallel.build_device_mesh(env)
    parallel.teardown_distributed()  # no-op without a group
    assert parallel.all_reduce_sum(torch.tensor(2.5)) == 2.5


def test_shard_for_rank_splits_evenly_and_refuses_uneven():
    items = list(range(8))
    assert parallel.shard_for_rank(items, 0, 2) == [0, 1, 2, 3]
    assert parallel.shard_for_rank(items, 1, 2) == [4, 5, 6, 7]
    assert sum((parallel.shard_for_rank(items, r, 4) for r in range(4)), []) == items
    with pytest.raises(ValueError, match="evenly"):
        parallel.shard_for_rank(items, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        parallel.shard_for_rank(items, 2, 2)


def test_decoder_layers_and_mixed_precision_policy():
    model = W.tiny_qwen3(0)
    assert parallel.decoder_layers(model) is model.model.layers
    with pytest.raises(ValueError, match="decoder layers"):
        parallel.decoder_layers(torch.nn.Linear(2, 2))
    assert parallel.mixed_precision_policy("no") is None
    mp = parallel.mixed_precision_policy("bf16")
    assert mp.param_dtype == torch.bfloat16 and mp.reduce_dtype == torch.float32
    with pytest.raises(ValueError, match="mixed_precision"):
        parallel.mixed_precision_policy("fp8")


def test_activation_checkpointing_keeps_keys_loss_and_gradients():
    plain = W.tiny_qwen3(0)
    wrapped = copy.deepcopy(plain)
    assert parallel.apply_activation_checkpointing(wrapped) == 2
    assert parallel.apply_activation_checkpointing(wrapped) == 0  # idempotent
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    ids = torch.randint(3, W.VOCAB, (2, 7))
    for m in (plain, wrapped):
        m.train()
        m(input_ids=ids, use_cache=False).logits.logsumexp(-1).sum().backward()  # no KV cache under AC
    for (n, a), (_, b) in zip(plain.named_parameters(), wrapped.named_parameters()):
        assert torch.equal(a.grad, b.grad), n
    parallel.remove_activation_checkpointing(wrapped)
    assert type(wrapped.model.layers[0]) is type(plain.model.layers[0])


def _torchrun(out: Path, cfg: dict, *extra: str) -> None:
    run_torchrun(WORKER, "--out", str(out), "--cfg", json.dumps(cfg), *extra)


@pytest.mark.slow
def test_torchrun_two_ranks_matches_single_process(tmp_path):
    """2 ranks x 2 micro-batches of 1 problem (FSDP2, gloo) vs 1 process x 4 micro-batches: same losses,
    gradient norms and final parameters. Tied embeddings, activation checkpointing, RKL with 2 rollouts
    per problem, and a resume from a DCP checkpoint written by the sharded run."""
    cfg = dict(loss="rkl", global_batch_problems=4, micro_batch_problems=1, activation_checkpointing=True,
               lr_schedule="warmup_constant", warmup_steps=1)
    extra = ("--tie", "--rollouts", "2")
    single, _ = W.train_tiny(tmp_path / "single", cfg, tie=True, rollouts=2)
    assert single.steps == 2

    dist_dir = tmp_path / "dist"
    _torchrun(dist_dir, dict(cfg, max_steps=1), *extra)  # stops after step 1 (checkpointed)
    _torchrun(dist_dir, cfg, *extra)  # resumes from the sharded checkpoint
    dist_result = json.loads((dist_dir / "result.json").read_text())
    assert dist_result["resumed_from_step"] == 1 and dist_result["steps"] == 2
    assert dist_result["losses"][0] == pytest.approx(single.losses[0], rel=1e-6)
    assert dist_result["grad_norms"][0] == pytest.approx(single.grad_norms[0], rel=1e-6)
    assert dist_result["losses"] == pytest.approx(single.losses, rel=1e-4)
    assert dist_result["skipped_problems"] == single.skipped_problems

    a = load_file(Path(single.student_dir) / "model.safetensors")
    b = load_file(Path(dist_result["student_dir"]) / "model.safetensors")
    assert a.keys() == b.keys() and "lm_head.weight" not in b  # tied weight written once
    for k in a:
        # the sum over ranks/micro-batches runs in a different order; Adam amplifies that rounding
        # for near-zero gradient entries, so compare to a fraction of the update size (lr = 1e-2)
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-3, msg=k)
    moved = max(float((b[k] - W.tiny_qwen3(1, tie=True).state_dict()[k]).abs().max()) for k in b)
    assert moved > 5e-3  # the run really trained


@pytest.mark.slow
def test_torchrun_bf16_mixed_precision_keeps_fp32_master_weights(tmp_path):
    """FSDP2 MixedPrecisionPolicy(bf16 compute, fp32 reduce) on 2 ranks: the losses follow the fp32
    single-process run to bf16 accuracy and the exported student keeps fp32 master weights."""
    cfg = dict(loss="fkl", global_batch_problems=4, micro_batch_problems=2)
    single, _ = W.train_tiny(tmp_path / "single", cfg)
    _torchrun(tmp_path / "dist", dict(cfg, mixed_precision="bf16"))
    dist_result = json.loads((tmp_path / "dist" / "result.json").read_text())
    assert dist_result["steps"] == single.steps == 2
    assert dist_result["losses"] == pytest.approx(single.losses, rel=2e-2)
    assert dist_result["losses"] != single.losses  # bf16 compute really happened
    exported = load_file(Path(dist_result["student_dir"]) / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.float32}
    assert all(bool(torch.isfinite(t).all()) for t in exported.values())
