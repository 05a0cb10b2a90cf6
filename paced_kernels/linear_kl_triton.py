"""Fused linear KL in Triton: KL between student and teacher straight from hidden states.

Per token j, with s = h_s W_s^T / tau and t = h_t W_t^T / tau over a vocabulary of V entries,

    forward  KL_j = KL(p_t || p_s) = sum_v p_t (t - s) - lse(t) + lse(s)
    reverse  KL_j = KL(p_s || p_t) = sum_v p_s (s - t) - lse(s) + lse(t)

and, when a per-token upstream scale c_j is given, the gradients of L = sum_j c_j KL_j with
respect to the student hidden states and lm_head weight. The [N, V] logits are never
materialised: they exist only as [BLOCK_N, BLOCK_V] fp32 tiles in registers.

Design (Cut-Cross-Entropy style: a statistics pass, then a gradient pass that recomputes)
-----------------------------------------------------------------------------------------
``_kl_partial_stats_kernel`` -- grid over (token block, vocabulary slice). Each program streams
its slice of the vocabulary in BLOCK_V blocks; for each block it forms the student and teacher
logit tiles with ``tl.dot`` over the hidden dimensions in BLOCK_K chunks (Hs and Ht may differ
and need not be multiples of anything: loads are masked), then updates an online
(flash-attention style) logsumexp for both models -- running maxima m_s, m_t, sums z_s, z_t --
and the accumulator ``a = sum exp(x - m_x) (x - y)`` (x = t, y = s for forward; x = s, y = t for
reverse), rescaling z and a by exp(m_old - m_new) whenever a maximum grows. Masked vocabulary
columns get logit -inf, so they add exp(-inf) = 0 to z; their (x - y) is forced to 0 *before*
the product so no 0 * inf = NaN can appear. Slicing the vocabulary (``vocab_splits``, on a GPU
sized to ~4 programs per SM) keeps the GPU busy when N is small; with one slice per token block
the grid would be N / BLOCK_N programs.

``_kl_merge_kernel`` -- combines the slices with the same rescaling and writes KL per token and
the statistics (m_s, log z_s, m_t, log z_t) in fp32 -- kept apart rather than summed into lse so
that the gradient pass gets exact x - m near the maximum.

``_kl_grad_kernel`` -- only when gradients are asked for; grid over (token block, vocab block)
tiles, swizzled in groups of token blocks so concurrently running programs share hidden and
weight tiles in L2. Each program recomputes its s and t tiles, forms in fp32

    G = c_j * dKL/ds / tau,   dKL/ds = p_s - p_t                                (forward)
                              dKL/ds = p_s (log p_s - log p_t - KL_j)            (reverse)

then, per BLOCK_K chunk of Hs, accumulates grad_h[BN, k] += G @ W_s[BV, k] and
grad_W[BV, k] += G^T @ h_s[BN, k] with fp32 atomic adds into fp32 buffers (bf16 atomics are not
portable and lose precision); the launcher casts the buffers to the input dtype at the end.

Precision: accumulation is always fp32. The logit tile leaves ``tl.dot`` in fp32 and stays fp32
through the softmax (never rounded to bf16 first, unlike Liger's fused linear losses). On a GPU,
bf16/fp16 operands go to the tensor cores as they are, and G is cast to the operand dtype for
the two gradient GEMMs (what a bf16 autograd matmul does too; for fp16, after scaling each tile
by a power of two so small gradients do not flush to zero); fp32 inputs use
``input_precision="ieee"`` (true fp32 like PyTorch's default, no TF32 rounding). Under
``TRITON_INTERPRET=1`` the interpreter multiplies raw bf16 bits wrongly, so the constexpr
``UPCAST_OPERANDS`` converts operands to fp32 before every ``tl.dot`` (G is still rounded to
the student's dtype first, so the interpreter reproduces the GPU's rounding).

Cost, with N tokens, vocabulary V, hidden sizes Hs and Ht:
    statistics pass      2 N V (Hs + Ht) FLOPs
    gradient pass        2 N V (Hs + Ht) (logit recomputation) + 4 N V Hs (the two GEMMs)
    total with grads     4 N V (Hs + Ht) + 4 N V Hs     (loss only: 2 N V (Hs + Ht))
Why recompute: the gradient of any logit needs the token's final lse_s, lse_t (and KL for
reverse), known only after the whole vocabulary has been seen. Recomputing costs one extra
2 N V (Hs + Ht) (+50% over the 2 N V (Hs + Ht) + 4 N V Hs minimum when Hs = Ht) instead of
keeping the [N, V] fp32 logits (10 GB at N=16384, V=151936). Memory stays O(N + V*Hs): per-token vectors,
plus the fp32 gradient buffers [N, Hs] and [V, Hs] (for fp32 inputs the outputs themselves;
for bf16 the [V, Hs] buffer is 2x the weight's size, e.g. 2.5 GB at V=151936, Hs=4096).

Block sizes are fixed, autotune-free defaults on a GPU (bf16/fp16: BLOCK_N=64, BLOCK_V=128,
BLOCK_K=32, 8 warps, 3 stages -- spill-free on sm_80/sm_90; see ``_GPU_CONFIG_16BIT``) and
shape-sized large blocks under the interpreter, where per-program overhead dominates. They
can be overridden per call (``block_n``/``block_v``/``block_k``, powers of two >= 16;
``vocab_splits``) -- the tests use that to force several token, vocabulary and hidden blocks
with tails, and several vocabulary slices.

Gradients are accumulated with fp32 atomics, so on a GPU their low bits depend on the order in
which programs finish (not bitwise deterministic run to run); KL is deterministic.

``import triton`` happens at the top of this module; nothing else in ``paced_kernels`` imports
it eagerly, so CPU-only installs work as long as backend="triton" is not requested.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError as _err:  # pragma: no cover - exercised only on installs without triton
    raise ImportError(
        "paced_kernels.linear_kl_triton needs triton (pip install 'paced[triton]'); "
        "use backend='torch' on machines without it"
    ) from _err

__all__ = ["triton_linear_kl", "triton_available"]

_DIRECTIONS = ("forward", "reverse")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# GPU defaults (not autotuned: no GPU was available when they were chosen). Picked by compiling
# both kernels ahead of time for sm_90 and sm_80 (triton.compile + cuobjdump -res-usage):
# bf16/fp16 at BLOCK_N=64, BLOCK_V=128, BLOCK_K=32, 8 warps, 3 stages use tensor cores (wgmma on
# Hopper, mma on Ampere) with no register spills; BLOCK_K=64 or 128-row/256-column tiles spill.
# fp32 ("ieee", CUDA-core FMA) needs a narrower vocabulary tile to stay (almost) spill-free.
_GPU_CONFIG_16BIT = dict(block_n=64, block_v=128, block_k=32, num_warps=8, num_stages=3)
_GPU_CONFIG_FP32 = dict(block_n=64, block_v=64, block_k=32, num_warps=8, num_stages=2)
_GROUP_N = 8  # token blocks per swizzle group in the gradient grid

# Interpreter caps: big blocks so a test shape runs as one or a few numpy-vectorised programs.
_INTERP_MAX_BLOCK_N = 64
_INTERP_MAX_BLOCK_V = 512
_INTERP_MAX_BLOCK_K = 64


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _logit_tile(
    h_ptr,
    w_ptr,
    rows,
    cols,
    row_mask,
    col_mask,
    H,
    stride_h,
    stride_w,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """fp32 tile h[rows] @ w[cols]^T of shape [BLOCK_N, BLOCK_V], reduced over H in BLOCK_K chunks."""
    acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
    h_rows = h_ptr + rows[:, None] * stride_h
    w_cols = w_ptr + cols[None, :] * stride_w
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < H
        h = tl.load(h_rows + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_cols + ks[:, None], mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        if UPCAST_OPERANDS:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _kl_partial_stats_kernel(
    hs_ptr,
    ws_ptr,
    ht_ptr,
    wt_ptr,
    part_ptr,
    N,
    V,
    HS,
    HT,
    stride_hs,
    stride_ws,
    stride_ht,
    stride_wt,
    inv_tau,
    NUM_SPLITS,
    BLOCKS_PER_SPLIT,
    REVERSE: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    PRECISION_S: tl.constexpr,
    PRECISION_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Online softmax statistics of one token block over one slice of the vocabulary.

    Grid (token blocks, vocabulary splits). Writes part[0..4, split, token] = m_s, z_s, m_t, z_t
    and the accumulator a for the slice; ``_kl_merge_kernel`` combines the slices.
    """
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = rows < N
    v_lo = split * BLOCKS_PER_SPLIT * BLOCK_V
    v_hi = tl.minimum(V, v_lo + BLOCKS_PER_SPLIT * BLOCK_V)

    m_s = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    m_t = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    z_s = tl.zeros([BLOCK_N], dtype=tl.float32)
    z_t = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)

    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = (v0 + tl.arange(0, BLOCK_V)).to(tl.int64)
        col_mask = cols < v_hi
        s = _logit_tile(hs_ptr, ws_ptr, rows, cols, row_mask, col_mask, HS, stride_hs, stride_ws,
                        BLOCK_N, BLOCK_V, BLOCK_K, UPCAST_OPERANDS, PRECISION_S) * inv_tau
        t = _logit_tile(ht_ptr, wt_ptr, rows, cols, row_mask, col_mask, HT, stride_ht, stride_wt,
                        BLOCK_N, BLOCK_V, BLOCK_K, UPCAST_OPERANDS, PRECISION_T) * inv_tau
        # (x - y) on live columns only: masked columns hold finite junk (0) here, and are forced
        # to 0 so that exp(-inf) * diff below is 0 * 0, never 0 * inf.
        if REVERSE:
            diff = tl.where(col_mask[None, :], s - t, 0.0)
        else:
            diff = tl.where(col_mask[None, :], t - s, 0.0)
        s = tl.where(col_mask[None, :], s, float("-inf"))
        t = tl.where(col_mask[None, :], t, float("-inf"))

        # Every block holds at least one live column, so the new maxima are finite and the
        # rescale factors exp(m_old - m_new) are exp(-inf) = 0 on the first block, never NaN.
        m_s_new = tl.maximum(m_s, tl.max(s, axis=1))
        m_t_new = tl.maximum(m_t, tl.max(t, axis=1))
        scale_s = tl.exp(m_s - m_s_new)
        scale_t = tl.exp(m_t - m_t_new)
        e_s = tl.exp(s - m_s_new[:, None])
        e_t = tl.exp(t - m_t_new[:, None])
        z_s = z_s * scale_s + tl.sum(e_s, axis=1)
        z_t = z_t * scale_t + tl.sum(e_t, axis=1)
        if REVERSE:
            acc = acc * scale_s + tl.sum(e_s * diff, axis=1)
        else:
            acc = acc * scale_t + tl.sum(e_t * diff, axis=1)
        m_s = m_s_new
        m_t = m_t_new

    plane = NUM_SPLITS * N
    out = part_ptr + split * N + rows
    tl.store(out, m_s, mask=row_mask)
    tl.store(out + plane, z_s, mask=row_mask)
    tl.store(out + 2 * plane, m_t, mask=row_mask)
    tl.store(out + 3 * plane, z_t, mask=row_mask)
    tl.store(out + 4 * plane, acc, mask=row_mask)


