"""Packed micro-batches (distill.max_tokens_per_micro_batch) give the padded path's loss and gradients.

The reference is the default padded path (itself checked against full-logit float64 autograd in
test_train_distill.py); here both run in float64 on the tiny Qwen3 models, so any cross-sequence
attention, misplaced gather index, wrong weight or normaliser would show far above the 1e-10 tolerance.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import _distill_worker as W
from _torchrun import run_torchrun
from paced_train import distill, packed_attention
from paced_train.config import config_from_dict
from paced_train.distill import (
    DistillExample,
    collate,
    collate_packed,
    pack_sequences,
    run_distill_stage,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------


def test_collate_packed_layout():
    mb = collate_packed([[5, 6, 7], [8]], [[10, 11, 1], [12, 1]])
    # sequence 0: 5 6 7 10 11, sequence 1: 8 12 -- one row, no padding, positions restart
    assert mb.input_ids.tolist() == [[5, 6, 7, 10, 11, 8, 12]]
    assert mb.attention_mask is None
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1]]
    # token 7 (offset 2) predicts response[0] of sequence 0; token 8 (offset 5) that of sequence 1
    assert mb.gather_index.tolist() == [2, 3, 4, 5, 6]
    assert mb.seq_ids.tolist() == [0, 0, 0, 1, 1]


def test_pack_sequences_first_fit_decreasing():
    lengths = [(3, 5), (6, 6), (2, 2), (4, 1), (1, 4)]
    bins = pack_sequences(lengths, budget=8)
    # longest first: 1 (6) -> bin0; 0 (5) -> bin1; 3 (4) -> bin1 (3+4, 5+1); 4 (4) -> bin2; 2 -> bin0
    assert bins == [[1, 2], [0, 3], [4]]
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    for b in bins:
        assert all(sum(lengths[i][m] for i in b) <= 8 for m in range(2))
    assert pack_sequences(lengths, budget=8) == bins  # deterministic
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch=5"):
        pack_sequences(lengths, budget=5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_hidden_states_equal_each_sequence_run_alone(impl):
    """No token attends across sequences: each packed segment equals its sequence's own forward."""
    model = W.tiny_qwen3(1, dtype=torch.float64)
    model.config._attn_implementation = impl
    ex = W.tiny_examples(4, seed=11)
    prompts, responses = [e.student_prompt_ids for e in ex], [e.response_ids for e in ex]
    packed = collate_packed(prompts, responses)
    got = distill._last_hidden(model.model, packed)
    alone = torch.cat([distill._last_hidden(model.model, collate([p], [r])) for p, r in zip(prompts, responses)])
    # eager attention takes its softmax in float32 (reduction order depends on the row length), sdpa
    # stays float64; attention leaking across sequences would move these by O(1)
    tol = 1e-6 if impl == "eager" else 1e-12
    torch.testing.assert_close(got, alone, rtol=tol, atol=tol)


