"""Public entry points of the fused linear KL: `fused_linear_kl` and the `FusedLinearKL` module.

The front end validates the call, drops tokens whose sequence weight is 0 before any GEMM (so
Paced's p in {0, 1} problems cost nothing), and hands the live tokens to one backend:

- "reference": plain PyTorch on full logits (`linear_kl_reference`), autograd, the ground truth;
- "torch": chunked PyTorch (`linear_kl_torch`), CPU and GPU, no [N, V] tensor;
- "triton": per token chunk, cuBLAS logit GEMMs (fp32 out) + a Triton row kernel (KL and logit
  gradient in place) + gradient GEMMs (`linear_kl_triton`, `linear_kl_rows`); logits once, no atomics;
- "auto": triton on CUDA when importable, else torch.

Backends share one primitive: per-token KL plus the gradients of sum_j c_j KL_j. For reductions
"sum"/"mean" the weights are known in forward, so the gradients are produced there and scaled by
grad_output in backward; for "none" the backward recomputes with c = grad_output * w.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .linear_kl_checks import check_linear_kl_inputs
from .linear_kl_reference import reference_kl_per_token
from .linear_kl_torch import chunked_linear_kl

__all__ = ["fused_linear_kl", "FusedLinearKL"]


def _triton_backend() -> Callable:
    try:
        from .linear_kl_triton import triton_linear_kl
    except ImportError as exc:  # triton missing
        raise ValueError(f"backend='triton' needs the `triton` package ({exc}); use backend='torch'") from exc
    return triton_linear_kl


def _resolve_backend(backend: str, device: torch.device, direction: str) -> str:
    if backend == "auto":
        if device.type == "cuda" and direction != "akl":
            try:
                import triton  # noqa: F401

                return "triton"
            except ImportError:
                return "torch"
        return "torch"
    if backend == "triton" and direction == "akl":
        raise ValueError("direction='akl' is supported by the 'torch' and 'reference' backends, not 'triton'")
    return backend


class LinearKLFunction(torch.autograd.Function):
    """Autograd wrapper around a backend primitive (see module docstring)."""

    @staticmethod
    def forward(ctx, student_hidden, student_weight, teacher_hidden, teacher_weight, token_weight,
                scale, per_token, kernel, direction, temperature):
        ctx.kernel, ctx.direction, ctx.temperature, ctx.per_token = kernel, direction, temperature, per_token
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        if per_token:
            kl, _, _ = kernel(student_hidden, student_weight, teacher_hidden, teacher_weight, None, direction, temperature)
            ctx.save_for_backward(student_hidden, student_weight, teacher_hidden, teacher_weight, token_weight)
            return kl * token_weight
        token_scale = token_weight * scale
        kl, grad_h, grad_w = kernel(
            student_hidden, student_weight, teacher_hidden, teacher_weight,
            token_scale if want_grad else None, direction, temperature,
        )
        # kept as attributes, not saved tensors: backward hands them over and drops its reference,
        # so autograd can adopt them as .grad without a copy
        ctx.grads = (grad_h, grad_w)
        return torch.dot(kl, token_scale.to(kl.dtype))

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.per_token:
            sh, sw, th, tw, token_weight = ctx.saved_tensors
            _, grad_h, grad_w = ctx.kernel(
                sh, sw, th, tw, (grad_output * token_weight).float().contiguous(), ctx.direction, ctx.temperature
            )
        else:
            if ctx.grads is None:
                raise RuntimeError(
                    "fused_linear_kl computes its gradients in the forward pass and hands them over once; "
                    "backward through it twice (retain_graph) needs reduction='none'"
                )
            (grad_h, grad_w), ctx.grads = ctx.grads, None
            if grad_h is not None and not bool(grad_output == 1):
                # the saved gradients belong to this call alone: scale them in place, no copy
                grad_h = grad_h.mul_(grad_output.to(grad_h.dtype))
                grad_w = grad_w.mul_(grad_output.to(grad_w.dtype))
        return grad_h, grad_w, None, None, None, None, None, None, None, None


def fused_linear_kl(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    *,
    direction: str = "forward",
    temperature: float = 1.0,
    seq_ids: Optional[torch.Tensor] = None,
    seq_weights: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """KL between student and teacher next-token distributions, straight from hidden states.

    student logits = student_hidden @ student_weight.T / temperature (teacher likewise);
    direction "forward" is KL(teacher || student), "reverse" KL(student || teacher), "akl" the
    token-level adaptive mix of both (Wu et al. 2025; torch/reference backends). Token j weighs
    w_j = seq_weights[seq_ids[j]] (1 if no weights). reduction "sum" -> sum_j w_j KL_j,
    "mean" -> that / N (N counts every token, weighted or not), "none" -> the [N] vector w_j KL_j
    (exactly 0 for weight-0 tokens). The result is float32 (float64 for float64 inputs).
    Gradients flow to student_hidden and student_weight; teacher tensors must not require grad.
    """
    checked = check_linear_kl_inputs(
        student_hidden, student_weight, teacher_hidden, teacher_weight,
        direction=direction, temperature=temperature, seq_ids=seq_ids, seq_weights=seq_weights,
        reduction=reduction, backend=backend,
    )
    sh, sw, th, tw = checked.student_hidden, checked.student_weight, checked.teacher_hidden, checked.teacher_weight
    n_tokens = sh.shape[0]
    out_dtype = torch.float64 if sh.dtype == torch.float64 else torch.float32
    token_weight = checked.token_weight
    if token_weight is None:
        token_weight = torch.ones(n_tokens, dtype=torch.float32, device=sh.device)

    live = None
    if n_tokens and not bool((token_weight != 0).all()):
        live = torch.nonzero(token_weight != 0).squeeze(1)
    n_live = n_tokens if live is None else int(live.numel())

    if n_live == 0:
        # nothing to compute; keep the result attached to the graph so backward() still works
        zero = (sh.sum() * 0 + sw.sum() * 0).to(out_dtype)
        return zero.expand(n_tokens).clone() if reduction == "none" else zero

    if live is not None:
        sh, th, token_weight = sh.index_select(0, live), th.index_select(0, live), token_weight.index_select(0, live)

    name = _resolve_backend(backend, sh.device, direction)
    if name == "reference":
        kl = reference_kl_per_token(sh, sw, th.detach(), tw.detach(), direction, temperature)
        weighted = kl * token_weight.to(kl.dtype)
        per_token = weighted
    else:
        if name == "triton" and sh.dtype == torch.float64:
            raise ValueError("backend='triton' takes float32/bfloat16/float16 inputs, got float64")
        kernel = _triton_backend() if name == "triton" else chunked_linear_kl
        if name == "triton" and th.dtype != sh.dtype:
            th, tw = th.to(sh.dtype), tw.to(sh.dtype)
        factor = 1.0 / n_tokens if reduction == "mean" else 1.0
        args = (sh.contiguous(), sw.contiguous(), th.detach().contiguous(), tw.detach().contiguous(),
                token_weight.contiguous())
        if reduction == "none":
            per_token = LinearKLFunction.apply(*args, 1.0, True, kernel, direction, float(temperature))
        else:
            return LinearKLFunction.apply(*args, factor, False, kernel, direction, float(temperature)).to(out_dtype)

    if reduction == "none":
        if live is None:
            return per_token.to(out_dtype)
        full = torch.zeros(n_tokens, dtype=out_dtype, device=sh.device)
        return full.index_copy(0, live, per_token.to(out_dtype))
    total = per_token.sum().to(out_dtype)
    return total / n_tokens if reduction == "mean" else total


class FusedLinearKL(torch.nn.Module):
    """Module form of `fused_linear_kl` (direction, temperature, reduction and backend fixed at init)."""

    def __init__(self, direction: str = "forward", temperature: float = 1.0, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__()
        self.direction, self.temperature, self.reduction, self.backend = direction, temperature, reduction, backend

    def forward(self, student_hidden, student_weight, teacher_hidden, teacher_weight, seq_ids=None, seq_weights=None):
        return fused_linear_kl(
            student_hidden, student_weight, teacher_hidden, teacher_weight,
            direction=self.direction, temperature=self.temperature, seq_ids=seq_ids,
            seq_weights=seq_weights, reduction=self.reduction, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"direction={self.direction!r}, temperature={self.temperature}, reduction={self.reduction!r}, backend={self.backend!r}"
