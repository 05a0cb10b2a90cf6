"""Everything a GPU must prove about the fused linear KL, in one run (<= 8 min on one H100/H200).

    python benchmarks/gpu_check.py            # on the card: writes benchmarks/results/gpu_check_<card>.json
    python benchmarks/gpu_check.py --smoke    # CPU, tiny shapes, Triton interpreter (< 3 min): proves the script

Sections (each recorded in the JSON; a failing one does not stop the others):

- accuracy at the qwen3 shape (N=16384, Hs=4096, Ht=5120, V=151936, bf16), forward and reverse,
  for flat (random, high-entropy) and peaked (top token ~0.9, low-entropy) logits: KL and grad_h
  of 256 sampled tokens against float64, grad_W against an fp32 chunked reference (TF32 off),
  each next to a plain bf16 PyTorch baseline's error; triton (bf16 and fp32 grad_W accumulator)
  and the torch backend;
- a ragged shape (N, V, H multiples of no block) against full float64; NaN/inf: finite outputs
  at huge logits, NaN inputs refused;
- time (CUDA events, median of 5 after 2 warm-ups, forward+backward) for triton, torch, Liger's
  LigerFusedLinearJSD and LigerFusedLinearJSDLoss(compiled=True), with the bf16 GEMM rate
  (8192^3 and [512x4096]x[4096x151936]) measured in the same run and the fraction of it reached
  on the minimum FLOPs 2NV(Hs+Ht) + 4NVHs; peak extra memory and workspace (peak extra minus
  the returned gradients);
- per-kernel times from torch.profiler, registers/spills of the row kernel compiled as the
  runtime specialises it, a bitwise run-to-run comparison of the gradients;
- one trainer step of the default config (`python -m paced_train.run ... device=cuda`).

Exit status 1 if a correctness check fails or a section errors; the speed/memory targets of
issue 12 (>= 1.3x Liger, <= 1/4 of its workspace, >= 70% of the GEMM rate) are reported, not enforced.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "gpu": dict(main=(16384, 4096, 5120, 151936), timed=(16384, 4096, 5120, 151936), ragged=(1531, 1000, 1288, 50257),
                sample=256, timing_repeats=5, warmups=2, dtype="bfloat16"),
    # smoke: several token chunks for the accuracy shape; a one-chunk shape for the (interpreted) timing
    "smoke": dict(main=(160, 32, 48, 1000), timed=(64, 32, 48, 512), ragged=(37, 20, 24, 301), sample=16,
                  timing_repeats=3, warmups=1, dtype="bfloat16"),
}
BF16_EPS = 2.0**-7  # accuracy bound (relative Frobenius) for outputs not rounded once per chunk
TARGETS = dict(speed_vs_liger=1.3, workspace_vs_liger=0.25, gemm_fraction=0.7)

if __name__ == "__main__" and "--smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: the kernels run on the CPU

import torch  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from kl_throughput import make_loss_fn, min_flops  # noqa: E402  (the same peer definitions)

from paced_kernels import fused_linear_kl  # noqa: E402
from paced_kernels.linear_kl_torch import chunked_linear_kl  # noqa: E402
from paced_kernels.linear_kl_triton import GEMM_PATHS, triton_linear_kl  # noqa: E402

DIRECTIONS = ("forward", "reverse")


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


class Clock:
    """Elapsed milliseconds of a callable: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, fn) -> float:
        if self.cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop)
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)


def errors(x: torch.Tensor, ref: torch.Tensor) -> dict:
    """Max abs error over max |ref| and the relative Frobenius error, in float64."""
    d = x.double() - ref.double()
    scale = max(ref.double().abs().max().item(), 1e-300)
    return dict(max_rel=d.abs().max().item() / scale,
                fro_rel=d.norm().item() / max(ref.double().norm().item(), 1e-300),
                finite=bool(torch.isfinite(x).all()))


