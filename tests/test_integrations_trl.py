"""PacedGKDTrainer against TRL's own generalised-JSD loss (float64, full logits) on the toy models.

Real TRL `GKDTrainer` machinery (collator, on-policy generation) on CPU; one optimizer step each.
"""
from __future__ import annotations

import copy

import pytest
import torch

datasets = pytest.importorskip("datasets")
pytest.importorskip("trl")

from trl.experimental.gkd import GKDConfig, GKDTrainer  # noqa: E402

from paced_kernels.integrations.trl import PacedGKDTrainer  # noqa: E402
from paced_train.toy.assets import resolve_path  # noqa: E402

torch.set_num_threads(1)


def _setup():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_path("toy://tokenizer"))
    student = AutoModelForCausalLM.from_pretrained(resolve_path("toy://student"), dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(resolve_path("toy://teacher"), dtype=torch.float32)
    return tok, student, teacher


PROBLEMS = [("12+7=", "19"), ("3*4=", "12"), ("40-15=", "25"), ("8+8=", "16"), ("9*9=", "81")]


def _dataset(weights):
    rows = []
    for (q, a), w in zip(PROBLEMS, weights):
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                     "paced_weight": float(w)})
    return datasets.Dataset.from_list(rows)


def _config(tmp_path, beta, lmbda, batch):
    return GKDConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=batch,
                     gradient_accumulation_steps=1, learning_rate=1e-3, max_grad_norm=0.0, logging_steps=1,
                     report_to=[], save_strategy="no", use_cpu=True, beta=beta, lmbda=lmbda, max_new_tokens=6,
                     temperature=0.9, max_length=64, seed=0, bf16=False)


def _reference(student, teacher, batch, weights, beta):
    """TRL's generalized_jsd_loss per row in float64, weighted, over the live rows' response tokens."""
    s64, t64 = copy.deepcopy(student).double(), copy.deepcopy(teacher).double()
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        s_logits = s64(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t_logits = t64(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    for i, w in enumerate(weights):
        if w == 0:
            continue
        row = GKDTrainer.generalized_jsd_loss(s_logits[i: i + 1], t_logits[i: i + 1], labels=labels[i: i + 1],
                                              beta=beta, reduction="sum")
        total += w * row
        count += int((labels[i] != -100).sum())
    return (total / count).item()


class _Spy:
    """Records the batch the loss sees (after any on-policy generation) and the student before the step."""

    def __init__(self, trainer):
        self.trainer, self.batches = trainer, []
        real = trainer.compute_loss

        def compute_loss(model, inputs, **kw):
            self.batches.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
            return real(model, inputs, **kw)

        trainer.compute_loss = compute_loss


@pytest.mark.parametrize("beta,lmbda", [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)])
def test_first_step_loss_equals_trl_jsd_reference(tmp_path, beta, lmbda):
    tok, student, teacher = _setup()
    weights = [1.5, 0.0, 0.5, 1.0, 0.0]
    before = copy.deepcopy(student)
    trainer = PacedGKDTrainer(model=student, teacher_model=teacher, args=_config(tmp_path, beta, lmbda, 3),
                              train_dataset=_dataset(weights), processing_class=tok, kl_backend="torch")
    spy = _Spy(trainer)
    trainer.train()
    (batch,) = spy.batches
    # weight-0 prompts were filtered out: the one batch holds the three live prompts
    assert sorted(batch["paced_weight"].tolist()) == [0.5, 1.0, 1.5]
    if lmbda == 1.0:  # on-policy: the responses are the student's own generations, longer than the prompts
        assert batch["input_ids"].shape[1] > max(len(tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True)) for q, _ in PROBLEMS)
    ref = _reference(before, teacher, batch, batch["paced_weight"].tolist(), beta)
    assert trainer.state.log_history[0]["loss"] == pytest.approx(ref, rel=1e-4)
    assert not trainer.teacher_model.training


def test_unit_weights_match_trl_gkd_loss(tmp_path):
    tok, student, teacher = _setup()
    paced = PacedGKDTrainer(model=copy.deepcopy(student), teacher_model=copy.deepcopy(teacher),
                            args=_config(tmp_path / "p", 0.0, 0.0, 4), train_dataset=_dataset([1, 1, 1, 1]),
                            processing_class=tok, kl_backend="torch")
    batch = paced.data_collator([r for r in _dataset([1, 1, 1, 1])])
    ours = paced.compute_loss(paced.model, dict(batch))
    trl_trainer = GKDTrainer(model=copy.deepcopy(student), teacher_model=copy.deepcopy(teacher),
                             args=_config(tmp_path / "t", 0.0, 0.0, 4),
                             train_dataset=_dataset([1, 1, 1, 1]).remove_columns("paced_weight"),
                             processing_class=tok)
    theirs = trl_trainer.compute_loss(trl_trainer.model, {k: v for k, v in batch.items() if k != "paced_weight"})
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_intermediate_beta_is_a_clear_error(tmp_path):
    tok, student, teacher = _setup()
    with pytest.raises(ValueError, match="beta=0.5"):
        PacedGKDTrainer(model=student, teacher_model=teacher, args=_config(tmp_path, 0.5, 0.0, 2),
                        train_dataset=_dataset([1, 1]), processing_class=tok)
    with pytest.raises(ValueError, match="weight column"):
        PacedGKDTrainer(model=student, teacher_model=teacher, args=_config(tmp_path, 0.0, 0.0, 2),
                        train_dataset=_dataset([1, 1]).remove_columns("paced_weight"), processing_class=tok)
