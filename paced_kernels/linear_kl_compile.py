"""Ahead-of-time compilation of the row kernel exactly as the runtime would specialise it.

Triton's launcher specialises each call on its arguments: pointers and integers divisible by 16
get ``tt.divisibility = 16`` (vectorised 16-byte accesses), integers equal to 1 become constants.
A kernel compiled from a hand-written signature can therefore differ from the one that runs.
``compile_like_runtime`` feeds real argument values through Triton's own binder (the function
``JITFunction.run`` uses) with a CUDA backend for the chosen architecture, so it needs no GPU;
``resource_usage`` reads registers, spills and shared memory off the cubin with the cuobjdump
that ships in Triton's wheel. Used by tests/test_linear_kl_triton.py and benchmarks/gpu_check.py.

Must run in a process without TRITON_INTERPRET=1 (the interpreter replaces the JIT functions).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

__all__ = ["compile_like_runtime", "resource_usage", "row_kernel_args", "cuobjdump_path"]


def cuobjdump_path() -> Optional[str]:
    import triton

    shipped = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(shipped) if shipped.exists() else shutil.which("cuobjdump")


def compile_like_runtime(fn, args: tuple, kwargs: dict, arch: int = 90):
    """Compile JIT function ``fn`` for sm_``arch`` with the specialisation ``fn[grid](*args, **kwargs)`` gets."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def row_kernel_args(vocab: int, rows: int, dtype: torch.dtype, reverse: bool, want_grad: bool,
                    block_v: Optional[int] = None):
    """(args, kwargs) of the row kernel for a [rows, vocab] chunk, as ``kl_rows`` passes them.

    The tensors are tiny stand-ins (only dtype and 16-byte alignment enter the specialisation);
    the integers are the real vocabulary and strides.
    """
    from .linear_kl_rows import row_kernel_config

    s = torch.empty(64, dtype=torch.float32)
    t = torch.empty(64, dtype=torch.float32)
    kl = torch.empty(64, dtype=torch.float32)
    c = torch.empty(64, dtype=torch.float32)
    g = s if dtype == torch.float32 else s.view(dtype)
    cfg = row_kernel_config(vocab, interpreted=False, block_v=block_v)
    row_stride = -(-vocab // 16) * 16  # triton_linear_kl pads its chunk rows to 16 elements
    g_stride = row_stride * (4 // g.element_size())
    args = (s, t, g if want_grad else s, c if want_grad else kl, kl, vocab, row_stride, row_stride,
            g_stride if want_grad else 0, 1.0)
    kwargs = dict(REVERSE=reverse, WANT_GRAD=want_grad,
                  G_ALIASES_HALF=want_grad and dtype != torch.float32,
                  BLOCK_V=cfg["BLOCK_V"], num_warps=cfg["num_warps"])
    return args, kwargs


def resource_usage(kernel) -> dict:
    """Registers, spill bytes, stack and shared memory of a compiled kernel (from its cubin)."""
    info = {"name": kernel.name, "shared_bytes": int(kernel.metadata.shared)}
    tool = cuobjdump_path()
    cubin = kernel.asm.get("cubin")
    if tool is None or cubin is None:
        info["note"] = "no cuobjdump or cubin: registers unknown"
        return info
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, timeout=60).stdout
    match = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", out)
    if match:
        info.update(registers=int(match[1]), stack_bytes=int(match[2]), local_bytes=int(match[4]))
    # spills: ptxas reports them in the PTX -> SASS step; the local-memory frame is their footprint
    sass_spill = re.findall(r"\b(?:LDL|STL)\b", kernel.asm.get("sass", "") or "")
    info["spill_bytes"] = info.get("local_bytes", 0)
    if sass_spill:
        info["local_memory_instructions"] = len(sass_spill)
    return info