def make_inputs(n, hs, ht, v, dtype, device, kind: str, seed: int):
    """Student/teacher hidden states and lm_head weights.

    flat: N(0, 1) hidden, rows N(0, 1/H): logits ~ N(0, 1), near-uniform over V (entropy ~ log V).
    peaked: each token leans towards a target row y_j (shared by both models, with different
    strengths), so its logit sits ~15 above the rest: top probability ~0.9, low entropy, as in
    an LLM's usual next-token distribution; 10% of tokens have teacher and student disagree.
    """
    g = torch.Generator(device=device).manual_seed(seed)  # on the device: fast at the qwen3 shape

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device)

    w_s, w_t = randn(v, hs) * hs**-0.5, randn(v, ht) * ht**-0.5
    h_s, h_t = randn(n, hs), randn(n, ht)
    if kind == "peaked":
        y = torch.randint(0, v, (n,), generator=g, device=device)
        other = torch.randint(0, v, (n,), generator=g, device=device)
        y_t = torch.where(torch.rand(n, generator=g, device=device) < 0.1, other, y)
        for h, w, target, strength in ((h_s, w_s, y, 15.0), (h_t, w_t, y_t, 14.0)):
            rows = w[target]
            h.add_(rows * (strength / rows.pow(2).sum(1, keepdim=True)))
    elif kind != "flat":
        raise ValueError(kind)
    return tuple(x.to(dtype).contiguous() for x in (h_s, w_s, h_t, w_t))


def kl_from_logits(s, t, direction):
    log_p_s, log_p_t = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    if direction == "forward":
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)


def rows_reference(h_s, w_s, h_t, w_t, c, direction, dtype):
    """KL and grad_h of the given token rows, computing in ``dtype`` (float64: ground truth;
    bf16: what a plain PyTorch implementation does). grad_h_j = c_j dKL_j/dh_j."""
    h = h_s.detach().to(dtype).requires_grad_(True)
    s = h @ w_s.to(dtype).T
    t = h_t.to(dtype) @ w_t.to(dtype).T
    kl = kl_from_logits(s, t, direction)
    (grad_h,) = torch.autograd.grad((kl * c.to(dtype)).sum(), h)
    return kl.detach(), grad_h


def grad_w_reference(h_s, w_s, h_t, w_t, c, direction, dtype, chunk: int):
    """grad_W = sum_j c_j dKL_j/dW_s over token chunks: fp32 (operands upcast, no TF32) is the
    reference; bf16 is the plain baseline (bf16 logits/softmax, per-chunk grads summed in fp32)."""
    w = w_s.detach().to(dtype).requires_grad_(True)
    w_t = w_t.to(dtype)
    total = torch.zeros(w_s.shape, dtype=torch.float32, device=w_s.device)
    for lo in range(0, h_s.shape[0], chunk):
        hi = min(lo + chunk, h_s.shape[0])
        s = h_s[lo:hi].to(dtype) @ w.T
        t = h_t[lo:hi].to(dtype) @ w_t.T
        kl = kl_from_logits(s, t, direction)
        (g,) = torch.autograd.grad((kl * c[lo:hi].to(dtype)).sum(), w)
        total.add_(g.float())
        del s, t, kl, g
    return total


def no_tf32():
    """Context: fp32 GEMMs in true fp32 (the reference must not round operands to TF32)."""
    class _Ctx:
        def __enter__(self):
            self.old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False

        def __exit__(self, *exc):
            torch.backends.cuda.matmul.allow_tf32 = self.old

    return _Ctx()


