"""The distillation stage against an independent float64 reference (full logits via each model's lm_head).

Tiny randomly initialised Qwen3 models on CPU; token ids are built directly (no tokenizer).
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

import _distill_worker as W
from paced_train import distill
from paced_train.distill import (
    DistillExample,
    StudentKL,
    TeacherHidden,
    collate,
    drop_zero_weight,
    run_distill_stage,
)

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# float64 reference: full logits, KL per token, weights, normaliser
# --------------------------------------------------------------------------------------------


def _kl_per_token(s_logits: torch.Tensor, t_logits: torch.Tensor, loss: str) -> torch.Tensor:
    log_ps, log_pt = s_logits.log_softmax(-1), t_logits.log_softmax(-1)
    ps, pt = log_ps.exp(), log_pt.exp()
    fkl = (pt * (log_pt - log_ps)).sum(-1)
    rkl = (ps * (log_ps - log_pt)).sum(-1)
    if loss == "fkl":
        return fkl
    if loss == "rkl":
        return rkl
    # AKL (method.md): the teacher's head is its most probable tokens until their mass first reaches
    # 0.5 (the crossing token included); mixing coefficients are constants.
    with torch.no_grad():
        coef = []
        for j in range(pt.shape[0]):
            order = torch.argsort(pt[j], descending=True)
            cum, head = 0.0, []
            for v in order.tolist():
                head.append(v)
                cum += float(pt[j, v])
                if cum >= 0.5:
                    break
            gap = (pt[j] - ps[j]).abs()
            g_head = gap[head].sum()
            g_tail = gap.sum() - g_head
            coef.append(g_head / (g_head + g_tail))
        c = torch.stack(coef)
    return c * fkl + (1 - c) * rkl


def reference_loss(student, teacher, examples, loss: str, normalisation: str, temperature: float = 1.0):
    """sum_i w_i sum_t KL_it / normaliser in float64, through each model's full forward (logits)."""
    s64, t64 = copy.deepcopy(student).double(), copy.deepcopy(teacher).double()
    live = [ex for ex in examples if ex.weight > 0]
    total = torch.zeros((), dtype=torch.float64)
    for ex in live:
        s_ids = torch.tensor([ex.student_prompt_ids + ex.response_ids[:-1]])
        t_ids = torch.tensor([ex.teacher_prompt_ids + ex.response_ids[:-1]])
        s_logits = s64(input_ids=s_ids).logits[0, len(ex.student_prompt_ids) - 1 :]
        with torch.no_grad():
            t_logits = t64(input_ids=t_ids).logits[0, len(ex.teacher_prompt_ids) - 1 :]
        assert s_logits.shape[0] == len(ex.response_ids)
        kl = _kl_per_token(s_logits / temperature, t_logits / temperature, loss)
        total = total + ex.weight * kl.sum()
    if normalisation == "tokens":
        norm = sum(len(ex.response_ids) for ex in live)
    else:
        norm = len({ex.problem_id for ex in live})
    return total / norm, s64


# --------------------------------------------------------------------------------------------
# collation
# --------------------------------------------------------------------------------------------


def test_collate_indexes_the_positions_that_predict_each_response_token():
    mb = collate([[5, 6, 7], [8]], [[10, 11, 1], [12, 1]], pad_id=0)
    # sequence 0: 5 6 7 10 11 (last response token is never an input); sequence 1: 8 12, padded
    assert mb.input_ids.tolist() == [[5, 6, 7, 10, 11], [8, 12, 0, 0, 0]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # position 2 (token 7) predicts response[0] ... ; flat index b * width + pos
    assert mb.gather_index.tolist() == [2, 3, 4, 5 + 0, 5 + 1]
    assert mb.seq_ids.tolist() == [0, 0, 0, 1, 1]


def test_drop_zero_weight_counts_what_is_saved():
    ex = W.tiny_examples(5, seed=1, weights=[1.0, 0.0, 2.0, 0.0, 0.0], rollouts=2)
    live, stats = drop_zero_weight(ex)
    assert {e.problem_id for e in live} == {"p0", "p2"}
    dead = [e for e in ex if e.weight == 0]
    assert stats.problems == 3 and stats.examples == len(dead) == 6
    assert stats.response_tokens == sum(len(e.response_ids) for e in dead)


# --------------------------------------------------------------------------------------------
# (1) the weighted loss and its gradient equal the hand-computed float64 ones
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss,normalisation,tie",
    [("fkl", "tokens", False), ("rkl", "problems", True), ("akl", "tokens", False)],
)
def test_step_loss_equals_hand_computed_weighted_sum(tmp_path, loss, normalisation, tie):
    student, teacher = W.tiny_qwen3(1, tie=tie), W.tiny_qwen3(2, hidden=48)
    weights = [1.7, 0.0, 0.4, 1.1, 0.0, 0.8]  # 4 live problems, one global batch of 4
    examples = W.tiny_examples(6, seed=5, weights=weights, rollouts=2 if loss == "rkl" else 1)
    ref, s64 = reference_loss(student, teacher, examples, loss, normalisation, temperature=0.8)
    ref.backward()
    ref_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in s64.parameters() if p.grad is not None))

    cfg = W.tiny_config(loss=loss, loss_normalization=normalisation, global_batch_problems=4,
                        micro_batch_problems=2, temperature=0.8, max_steps=1)
    result = run_distill_stage(cfg, student, teacher, examples, tmp_path, "s", logger=None)
    assert result.steps == 1
    assert result.losses[0] == pytest.approx(ref.item(), rel=2e-5)
    # the logged grad norm (before clipping) is the norm of the reference gradient
    assert result.grad_norms[0] == pytest.approx(float(ref_norm), rel=1e-4)


