"""Chunked PyTorch backend of the linear KL: no [N, V] tensor, gradients produced in the forward.

Tokens are processed in chunks sized from a memory budget. For each chunk the student and teacher
logits ([C, V], float32) are formed by one GEMM each, turned into log-probabilities in place, the
per-token KL is read off, and -- when gradients are wanted -- the logit gradient
G = c_j * dKL/ds / tau overwrites the student buffer and is pushed through two GEMMs into
grad_h (rows of this chunk) and grad_W (accumulated). Three [C, V] float32 buffers live at once.

Because the loss is a weighted sum and the weights are inputs, computing the gradients in the
forward pass costs the minimum FLOPs: 2NV(Hs+Ht) for the logits plus 4NVHs for the gradients, no
recomputation. Works on CPU and GPU; float32 math whatever the input dtype (on CUDA, bf16/fp16
operands go through GEMMs with float32 outputs, so logits are never rounded to bf16).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .linear_kl_reference import akl_coefficients

DEFAULT_CHUNK_BUDGET_BYTES = int(os.environ.get("PACED_KL_CHUNK_BYTES", 24 * 2**20))
_LIVE_BUFFERS = 3  # [C, V] float32 buffers alive at once


def chunk_tokens(vocab_size: int, n_tokens: int, budget_bytes: int = DEFAULT_CHUNK_BUDGET_BYTES) -> int:
    """Tokens per chunk so that the chunk's [C, V] float32 buffers fit in `budget_bytes`."""
    per_token = _LIVE_BUFFERS * vocab_size * 4
    return max(1, min(n_tokens, budget_bytes // per_token))


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with at least a float32 result and float32 accumulation, whatever the operand dtype."""
    if a.dtype in (torch.float32, torch.float64):
        return a @ b
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):
            pass
    return a.float() @ b.float()


def _token_kl_and_logit_grad(s, t, direction, want_grad):
    """In place on float32 logits s, t ([C, V], already divided by tau).

    Returns (kl [C], g) where g (aliasing s) is dKL/ds when want_grad, else None.
    """
    s.sub_(torch.logsumexp(s, dim=-1, keepdim=True))  # s <- log p_s
    t.sub_(torch.logsumexp(t, dim=-1, keepdim=True))  # t <- log p_t
    if direction == "forward":
        p_t = torch.exp(t)
        t.sub_(s)  # t <- log p_t - log p_s
        kl = torch.linalg.vecdot(p_t, t)
        if not want_grad:
            return kl, None
        s.exp_().sub_(p_t)  # s <- p_s - p_t
        return kl, s
    if direction == "reverse":
        p_s = torch.exp(s)
        s.sub_(t)  # s <- log p_s - log p_t
        kl = torch.linalg.vecdot(p_s, s)
        if not want_grad:
            return kl, None
        s.sub_(kl.unsqueeze(1)).mul_(p_s)  # s <- p_s * (log p_s - log p_t - KL)
        return kl, s
    if direction == "akl":
        c_head, c_tail = akl_coefficients(t, s)
        p_s, p_t = torch.exp(s), torch.exp(t)
        diff = s - t  # log p_s - log p_t
        fkl = -torch.linalg.vecdot(p_t, diff)
        rkl = torch.linalg.vecdot(p_s, diff)
        kl = c_head * fkl + c_tail * rkl
        if not want_grad:
            return kl, None
        # c_head * (p_s - p_t) + c_tail * p_s * (diff - rkl)
        diff.sub_(rkl.unsqueeze(1)).mul_(p_s).mul_(c_tail.unsqueeze(1))
        diff.add_((p_s - p_t).mul_(c_head.unsqueeze(1)))
        s.copy_(diff)
        return kl, s
    raise ValueError(f"unknown direction {direction!r}")


@torch.no_grad()
def chunked_linear_kl(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    token_scale: Optional[torch.Tensor],
    direction: str,
    temperature: float,
    chunk_size: Optional[int] = None,
):
    """Backend contract (see linear_kl.py): per-token KL [N] float32 and the gradients of
    sum_j token_scale[j] * KL_j w.r.t. student_hidden and student_weight (None if token_scale is None)."""
    n_tokens, vocab = student_hidden.shape[0], student_weight.shape[0]
    chunk = chunk_size or chunk_tokens(vocab, n_tokens)
    want_grad = token_scale is not None
    inv_tau = 1.0 / float(temperature)
    out_dtype = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32

    # GEMM operands: float32/float64 as given; low precision stays low precision on CUDA (fp32
    # outputs) and is upcast once on CPU, where bf16 GEMMs are slow and imprecise.
    def operand(x):
        if x.dtype in (torch.float32, torch.float64) or x.is_cuda:
            return x
        return x.float()

    w_s, w_t = operand(student_weight), operand(teacher_weight)
    w_s_T, w_t_T = w_s.T, w_t.T
    kl = torch.empty(n_tokens, dtype=out_dtype, device=student_hidden.device)
    grad_h = grad_w = None
    if want_grad:
        grad_h = torch.empty_like(student_hidden)
        grad_w = torch.zeros(w_s.shape, dtype=torch.promote_types(w_s.dtype, torch.float32), device=w_s.device)

    for start in range(0, n_tokens, chunk):
        stop = min(start + chunk, n_tokens)
        h_s = operand(student_hidden[start:stop])
        s = _mm(h_s, w_s_T)
        t = _mm(operand(teacher_hidden[start:stop]), w_t_T).to(s.dtype)
        if inv_tau != 1.0:
            s.mul_(inv_tau)
            t.mul_(inv_tau)
        kl_chunk, g = _token_kl_and_logit_grad(s, t, direction, want_grad)
        kl[start:stop] = kl_chunk
        if want_grad:
            g.mul_((token_scale[start:stop].to(g.dtype) * inv_tau).unsqueeze(1))
            g_op = g if (w_s.dtype == g.dtype) else g.to(w_s.dtype)
            grad_h[start:stop] = _mm(g_op, w_s)
            if g_op.dtype == grad_w.dtype:
                grad_w.addmm_(g_op.T, h_s)
            else:
                grad_w.add_(_mm(g_op.T, h_s))
    if want_grad:
        grad_w = grad_w.to(student_weight.dtype)
    return kl, grad_h, grad_w
