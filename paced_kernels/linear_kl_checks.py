"""Input validation for `fused_linear_kl`: every bad input becomes a ValueError naming the problem.

Kept apart from the math so that all backends (reference, torch, triton) see the same checked,
contiguous inputs and so that a wrong call never reaches a kernel (where it would crash, hang or
return a silently wrong number).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

DIRECTIONS = ("forward", "reverse", "akl")
REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "triton", "torch", "reference")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass
class CheckedKLInputs:
    """Validated inputs plus the per-token weight vector (float32, [N])."""

    student_hidden: torch.Tensor
    student_weight: torch.Tensor
    teacher_hidden: torch.Tensor
    teacher_weight: torch.Tensor
    token_weight: Optional[torch.Tensor]  # None means every token weighs 1


def _require_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _require_2d_float(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} has dtype {x.dtype}; expected one of float32, bfloat16, float16 (float64 for "
            "the reference and torch backends)"
        )


def _require_finite(name: str, x: torch.Tensor) -> None:
    # min/max propagate NaN and expose +-inf, without the [numel] bool temporary of isfinite()
    if x.numel():
        lo, hi = torch.aminmax(x)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or inf")


def check_linear_kl_inputs(
    student_hidden,
    student_weight,
    teacher_hidden,
    teacher_weight,
    *,
    direction: str,
    temperature: float,
    seq_ids,
    seq_weights,
    reduction: str,
    backend: str,
) -> CheckedKLInputs:
    """Validate a `fused_linear_kl` call; return contiguous tensors and the per-token weights."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not (temperature > 0 and temperature < float("inf")):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")

    names = ("student_hidden", "student_weight", "teacher_hidden", "teacher_weight")
    tensors = [_require_tensor(n, v) for n, v in zip(names, (student_hidden, student_weight, teacher_hidden, teacher_weight))]
    for n, x in zip(names, tensors):
        _require_2d_float(n, x)
    sh, sw, th, tw = tensors

    devices = {x.device for x in tensors}
    if len(devices) != 1:
        raise ValueError(
            "all inputs must be on one device, got "
            + ", ".join(f"{n} on {x.device}" for n, x in zip(names, tensors))
        )
    if sh.dtype != sw.dtype:
        raise ValueError(f"student_hidden ({sh.dtype}) and student_weight ({sw.dtype}) must share a dtype")
    if th.dtype != tw.dtype:
        raise ValueError(f"teacher_hidden ({th.dtype}) and teacher_weight ({tw.dtype}) must share a dtype")

    n_tokens, hs = sh.shape
    if th.shape[0] != n_tokens:
        raise ValueError(
            f"token count mismatch: student_hidden has {n_tokens} rows, teacher_hidden has {th.shape[0]}"
        )
    if sw.shape[1] != hs:
        raise ValueError(
            f"student hidden size mismatch: student_hidden is [N, {hs}] but student_weight is {list(sw.shape)} "
            "(expected [V, Hs])"
        )
    if tw.shape[1] != th.shape[1]:
        raise ValueError(
            f"teacher hidden size mismatch: teacher_hidden is [N, {th.shape[1]}] but teacher_weight is "
            f"{list(tw.shape)} (expected [V, Ht])"
        )
    if sw.shape[0] != tw.shape[0]:
        raise ValueError(
            f"vocabulary mismatch: student_weight has {sw.shape[0]} rows, teacher_weight has {tw.shape[0]}"
        )
    if sw.shape[0] == 0:
        raise ValueError("vocabulary is empty (weights have 0 rows)")
    if hs == 0 or th.shape[1] == 0:
        raise ValueError("hidden size must be >= 1")

    if torch.is_grad_enabled() and (th.requires_grad or tw.requires_grad):
        raise ValueError(
            "teacher_hidden / teacher_weight require grad: gradients to the teacher are not supported "
            "(the teacher is frozen); pass .detach()ed teacher tensors"
        )

    for n, x in zip(names, tensors):
        _require_finite(n, x)

    token_weight = None
    if seq_weights is not None and seq_ids is None:
        raise ValueError("seq_weights was given without seq_ids: pass seq_ids mapping each token to its sequence")
    if seq_ids is not None:
        seq_ids = _require_tensor("seq_ids", seq_ids)
        if seq_ids.dim() != 1 or seq_ids.shape[0] != n_tokens:
            raise ValueError(f"seq_ids must have shape [{n_tokens}] (one per token), got {tuple(seq_ids.shape)}")
        if seq_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"seq_ids must be int64 (or int32), got {seq_ids.dtype}")
        if seq_ids.device != sh.device:
            raise ValueError(f"seq_ids is on {seq_ids.device} but the hidden states are on {sh.device}")
        if seq_weights is None:
            n_seq = int(seq_ids.max()) + 1 if n_tokens else 0
        else:
            seq_weights = _require_tensor("seq_weights", seq_weights)
            if seq_weights.dim() != 1:
                raise ValueError(f"seq_weights must be 1-D [B], got shape {tuple(seq_weights.shape)}")
            if not seq_weights.is_floating_point():
                raise ValueError(f"seq_weights must be a float tensor, got {seq_weights.dtype}")
            if seq_weights.device != sh.device:
                raise ValueError(f"seq_weights is on {seq_weights.device} but the hidden states are on {sh.device}")
            if seq_weights.requires_grad and torch.is_grad_enabled():
                raise ValueError("seq_weights must not require grad: Paced weights are fixed for a stage")
            if not bool(torch.isfinite(seq_weights).all()):
                raise ValueError("seq_weights contains NaN or inf")
            if bool((seq_weights < 0).any()):
                raise ValueError("seq_weights must be >= 0, found a negative weight")
            n_seq = seq_weights.shape[0]
        if n_tokens:
            lo, hi = int(seq_ids.min()), int(seq_ids.max())
            if lo < 0 or hi >= max(n_seq, 1) or (seq_weights is not None and hi >= n_seq):
                raise ValueError(
                    f"seq_ids out of range: values span [{lo}, {hi}] but there are {n_seq} sequences"
                )
        if seq_weights is not None:
            token_weight = seq_weights.detach().to(torch.float32)[seq_ids.long()]

    return CheckedKLInputs(sh, sw, th, tw, token_weight)
