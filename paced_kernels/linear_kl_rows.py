"""The row kernel of the Triton backend: KL and logit gradient from materialised chunk logits.

Given the raw logits of a token chunk, s = h_s W_s^T and t = h_t W_t^T ([C, V] fp32, written by
the chunk GEMMs in ``linear_kl_triton``), one program per token row makes two passes over its
vocabulary (kernel-math.md):

- pass 1 (online logsumexp): running maxima m_s, m_t, sums z_s, z_t and the KL accumulator a,
  rescaled by exp(m_old - m_new) when a maximum grows; KL is written per token;
- pass 2 (only when gradients are wanted): G = c_j * dKL/ds (c_j already holds the token's
  upstream scale / tau times a power-of-two loss scale), cast to the GEMM operand dtype and
  written *in place* over the student logits: for bf16/fp16, row r's G occupies the first half of
  row r's fp32 storage (a [C, V] view with row stride 2V that cuBLAS takes as it is), so the
  chunk needs no third [C, V] buffer.

In-place safety: block b of pass 2 writes G columns [v0, v0+B), i.e. the bytes of fp32 columns
[v0/2, (v0+B)/2), which lie at or before the block just read; a barrier after each block's loads
makes every warp finish reading before any warp overwrites (warps run independently, so without
it a fast warp could clobber logits a slow one has not read yet). fp32 G is stored over the very
elements each thread loaded, so no barrier is needed there.

Traffic per logit element (both models together): pass 1 reads 8 bytes, pass 2 reads 8 more and
writes 2 (bf16 G) or 4 (fp32): 18 bytes per element with gradients, 8 without. The kernel has no
``tl.dot``, so the interpreter needs no operand upcast here (the GEMMs are PyTorch's).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["kl_rows", "row_kernel_config", "ROW_BYTES_PER_ELEMENT"]

# bytes moved per [token, vocab] element by the row kernel (loss only, with a 16-bit / fp32 G)
ROW_BYTES_PER_ELEMENT = {"loss": 8, "grad_16bit": 18, "grad_fp32": 20}

# GPU default, chosen on paper (no card was available): 4096 fp32 per block = 16 per thread per
# tensor at 8 warps (four 16-byte loads each), one row per program; a [512, 151936] chunk is 512
# programs, ~4 resident per SM, so the per-block reductions of one program overlap others' loads.
_GPU_BLOCK_V = 4096
_GPU_NUM_WARPS = 8
_INTERP_MAX_BLOCK_V = 1024  # interpreter: big numpy blocks, few loop trips


@triton.jit
def _kl_rows_kernel(
    s_ptr,
    t_ptr,
    g_ptr,
    c_ptr,
    kl_ptr,
    V,
    stride_s,
    stride_t,
    stride_g,
    inv_tau,
    REVERSE: tl.constexpr,
    WANT_GRAD: tl.constexpr,
    G_ALIASES_HALF: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One token row: online lse of s/tau and t/tau, KL, and (WANT_GRAD) G written to g_ptr."""
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * stride_s
    t_row = t_ptr + row * stride_t
    offs = tl.arange(0, BLOCK_V)

    # ---- pass 1: online softmax statistics and the KL accumulator -------------------------
    m_s = float("-inf")
    m_t = float("-inf")
    z_s = 0.0
    z_t = 0.0
    acc = 0.0
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + offs
        mask = cols < V
        s = tl.load(s_row + cols, mask=mask, other=0.0) * inv_tau
        t = tl.load(t_row + cols, mask=mask, other=0.0) * inv_tau
        # masked columns: difference 0 (from finite padding), logits -inf so they add
        # exp(-inf) = 0; the accumulator sees 0 * 0, never 0 * inf or inf - inf
        if REVERSE:
            diff = tl.where(mask, s - t, 0.0)
        else:
            diff = tl.where(mask, t - s, 0.0)
        s = tl.where(mask, s, float("-inf"))
        t = tl.where(mask, t, float("-inf"))
        # every block holds a live column, so the new maxima are finite
        m_s_new = tl.maximum(m_s, tl.max(s, axis=0))
        m_t_new = tl.maximum(m_t, tl.max(t, axis=0))
        e_s = tl.exp(s - m_s_new)
        e_t = tl.exp(t - m_t_new)
        rescale_s = tl.exp(m_s - m_s_new)  # exp(-inf) = 0 on the first block
        rescale_t = tl.exp(m_t - m_t_new)
        z_s = z_s * rescale_s + tl.sum(e_s, axis=0)
        z_t = z_t * rescale_t + tl.sum(e_t, axis=0)
        if REVERSE:
            acc = acc * rescale_s + tl.sum(e_s * diff, axis=0)
        else:
            acc = acc * rescale_t + tl.sum(e_t * diff, axis=0)
        m_s = m_s_new
        m_t = m_t_new

    log_z_s = tl.log(z_s)
    log_z_t = tl.log(z_t)
    # lse differences grouped so that the large maxima cancel first
    if REVERSE:
        kl = acc / z_s + ((m_t - m_s) + (log_z_t - log_z_s))
    else:
        kl = acc / z_t + ((m_s - m_t) + (log_z_s - log_z_t))
    tl.store(kl_ptr + row, kl)

    # ---- pass 2: the logit gradient, in place ------------------------------------------------
    if WANT_GRAD:
        c = tl.load(c_ptr + row)
        g_row = g_ptr + row * stride_g
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + offs
            mask = cols < V
            s = tl.load(s_row + cols, mask=mask, other=0.0) * inv_tau
            t = tl.load(t_row + cols, mask=mask, other=0.0) * inv_tau
            if G_ALIASES_HALF:
                tl.debug_barrier()  # all warps have read this block before anyone overwrites it
            # (x - m) first: exact near the maximum, so p keeps full relative precision
            log_p_s = (s - m_s) - log_z_s
            log_p_t = (t - m_t) - log_z_t
            p_s = tl.exp(log_p_s)
            if REVERSE:
                d = p_s * (log_p_s - log_p_t - kl)
            else:
                d = p_s - tl.exp(log_p_t)
            g = d * c
            tl.store(g_row + cols, g.to(g_ptr.dtype.element_ty), mask=mask)


