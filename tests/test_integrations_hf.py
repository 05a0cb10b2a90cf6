"""PacedDistillTrainer / distillation_loss against a float64 full-logits reference and paced_train's stage.

Real `transformers.Trainer` on CPU, the shipped toy student (hidden 64) and teacher (hidden 128);
token ids are drawn directly (no tokenizer).
"""
from __future__ import annotations

import copy
import random
import subprocess
import sys

import pytest
import torch

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

from paced_kernels.integrations.hf import (  # noqa: E402
    PacedDistillCollator,
    PacedDistillTrainer,
    distillation_loss,
)
from paced_kernels.integrations.weighting import add_paced_weights, weights_from_pass_rates  # noqa: E402
from paced_kernels.weights import beta_weights, hard_filter_weights  # noqa: E402
from paced_train.toy.assets import resolve_path  # noqa: E402

torch.set_num_threads(1)
POISON = 102  # token id used only by weight-0 rows


def _models():
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(resolve_path("toy://student"), dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(resolve_path("toy://teacher"), dtype=torch.float32)
    return student, teacher


def _rows(weights, seed=0, teacher_prompt=True):
    """Rows with a student prompt, a longer teacher prompt and a shared response; weight-0 rows poisoned."""
    rng = random.Random(seed)
    rows = []
    for w in weights:
        hi = POISON if w == 0 else POISON - 1
        prompt = [rng.randrange(3, hi) for _ in range(rng.randint(2, 5))]
        t_prompt = prompt + [rng.randrange(3, hi) for _ in range(rng.randint(1, 3))]
        resp = [rng.randrange(3, hi) for _ in range(rng.randint(3, 7))] + [2]
        if w == 0:
            prompt[0] = t_prompt[0] = resp[0] = POISON
        row = {"input_ids": prompt + resp, "labels": [-100] * len(prompt) + resp, "paced_weight": float(w),
               "prompt_len": len(prompt), "teacher_prompt_len": len(t_prompt)}
        if teacher_prompt:
            row["teacher_input_ids"] = t_prompt + resp
            row["teacher_labels"] = [-100] * len(t_prompt) + resp
        rows.append(row)
    return rows


def _reference(student, teacher, rows, direction, temperature):
    """sum_i w_i sum_t KL_it / (response tokens of live rows), float64, each model's full logits."""
    s64, t64 = copy.deepcopy(student).double(), copy.deepcopy(teacher).double()
    total, count = torch.zeros((), dtype=torch.float64), 0
    for r in rows:
        if r["paced_weight"] == 0:
            continue
        n = len(r["input_ids"]) - r["prompt_len"]
        s_logits = s64(input_ids=torch.tensor([r["input_ids"]])).logits[0, r["prompt_len"] - 1: -1]
        t_ids = r.get("teacher_input_ids", r["input_ids"])
        t_start = r["teacher_prompt_len"] if "teacher_input_ids" in r else r["prompt_len"]
        with torch.no_grad():
            t_logits = t64(input_ids=torch.tensor([t_ids])).logits[0, t_start - 1: -1]
        assert s_logits.shape[0] == t_logits.shape[0] == n
        log_ps, log_pt = (s_logits / temperature).log_softmax(-1), (t_logits / temperature).log_softmax(-1)
        if direction == "forward":
            kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
        else:
            kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1)
        total = total + r["paced_weight"] * kl.sum()
        count += n
    loss = total / count
    loss.backward()
    return loss.item(), {k: p.grad for k, p in s64.named_parameters()}


class _GradCapture(transformers.TrainerCallback):
    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grads is None:
            self.grads = {k: p.grad.detach().clone().double() for k, p in self.model.named_parameters()}


def _train_one_step(tmp_path, rows, direction="forward", temperature=1.0, batch=2, accumulation=2):
    student, teacher = _models()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, learning_rate=1e-3, max_grad_norm=0.0, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0,
    )
    capture = _GradCapture(student)
    trainer = PacedDistillTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=datasets.Dataset.from_list(rows), direction=direction,
                                  temperature=temperature, kl_backend="torch", callbacks=[capture])
    trainer.train()
    return trainer.state.log_history[0]["loss"], capture.grads, trainer


@pytest.mark.parametrize("direction,temperature", [("forward", 1.0), ("reverse", 0.8)])
def test_first_step_loss_and_grads_equal_float64_reference(tmp_path, direction, temperature):
    rows = _rows([1.7, 0.4, 1.1, 0.8], seed=1)  # one optimizer step: 2 micro-batches of 2
    student, teacher = _models()
    ref_loss, ref_grads = _reference(student, teacher, rows, direction, temperature)
    loss, grads, trainer = _train_one_step(tmp_path, rows, direction, temperature)
    assert loss == pytest.approx(ref_loss, rel=1e-4)
    for name, g in grads.items():
        # float32 against float64: round-off scales with the tensor's largest entry
        scale = float(ref_grads[name].abs().max())
        torch.testing.assert_close(g, ref_grads[name], rtol=2e-4, atol=1e-5 * scale, msg=name)
    # the teacher stayed frozen and in eval mode
    assert not trainer.teacher_model.training
    assert all(not p.requires_grad for p in trainer.teacher_model.parameters())


