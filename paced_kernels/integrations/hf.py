"""Paced-weighted fused distillation inside a Hugging Face `transformers.Trainer`.

- :class:`PacedDistillCollator` pads ``input_ids`` / ``labels`` (and ``teacher_input_ids`` /
  ``teacher_labels``) and keeps the per-row Paced weight column.
- :func:`distillation_loss` is the loss for users with their own loop: rows of weight 0 are dropped
  before any forward, both models run to hidden states only, and `paced_kernels.fused_linear_kl`
  gives ``sum_j w_seq(j) KL_j`` with the ``lm_head`` weights; divided by ``normaliser`` (default:
  the response tokens of the rows with weight > 0).
- :class:`PacedDistillTrainer` is a `Trainer` whose normaliser is counted over the whole optimizer
  step (all gradient-accumulation micro-batches and data-parallel ranks), through the Trainer's own
  ``num_items_in_batch`` mechanism, counting only rows with weight > 0.

Full logits never exist. The student's KL is computed *inside* its ``lm_head`` call (the module's
forward is swapped for the duration of the call), so sharding wrappers that materialise a module's
parameters around its forward (FSDP, DeepSpeed ZeRO-3) hand the fused kernel the full weight and
route its gradient as usual; the CausalLM's forward then returns the scalar KL in place of logits.
The teacher's ``lm_head`` weight is read while its FSDP2 root is unsharded, or inside
``deepspeed.zero.GatheredParameters`` under ZeRO-3.

Label convention (as in Hugging Face causal LMs): ``labels[b, t]`` is predicted by the hidden state
at ``t - 1``; ``-100`` marks tokens outside the response.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from transformers import Trainer

from ..linear_kl import fused_linear_kl

__all__ = ["PacedDistillCollator", "PacedDistillTrainer", "distillation_loss", "response_token_count"]

IGNORE_INDEX = -100
_DIRECTIONS = ("forward", "reverse", "akl")


# --------------------------------------------------------------------------------------------
# collation
# --------------------------------------------------------------------------------------------


@dataclass
class PacedDistillCollator:
    """Right-pads the token columns of a list of rows and stacks the weight column.

    Columns: ``input_ids``, ``labels`` (padded with ``IGNORE_INDEX``), optional
    ``teacher_input_ids`` / ``teacher_labels``, and ``weight_column`` (float). ``attention_mask`` /
    ``teacher_attention_mask`` are built from the lengths. Other columns are dropped.
    """

    pad_token_id: int = 0
    weight_column: str = "paced_weight"

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PacedDistillCollator got an empty list of rows")
        out: dict[str, torch.Tensor] = {}
        for prefix in ("", "teacher_"):
            ids_key, lab_key = f"{prefix}input_ids", f"{prefix}labels"
            present = [ids_key in r for r in rows]
            if not any(present):
                continue
            if not all(present):
                raise ValueError(f"column {ids_key!r} is present in some rows and missing in others")
            ids = [list(r[ids_key]) for r in rows]
            labels = [list(r[lab_key]) if lab_key in r else None for r in rows]
            if any(lab is None for lab in labels):
                raise ValueError(f"rows with {ids_key!r} need {lab_key!r} (-100 outside the response)")
            for i, (a, b) in enumerate(zip(ids, labels)):
                if len(a) != len(b):
                    raise ValueError(f"row {i}: {ids_key} has {len(a)} tokens but {lab_key} has {len(b)}")
            width = max(len(a) for a in ids)
            t_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            t_lab = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (a, b) in enumerate(zip(ids, labels)):
                t_ids[i, : len(a)] = torch.as_tensor(a, dtype=torch.long)
                t_lab[i, : len(b)] = torch.as_tensor(b, dtype=torch.long)
                mask[i, : len(a)] = 1
            out[ids_key], out[lab_key], out[f"{prefix}attention_mask"] = t_ids, t_lab, mask
        if "input_ids" not in out:
            raise ValueError("rows need an 'input_ids' column")
        if any(self.weight_column not in r for r in rows):
            raise ValueError(f"rows need the weight column {self.weight_column!r} (Paced weight per row)")
        out[self.weight_column] = torch.tensor([float(r[self.weight_column]) for r in rows], dtype=torch.float32)
        return out


# --------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------


def _response_mask(labels: torch.Tensor) -> torch.Tensor:
    """[B, L-1] bool: hidden state t predicts labels[t + 1], a response token."""
    return labels[:, 1:] != IGNORE_INDEX


def response_token_count(batch: dict[str, torch.Tensor], weight_column: str = "paced_weight") -> torch.Tensor:
    """Response tokens of the rows with weight > 0 (the Paced normaliser of one micro-batch)."""
    live = batch[weight_column].to(batch["labels"].device) > 0
    return (_response_mask(batch["labels"]) & live[:, None]).sum()


def _check_weights(w: torch.Tensor, weight_column: str) -> None:
    if w.ndim != 1:
        raise ValueError(f"{weight_column} must hold one number per row, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{weight_column} must be finite and >= 0, got {w.tolist()}")


def _live_rows(batch: dict[str, torch.Tensor], weight_column: str) -> dict[str, torch.Tensor]:
    w = batch[weight_column]
    _check_weights(w, weight_column)
    keep = torch.nonzero(w > 0).squeeze(1)
    if keep.numel() == w.numel():
        return batch
    return {k: v.index_select(0, keep.to(v.device)) if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == w.numel() else v
            for k, v in batch.items()}


def _teacher_view(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    if "teacher_input_ids" not in batch:
        return batch["input_ids"], batch["labels"], batch.get("attention_mask")
    if "teacher_labels" not in batch:
        raise ValueError("a batch with 'teacher_input_ids' needs 'teacher_labels'")
    return batch["teacher_input_ids"], batch["teacher_labels"], batch.get("teacher_attention_mask")


def _check_same_responses(s_labels: torch.Tensor, t_labels: torch.Tensor) -> None:
    s_mask, t_mask = _response_mask(s_labels), _response_mask(t_labels)
    s_count, t_count = s_mask.sum(1), t_mask.sum(1)
    if not torch.equal(s_count, t_count.to(s_count.device)):
        bad = int(torch.nonzero(s_count != t_count.to(s_count.device))[0, 0])
        raise ValueError(
            f"row {bad}: the student's labels have {int(s_count[bad])} response tokens but teacher_labels "
            f"have {int(t_count[bad])}; both models must score the same response tokens"
        )
    s_tok, t_tok = s_labels[:, 1:][s_mask], t_labels[:, 1:][t_mask].to(s_labels.device)
    if not torch.equal(s_tok, t_tok):
        raise ValueError("labels and teacher_labels hold different response tokens; both models must score the same response")


def _lm_head(model: nn.Module, role: str) -> nn.Linear:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{role} ({type(model).__name__}) must be a causal LM with an nn.Linear lm_head")
    if head.bias is not None:
        raise ValueError(f"{role}: lm_head has a bias, which the fused linear KL does not model")
    return head


def _unwrap(model: nn.Module) -> nn.Module:
    """The causal LM under DDP / DeepSpeed engine wrappers (FSDP2 modules are the model itself)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