@triton.jit
def _kl_merge_kernel(
    part_ptr,
    stats_ptr,
    kl_ptr,
    N,
    NUM_SPLITS,
    REVERSE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Combine the vocabulary slices (same rescaling as within a slice); write KL and statistics.

    The statistics are stored as max and log-sum separately (m_s, log z_s, m_t, log z_t) rather
    than as lse = m + log z: the gradient kernel then forms log p = (x - m) - log z, where x - m
    is exact near the maximum, instead of x - lse, whose fp32 rounding (ulp(|lse|)) would scale
    every probability by up to 1 + ulp(|lse|) -- ~1e-5 relative error at logits ~100.
    """
    pid = tl.program_id(0)
    rows = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = rows < N
    plane = NUM_SPLITS * N

    m_s = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    m_t = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    z_s = tl.zeros([BLOCK_N], dtype=tl.float32)
    z_t = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for split in range(0, NUM_SPLITS):
        src = part_ptr + split * N + rows
        # Padding rows read finite values, so no exp(-inf + inf) below.
        pm_s = tl.load(src, mask=row_mask, other=0.0)
        pz_s = tl.load(src + plane, mask=row_mask, other=1.0)
        pm_t = tl.load(src + 2 * plane, mask=row_mask, other=0.0)
        pz_t = tl.load(src + 3 * plane, mask=row_mask, other=1.0)
        pa = tl.load(src + 4 * plane, mask=row_mask, other=0.0)
        m_s_new = tl.maximum(m_s, pm_s)
        m_t_new = tl.maximum(m_t, pm_t)
        old_s = tl.exp(m_s - m_s_new)
        old_t = tl.exp(m_t - m_t_new)
        new_s = tl.exp(pm_s - m_s_new)
        new_t = tl.exp(pm_t - m_t_new)
        z_s = z_s * old_s + pz_s * new_s
        z_t = z_t * old_t + pz_t * new_t
        if REVERSE:
            acc = acc * old_s + pa * new_s
        else:
            acc = acc * old_t + pa * new_t
        m_s = m_s_new
        m_t = m_t_new

    log_z_s = tl.log(z_s)
    log_z_t = tl.log(z_t)
    # lse(y) - lse(x), grouped so the large maxima cancel first.
    if REVERSE:
        kl = acc / z_s + ((m_t - m_s) + (log_z_t - log_z_s))
    else:
        kl = acc / z_t + ((m_s - m_t) + (log_z_s - log_z_t))
    tl.store(stats_ptr + rows, m_s, mask=row_mask)
    tl.store(stats_ptr + N + rows, log_z_s, mask=row_mask)
    tl.store(stats_ptr + 2 * N + rows, m_t, mask=row_mask)
    tl.store(stats_ptr + 3 * N + rows, log_z_t, mask=row_mask)
    tl.store(kl_ptr + rows, kl, mask=row_mask)


@triton.jit
def _kl_grad_kernel(
    hs_ptr,
    ws_ptr,
    ht_ptr,
    wt_ptr,
    stats_ptr,
    kl_ptr,
    scale_ptr,
    grad_h_ptr,
    grad_w_ptr,
    N,
    V,
    HS,
    HT,
    stride_hs,
    stride_ws,
    stride_ht,
    stride_wt,
    stride_gh,
    stride_gw,
    inv_tau,
    REVERSE: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
    PRECISION_S: tl.constexpr,
    PRECISION_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_N: tl.constexpr,
    G_OPERAND_FP32: tl.constexpr,
    G_TILE_SCALE: tl.constexpr,
):
    """One (token block, vocab block) tile: recompute logits, form G, atomically add both grads."""
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_v = tl.cdiv(V, BLOCK_V)
    # Swizzle: groups of GROUP_N token blocks walk the vocabulary together (L2 reuse of W tiles).
    group_size = GROUP_N * num_pid_v
    group_id = pid // group_size
    first_n = group_id * GROUP_N
    group_n = tl.minimum(num_pid_n - first_n, GROUP_N)
    pid_n = first_n + (pid % group_size) % group_n
    pid_v = (pid % group_size) // group_n

    rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = (pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_mask = rows < N
    col_mask = cols < V

    s = _logit_tile(hs_ptr, ws_ptr, rows, cols, row_mask, col_mask, HS, stride_hs, stride_ws,
                    BLOCK_N, BLOCK_V, BLOCK_K, UPCAST_OPERANDS, PRECISION_S) * inv_tau
    t = _logit_tile(ht_ptr, wt_ptr, rows, cols, row_mask, col_mask, HT, stride_ht, stride_wt,
                    BLOCK_N, BLOCK_V, BLOCK_K, UPCAST_OPERANDS, PRECISION_T) * inv_tau
    m_s = tl.load(stats_ptr + rows, mask=row_mask, other=0.0)
    log_z_s = tl.load(stats_ptr + N + rows, mask=row_mask, other=0.0)
    m_t = tl.load(stats_ptr + 2 * N + rows, mask=row_mask, other=0.0)
    log_z_t = tl.load(stats_ptr + 3 * N + rows, mask=row_mask, other=0.0)
    c = tl.load(scale_ptr + rows, mask=row_mask, other=0.0)

    # Masked rows/columns hold finite logits (loads padded with 0), so nothing below is NaN;
    # they are zeroed explicitly afterwards anyway. (x - m) first: exact near the maximum.
    log_p_s = (s - m_s[:, None]) - log_z_s[:, None]
    log_p_t = (t - m_t[:, None]) - log_z_t[:, None]
    p_s = tl.exp(log_p_s)
    if REVERSE:
        kl = tl.load(kl_ptr + rows, mask=row_mask, other=0.0)
        d = p_s * (log_p_s - log_p_t - kl[:, None])
    else:
        d = p_s - tl.exp(log_p_t)
    g = d * (c * inv_tau)[:, None]
    g = tl.where(row_mask[:, None] & col_mask[None, :], g, 0.0)
    if G_OPERAND_FP32:
        g_op = g
    else:
        # G becomes a tensor-core operand in the student's dtype, as in a bf16 autograd matmul.
        if G_TILE_SCALE:
            # fp16 would flush G's typical magnitudes (c_j ~ 1/N times probabilities ~ 1e-6) to
            # zero: scale the tile by a power of two (exact) so its max lands in [2^14, 2^15),
            # and undo it on the fp32 products below.
            g_max = tl.max(tl.max(tl.abs(g), axis=1), axis=0)
            g_scale = tl.where(g_max > 0, tl.exp2(tl.floor(tl.log2(g_max)) - 14.0), 1.0)
            g = g / g_scale
        g_op = g.to(hs_ptr.dtype.element_ty)
        if UPCAST_OPERANDS:
            g_op = g_op.to(tl.float32)  # same rounding as on a GPU, fp32 dot for the interpreter

    h_rows = hs_ptr + rows[:, None] * stride_hs
    w_cols = ws_ptr + cols[:, None] * stride_ws
    gh_rows = grad_h_ptr + rows[:, None] * stride_gh
    gw_rows = grad_w_ptr + cols[:, None] * stride_gw
    for k0 in range(0, HS, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < HS
        h_mask = row_mask[:, None] & k_mask[None, :]
        w_mask = col_mask[:, None] & k_mask[None, :]
        h = tl.load(h_rows + ks[None, :], mask=h_mask, other=0.0)   # [BN, BK]
        w = tl.load(w_cols + ks[None, :], mask=w_mask, other=0.0)   # [BV, BK]
        if UPCAST_OPERANDS:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        gh = tl.dot(g_op, w, input_precision=PRECISION_S)             # [BN, BK]
        gw = tl.dot(tl.trans(g_op), h, input_precision=PRECISION_S)   # [BV, BK]
        if G_TILE_SCALE and not G_OPERAND_FP32:
            gh = gh * g_scale
            gw = gw * g_scale
        tl.atomic_add(gh_rows + ks[None, :], gh, mask=h_mask, sem="relaxed")
        tl.atomic_add(gw_rows + ks[None, :], gw, mask=w_mask, sem="relaxed")


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def _kernels_interpreted() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - very old/new triton layouts
        return os.environ.get("TRITON_INTERPRET") == "1"
    return isinstance(_kl_partial_stats_kernel, InterpretedFunction)


_INTERPRET = _kernels_interpreted()


def triton_available() -> bool:
    """Whether the Triton backend can run here: triton importable and a CUDA GPU or the interpreter."""
    return torch.cuda.is_available() or _INTERPRET


def _dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 operands get true fp32 products ("ieee", PyTorch's default,
    no TF32 rounding); for bf16/fp16 operands the setting is ignored and "tf32" is the default."""
    return "ieee" if (dtype == torch.float32 or _INTERPRET) else "tf32"


def _default_vocab_splits(device: torch.device, n_token_blocks: int, n_vocab_blocks: int) -> int:
    """Split the vocabulary so the statistics pass launches ~4 programs per SM.

    One program per token block alone leaves most SMs idle when N is small (N=2048 -> 32
    programs on 132 SMs); slices are merged exactly afterwards, so this only costs a [5, S, N]
    buffer and one tiny kernel.
    """
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(n_vocab_blocks, triton.cdiv(4 * sms, n_token_blocks)))


