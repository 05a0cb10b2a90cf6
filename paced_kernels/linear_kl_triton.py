"""Triton backend of the fused linear KL: each token chunk's logits are computed once.

Per chunk of C tokens (C >= 512 on a GPU):

1. both logit GEMMs, s = h_s W_s^T and t = h_t W_t^T, fp32 output from bf16/fp16 operands
   (cuBLAS through ``torch.mm(..., out_dtype=torch.float32)``; fp32 accumulation, logits never
   rounded to 16 bits), into two reused [C, V] fp32 buffers;
2. the row kernel (``linear_kl_rows``): per token, an online logsumexp pass and a gradient pass
   over V, writing KL and the logit gradient G in place over s (bf16/fp16: G in the first half of
   each row, a strided view);
3. G into two tensor-core GEMMs: grad_h[chunk] = G W_s (written straight into the output) and
   grad_W += G^T h_s (cuBLAS beta=1 accumulation).

No atomics anywhere: every output element has one writer per chunk. FLOPs are the minimum,
2 N V (Hs + Ht) for the logits + 4 N V Hs for the gradients (the earlier recomputing design did
1.5x that). Workspace: the two fp32 chunk buffers (2 * 4 * C * V bytes: 0.62 GB at C=512,
V=151936) plus, when asked for, a [V, Hs] fp32 grad_W accumulator.

G's scale: G = c_j * dKL/ds / tau, where c_j ~ 1/N; in fp16 such values flush to zero. The row
kernel therefore receives c_j * S with S a power of two that puts max |c_j S / tau| in [1, 2),
and the gradients are multiplied by 1/S at the end (exact: a power of two).

grad_W accumulation: ``grad_w_fp32=None`` picks a bf16 accumulator for bf16 weights (the returned
gradient itself, rounded once per chunk, as Liger does; no extra memory) and fp32 for fp16 (whose
range the scaled sum could exceed); True forces an fp32 [V, Hs] accumulator (+4 V Hs bytes),
also settable by PACED_KL_GRAD_W_FP32=1. The tests and ``benchmarks/gpu_check.py`` measure both
against float64 and against a plain bf16 PyTorch implementation.

Under TRITON_INTERPRET=1 (CPU) the row kernel runs in the interpreter and the GEMMs are PyTorch
CPU matmuls on operands upcast to fp32 (CPU bf16 GEMMs differ from cuBLAS's fp32-accumulating
ones, and the interpreter's bf16 arithmetic is wrong); G is still rounded to the student dtype
first, so the rounding matches the GPU's.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

try:
    import triton
except ImportError as _err:  # pragma: no cover - exercised only on installs without triton
    raise ImportError(
        "paced_kernels.linear_kl_triton needs triton (pip install 'paced[triton]'); "
        "use backend='torch' on machines without it"
    ) from _err

from .linear_kl_rows import _kl_rows_kernel, kl_rows

__all__ = ["triton_linear_kl", "triton_available", "default_chunk_size"]

_DIRECTIONS = ("forward", "reverse")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
GPU_CHUNK = 512          # tokens per chunk on a GPU (PACED_KL_TRITON_CHUNK overrides)
_INTERP_CHUNK = 64       # under the interpreter: small chunks, several per test shape


def _kernels_interpreted() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - very old/new triton layouts
        return os.environ.get("TRITON_INTERPRET") == "1"
    return isinstance(_kl_rows_kernel, InterpretedFunction)


_INTERPRET = _kernels_interpreted()


def triton_available() -> bool:
    """Whether the Triton backend can run here: triton importable and a CUDA GPU or the interpreter."""
    return torch.cuda.is_available() or _INTERPRET


def default_chunk_size(n_tokens: int) -> int:
    env = os.environ.get("PACED_KL_TRITON_CHUNK")
    chunk = int(env) if env else (_INTERP_CHUNK if _INTERPRET else GPU_CHUNK)
    if chunk < 1:
        raise ValueError(f"PACED_KL_TRITON_CHUNK must be >= 1, got {chunk}")
    return max(1, min(n_tokens, chunk))


# ---------------------------------------------------------------------------------------------
# GEMMs: fp32 results from 16-bit operands, no [C, V] temporaries beyond the given buffers
# ---------------------------------------------------------------------------------------------

GEMM_PATHS: dict[str, int] = {}  # which GEMM route ran, by name (gpu_check reports it)
_MM_OUT_DTYPE_OK = {"mm": True, "addmm": True}  # switched off once torch rejects out_dtype


def _count(path: str) -> None:
    GEMM_PATHS[path] = GEMM_PATHS.get(path, 0) + 1


def _logits_into(h: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
    """out[C, V] (fp32) = h @ w^T with fp32 accumulation."""
    if h.dtype == torch.float32 or not h.is_cuda:
        torch.mm(h if h.dtype == torch.float32 else h.float(), w.T, out=out)  # CPU: w already fp32
        return
    if _MM_OUT_DTYPE_OK["mm"]:
        try:
            torch.mm(h, w.T, out_dtype=torch.float32, out=out)
            _count("logits: mm(out_dtype=fp32, out=buffer)")
            return
        except (TypeError, RuntimeError, NotImplementedError):
            pass
        try:
            out.copy_(torch.mm(h, w.T, out_dtype=torch.float32))
            _count("logits: mm(out_dtype=fp32) + copy")
            return
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE_OK["mm"] = False  # torch without mm(out_dtype=): upcast below
    _count("logits: fp32 upcast mm (slow fallback)")
    torch.mm(h.float(), w.float().T, out=out)


def _grad_h_into(g: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
    """out[C, Hs] = G @ W_s (out in the student dtype; fp32 accumulation inside cuBLAS)."""
    if g.is_cuda or g.dtype == torch.float32:
        torch.mm(g, w, out=out)
        return
    out.copy_(g.float() @ w)  # CPU: w is the fp32 copy


def _grad_w_accumulate(acc: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> None:
    """acc[V, Hs] += G^T @ h_s; acc is the weight dtype (rounded once per call) or fp32."""
    if not g.is_cuda:  # CPU/interpreter: emulate cuBLAS (fp32 products and sum, one rounding)
        prod = g.float().T @ h.float()
        if acc.dtype == torch.float32:
            acc.add_(prod)
        else:
            acc.copy_(acc.float().add_(prod))
        return
    if acc.dtype == g.dtype:
        acc.addmm_(g.T, h)
        return
    if _MM_OUT_DTYPE_OK["addmm"]:  # fp32 accumulator, 16-bit operands
        try:
            torch.addmm(acc, g.T, h, out_dtype=torch.float32, out=acc)
            _count("grad_W: addmm(out_dtype=fp32) into the fp32 accumulator")
            return
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE_OK["addmm"] = False
    _count("grad_W: fp32 vocabulary slices (fallback)")
    step = max(1, (64 * 2**20) // (4 * h.shape[1]))  # keeps the fp32 temporary at 64 MB
    h32 = h.float()
    for lo in range(0, acc.shape[0], step):
        acc[lo:lo + step].add_(g[:, lo:lo + step].T.float() @ h32)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


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
        raise ValueError(f"triton_linear_kl: empty input (N={n}, V={v}, Hs={hs}, Ht={ht}); all must be >= 1")
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
            shape = tuple(token_scale.shape) if isinstance(token_scale, torch.Tensor) else type(token_scale).__name__
            raise ValueError(f"triton_linear_kl: token_scale must be a [N]={n} tensor, got {shape}")
        devices.add(token_scale.device)
    if len(devices) != 1:
        raise ValueError(f"triton_linear_kl: all inputs must be on one device, got {sorted(map(str, devices))}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        0 < temperature < float("inf")
    ):
        raise ValueError(f"triton_linear_kl: temperature must be a finite number > 0, got {temperature!r}")


def _loss_scale(c: torch.Tensor) -> torch.Tensor:
    """Power of two S (0-dim fp32 tensor, on device: no host sync) with max |c S| in [1, 2)."""
    peak = c.abs().amax()
    exponent = torch.where(peak > 0, -torch.floor(torch.log2(peak)), torch.zeros_like(peak))
    return torch.exp2(exponent)


def _want_fp32_grad_w(dtype: torch.dtype, grad_w_fp32: Optional[bool]) -> bool:
    if dtype == torch.float32:
        return True
    if dtype == torch.float16:
        return True  # the scaled sum over all tokens can exceed fp16's range
    if grad_w_fp32 is not None:
        return bool(grad_w_fp32)
    return os.environ.get("PACED_KL_GRAD_W_FP32", "0") == "1"


# ---------------------------------------------------------------------------------------------
# Entry point (backend contract of linear_kl.py)
# ---------------------------------------------------------------------------------------------


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
    chunk_size: Optional[int] = None,
    grad_w_fp32: Optional[bool] = None,
    block_v: Optional[int] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-token KL and (if ``token_scale`` is given) grads of ``sum_j token_scale[j] * KL_j``.

    Returns ``(kl [N] fp32, grad_student_hidden [N, Hs] or None, grad_student_weight [V, Hs] or
    None)``, gradients in the student's dtype. ``chunk_size`` (tokens per chunk), ``grad_w_fp32``
    (grad_W accumulator, see the module docstring) and ``block_v`` (row-kernel block, a power of
    two >= 16) override the defaults.
    """
    _validate(student_hidden, student_weight, teacher_hidden, teacher_weight, token_scale, direction, temperature)
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    hs_in, ht_in = student_hidden.contiguous(), teacher_hidden.contiguous()
    ws_in, wt_in = student_weight.contiguous(), teacher_weight.contiguous()
    n, hs = hs_in.shape
    v = ws_in.shape[0]
    device, dtype = hs_in.device, hs_in.dtype
    chunk = min(n, chunk_size) if chunk_size is not None else default_chunk_size(n)
    inv_tau = 1.0 / float(temperature)
    reverse = direction == "reverse"
    want_grad = token_scale is not None

    # GEMM operands: as given on a GPU; fp32 copies on CPU (interpreter runs only)
    ws_mm = ws_in if ws_in.is_cuda else ws_in.float()
    wt_mm = wt_in if wt_in.is_cuda else wt_in.float()

    # rows padded to 16 elements: 64-byte aligned rows for cuBLAS and 16-byte loads in the kernel
    v_pad = -(-v // 16) * 16
    s_buf = torch.empty(chunk, v_pad, dtype=torch.float32, device=device)
    t_buf = torch.empty(chunk, v_pad, dtype=torch.float32, device=device)
    g_buf = None if dtype == torch.float32 else s_buf.view(dtype)  # [chunk, 2 v_pad] over s_buf
    kl = torch.empty(n, dtype=torch.float32, device=device)
    grad_h = grad_w = row_scale = inv_scale = None
    if want_grad:
        c = token_scale.detach().to(device=device, dtype=torch.float32) * inv_tau
        scale = _loss_scale(c)
        row_scale, inv_scale = (c * scale).contiguous(), 1.0 / scale
        grad_h = torch.empty_like(hs_in)
        acc_dtype = torch.float32 if _want_fp32_grad_w(dtype, grad_w_fp32) else dtype
        grad_w = torch.zeros(v, hs, dtype=acc_dtype, device=device)

    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        s, t = s_buf[: hi - lo, :v], t_buf[: hi - lo, :v]
        _logits_into(hs_in[lo:hi], ws_mm, s)
        _logits_into(ht_in[lo:hi], wt_mm, t)
        g = None
        if want_grad:
            # G over s: fp32 in place, or the first half of each fp32 row as 16-bit
            g = s if g_buf is None else g_buf[: hi - lo, :v]
        kl_rows(s, t, kl[lo:hi], reverse=reverse, inv_tau=inv_tau, g_out=g,
                row_scale=row_scale[lo:hi] if want_grad else None, interpreted=_INTERPRET, block_v=block_v)
        if want_grad:
            gh = grad_h[lo:hi]
            _grad_h_into(g, ws_mm if not g.is_cuda else ws_in, gh)
            if dtype == torch.float16:  # unscale in fp32: 1/S itself may be below fp16's range
                gh.copy_(gh.float().mul_(inv_scale))
            _grad_w_accumulate(grad_w, g, hs_in[lo:hi])
    del s_buf, t_buf, g_buf, s, t, g
    if not want_grad:
        return kl, None, None
    if dtype != torch.float16:
        grad_h.mul_(inv_scale.to(dtype))  # a power of two: exact in bf16 / fp32
    grad_w.mul_(inv_scale)  # fp32, or bf16 (exact)
    if grad_w.dtype != dtype:
        grad_w = grad_w.to(dtype)
    return kl, grad_h, grad_w