def row_kernel_config(vocab: int, interpreted: bool, block_v: Optional[int] = None) -> dict:
    """Block size and warps for a vocabulary of ``vocab`` (``block_v`` overrides, power of two >= 16)."""
    if block_v is not None:
        if not isinstance(block_v, int) or block_v < 16 or block_v & (block_v - 1):
            raise ValueError(f"block_v must be a power of two >= 16, got {block_v!r}")
        return dict(BLOCK_V=block_v, num_warps=_GPU_NUM_WARPS if not interpreted else 1)
    cap = _INTERP_MAX_BLOCK_V if interpreted else _GPU_BLOCK_V
    block = max(16, min(cap, triton.next_power_of_2(vocab)))
    warps = 1 if interpreted else max(1, min(_GPU_NUM_WARPS, block // 512))
    return dict(BLOCK_V=block, num_warps=warps)


def kl_rows(
    s: torch.Tensor,
    t: torch.Tensor,
    kl_out: torch.Tensor,
    *,
    reverse: bool,
    inv_tau: float,
    g_out: Optional[torch.Tensor] = None,
    row_scale: Optional[torch.Tensor] = None,
    interpreted: bool = False,
    block_v: Optional[int] = None,
    num_warps: Optional[int] = None,
) -> None:
    """Launch the row kernel on chunk logits ``s``, ``t`` ([C, V] fp32, unit stride along V).

    Writes KL per row into ``kl_out`` ([C] fp32). With ``g_out`` ([C, V] view, fp32 over ``s``
    itself or a 16-bit view over the first half of each of ``s``'s rows) and ``row_scale`` ([C]
    fp32), also writes G = row_scale * dKL/ds there.
    """
    rows, vocab = s.shape
    if t.shape != s.shape or s.dtype != torch.float32 or t.dtype != torch.float32:
        raise ValueError(f"kl_rows: s and t must be fp32 of one shape, got {s.dtype}{tuple(s.shape)}, "
                         f"{t.dtype}{tuple(t.shape)}")
    if s.stride(1) != 1 or t.stride(1) != 1:
        raise ValueError("kl_rows: logits need unit stride along the vocabulary")
    want_grad = g_out is not None
    if want_grad and (row_scale is None or g_out.shape != s.shape or g_out.stride(1) != 1):
        raise ValueError("kl_rows: g_out must be a [C, V] unit-stride view with a [C] row_scale")
    cfg = row_kernel_config(vocab, interpreted, block_v)
    if num_warps is not None:
        cfg["num_warps"] = num_warps
    aliases_half = bool(want_grad and g_out.element_size() < 4 and g_out.data_ptr() == s.data_ptr())
    _kl_rows_kernel[(rows,)](
        s, t, g_out if want_grad else s, row_scale if want_grad else kl_out, kl_out,
        vocab, s.stride(0), t.stride(0), g_out.stride(0) if want_grad else 0,
        float(inv_tau),
        REVERSE=bool(reverse), WANT_GRAD=want_grad, G_ALIASES_HALF=aliases_half,
        BLOCK_V=cfg["BLOCK_V"], num_warps=cfg["num_warps"],
    )