def _pow2_block(size: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(size), 1))))


def _check_block(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (tl.dot tiles), got {value!r}")
    return value


def _validate(student_hidden, student_weight, teacher_hidden, teacher_weight, token_scale,
              direction, temperature) -> None:
    if direction not in _DIRECTIONS:
        raise ValueError(
            f"triton_linear_kl: direction must be one of {_DIRECTIONS}, got {direction!r} "
            "(use backend='torch' or 'reference' for 'akl')"
        )
    tensors = {
        "student_hidden": student_hidden,
        "student_weight": student_weight,
        "teacher_hidden": teacher_hidden,
        "teacher_weight": teacher_weight,
    }
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"triton_linear_kl: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"triton_linear_kl: {name} must be 2-D, got shape {tuple(x.shape)}")
        if x.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"triton_linear_kl: {name} must be float32/bfloat16/float16, got {x.dtype}")
        if not _INTERPRET and not x.is_cuda:
            raise ValueError(
                f"triton_linear_kl: {name} is on {x.device}; the Triton backend needs CUDA tensors "
                "(or TRITON_INTERPRET=1 set before import for CPU debugging)"
            )
    n, hs = student_hidden.shape
    v, hs_w = student_weight.shape
    n_t, ht = teacher_hidden.shape
    v_t, ht_w = teacher_weight.shape
    if n < 1 or v < 1 or hs < 1 or ht < 1:
        raise ValueError(
            f"triton_linear_kl: empty input (N={n}, V={v}, Hs={hs}, Ht={ht}); all must be >= 1"
        )
    if hs_w != hs:
        raise ValueError(f"triton_linear_kl: student_weight is [V, {hs_w}] but student_hidden is [N, {hs}]")
    if ht_w != ht:
        raise ValueError(f"triton_linear_kl: teacher_weight is [V, {ht_w}] but teacher_hidden is [N, {ht}]")
    if n_t != n:
        raise ValueError(f"triton_linear_kl: teacher_hidden has {n_t} tokens, student_hidden has {n}")
    if v_t != v:
        raise ValueError(f"triton_linear_kl: teacher vocabulary {v_t} != student vocabulary {v}")
    if student_hidden.dtype != student_weight.dtype:
        raise ValueError(
            f"triton_linear_kl: student_hidden ({student_hidden.dtype}) and student_weight "
            f"({student_weight.dtype}) must share a dtype"
        )
    if teacher_hidden.dtype != teacher_weight.dtype:
        raise ValueError(
            f"triton_linear_kl: teacher_hidden ({teacher_hidden.dtype}) and teacher_weight "
            f"({teacher_weight.dtype}) must share a dtype"
        )
    devices = {x.device for x in tensors.values()}
    if token_scale is not None:
        if not isinstance(token_scale, torch.Tensor) or token_scale.shape != (n,):
            if isinstance(token_scale, torch.Tensor):
                shape = tuple(token_scale.shape)
            else:
                shape = type(token_scale).__name__
            raise ValueError(f"triton_linear_kl: token_scale must be a [N]={n} tensor, got {shape}")
        devices.add(token_scale.device)
    if len(devices) != 1:
        raise ValueError(
            f"triton_linear_kl: all inputs must be on one device, got {sorted(map(str, devices))}"
        )
    if not isinstance(temperature, (int, float)) or not (temperature > 0 and temperature < float("inf")):
        raise ValueError(f"triton_linear_kl: temperature must be a finite number > 0, got {temperature!r}")