def test_varlen_sdpa_runs_each_sequence_alone_and_only_when_the_mask_is_block_causal(monkeypatch):
    """paced_varlen_sdpa == transformers' dense block-diagonal sdpa on packed rows; padded batches untouched."""
    model = W.tiny_qwen3(1, dtype=torch.float64)  # 2 heads on 1 kv head: GQA
    model.config._attn_implementation = "sdpa"
    ex = W.tiny_examples(5, seed=13)
    prompts, responses = [e.student_prompt_ids for e in ex], [e.response_ids for e in ex]
    dense = distill._last_hidden(model.model, collate_packed(prompts, responses))
    padded_ref = distill._last_hidden(model.model, collate(prompts, responses))
    checks = []
    real_check = packed_attention._is_block_causal
    monkeypatch.setattr(packed_attention, "_is_block_causal", lambda *a: checks.append(real_check(*a)) or checks[-1])
    restore = packed_attention.enable(model)
    assert model.config._attn_implementation == packed_attention.NAME
    varlen = distill._last_hidden(model.model, collate_packed(prompts, responses))
    assert checks == [True] * len(model.model.layers)  # every layer took the per-sequence path
    padded = distill._last_hidden(model.model, collate(prompts, responses))
    assert len(checks) == len(model.model.layers)  # [B, L] padded rows never do
    restore()
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(varlen, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(padded, padded_ref, rtol=0, atol=0)
    # a mask that is not the block-diagonal causal one of the positions (here: plain causal) -> plain sdpa
    pos = collate_packed(prompts, responses).position_ids
    causal = torch.ones(pos.shape[1], pos.shape[1], dtype=torch.bool).tril()[None, None]
    starts = packed_attention.sequence_starts(pos)
    assert not real_check(causal, starts, pos.shape[1])
    seg = torch.zeros(pos.shape[1], dtype=torch.long)
    seg[starts[1:]] = 1
    seg = seg.cumsum(0)
    block = (seg[:, None] == seg[None, :]) & causal[0, 0]
    assert real_check(block[None, None], starts, pos.shape[1])
    leak = block.clone()
    leak[-1, 0] = True  # one extra True outside the diagonal blocks
    assert not real_check(leak[None, None], starts, pos.shape[1])


# --------------------------------------------------------------------------------------------
# one training step: packed == padded (float64)
# --------------------------------------------------------------------------------------------


def _one_step(tmp_path, monkeypatch, loss: str, impl: str, cfg: dict, rollouts: int):
    student = W.tiny_qwen3(1, dtype=torch.float64)
    teacher = W.tiny_qwen3(2, hidden=48, dtype=torch.float64)
    for m in (student, teacher):
        m.config._attn_implementation = impl
    weights = [1.7, 0.3, 0.0, 1.1, 0.6, 2.2]  # non-uniform; problem 2 is dropped (weight 0)
    examples = W.tiny_examples(6, seed=5, weights=weights, rollouts=rollouts)
    grads, kl_calls = [], []
    real_clip, real_kl = distill.clip_grad_norm, distill.fused_linear_kl

    def spy_clip(params, max_norm):
        grads.append({n: p.grad.detach().clone() for n, p in student.named_parameters()})
        return real_clip(params, max_norm)

    def spy_kl(*args, **kwargs):
        kl_calls.append(args[0].shape[0])
        return real_kl(*args, **kwargs)

    monkeypatch.setattr(distill, "clip_grad_norm", spy_clip)
    monkeypatch.setattr(distill, "fused_linear_kl", spy_kl)
    config = W.tiny_config(loss=loss, global_batch_problems=5, micro_batch_problems=1, max_steps=1,
                           temperature=0.9, **cfg)
    result = run_distill_stage(config, student, teacher, examples, tmp_path, "s")
    monkeypatch.undo()  # the next run spies on the real functions again
    assert student.config._attn_implementation == teacher.config._attn_implementation == impl  # restored
    assert result.steps == 1 and len(grads) == 1
    return result.losses[0], grads[0], kl_calls


@pytest.mark.parametrize("loss,rollouts,normalisation,budget", [("fkl", 1, "tokens", 40), ("rkl", 3, "problems", 64)])
def test_packed_step_equals_padded_step(tmp_path, monkeypatch, loss, rollouts, normalisation, budget):
    impl = "sdpa"  # float64 throughout (eager's float32 softmax would cap agreement at ~1e-7)
    common = dict(loss_normalization=normalisation)
    pad_loss, pad_grads, pad_calls = _one_step(tmp_path / "pad", monkeypatch, loss, impl, common, rollouts)
    pk_loss, pk_grads, pk_calls = _one_step(tmp_path / "pack", monkeypatch, loss, impl,
                                            dict(common, max_tokens_per_micro_batch=budget), rollouts)
    assert len(pad_calls) == 5 and 1 < len(pk_calls) < 5  # really packed: fewer, fuller micro-batches
    assert sum(pk_calls) == sum(pad_calls)  # every response token scored once
    assert pk_loss == pytest.approx(pad_loss, rel=1e-10, abs=0)
    assert pad_loss > 1e-3
    assert pad_grads.keys() == pk_grads.keys()
    for name, g in pad_grads.items():
        assert g.dtype == torch.float64
        torch.testing.assert_close(pk_grads[name], g, rtol=1e-10, atol=1e-13 * float(g.abs().max()), msg=name)
    assert sum(float(g.abs().sum()) for g in pad_grads.values()) > 0


def test_ranks_run_the_same_number_of_micro_batches():
    """Every rank pads its packed micro-batches to the most any rank has, with empty (filler) ones."""
    # rank 0 owns problems a, b (20 + 19 tokens: two micro-batches), rank 1 owns c, d (5 + 5: one)
    lens = {"a": 20, "b": 19, "c": 5, "d": 5}
    batch = [[DistillExample(k, 1.0, [3], [3], [4] * n + [1])] for k, n in lens.items()]
    per_rank = [distill._micro_batch_sequences(batch, r, 2, 1, 30) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    assert [[[ex.problem_id for ex in mb] for mb in mbs] for mbs in per_rank] == [[["a"], ["b"]], [["c", "d"], []]]
    s_mb, t_mb, w = distill._collate_micro_batch([], True, torch.device("cpu"))
    assert s_mb.input_ids.shape == (1, 1) and w.tolist() == [0.0]
    # the filler contributes exactly zero loss and zero gradient, but still runs both models
    student, teacher = W.tiny_qwen3(1), W.tiny_qwen3(2, hidden=48)
    t_fn = distill.TeacherHidden(teacher)
    with torch.no_grad():
        t_hidden = t_fn(t_mb)
    out = distill.StudentKL(student)(s_mb, t_hidden, t_fn.head_weight(), w, direction="forward",
                                     temperature=1.0, backend="torch")
    out.backward()
    assert float(out.detach()) == 0.0
    assert all(p.grad is not None and not bool(p.grad.any()) for p in student.parameters())


# --------------------------------------------------------------------------------------------
# bad budgets -> ValueError naming the key
# --------------------------------------------------------------------------------------------


def test_budget_errors(tmp_path):
    examples = W.tiny_examples(4, seed=3)
    longest = max(max(distill._input_lengths(e)) for e in examples)
    worst = next(e for e in examples if max(distill._input_lengths(e)) == longest)
    student, teacher = W.tiny_qwen3(1), W.tiny_qwen3(2, hidden=48)
    with pytest.raises(ValueError, match=rf"max_tokens_per_micro_batch={longest - 1} .*'{worst.problem_id}'"):
        run_distill_stage(W.tiny_config(max_tokens_per_micro_batch=longest - 1), student, teacher, examples,
                          tmp_path, "s")
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch must be a positive int"):
        run_distill_stage(W.tiny_config(max_tokens_per_micro_batch=0), student, teacher, examples, tmp_path, "s")
    # a weight-0 sequence never runs, so it need not fit
    long_dead = [DistillExample("dead", 0.0, [3] * 50, [3] * 50, [4, 1])]
    distill.check_token_budget([e for e in long_dead + examples if e.weight > 0], longest)
    # packing needs only global_batch_problems % world_size == 0, not micro_batch_problems to divide
    r = run_distill_stage(W.tiny_config(max_tokens_per_micro_batch=longest, global_batch_problems=3,
                                        micro_batch_problems=2, max_steps=1), student, teacher, examples,
                          tmp_path / "ok", "s")
    assert r.steps == 1


def test_config_checks_budget_against_data_limits():
    def cfg(**distill_cfg):
        return config_from_dict({"data": {"train": "train.jsonl", "max_prompt_tokens": 64, "max_teacher_prompt_tokens": 100,
                                          "max_response_tokens": 200}, "distill": distill_cfg}).validate()

    cfg(max_tokens_per_micro_batch=299)  # 100 + 200 - 1: the longest teacher input fits
    with pytest.raises(ValueError, match=r"'distill.max_tokens_per_micro_batch'.* = 299, got 298"):
        cfg(max_tokens_per_micro_batch=298)
    with pytest.raises(ValueError, match=r"'distill.max_tokens_per_micro_batch': must be >= 1"):
        cfg(max_tokens_per_micro_batch=0)


# --------------------------------------------------------------------------------------------
# torchrun x2: a packed FSDP2 step == the single-process step
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_packed_step_equals_single_process(tmp_path):
    cfg = dict(loss="rkl", global_batch_problems=4, micro_batch_problems=1, max_steps=1)
    single, _ = W.train_tiny(tmp_path / "single", cfg, rollouts=2)
    out = tmp_path / "dist"
    # a 20-token budget gives the two ranks different numbers of packed micro-batches (fillers run)
    groups = distill.group_by_problem(W.tiny_examples(8, seed=3, rollouts=2))
    batch = [groups[i] for i in distill.epoch_order(len(groups), 0, 0, True)[:4]]
    mbs = [distill._micro_batch_sequences(batch, r, 2, 1, 20) for r in range(2)]
    assert len(mbs[0]) == len(mbs[1]) and any(not mb for r in mbs for mb in r)
    run_torchrun(REPO / "tests" / "_distill_worker.py", "--out", str(out), "--rollouts", "2",
                 "--cfg", json.dumps(dict(cfg, max_tokens_per_micro_batch=20)))
    dist_result = json.loads((out / "result.json").read_text())
    assert dist_result["steps"] == 1
    assert dist_result["losses"][0] == pytest.approx(single.losses[0], rel=1e-6)
    assert dist_result["grad_norms"][0] == pytest.approx(single.grad_norms[0], rel=1e-6)
