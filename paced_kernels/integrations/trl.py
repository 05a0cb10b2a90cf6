"""Paced-weighted fused KL inside TRL's on-policy distillation (`GKDTrainer`, `trl.experimental.gkd`).

:class:`PacedGKDTrainer` keeps GKD's data path and generation (with probability ``lmbda`` the student
writes the responses; ``seq_kd`` lets the teacher write them) and replaces the loss: TRL's
generalised JSD on full logits becomes `paced_kernels.fused_linear_kl` on hidden states, weighted by
each prompt's Paced weight (the ``weight_column`` of the dataset; weight-0 prompts are filtered out of
the dataset and never generated for).

TRL's ``beta`` convention (``generalized_jsd_loss``): ``beta=0`` is ``F.kl_div(student_logp,
teacher_logp)`` = KL(teacher || student), the forward KL; ``beta=1`` is KL(student || teacher), the
reverse KL. Intermediate betas (the generalised JSD) are not in the fused kernel: a ValueError.

Like TRL's ``compute_loss``, the divergence is taken at temperature 1 (``kl_temperature``); GKD's
``temperature`` stays the sampling temperature. Normaliser: response tokens of the live rows. For
batches whose responses come from the dataset it is the Trainer's global count over the optimizer
step (accumulation and ranks); when the responses were just generated (their length is unknown until
then) each micro-batch is normalised by its own count and the micro-batches are averaged.
"""
from __future__ import annotations

from typing import Any

import torch
from trl.experimental.gkd import GKDTrainer
from trl.experimental.utils import DataCollatorForChatML

from .hf import _lm_head, _unwrap, distillation_loss, response_token_count

__all__ = ["PacedGKDTrainer", "WeightKeepingCollator"]


class WeightKeepingCollator:
    """Wraps a collator: the weight column is taken out of each row and returned as a float tensor."""

    def __init__(self, collator, weight_column: str = "paced_weight"):
        self.collator, self.weight_column = collator, weight_column

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if any(self.weight_column not in r for r in rows):
            raise ValueError(f"rows need the weight column {self.weight_column!r} (Paced weight per prompt)")
        weights = torch.tensor([float(r[self.weight_column]) for r in rows], dtype=torch.float32)
        batch = self.collator([{k: v for k, v in r.items() if k != self.weight_column} for r in rows])
        batch[self.weight_column] = weights
        return batch


def _direction_from_beta(beta: float) -> str:
    if beta == 0:
        return "forward"
    if beta == 1:
        return "reverse"
    raise ValueError(
        f"PacedGKDTrainer supports beta=0 (forward KL(teacher||student)) and beta=1 (reverse KL(student||teacher)); "
        f"got beta={beta}: the generalised JSD for 0 < beta < 1 has no fused kernel (use GKDTrainer for it)"
    )


def _select_rows(inputs: dict[str, Any], keep: torch.Tensor, n: int) -> dict[str, Any]:
    return {k: v.index_select(0, keep.to(v.device)) if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == n else v
            for k, v in inputs.items()}


class PacedGKDTrainer(GKDTrainer):
    """`GKDTrainer` with Paced per-prompt weights and the fused linear KL (beta 0 or 1 only)."""

    def __init__(self, model=None, teacher_model=None, args=None, data_collator=None, train_dataset=None,
                 *, processing_class=None, weight_column: str = "paced_weight", kl_temperature: float = 1.0,
                 kl_backend: str = "auto", **kwargs):
        if args is None:
            raise ValueError("PacedGKDTrainer needs args (a trl.experimental.gkd.GKDConfig)")
        self.direction = _direction_from_beta(args.beta)
        if not float(kl_temperature) > 0:
            raise ValueError(f"kl_temperature must be > 0, got {kl_temperature!r}")
        if isinstance(model, torch.nn.Module):
            _lm_head(_unwrap(model), "student")
        if isinstance(teacher_model, torch.nn.Module):
            _lm_head(_unwrap(teacher_model), "teacher")
        self.weight_column, self.kl_temperature, self.kl_backend = weight_column, float(kl_temperature), kl_backend
        if train_dataset is not None and hasattr(train_dataset, "column_names"):
            if weight_column not in train_dataset.column_names:
                raise ValueError(f"train_dataset has no weight column {weight_column!r} "
                                 f"(columns: {train_dataset.column_names})")
            train_dataset = train_dataset.filter(lambda w: w > 0, input_columns=[weight_column])
        if data_collator is None:
            data_collator = DataCollatorForChatML(tokenizer=processing_class, max_length=args.max_length)
        super().__init__(model=model, teacher_model=teacher_model, args=args,
                         data_collator=WeightKeepingCollator(data_collator, weight_column),
                         train_dataset=train_dataset, processing_class=processing_class, **kwargs)
        self.teacher_model.eval()
        self.teacher_model.requires_grad_(False)
        self.loss_is_scaled_for_ga = True
        self._generated = False

    # -- normaliser over the optimizer step (dataset responses) -------------------------------
    def _get_num_items_in_batch(self, batch_samples, device):
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        count = torch.as_tensor(sum(response_token_count(b, self.weight_column) for b in batch_samples),
                                device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    # -- generation: weight-0 rows never generated for; note when responses were replaced -----
    def generate_on_policy_outputs(self, model, inputs, generation_config):
        self._generated = True
        return GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)

    def training_step(self, model, inputs, num_items_in_batch=None):
        w = inputs[self.weight_column]
        keep = torch.nonzero(w > 0).squeeze(1)
        if keep.numel() and keep.numel() < w.numel():
            inputs = _select_rows(inputs, keep, w.numel())
        self._generated = False
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError("PacedGKDTrainer.compute_loss has no model outputs to return (no logits are built)")
        batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                 "labels": inputs["labels"], self.weight_column: inputs[self.weight_column]}
        global_count = num_items_in_batch is not None and not self._generated
        if global_count:
            normaliser = num_items_in_batch
        else:
            local = response_token_count(batch, self.weight_column)
            normaliser = local.clamp_min(1) * getattr(self, "current_gradient_accumulation_steps",
                                                     self.args.gradient_accumulation_steps)
        self.teacher_model.eval()
        loss = distillation_loss(model, self.teacher_model, batch, direction=self.direction,
                                 temperature=self.kl_temperature, normaliser=normaliser,
                                 weight_column=self.weight_column, backend=self.kl_backend)
        if global_count and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # DP averages gradients; the count is global
        return loss