@pytest.mark.parametrize("loss,tie", [("fkl", True), ("rkl", False)])
def test_student_kl_gradients_match_float64_autograd(loss, tie):
    student, teacher = W.tiny_qwen3(1, tie=tie), W.tiny_qwen3(2, hidden=48)
    examples = W.tiny_examples(3, seed=9, weights=[0.3, 1.9, 0.8])
    ref, s64 = reference_loss(student, teacher, examples, loss, "tokens", temperature=1.3)
    ref.backward()

    resp = [e.response_ids for e in examples]
    s_mb = collate([e.student_prompt_ids for e in examples], resp)
    t_mb = collate([e.teacher_prompt_ids for e in examples], resp)
    teacher_fn = TeacherHidden(teacher)
    with torch.no_grad():
        t_hidden = teacher_fn(t_mb)
    weights = torch.tensor([e.weight for e in examples])
    loss_sum = StudentKL(student)(s_mb, t_hidden, teacher_fn.head_weight(), weights,
                                  direction=distill.KL_DIRECTIONS[loss], temperature=1.3, backend="torch")
    norm = sum(len(r) for r in resp)
    (loss_sum / norm).backward()
    assert (loss_sum / norm).item() == pytest.approx(ref.item(), rel=2e-5)
    ref_grads = dict(s64.named_parameters())
    for name, p in student.named_parameters():
        torch.testing.assert_close(p.grad.double(), ref_grads[name].grad, rtol=2e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------
# (2) zero-weight problems never reach the models or the loss
# --------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self):
        self.records, self.messages = [], []

    def log(self, metrics, step, stage=""):
        self.records.append((step, dict(metrics)))

    def info(self, msg):
        self.messages.append(msg)

    def warning(self, msg):
        self.messages.append(msg)


def test_zero_weight_problems_never_reach_models_or_loss(tmp_path, monkeypatch):
    weights = [1.0, 0.0, 0.7, 0.0, 1.3, 0.0, 0.5, 1.5, 0.0, 0.9]
    examples = W.tiny_examples(10, seed=4, weights=weights)
    live = [e for e in examples if e.weight > 0]
    dead = [e for e in examples if e.weight == 0]
    student, teacher = W.tiny_qwen3(1), W.tiny_qwen3(2, hidden=48)

    seen_ids: list[torch.Tensor] = []
    for model in (student, teacher):
        model.get_input_embeddings().register_forward_pre_hook(lambda mod, args: seen_ids.append(args[0].clone()))
    kl_calls = []
    real_kl = distill.fused_linear_kl

    def spy(*args, **kwargs):
        kl_calls.append((args[0].shape[0], kwargs["seq_ids"].clone(), kwargs["seq_weights"].clone()))
        return real_kl(*args, **kwargs)

    monkeypatch.setattr(distill, "fused_linear_kl", spy)
    rec = _Recorder()
    cfg = W.tiny_config(global_batch_problems=2, micro_batch_problems=1)
    result = run_distill_stage(cfg, student, teacher, examples, tmp_path, "s", logger=rec)

    assert result.steps == 3 and result.trained_problems == 6
    assert seen_ids, "the spies saw no forward pass"
    assert all(not bool((ids == W.POISON).any()) for ids in seen_ids)
    assert all(bool((w > 0).all()) for _, _, w in kl_calls)
    assert sum(n for n, _, _ in kl_calls) == sum(len(e.response_ids) for e in live)
    assert result.skipped_problems == 4 and result.skipped_examples == 4
    assert result.skipped_response_tokens == sum(len(e.response_ids) for e in dead)
    assert any("dropped 4 problems with weight 0" in m and f"{result.skipped_response_tokens:,} response tokens" in m
               for m in rec.messages)
    # metrics per step
    assert [s for s, _ in rec.records] == [1, 2, 3]
    assert all({"loss", "lr", "grad_norm"} <= set(m) for _, m in rec.records)
    saved = json.loads((tmp_path / "s" / "distill_result.json").read_text())
    assert saved["skipped_problems"] == 4 and saved["losses"] == result.losses


# --------------------------------------------------------------------------------------------
# (5) gradient accumulation: 4 micro-batches of 1 problem == 1 micro-batch of 4
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalisation", ["tokens", "problems"])
def test_grad_accumulation_equivalence(tmp_path, monkeypatch, normalisation):
    grads: dict[int, list[list[torch.Tensor]]] = {1: [], 4: []}
    real_clip = distill.clip_grad_norm
    current = {"mb": 0}

    def spy_clip(params, max_norm):
        grads[current["mb"]].append([p.grad.detach().clone() for p in params])
        return real_clip(params, max_norm)

    monkeypatch.setattr(distill, "clip_grad_norm", spy_clip)
    common = dict(global_batch_problems=4, loss_normalization=normalisation, lr_schedule="warmup_constant", warmup_steps=1)
    current["mb"] = 1
    r1, s1 = W.train_tiny(tmp_path / "mb1", dict(micro_batch_problems=1, **common))
    current["mb"] = 4
    r4, s4 = W.train_tiny(tmp_path / "mb4", dict(micro_batch_problems=4, **common))
    assert r1.steps == r4.steps == 2 and len(grads[1]) == len(grads[4]) == 2
    # the accumulated gradient of step 1 (same parameters) is the same gradient
    for g1, g4 in zip(grads[1][0], grads[4][0]):
        torch.testing.assert_close(g1, g4, rtol=1e-5, atol=1e-6)
    assert r1.losses[0] == pytest.approx(r4.losses[0], rel=1e-6)
    assert r1.losses == pytest.approx(r4.losses, rel=1e-4)
    assert r1.grad_norms == pytest.approx(r4.grad_norms, rel=1e-4)
    # Adam divides by sqrt(v): gradient entries that are fp32 rounding noise (cancellations) move
    # by up to ~lr, so parameters after 2 steps agree to a fraction of the update size only
    for (n, a), (_, b) in zip(s1.named_parameters(), s4.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3, msg=n)


def test_bf16_autocast_single_process_trains(tmp_path):
    r, _ = W.train_tiny(tmp_path, dict(mixed_precision="bf16", activation_checkpointing=True, max_steps=2))
    ref, _ = W.train_tiny(tmp_path / "fp32", dict(max_steps=2))
    assert r.steps == 2 and all(torch.isfinite(torch.tensor(r.losses)))
    assert r.losses[0] == pytest.approx(ref.losses[0], rel=5e-2)


# --------------------------------------------------------------------------------------------
# bad input -> ValueError naming the problem
# --------------------------------------------------------------------------------------------


def _run(tmp_path, examples=None, student=None, teacher=None, **cfg):
    student = student or W.tiny_qwen3(1)
    teacher = teacher or W.tiny_qwen3(2, hidden=48)
    examples = examples if examples is not None else W.tiny_examples(8, seed=3)
    return run_distill_stage(W.tiny_config(**cfg), student, teacher, examples, tmp_path, "s")


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="multiple of micro_batch_problems"):
        _run(tmp_path, global_batch_problems=3, micro_batch_problems=2)
    with pytest.raises(ValueError, match="fewer than global_batch_problems"):
        _run(tmp_path, examples=W.tiny_examples(4, seed=3, weights=[0.0, 1.0, 0.0, 0.0]), global_batch_problems=2,
             micro_batch_problems=1)
    good = W.tiny_examples(4, seed=3)
    bad = [DistillExample("x", 1.0, [3], [3], [])] + good
    with pytest.raises(ValueError, match=r"problem_id='x'.*response_ids is empty"):
        _run(tmp_path, examples=bad)
    bad = [DistillExample("neg", -1.0, [3], [3], [4, 1])] + good
    with pytest.raises(ValueError, match="'neg'.*weight must be a finite number >= 0"):
        _run(tmp_path, examples=bad)
    bad = [DistillExample("oov", 1.0, [3, 999], [3], [4, 1])] + good
    with pytest.raises(ValueError, match="'oov'.*outside"):
        _run(tmp_path, examples=bad)
    from transformers import Qwen3Config, Qwen3ForCausalLM

    other = Qwen3ForCausalLM(Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, head_dim=16, vocab_size=W.VOCAB + 10))
    with pytest.raises(ValueError, match="vocabularies differ"):
        _run(tmp_path, teacher=other)
    with pytest.raises(ValueError, match="distill loss"):
        _run(tmp_path, loss="jsd")
