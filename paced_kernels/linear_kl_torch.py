"""Chunked PyTorch backend of the linear KL: no [N, V] tensor, gradients produced in the forward.

Because the loss is a weighted sum and the weights are inputs, the gradients are computed in the
forward call (the autograd Function scales them by grad_output later). Two strategies, picked
from a memory budget for the float32 work buffers:

- row chunks (one pass): C tokens at a time with full-vocabulary logits [C, V]; log-softmax in
  place, KL read off, the logit gradient G overwrites the student buffer and goes through two
  GEMMs into grad_h and grad_W. Minimal FLOPs (2NV(Hs+Ht) + 4NVHs), but each chunk re-reads both
  lm_head weights, so it needs C large enough to stay compute bound.
- vocabulary blocks (two passes, flash-attention style): all tokens of a large row chunk against
  V_b vocabulary columns at a time. Pass 1 keeps running maxima, sums and the KL accumulator
  (kernel-math.md) and yields lse and KL per token; pass 2 recomputes each block's logits and
  pushes G into grad_h and grad_W. 1.5x the FLOPs, but memory is C x V_b and the weights are
  read twice in all: the better trade when a full-vocabulary row chunk would be small.

On CPU the elementwise work of a row chunk runs slab by slab (`CPU_SLAB_ROWS` rows, ~1 MB per
tensor at V=32768): every pass over a slab hits cache, and log_softmax (one fused kernel per row)
works in place, so a chunk needs only its two logit buffers. Full-tile passes over a [C, V] chunk
that exceeds the caches cost ~3x as much CPU time. GPUs keep the full-tile path.

All softmax math is float32 whatever the input dtype (float64 stays float64); on CUDA, bf16/fp16
operands go through GEMMs with float32 outputs, so logits are never rounded to bf16. AKL needs
the sorted teacher distribution per token, so it always uses row chunks.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .linear_kl_reference import akl_coefficients

# Memory for the float32 work buffers; PACED_KL_CHUNK_MB overrides. GPUs have room and bandwidth
# for large row chunks. On CPU, one-pass row chunks of >= 128 tokens (slab-wise elementwise work)
# beat two-pass vocabulary blocks, which recompute the logits (1.5x the FLOPs); 64 MB holds 256
# tokens at V=32768. Larger vocabularies fall back to vocabulary blocks under the same budget.
CHUNK_BUDGET_MB = {"cpu": 64, "cuda": 2048}
MIN_ROW_CHUNK = {"cpu": 128, "cuda": 256}  # below this many tokens per row chunk, use vocab blocks
MIN_VOCAB_BLOCK = 2048
MAX_ROWS_PER_BLOCK_PASS = 4096  # tokens per row chunk in vocabulary-block mode (upper bound)
_LIVE_BUFFERS = 4  # [rows, cols] float32 buffers alive at once (full-tile passes, vocabulary blocks)
_LIVE_BUFFERS_SLABS = 2  # CPU row chunks: the two logit buffers (the slab temporary is ~1 MB)
CPU_SLAB_ROWS = 8  # rows per slab of the CPU elementwise work (measured: 4-16 within 10%, 64 +50%, 256 +3x)


def budget_bytes(device: torch.device) -> int:
    mb = int(os.environ.get("PACED_KL_CHUNK_MB", CHUNK_BUDGET_MB.get(device.type, 512)))
    return mb * 2**20


def plan_chunks(n_tokens: int, vocab: int, device: torch.device, direction: str) -> tuple[int, Optional[int]]:
    """(rows per chunk, vocab columns per block or None for full-vocabulary row chunks)."""
    budget = budget_bytes(device)
    row_buffers = _LIVE_BUFFERS_SLABS if _uses_slabs(device, direction) else _LIVE_BUFFERS
    rows = max(1, min(n_tokens, budget // (row_buffers * 4 * vocab)))
    if direction == "akl" or rows >= min(n_tokens, MIN_ROW_CHUNK.get(device.type, 256)):
        return rows, None
    # wide vocabulary blocks keep the GEMMs efficient (measured on CPU: 512 x 2048 tiles beat
    # 1024 x 1024 and 2048 x 512 by 1.3-2x); rows take what the budget leaves
    elems = budget // (_LIVE_BUFFERS * 4)
    rows = min(n_tokens, MAX_ROWS_PER_BLOCK_PASS, max(128, elems // MIN_VOCAB_BLOCK))
    cols = max(MIN_VOCAB_BLOCK, elems // rows)
    return rows, min(cols, vocab)


def _uses_slabs(device: torch.device, direction: str) -> bool:
    return device.type == "cpu" and direction != "akl"


def _row_chunk_kl_slabs(s, t, direction, scale, kl_out, slab=CPU_SLAB_ROWS):
    """CPU form of `_row_chunk_kl`, in place, slab by slab of rows (each slab's passes stay in cache).

    s, t: [C, V] logits (divided by tau); scale: [C, 1] (token scale / tau) or None for the loss
    only. Writes KL into kl_out [C]; returns G = scale * dKL/ds (over s for forward KL, over t
    for reverse) or None. log_softmax runs in place (one fused kernel per row); the slab's
    probabilities go to a [slab, V] temporary.
    """
    rows = s.shape[0]
    probs = torch.empty((min(slab, rows), s.shape[1]), dtype=s.dtype, device=s.device)
    for lo in range(0, rows, slab):
        hi = min(lo + slab, rows)
        ls, lt, p = s[lo:hi], t[lo:hi], probs[: hi - lo]
        torch.log_softmax(ls, 1, out=ls)
        torch.log_softmax(lt, 1, out=lt)
        if direction == "forward":
            torch.exp(lt, out=p)  # p_t
            kl = torch.linalg.vecdot(p, lt.sub_(ls))  # sum p_t (log p_t - log p_s)
            kl_out[lo:hi] = kl
            if scale is not None:
                ls.exp_().sub_(p).mul_(scale[lo:hi])  # scale (p_s - p_t)
            continue
        torch.exp(ls, out=p)  # p_s
        diff = lt.sub_(ls).neg_()  # log p_s - log p_t
        kl = torch.linalg.vecdot(p, diff)
        kl_out[lo:hi] = kl
        if scale is not None:
            diff.sub_(kl.unsqueeze(1)).mul_(p).mul_(scale[lo:hi])  # scale p_s (log p_s/p_t - KL)
    if scale is None:
        return None
    return s if direction == "forward" else t


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


def _operand(x: torch.Tensor) -> torch.Tensor:
    """GEMM operand: as given on CUDA or in fp32/fp64; upcast on CPU (bf16 GEMMs are slow there)."""
    if x.dtype in (torch.float32, torch.float64) or x.is_cuda:
        return x
    return x.float()


def _row_chunk_kl(s, t, direction, want_grad):
    """In place on full-vocabulary logits s, t ([C, V], divided by tau).

    Returns (kl [C], g) where g is dKL/ds when want_grad, else None. Two exponentials per
    element in all (exp is the costly elementwise op on CPU): lse is assembled from the
    max-shifted exponentials that the KL and the gradient need anyway.
    """
    if direction == "akl":
        return _akl_row_chunk(s, t, want_grad)
    s.sub_(s.amax(1, keepdim=True))  # s' = s - max s
    t.sub_(t.amax(1, keepdim=True))
    e_s, e_t = torch.exp(s), torch.exp(t)
    z_s, z_t = e_s.sum(1), e_t.sum(1)
    log_ratio = torch.log(z_s) - torch.log(z_t)  # lse(s) - lse(t) up to the shifts
    if direction == "forward":
        kl = torch.linalg.vecdot(e_t, t.sub_(s)) / z_t + log_ratio  # sum p_t (t' - s') + ...
        if not want_grad:
            return kl, None
        e_t.mul_((1.0 / z_t).unsqueeze(1))
        return kl, e_s.mul_((1.0 / z_s).unsqueeze(1)).sub_(e_t)  # p_s - p_t
    diff = s.sub_(t)  # s' - t'
    kl = torch.linalg.vecdot(e_s, diff) / z_s - log_ratio
    if not want_grad:
        return kl, None
    # p_s * (log p_s - log p_t - KL) = p_s * (s' - t' - (lse_s - lse_t) - KL)
    diff.sub_((log_ratio + kl).unsqueeze(1))
    return kl, diff.mul_(e_s).mul_((1.0 / z_s).unsqueeze(1))


def _akl_row_chunk(s, t, want_grad):
    """AKL on full-vocabulary logits: c_head * FKL + c_tail * RKL with constant coefficients."""
    s.sub_(torch.logsumexp(s, dim=-1, keepdim=True))  # log p_s
    t.sub_(torch.logsumexp(t, dim=-1, keepdim=True))  # log p_t
    c_head, c_tail = akl_coefficients(t, s)
    p_s, p_t = torch.exp(s), torch.exp(t)
    diff = s - t
    rkl = torch.linalg.vecdot(p_s, diff)
    kl = c_head * -torch.linalg.vecdot(p_t, diff) + c_tail * rkl
    if not want_grad:
        return kl, None
    diff.sub_(rkl.unsqueeze(1)).mul_(p_s).mul_(c_tail.unsqueeze(1))
    diff.add_((p_s - p_t).mul_(c_head.unsqueeze(1)))
    return kl, s.copy_(diff)


def _block_logits(h_s, h_t, w_s, w_t, lo, hi, inv_tau):
    s = _mm(h_s, w_s[lo:hi].T)
    t = _mm(h_t, w_t[lo:hi].T).to(s.dtype)
    if inv_tau != 1.0:
        s.mul_(inv_tau)
        t.mul_(inv_tau)
    return s, t


def _vocab_block_stats(h_s, h_t, w_s, w_t, cols, inv_tau, direction):
    """Pass 1: online lse of both models and the KL per token, streaming vocabulary blocks."""
    rows, vocab = h_s.shape[0], w_s.shape[0]
    dt = torch.float64 if h_s.dtype == torch.float64 else torch.float32
    m_s = torch.full((rows,), float("-inf"), dtype=dt, device=h_s.device)
    m_t, z_s, z_t, acc = m_s.clone(), torch.zeros_like(m_s), torch.zeros_like(m_s), torch.zeros_like(m_s)
    for lo in range(0, vocab, cols):
        s, t = _block_logits(h_s, h_t, w_s, w_t, lo, min(lo + cols, vocab), inv_tau)
        new_m_s = torch.maximum(m_s, s.amax(1))
        new_m_t = torch.maximum(m_t, t.amax(1))
        # m starts at -inf: exp(-inf - finite) = 0 scales the empty sums, never NaN
        z_s.mul_(torch.exp(m_s - new_m_s))
        z_t.mul_(torch.exp(m_t - new_m_t))
        lead_m_old, lead_m_new = (m_t, new_m_t) if direction == "forward" else (m_s, new_m_s)
        acc.mul_(torch.exp(lead_m_old - lead_m_new))
        diff = t - s if direction == "forward" else s - t
        e_s = s.sub_(new_m_s.unsqueeze(1)).exp_()
        e_t = t.sub_(new_m_t.unsqueeze(1)).exp_()
        z_s.add_(e_s.sum(1))
        z_t.add_(e_t.sum(1))
        acc.add_(torch.linalg.vecdot(e_t if direction == "forward" else e_s, diff))
        m_s, m_t = new_m_s, new_m_t
    lse_s, lse_t = m_s + torch.log(z_s), m_t + torch.log(z_t)
    if direction == "forward":
        kl = acc / z_t - lse_t + lse_s
    else:
        kl = acc / z_s - lse_s + lse_t
    return kl, lse_s, lse_t


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
    vocab_block: Optional[int] = None,
):
    """Backend contract (see linear_kl.py): per-token KL [N] float32 and the gradients of
    sum_j token_scale[j] * KL_j w.r.t. student_hidden and student_weight (None if token_scale is None).

    `chunk_size` / `vocab_block` override the plan (tests use them to hit every boundary)."""
    n_tokens, vocab = student_hidden.shape[0], student_weight.shape[0]
    rows, cols = plan_chunks(n_tokens, vocab, student_hidden.device, direction)
    if chunk_size is not None:
        rows, cols = chunk_size, vocab_block
    if direction == "akl":
        cols = None
    want_grad = token_scale is not None
    inv_tau = 1.0 / float(temperature)
    out_dtype = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32

    w_s, w_t = _operand(student_weight), _operand(teacher_weight)
    kl = torch.empty(n_tokens, dtype=out_dtype, device=student_hidden.device)
    grad_h = grad_w = None
    if want_grad:
        grad_h = torch.empty_like(student_hidden)
        grad_w = torch.zeros(w_s.shape, dtype=torch.promote_types(w_s.dtype, torch.float32), device=w_s.device)

    def add_grads(g, h_s, lo, hi):
        """grad_W[lo:hi] += G^T h_s; returns G W_s[lo:hi] (float32 or float64)."""
        g_op = g if g.dtype == w_s.dtype else g.to(w_s.dtype)
        if g_op.dtype == grad_w.dtype:
            grad_w[lo:hi].addmm_(g_op.T, h_s)
        else:
            grad_w[lo:hi].add_(_mm(g_op.T, h_s))
        return _mm(g_op, w_s[lo:hi])

    bufs = None  # CPU row chunks: the two [rows, V] logit buffers
    for start in range(0, n_tokens, rows):
        stop = min(start + rows, n_tokens)
        h_s = _operand(student_hidden[start:stop])
        h_t = _operand(teacher_hidden[start:stop])
        scale = None if not want_grad else (token_scale[start:stop].to(out_dtype) * inv_tau).unsqueeze(1)
        if cols is None and _uses_slabs(h_s.device, direction):
            if bufs is None:  # reused across chunks: no fresh pages (and page faults) per chunk
                bufs = torch.empty((2, rows, vocab), dtype=h_s.dtype, device=h_s.device)
            s, t = bufs[0, : stop - start], bufs[1, : stop - start]
            # 1/tau folded into the [C, H] operands, not two passes over the [C, V] logits
            torch.mm(h_s if inv_tau == 1.0 else h_s * inv_tau, w_s.T, out=s)
            h_t = h_t.to(s.dtype) if inv_tau == 1.0 else h_t.to(s.dtype) * inv_tau
            torch.mm(h_t, w_t.T if w_t.dtype == s.dtype else w_t.T.to(s.dtype), out=t)
            g = _row_chunk_kl_slabs(s, t, direction, scale, kl[start:stop])
            if want_grad:
                grad_h[start:stop] = add_grads(g, h_s, 0, vocab)
            continue
        if cols is None:
            s, t = _block_logits(h_s, h_t, w_s, w_t, 0, vocab, inv_tau)
            kl[start:stop], g = _row_chunk_kl(s, t, direction, want_grad)
            if want_grad:
                grad_h[start:stop] = add_grads(g.mul_(scale), h_s, 0, vocab)
            continue
        kl_rows, lse_s, lse_t = _vocab_block_stats(h_s, h_t, w_s, w_t, cols, inv_tau, direction)
        kl[start:stop] = kl_rows
        if not want_grad:
            continue
        acc_h = torch.zeros((stop - start, h_s.shape[1]), dtype=out_dtype, device=h_s.device)  # fp32 over blocks
        for lo in range(0, vocab, cols):
            hi = min(lo + cols, vocab)
            s, t = _block_logits(h_s, h_t, w_s, w_t, lo, hi, inv_tau)
            s.sub_(lse_s.unsqueeze(1))  # log p_s
            if direction == "forward":
                g = s.exp_().sub_(t.sub_(lse_t.unsqueeze(1)).exp_())  # p_s - p_t
            else:
                t.sub_(lse_t.unsqueeze(1))  # log p_t
                t.sub_(s).neg_().sub_(kl_rows.unsqueeze(1))  # log p_s - log p_t - KL
                g = s.exp_().mul_(t)
            acc_h.add_(add_grads(g.mul_(scale), h_s, lo, hi))
        grad_h[start:stop] = acc_h
    if want_grad:
        grad_w = grad_w.to(student_weight.dtype)
    return kl, grad_h, grad_w