@torch.no_grad()
def triton_linear_kl(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    token_scale: Optional[torch.Tensor],
    direction: str,
    temperature: float,
    *,
    block_n: Optional[int] = None,
    block_v: Optional[int] = None,
    block_k: Optional[int] = None,
    vocab_splits: Optional[int] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-token KL and (if ``token_scale`` is given) grads of ``sum_j token_scale[j] * KL_j``.

    Returns ``(kl [N] fp32, grad_student_hidden [N, Hs] or None, grad_student_weight [V, Hs] or
    None)``; gradients come back in the student's dtype. ``block_*`` override the tile sizes
    (powers of two >= 16) and ``vocab_splits`` the number of vocabulary slices the statistics
    pass is split into; leave them None for the defaults.
    """
    _validate(student_hidden, student_weight, teacher_hidden, teacher_weight, token_scale,
              direction, float(temperature) if isinstance(temperature, (int, float)) else temperature)
    hs_in = student_hidden.contiguous()
    ws_in = student_weight.contiguous()
    ht_in = teacher_hidden.contiguous()
    wt_in = teacher_weight.contiguous()
    n, hs = hs_in.shape
    v = ws_in.shape[0]
    ht = ht_in.shape[1]
    device = hs_in.device

    if _INTERPRET:
        bn = _pow2_block(n, 16, _INTERP_MAX_BLOCK_N)
        bv = _pow2_block(v, 16, _INTERP_MAX_BLOCK_V)
        bk = _pow2_block(max(hs, ht), 16, _INTERP_MAX_BLOCK_K)
        launch_opts = {}
    else:
        any_fp32 = torch.float32 in (hs_in.dtype, ht_in.dtype)
        cfg = _GPU_CONFIG_FP32 if any_fp32 else _GPU_CONFIG_16BIT
        bn, bv, bk = cfg["block_n"], cfg["block_v"], cfg["block_k"]
        launch_opts = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
    bn = _check_block("block_n", block_n) if block_n is not None else bn
    bv = _check_block("block_v", block_v) if block_v is not None else bv
    bk = _check_block("block_k", block_k) if block_k is not None else bk

    reverse = direction == "reverse"
    inv_tau = 1.0 / float(temperature)
    common = dict(
        REVERSE=reverse,
        UPCAST_OPERANDS=_INTERPRET,
        PRECISION_S=_dot_precision(hs_in.dtype),
        PRECISION_T=_dot_precision(ht_in.dtype),
        BLOCK_N=bn,
        BLOCK_V=bv,
        BLOCK_K=bk,
    )

    n_token_blocks = triton.cdiv(n, bn)
    n_vocab_blocks = triton.cdiv(v, bv)
    if vocab_splits is None:
        vocab_splits = 1 if _INTERPRET else _default_vocab_splits(device, n_token_blocks, n_vocab_blocks)
    elif not isinstance(vocab_splits, int) or vocab_splits < 1:
        raise ValueError(f"vocab_splits must be a positive int, got {vocab_splits!r}")
    blocks_per_split = triton.cdiv(n_vocab_blocks, min(vocab_splits, n_vocab_blocks))
    num_splits = triton.cdiv(n_vocab_blocks, blocks_per_split)  # every split non-empty

    partials = torch.empty(5, num_splits, n, dtype=torch.float32, device=device)
    _kl_partial_stats_kernel[(n_token_blocks, num_splits)](
        hs_in, ws_in, ht_in, wt_in, partials,
        n, v, hs, ht,
        hs_in.stride(0), ws_in.stride(0), ht_in.stride(0), wt_in.stride(0),
        inv_tau, num_splits, blocks_per_split,
        **common, **launch_opts,
    )
    kl = torch.empty(n, dtype=torch.float32, device=device)
    stats = torch.empty(4, n, dtype=torch.float32, device=device)  # m_s, log z_s, m_t, log z_t
    merge_block = _pow2_block(n, 16, 256) if _INTERPRET else 256
    _kl_merge_kernel[(triton.cdiv(n, merge_block),)](
        partials, stats, kl, n, num_splits, REVERSE=reverse, BLOCK_N=merge_block,
    )
    if token_scale is None:
        return kl, None, None

    scale = token_scale.detach().to(device=device, dtype=torch.float32).contiguous()
    # fp32 accumulation buffers (the outputs themselves for fp32 students).
    grad_h = torch.zeros(n, hs, dtype=torch.float32, device=device)
    grad_w = torch.zeros(v, hs, dtype=torch.float32, device=device)
    grid = (triton.cdiv(n, bn) * triton.cdiv(v, bv),)
    _kl_grad_kernel[grid](
        hs_in, ws_in, ht_in, wt_in, stats, kl, scale, grad_h, grad_w,
        n, v, hs, ht,
        hs_in.stride(0), ws_in.stride(0), ht_in.stride(0), wt_in.stride(0),
        grad_h.stride(0), grad_w.stride(0),
        inv_tau,
        GROUP_N=_GROUP_N,
        G_OPERAND_FP32=hs_in.dtype == torch.float32,
        G_TILE_SCALE=hs_in.dtype == torch.float16,
        **common, **launch_opts,
    )
    return kl, grad_h.to(student_hidden.dtype), grad_w.to(student_weight.dtype)