def free(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def section_gemm(device, clock, smoke) -> dict:
    """bf16 GEMM rates: the roofline the fused KL is measured against."""
    shapes = {"8192^3": (8192, 8192, 8192), "512x4096x151936": (512, 4096, 151936)}
    if smoke:
        shapes = {"8192^3": (128, 128, 128), "512x4096x151936": (64, 32, 1000)}
    out = {}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        clock.sync()
        reps = 20
        ms = statistics.median(clock.ms(lambda: [a @ b for _ in range(reps)]) for _ in range(3)) / reps
        out[name] = dict(ms=ms, tflops=2 * m * k * n / ms / 1e9)
        del a, b
    return out


def section_accuracy(device, cfg, smoke) -> dict:
    n, hs, ht, v = cfg["main"]
    dtype = getattr(torch, cfg["dtype"])
    g = torch.Generator(device="cpu").manual_seed(7)
    sample = torch.randperm(n, generator=g)[: cfg["sample"]].to(device)
    chunk_ref = 64 if smoke else 1024
    out = {}
    for kind in ("flat", "peaked"):
        h_s, w_s, h_t, w_t = make_inputs(n, hs, ht, v, dtype, device, kind, seed=11)
        c = torch.full((n,), 1.0 / n, device=device)  # reduction="mean"
        for direction in DIRECTIONS:
            key = f"{kind}_{direction}"
            res = {}
            ours = {
                "triton": triton_linear_kl(h_s, w_s, h_t, w_t, c, direction, 1.0),
                "triton_fp32_grad_w": triton_linear_kl(h_s, w_s, h_t, w_t, c, direction, 1.0, grad_w_fp32=True),
                "torch": chunked_linear_kl(h_s, w_s, h_t, w_t, c, direction, 1.0),
            }
            hr, hrt, cr = h_s[sample], h_t[sample], c[sample]
            kl64, gh64 = rows_reference(hr, w_s, hrt, w_t, cr, direction, torch.float64)
            kl16, gh16 = rows_reference(hr, w_s, hrt, w_t, cr, direction, dtype)
            free(device)
            with no_tf32():
                gw32 = grad_w_reference(h_s, w_s, h_t, w_t, c, direction, torch.float32, chunk_ref)
            gw16 = grad_w_reference(h_s, w_s, h_t, w_t, c, direction, dtype, 4 * chunk_ref)
            free(device)
            res["plain_bf16"] = dict(kl=errors(kl16, kl64), grad_h=errors(gh16, gh64), grad_w=errors(gw16, gw32))
            for name, (kl, gh, gw) in ours.items():
                res[name] = dict(kl=errors(kl[sample], kl64), grad_h=errors(gh[sample], gh64), grad_w=errors(gw, gw32),
                                 all_finite=bool(torch.isfinite(kl).all() and torch.isfinite(gh).all()
                                                 and torch.isfinite(gw).all()))
            res["mean_kl"] = float(kl64.mean())
            res["mean_top_prob_student"] = float(torch.softmax(hr.double() @ w_s.double().T, -1).amax(-1).mean())
            plain = res["plain_bf16"]
            # pass: every output finite; no worse than plain bf16 PyTorch (relative Frobenius error;
            # the fp32-accumulator grad_W also in the max); and within one bf16 epsilon (2^-7) of the
            # truth, except grad_W through the bf16 accumulator (rounded once per chunk)
            checks = {}
            for name in ours:
                r = res[name]
                bounded = ("kl", "grad_h") if name == "triton" else ("kl", "grad_h", "grad_w")
                checks[name] = r["all_finite"] and all(
                    r[q]["fro_rel"] <= plain[q]["fro_rel"] for q in ("kl", "grad_h", "grad_w")) and all(
                    r[q]["fro_rel"] <= BF16_EPS for q in bounded)
            checks["triton_fp32_grad_w_max"] = res["triton_fp32_grad_w"]["grad_w"]["max_rel"] <= plain["grad_w"]["max_rel"]
            res["pass"] = checks
            out[key] = res
            del ours, gw32, gw16
            free(device)
        del h_s, w_s, h_t, w_t
        free(device)
    return out


def section_ragged(device, cfg) -> dict:
    """Shapes that are multiples of no block, against full float64 (every token, grad_W too)."""
    n, hs, ht, v = cfg["ragged"]
    dtype = getattr(torch, cfg["dtype"])
    h_s, w_s, h_t, w_t = make_inputs(n, hs, ht, v, dtype, device, "flat", seed=5)
    c = (torch.rand(n, generator=torch.Generator().manual_seed(3)) + 0.25).to(device) / n  # uneven weights
    out = {}
    for direction in DIRECTIONS:
        w64 = w_s.double().requires_grad_(True)
        h64 = h_s.double().requires_grad_(True)
        kl64 = kl_from_logits(h64 @ w64.T, h_t.double() @ w_t.double().T, direction)
        gh64, gw64 = torch.autograd.grad((kl64 * c.double()).sum(), (h64, w64))
        w16 = w_s.clone().requires_grad_(True)
        h16 = h_s.clone().requires_grad_(True)
        kl16 = kl_from_logits(h16 @ w16.T, h_t @ w_t.T, direction)
        gh16, gw16 = torch.autograd.grad((kl16 * c.to(dtype)).sum(), (h16, w16))
        res = {"plain_bf16": dict(kl=errors(kl16, kl64), grad_h=errors(gh16, gh64), grad_w=errors(gw16, gw64))}
        for name, fn in (("triton", triton_linear_kl), ("torch", chunked_linear_kl)):
            kl, gh, gw = fn(h_s, w_s, h_t, w_t, c, direction, 1.0)
            res[name] = dict(kl=errors(kl, kl64.detach()), grad_h=errors(gh, gh64), grad_w=errors(gw, gw64))
        res["pass"] = {name: all(res[name][q]["finite"] and res[name][q]["fro_rel"] <= res["plain_bf16"][q]["fro_rel"]
                                 for q in ("kl", "grad_h", "grad_w"))
                       and all(res[name][q]["fro_rel"] <= BF16_EPS for q in ("kl", "grad_h"))
                       for name in ("triton", "torch")}
        out[direction] = res
    return dict(shape=dict(n=n, hs=hs, ht=ht, vocab=v), **out)


def section_nonfinite(device, cfg) -> dict:
    """Huge logits stay finite (KL >= 0 up to rounding); NaN/inf inputs are refused by name."""
    n, hs, ht, v = cfg["ragged"]
    dtype = getattr(torch, cfg["dtype"])
    h_s, w_s, h_t, w_t = make_inputs(n, hs, ht, v, dtype, device, "flat", seed=9)
    big_s, big_t = (w_s.float() * 100).to(dtype), (w_t.float() * 100).to(dtype)  # logits ~ +-100s
    c = torch.full((n,), 1.0 / n, device=device)
    out = {}
    for direction in DIRECTIONS:
        for name, fn in (("triton", triton_linear_kl), ("torch", chunked_linear_kl)):
            kl, gh, gw = fn(h_s, big_s, h_t, big_t, c, direction, 1.0)
            out[f"huge_logits_{direction}_{name}"] = bool(
                torch.isfinite(kl).all() and torch.isfinite(gh).all() and torch.isfinite(gw).all()
                and kl.min().item() > -1e-3)
    for bad in ("nan", "inf"):
        x = h_s.clone()
        x[n // 2, 0] = float(bad)
        try:
            fused_linear_kl(x.requires_grad_(), w_s, h_t, w_t, backend="triton")
            out[f"{bad}_input_refused"] = False
        except ValueError as exc:
            out[f"{bad}_input_refused"] = "student_hidden" in str(exc)
    out["pass"] = all(out.values())
    return out


def _time_impl(impl, direction, device, cfg, clock, inputs) -> dict:
    h_s, w_s, h_t, w_t = inputs
    sh = h_s.detach().clone().requires_grad_(True)
    sw = w_s.detach().clone().requires_grad_(True)
    fn = make_loss_fn(impl, direction)

    def step():
        sh.grad = sw.grad = None
        fn(sh, sw, h_t, w_t).backward()

    for _ in range(cfg["warmups"]):
        step()
    sh.grad = sw.grad = None
    clock.sync()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = [clock.ms(step) for _ in range(cfg["timing_repeats"])]
    row = dict(ms_median=statistics.median(times), ms_all=times)
    grads = sh.grad.numel() * sh.grad.element_size() + sw.grad.numel() * sw.grad.element_size()
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
        # the last step's gradients are alive at the end and counted in "base" of none: peak
        # covers one step with its own returned gradients
        row.update(peak_extra_mb=peak / 2**20, returned_grads_mb=grads / 2**20, workspace_mb=(peak - grads) / 2**20)
    del sh, sw
    free(device)
    return row


def section_timing(device, cfg, clock, gemm, smoke) -> dict:
    n, hs, ht, v = cfg["timed"]
    dtype = getattr(torch, cfg["dtype"])
    inputs = make_inputs(n, hs, ht, v, dtype, device, "peaked", seed=13)
    impls = ["triton", "torch", "liger-jsd", "liger-chunked-compiled-c1024"]
    flops = min_flops(n, hs, ht, v)
    rate = gemm["512x4096x151936"]["tflops"] if gemm else None
    out = {}
    for direction in DIRECTIONS:
        rows = {}
        for impl in impls:
            try:
                rows[impl] = _time_impl(impl, direction, device, cfg, clock, inputs)
                rows[impl]["tflops_on_min_flops"] = flops / rows[impl]["ms_median"] / 1e9
                if rate and not smoke:
                    rows[impl]["gemm_fraction"] = rows[impl]["tflops_on_min_flops"] / rate
            except Exception as exc:  # a peer that does not run here is recorded, not fatal
                rows[impl] = dict(error=f"{type(exc).__name__}: {exc}"[:300])
        ours, liger = rows.get("triton", {}), rows.get("liger-chunked-compiled-c1024", {})
        fastest = min((r["ms_median"] for k, r in rows.items() if k.startswith("liger") and "ms_median" in r),
                      default=None)
        if "ms_median" in ours and fastest:
            rows["triton_vs_fastest_liger"] = dict(speed=fastest / ours["ms_median"])
            for name, peer in (("chunked", liger), ("jsd", rows.get("liger-jsd", {}))):
                if "workspace_mb" in ours and "workspace_mb" in peer:
                    rows["triton_vs_fastest_liger"][f"workspace_vs_{name}"] = (
                        ours["workspace_mb"] / max(peer["workspace_mb"], 1e-9))
        out[direction] = rows
    out["min_flops"] = flops
    out["gemm_rate_tflops"] = rate
    return out


def section_profile(device, cfg) -> dict:
    """Per-kernel device time of one triton forward+backward (forward KL) at the main shape."""
    from torch.profiler import ProfilerActivity, profile

    n, hs, ht, v = cfg["timed"]
    h_s, w_s, h_t, w_t = make_inputs(n, hs, ht, v, getattr(torch, cfg["dtype"]), device, "peaked", seed=13)
    c = torch.full((n,), 1.0 / n, device=device)
    triton_linear_kl(h_s, w_s, h_t, w_t, c, "forward", 1.0)  # warm
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        triton_linear_kl(h_s, w_s, h_t, w_t, c, "forward", 1.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        dev_us = getattr(e, "self_device_time_total", None)
        if dev_us is None:
            dev_us = getattr(e, "self_cuda_time_total", 0)  # older torch
        us = dev_us if device.type == "cuda" else e.self_cpu_time_total
        if us > 0:
            rows.append(dict(name=e.key[:120], calls=e.count, total_ms=us / 1e3))
    rows.sort(key=lambda r: -r["total_ms"])
    return dict(kind="device time" if device.type == "cuda" else "CPU self time", top=rows[:12],
                total_ms=sum(r["total_ms"] for r in rows))


_REG_SCRIPT = r"""
import json, sys, torch
from paced_kernels.linear_kl_rows import _kl_rows_kernel
from paced_kernels.linear_kl_compile import compile_like_runtime, resource_usage, row_kernel_args
vocab, rows, arch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = []
for reverse in (False, True):
    for want_grad in (False, True):
        args, kwargs = row_kernel_args(vocab, rows, torch.bfloat16, reverse, want_grad)
        k = compile_like_runtime(_kl_rows_kernel, args, kwargs, arch=arch)
        out.append(dict(reverse=reverse, want_grad=want_grad, **resource_usage(k)))
print(json.dumps(out))
"""


def _ran_kernels() -> list:
    """n_regs / n_spills of the row-kernel variants that actually ran (Triton's per-device JIT cache)."""
    from paced_kernels.linear_kl_rows import _kl_rows_kernel

    out = []
    try:
        caches = list(getattr(_kl_rows_kernel, "device_caches", {}).values())
    except Exception:  # noqa: BLE001 - a Triton layout we do not know: the AOT compile still reports
        return []
    for entry in caches:
        kernel_cache = entry[0] if isinstance(entry, tuple) else {}  # Triton 3.x: {key: CompiledKernel}
        for compiled in kernel_cache.values():
            try:
                compiled._init_handles()  # loads the binary; sets n_regs / n_spills
            except Exception:  # noqa: BLE001
                pass
            meta = compiled.metadata
            out.append(dict(registers=getattr(compiled, "n_regs", None), spills=getattr(compiled, "n_spills", None),
                            num_warps=getattr(meta, "num_warps", None), shared_bytes=getattr(meta, "shared", None)))
    return out


def section_registers(device, cfg) -> dict:
    """Registers/spills of the bf16 row kernel: compiled as the runtime specialises it at the qwen3
    vocabulary (own process: no interpreter), and on a GPU also read off the variants that ran."""
    arch = 90
    out = {}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        arch = 10 * major + minor
        out["ran"] = _ran_kernels()
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _REG_SCRIPT, str(SHAPES["gpu"]["main"][3]), "512", str(arch)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out["arch"] = arch
    if proc.returncode == 0:
        out["compiled"] = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        out["compile_error"] = (proc.stderr.strip().splitlines() or ["compile failed"])[-1][:300]
    if "compiled" not in out and not out.get("ran"):
        raise RuntimeError(out.get("compile_error", "no kernel information"))
    spills = [k.get("spill_bytes") for k in out.get("compiled", [])] + [k.get("spills") for k in out.get("ran", [])]
    out["pass"] = all(x == 0 for x in spills if x is not None)
    return out


def section_determinism(device, cfg) -> dict:
    """Two identical calls: KL, grad_h and grad_W must be bitwise equal (no atomics on the hot path)."""
    n, hs, ht, v = cfg["timed"]
    h_s, w_s, h_t, w_t = make_inputs(n, hs, ht, v, getattr(torch, cfg["dtype"]), device, "peaked", seed=17)
    c = torch.full((n,), 1.0 / n, device=device)
    out = {}
    for direction in DIRECTIONS:
        a = triton_linear_kl(h_s, w_s, h_t, w_t, c, direction, 1.0)
        b = triton_linear_kl(h_s, w_s, h_t, w_t, c, direction, 1.0)
        out[direction] = {name: bool(torch.equal(x, y)) for name, x, y in zip(("kl", "grad_h", "grad_w"), a, b)}
        del a, b
    out["pass"] = all(all(d.values()) for d in out.values())
    return out


TRAINER_SHORT = ["data.toy.n_train=16", "data.toy.n_eval=8", "data.toy.n_mc=4", "rollout.k=2", "eval.k=1",
                 "distill.max_steps=1", "distill.global_batch_problems=2", "distill.micro_batch_problems=1",
                 "logging.progress=false", "logging.tensorboard=false"]


def section_trainer(device, smoke, timeout: float) -> dict:
    """One optimizer step per stage of the default config, as a user runs it, on this device."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "paced_train.run", f"output_dir={tmp}", "name=gpu_check",
               f"device={device.type}", *TRAINER_SHORT] + (["num_threads=2"] if smoke else [])
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("TRITON_INTERPRET", None)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
        out = dict(command=" ".join(cmd[1:]), returncode=proc.returncode, seconds=seconds)
        if proc.returncode != 0:
            out["tail"] = (proc.stdout[-1500:] + proc.stderr[-2500:])
        else:
            summary = Path(proc.stdout.strip().splitlines()[-1]) / "summary.json"
            if summary.is_file():
                out["losses"] = json.loads(summary.read_text()).get("losses")
        out["pass"] = proc.returncode == 0
    return out


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    acc = result["sections"].get("accuracy", {})
    if isinstance(acc, dict) and "error" not in acc:
        t = Table(title="accuracy (relative Frobenius error; KL, grad_h vs float64 on sampled tokens, grad_W vs fp32)")
        for col in ("case", "impl", "KL", "grad_h", "grad_W", "grad_W max", "pass"):
            t.add_column(col, justify="right")
        for case, res in acc.items():
            if not isinstance(res, dict):
                continue
            for impl in ("plain_bf16", "triton", "triton_fp32_grad_w", "torch"):
                r = res[impl]
                t.add_row(case, impl, *(f"{r[q]['fro_rel']:.2e}" for q in ("kl", "grad_h", "grad_w")),
                          f"{r['grad_w']['max_rel']:.2e}", str(res["pass"].get(impl, "")))
        console.print(t)
    tim = result["sections"].get("timing", {})
    if isinstance(tim, dict) and "error" not in tim:
        t = Table(title=f"forward+backward (median ms; GEMM rate {tim.get('gemm_rate_tflops') or 0:.0f} TFLOP/s)")
        for col in ("direction", "impl", "ms", "TFLOP/s on min FLOPs", "% GEMM", "peak extra MB", "workspace MB"):
            t.add_column(col, justify="right")
        for direction in DIRECTIONS:
            for impl, r in tim.get(direction, {}).items():
                if impl.startswith("triton_vs"):
                    continue
                if "error" in r:
                    t.add_row(direction, impl, "error", r["error"][:80], "", "", "")
                    continue
                t.add_row(direction, impl, f"{r['ms_median']:.1f}", f"{r['tflops_on_min_flops']:.1f}",
                          f"{100 * r['gemm_fraction']:.0f}%" if "gemm_fraction" in r else "-",
                          f"{r.get('peak_extra_mb', float('nan')):.0f}", f"{r.get('workspace_mb', float('nan')):.0f}")
        console.print(t)
    t = Table(title="checks")
    t.add_column("section")
    t.add_column("result")
    for name, sec in result["sections"].items():
        if "error" in sec:
            t.add_row(name, "ERROR " + sec["error"][:150])
        elif "pass" in sec:
            t.add_row(name, str(sec["pass"]))
        elif name == "accuracy":
            t.add_row(name, str({k: all(v["pass"].values()) for k, v in sec.items() if isinstance(v, dict)}))
        elif name == "ragged":
            t.add_row(name, str({d: all(sec[d]["pass"].values()) for d in DIRECTIONS}))
        else:
            t.add_row(name, "recorded")
    console.print(t)


def card_slug(device) -> str:
    if device.type != "cuda":
        return "smoke_cpu"
    return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, Triton interpreter (proves the script)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="default benchmarks/results (GPU) or a temporary folder (--smoke)")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip (e.g. trainer)")
    ap.add_argument("--trainer-timeout", type=float, default=180)
    args = ap.parse_args(argv)

    if not args.smoke and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU, or use --smoke on the CPU")
    if args.smoke and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("--smoke needs TRITON_INTERPRET=1 before triton is imported (run this file as a script)")
    device = torch.device("cpu" if args.smoke else "cuda")
    cfg = SHAPES["smoke" if args.smoke else "gpu"]
    clock = Clock(device)
    if args.smoke:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.perf_counter()

    import triton

    try:
        import liger_kernel  # noqa: F401
        from importlib.metadata import version
        liger_version = version("liger-kernel")
    except Exception:  # noqa: BLE001
        liger_version = None
    env = dict(python=platform.python_version(), torch=torch.__version__, triton=triton.__version__,
               liger_kernel=liger_version, device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               capability=list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
               smoke=args.smoke, shapes=dict(main=cfg["main"], timed=cfg["timed"], ragged=cfg["ragged"]), dtype=cfg["dtype"])
    result = dict(env=env, sections={}, targets=TARGETS)

    def run(name, fn):
        if name in args.skip:
            return None
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the other sections still run
            out = dict(error=f"{type(exc).__name__}: {exc}"[:500], traceback=traceback.format_exc()[-3000:])
        out["seconds"] = round(time.perf_counter() - t0, 2)
        result["sections"][name] = out
        print(f"[{time.perf_counter() - started:6.1f} s] {name}: "
              + ("ERROR " + out["error"] if "error" in out else f"done in {out['seconds']} s"), flush=True)
        return out

    gemm = run("gemm", lambda: section_gemm(device, clock, args.smoke))
    run("accuracy", lambda: section_accuracy(device, cfg, args.smoke))
    run("ragged", lambda: section_ragged(device, cfg))
    run("nonfinite", lambda: section_nonfinite(device, cfg))
    run("determinism", lambda: section_determinism(device, cfg))
    run("timing", lambda: section_timing(device, cfg, clock, gemm if gemm and "error" not in gemm else None,
                                         args.smoke))
    run("profile", lambda: section_profile(device, cfg))
    run("registers", lambda: section_registers(device, cfg))
    run("trainer", lambda: section_trainer(device, args.smoke, args.trainer_timeout))
    result["gemm_paths"] = dict(GEMM_PATHS)

    tim = result["sections"].get("timing", {})
    if not args.smoke and "error" not in tim and tim:
        met = {}
        for direction in DIRECTIONS:
            r = tim[direction]
            cmp = r.get("triton_vs_fastest_liger", {})
            met[direction] = dict(
                speed_vs_liger=cmp.get("speed", 0) >= TARGETS["speed_vs_liger"],
                workspace_vs_liger=max(cmp.get("workspace_vs_chunked", 9), cmp.get("workspace_vs_jsd", 0))
                <= TARGETS["workspace_vs_liger"],
                gemm_fraction=r.get("triton", {}).get("gemm_fraction", 0) >= TARGETS["gemm_fraction"])
        result["targets_met"] = met

    failed = []
    for name, sec in result["sections"].items():
        if "error" in sec:
            failed.append(name)
        elif name == "accuracy":
            failed += [f"accuracy/{k}" for k, v in sec.items() if isinstance(v, dict) and not all(v["pass"].values())]
        elif name == "ragged":
            failed += [f"ragged/{d}" for d in DIRECTIONS if not all(sec[d]["pass"].values())]
        elif name == "timing":
            failed += [f"timing/{d}/triton" for d in DIRECTIONS if "error" in sec.get(d, {}).get("triton", {})]
        elif sec.get("pass") is False:
            failed.append(name)
    result["failed"] = failed
    result["seconds"] = round(time.perf_counter() - started, 1)
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "paced_gpu_check" if args.smoke
                               else ROOT / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu_check_{card_slug(device)}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print_report(result)
    print(f"wrote {path} ({result['seconds']:.0f} s); failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