def test_weight_zero_rows_change_nothing(tmp_path):
    live = _rows([1.2, 0.6, 0.9, 1.3], seed=3)
    dead = _rows([0.0, 0.0, 0.0], seed=4)
    loss_a, grads_a, _ = _train_one_step(tmp_path / "a", live)
    loss_b, grads_b, _ = _train_one_step(tmp_path / "b", live[:2] + dead + live[2:])
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-8, msg=name)


def test_distillation_loss_drops_weight_zero_rows_before_any_forward():
    student, teacher = _models()
    collate = PacedDistillCollator()
    live, mixed = _rows([1.0, 0.5], seed=5), None
    mixed = live[:1] + _rows([0.0], seed=6) + live[1:]
    seen = []
    for m in (student, teacher):
        m.get_input_embeddings().register_forward_pre_hook(lambda mod, a: seen.append(a[0].clone()))
    losses, grads = [], []
    for rows in (live, mixed):
        student.zero_grad()
        loss = distillation_loss(student, teacher, collate(rows), direction="reverse", backend="torch")
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad.clone() for k, p in student.named_parameters()})
    assert seen and all(not bool((ids == POISON).any()) for ids in seen)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-8)
    # all rows weight 0: a zero that backward accepts, no model run
    seen.clear()
    zero = distillation_loss(student, teacher, collate(_rows([0.0, 0.0], seed=7)))
    zero.backward()
    assert zero.item() == 0.0 and not seen


def test_gradients_match_paced_train_distill_stage():
    from paced_train import distill

    rows = _rows([0.3, 1.9, 0.8], seed=9)
    student, teacher = _models()
    ref_student = copy.deepcopy(student)
    loss = distillation_loss(student, teacher, PacedDistillCollator()(rows), temperature=1.3, backend="torch")
    loss.backward()

    resp = [r["input_ids"][r["prompt_len"]:] for r in rows]
    s_mb = distill.collate([r["input_ids"][: r["prompt_len"]] for r in rows], resp)
    t_mb = distill.collate([r["teacher_input_ids"][: r["teacher_prompt_len"]] for r in rows], resp)
    t_fn = distill.TeacherHidden(teacher)
    with torch.no_grad():
        t_hidden = t_fn(t_mb)
    w = torch.tensor([r["paced_weight"] for r in rows])
    ref = distill.StudentKL(ref_student)(s_mb, t_hidden, t_fn.head_weight(), w, direction="forward",
                                          temperature=1.3, backend="torch") / sum(len(x) for x in resp)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    ref_grads = dict(ref_student.named_parameters())
    for name, p in student.named_parameters():
        # two float32 paths (their chunking differs): round-off scales with the tensor's largest entry
        scale = float(ref_grads[name].grad.abs().max())
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_bad_inputs_raise_clear_errors():
    student, teacher = _models()
    collate = PacedDistillCollator()
    rows = _rows([1.0], seed=2)
    rows[0]["teacher_labels"] = rows[0]["teacher_labels"][:-1] + [-100]
    with pytest.raises(ValueError, match="response tokens"):
        distillation_loss(student, teacher, collate(rows))
    with pytest.raises(ValueError, match="weight column"):
        collate([{"input_ids": [3, 4], "labels": [-100, 4]}])
    bad = _rows([1.0], seed=2)
    bad[0]["paced_weight"] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        distillation_loss(student, teacher, collate(bad))
    with pytest.raises(ValueError, match="direction"):
        distillation_loss(student, teacher, collate(_rows([1.0])), direction="sideways")
    with pytest.raises(ValueError, match="teacher_model"):
        PacedDistillTrainer(model=student, args=None, train_dataset=None)


def test_dataset_weights_from_pass_rates():
    p = [0.0, 0.25, 0.5, 1.0, 0.75]
    ds = add_paced_weights(datasets.Dataset.from_dict({"pass_rate": p}))
    assert ds["paced_weight"] == pytest.approx(list(beta_weights(p)))
    hard = weights_from_pass_rates(p, scheme="hard_filter")
    assert list(hard) == pytest.approx(list(hard_filter_weights(p)))
    mm = weights_from_pass_rates(p, scheme="moment_matched", eps=0.25)
    assert mm[0] == 0.0 and mm[3] == 0.0 and mm.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pass-rate column"):
        add_paced_weights(datasets.Dataset.from_dict({"p": p}))
    with pytest.raises(ValueError, match="scheme"):
        weights_from_pass_rates(p, scheme="nope")


def test_paced_kernels_imports_no_trainer_stack():
    code = ("import sys, paced_kernels, paced_kernels.weights, paced_kernels.integrations; "
            "bad = [m for m in ('transformers', 'trl', 'datasets', 'paced_train') if m in sys.modules]; "
            "print(bad); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    # the integrations themselves never import paced_train
    code = ("import sys, paced_kernels.integrations.hf, paced_kernels.integrations.weighting; "
            "assert 'paced_train' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_examples_run_as_written(tmp_path):
    """The python blocks of README's "Using Paced in your own trainer" section, each run as a script."""
    import os
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Using Paced in your own trainer", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "expected the Trainer and the TRL example"
    env = dict(os.environ, OMP_NUM_THREADS="1", TRL_EXPERIMENTAL_SILENCE="1")
    for i, code in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(code + "\nassert trainer.state.global_step == 2\n")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