@contextlib.contextmanager
def _lm_head_replaced(head: nn.Linear, fn):
    """Swap ``head.forward`` for ``fn(hidden, weight)`` (hooks of sharding wrappers still run around it)."""
    head.forward = lambda hidden: fn(hidden, head.weight)
    try:
        yield
    finally:
        del head.forward


@contextlib.contextmanager
def _full_weight(weight: torch.Tensor):
    """The full weight of a DeepSpeed ZeRO-3 parameter (gathered for the block), else the weight."""
    if hasattr(weight, "ds_id"):
        import deepspeed  # only when the parameter is ZeRO-3 partitioned

        with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
            yield weight
    else:
        yield weight


def _select_positions(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = _response_mask(labels.to(hidden.device))
    return hidden[:, :-1][mask]


def _teacher_hidden(teacher: nn.Module, ids, labels, mask) -> tuple[torch.Tensor, nn.Linear]:
    root = teacher
    causal = _unwrap(teacher)
    head = _lm_head(causal, "teacher")
    captured = {}

    def capture(hidden, weight):
        captured["h"] = _select_positions(hidden, labels)
        return hidden.new_zeros(hidden.shape[0], 0, 1)

    with torch.no_grad(), _lm_head_replaced(head, capture):
        root(input_ids=ids, attention_mask=mask, use_cache=False)
    return captured["h"], head


def distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    direction: str = "forward",
    temperature: float = 1.0,
    normaliser: Optional[float | torch.Tensor] = None,
    weight_column: str = "paced_weight",
    backend: str = "auto",
) -> torch.Tensor:
    """``sum_j w_seq(j) KL_j / normaliser`` over the response tokens of ``batch`` (see module docstring).

    ``batch`` is a :class:`PacedDistillCollator` output on the models' device. Rows of weight 0 never
    reach a model. ``normaliser=None`` uses this batch's count of response tokens of rows with
    weight > 0; pass the count over a whole optimizer step for gradient accumulation / data parallel.
    Returns a graph-attached zero when no row has weight > 0.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    for key in ("input_ids", "labels", weight_column):
        if key not in batch:
            raise ValueError(f"batch has no {key!r} column (columns: {sorted(batch)})")
    live = _live_rows(batch, weight_column)
    s_ids, s_labels, s_mask = live["input_ids"], live["labels"], live.get("attention_mask")
    t_ids, t_labels, t_mask = _teacher_view(live)
    n_rows = s_ids.shape[0]
    if n_rows:
        _check_same_responses(s_labels, t_labels)
    count = int(_response_mask(s_labels).sum()) if n_rows else 0
    if normaliser is None:
        normaliser = count
    if isinstance(normaliser, torch.Tensor):
        normaliser = normaliser.detach().to(torch.float64)
    if (float(normaliser) <= 0) and count > 0:
        raise ValueError(f"normaliser must be > 0 when there are response tokens, got {float(normaliser)}")
    params = [p for p in _unwrap(student).parameters() if p.requires_grad]
    if count == 0:
        # nothing to learn from: a zero that backward() accepts
        return sum(p.sum() * 0 for p in params[:1]) if params else torch.zeros((), requires_grad=True)

    t_hidden, t_head = _teacher_hidden(teacher, t_ids, t_labels, t_mask)
    seq_ids = torch.arange(n_rows, device=s_labels.device)[:, None].expand_as(_response_mask(s_labels))
    seq_ids = seq_ids[_response_mask(s_labels)]
    seq_weights = live[weight_column].to(device=s_labels.device, dtype=torch.float32)
    s_head = _lm_head(_unwrap(student), "student")

    def student_kl(hidden, weight):
        h = _select_positions(hidden, s_labels)
        with _full_weight(t_head.weight) as tw:
            tw = tw.detach()
            if hasattr(teacher, "unshard"):  # FSDP2: root stays unsharded after forward; no-op then
                teacher.unshard()
            th = t_hidden.to(h.dtype)
            w = weight if weight.dtype == h.dtype else weight.to(h.dtype)
            kl = fused_linear_kl(h, w, th, tw.to(h.dtype), direction=direction, temperature=float(temperature),
                                 seq_ids=seq_ids.to(h.device), seq_weights=seq_weights.to(h.device),
                                 reduction="sum", backend=backend)
        return kl.reshape(1, 1, 1)

    with _lm_head_replaced(s_head, student_kl):
        out = student(input_ids=s_ids, attention_mask=s_mask, use_cache=False)
    kl_sum = (out.logits if hasattr(out, "logits") else out[0]).reshape(())
    return kl_sum / (normaliser if isinstance(normaliser, torch.Tensor) else float(normaliser))


# --------------------------------------------------------------------------------------------
# the Trainer
# --------------------------------------------------------------------------------------------


class PacedDistillTrainer(Trainer):
    """`transformers.Trainer` that distils ``teacher_model`` into ``model`` with Paced weights.

    ``train_dataset`` rows: ``input_ids``, ``labels`` (-100 outside the response), the weight
    column, optionally ``teacher_input_ids`` / ``teacher_labels``. Rows of weight 0 are filtered
    out of a `datasets.Dataset` up front and, should any reach a batch, dropped before the forward.
    The loss of a step is ``sum_j w_seq(j) KL_j / N`` with N the response tokens of the live rows
    of the whole step (all accumulation micro-batches, all ranks).
    """

    def __init__(self, model=None, teacher_model=None, args=None, train_dataset=None, *,
                 direction: str = "forward", temperature: float = 1.0,
                 weight_column: str = "paced_weight", kl_backend: str = "auto",
                 data_collator=None, **kwargs):
        if teacher_model is None:
            raise ValueError("PacedDistillTrainer needs teacher_model")
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        _lm_head(_unwrap(model), "student")
        _lm_head(_unwrap(teacher_model), "teacher")
        self.direction, self.temperature = direction, float(temperature)
        self.weight_column, self.kl_backend = weight_column, kl_backend
        train_dataset = self._drop_zero_weight_rows(train_dataset, weight_column)
        if data_collator is None:
            pad = getattr(getattr(model, "config", None), "pad_token_id", None)
            data_collator = PacedDistillCollator(pad_token_id=0 if pad is None else int(pad),
                                                 weight_column=weight_column)
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator,
                         **kwargs)
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's token count
        self.teacher_model = self._prepare_teacher(teacher_model)

    # -- data -----------------------------------------------------------------------------
    @staticmethod
    def _drop_zero_weight_rows(dataset, weight_column):
        if dataset is None or not hasattr(dataset, "column_names"):
            return dataset
        if weight_column not in dataset.column_names:
            raise ValueError(f"train_dataset has no weight column {weight_column!r} (columns: {dataset.column_names})")
        return dataset.filter(lambda w: w > 0, input_columns=[weight_column])

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "labels", "teacher_input_ids", "teacher_labels",
                                       self.weight_column]

    # -- teacher --------------------------------------------------------------------------
    def _prepare_teacher(self, teacher):
        teacher.eval()
        teacher.requires_grad_(False)
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        if kind in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            # sharded like the student (ZeRO-3 / FSDP), never trained
            teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        else:
            teacher = teacher.to(self.args.device)
        teacher.eval()
        return teacher

    # -- normaliser -----------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples, device):
        if not batch_samples:
            return None
        count = sum(response_token_count(b, self.weight_column) for b in batch_samples)
        count = torch.as_tensor(count, device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError("PacedDistillTrainer.compute_loss has no model outputs to return (no logits are built)")
        self.teacher_model.eval()
        loss = distillation_loss(model, self.teacher_model, inputs, direction=self.direction,
                                 temperature=self.temperature, normaliser=num_items_in_batch,
                                 weight_column=self.weight_column, backend=self.kl_backend)
        if num_items_in_batch is not None and self.args.world_size > 1:
            # data-parallel gradients are averaged over ranks; the normaliser already is global
            loss = loss * self.accelerator.num_processes
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = distillation_loss(model, self.teacher_model, inputs, direction=self.direction,
                                     temperature=self.temperature, weight_column=self.weight_column,
                                     backend=self.kl_backend)
        return loss.detach(), None, None
