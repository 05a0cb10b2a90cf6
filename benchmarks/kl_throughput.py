"""Time and memory of the fused linear KL, forward+backward: ours vs Liger-Kernel's peers.

Every (implementation, direction, N) point runs in a fresh subprocess: one untimed warm-up at the
real shape (imports, thread pools, torch.compile), then `--repeats` timed runs; the point's time is
their median (wall clock and process CPU time: on a shared machine, CPU time at `--threads 1`, the CPU
preset's setting, counts each method's own work). Memory, two ways:

- peak extra: CPU: the peak resident set size during the timed runs above the RSS with the inputs
  alive (peak reset after the warm-up via /proc/self/clear_refs); CUDA: max_memory_allocated above
  the inputs. It includes the gradients every method must return;
- workspace: peak extra minus those returned gradients (grad_h [N, Hs] + grad_W [V, Hs]).

    python benchmarks/kl_throughput.py                  # CPU (~35 min on 2 shared cores: 3 rounds): N=2048, H=512, V=32768, fp32
    python benchmarks/kl_throughput.py --preset qwen3   # GPU: N=2048..16384, Hs=4096, Ht=5120, V=151936, bf16

Implementations (`--impls`):
- ours: `reference` (full logits, autograd), `torch` (chunked PyTorch), `triton` (GPU);
- `liger-chunked-{compiled,eager}-c{C}`: `liger_kernel.chunked_loss.LigerFusedLinearJSDLoss` with
  beta=0 (forward KL(t||s): it computes kl_div(log p_s, log p_t) = KL(t||s)) or beta=1 (reverse),
  weight_hard_loss=0, weight_soft_loss=1 (pure KL, token mean), compiled=True/False, chunk_size=C
  tokens per chunk (it splits N into N // C chunks); the CPU peer;
- `liger-jsd`: `LigerFusedLinearJSD` (jsd_beta 0 / 1), the Triton kernel peer on GPU (on CPU it
  only runs under the Triton interpreter, which times the interpreter, so not in the CPU preset).

"TFLOP/s" and "% of GEMM rate" count the minimum FLOPs, 2NV(Hs+Ht) + 4NVHs, for every method
(recomputed logits earn nothing); the GEMM rate is measured in the same run (GPU only).
Writes JSON (and a PNG when several N are measured) to --out-dir (default benchmarks/results).
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
import time
from pathlib import Path

CHUNKED_PEERS = [f"liger-chunked-{mode}-c{c}" for mode in ("compiled", "eager") for c in (256, 1024)]
DEFAULT_PEER = "liger-chunked-compiled-c1024"  # LigerFusedLinearJSDLoss() as constructed by default

PRESETS = {
    # threads=1: the 2 cores here are shared with other jobs; one thread per process makes CPU time
    # a count of each method's own work (no OpenMP spin-waits), and wall time close to it when idle
    # rounds=3: the variants run round-robin, so a change in the machine's load hits all of them
    "cpu": dict(n=[2048], hs=512, ht=512, vocab=32768, dtype="float32", repeats=3, threads=1, rounds=3,
                directions=["forward", "reverse"], impls=["reference", "torch", "torch-128mb", *CHUNKED_PEERS]),
    "qwen3": dict(n=[2048, 4096, 8192, 16384], hs=4096, ht=5120, vocab=151936, dtype="bfloat16", repeats=5,
                  directions=["forward", "reverse"], threads=None, rounds=1,
                  impls=["torch", "triton", "liger-jsd", "liger-chunked-compiled-c1024"]),
}
_CHUNKED = re.compile(r"^liger-chunked-(compiled|eager)-c(\d+)$")
_TORCH_BUDGET = re.compile(r"^torch-(\d+)mb$")  # the torch backend with PACED_KL_CHUNK_MB set


def describe_impl(impl: str) -> str:
    """The exact class and settings behind an implementation name (written into the JSON)."""
    m = _CHUNKED.match(impl)
    if m:
        return (f"liger_kernel.chunked_loss.LigerFusedLinearJSDLoss(beta=0 forward | 1 reverse, weight_hard_loss=0.0, "
                f"weight_soft_loss=1.0, compiled={m[1] == 'compiled'}, chunk_size={m[2]}, temperature=1.0)")
    if impl == "liger-jsd":
        return "liger_kernel.transformers.fused_linear_jsd.LigerFusedLinearJSD(jsd_beta=0 forward | 1 reverse)"
    m = _TORCH_BUDGET.match(impl)
    if m:
        return f"paced_kernels.fused_linear_kl(backend='torch', reduction='mean') with PACED_KL_CHUNK_MB={m[1]}"
    return f"paced_kernels.fused_linear_kl(backend={impl!r}, reduction='mean')"


# ----------------------------------------------------------------------------- worker side
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def make_loss_fn(impl: str, direction: str):
    """loss(sh, sw, th, tw) -> scalar token-mean KL, for one implementation name."""
    beta = 0.0 if direction == "forward" else 1.0
    m = _CHUNKED.match(impl)
    if m:
        import torch
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        module = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta, temperature=1.0,
                                         compiled=m[1] == "compiled", chunk_size=int(m[2]))
        labels = {}

        def chunked(sh, sw, th, tw):
            if sh.shape[0] not in labels:
                labels[sh.shape[0]] = torch.zeros(sh.shape[0], dtype=torch.long, device=sh.device)
            return module(sh, sw, th, tw, labels[sh.shape[0]])

        return chunked
    if impl == "liger-jsd":
        from liger_kernel.transformers.fused_linear_jsd import LigerFusedLinearJSD

        module = LigerFusedLinearJSD(jsd_beta=beta, temperature=1.0)
        return lambda sh, sw, th, tw: module(sh, sw, th, tw, None)
    from paced_kernels import fused_linear_kl

    backend = "torch" if _TORCH_BUDGET.match(impl) else impl
    return lambda sh, sw, th, tw: fused_linear_kl(sh, sw, th, tw, direction=direction, reduction="mean",
                                                  backend=backend)


def make_inputs(n, hs, ht, vocab, dtype, device, seed=0):
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    dt = getattr(torch, dtype)
    mk = lambda *shape, s=1.0: (torch.randn(*shape, generator=g) * s).to(device=device, dtype=dt)  # noqa: E731
    sh = mk(n, hs).requires_grad_()
    sw = mk(vocab, hs, s=hs**-0.5).requires_grad_()
    th = mk(n, ht)
    tw = mk(vocab, ht, s=ht**-0.5)
    return sh, sw, th, tw


def worker(args) -> dict:
    """Measure one (impl, direction, N) point in this process; returns a result row."""
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn = make_loss_fn(args.impl, args.direction)
    sh, sw, th, tw = make_inputs(args.n, args.hs, args.ht, args.vocab, args.dtype, device)
    fn(sh, sw, th, tw).backward()  # warm-up at the real shape (compilation, autotuning, pools)
    sh.grad = sw.grad = None
    sync()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
        _reset_peak_rss()
    walls, cpus = [], []
    for _ in range(max(1, args.repeats)):
        sh.grad = sw.grad = None
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = fn(sh, sw, th, tw)
        loss.backward()
        sync()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _hwm_mb()
    grads_mb = (sh.grad.numel() * sh.grad.element_size() + sw.grad.numel() * sw.grad.element_size()) / 2**20
    t = statistics.median(walls)
    return dict(impl=args.impl, direction=args.direction, n=args.n, seconds=t, seconds_all=walls,
                cpu_seconds_median=statistics.median(cpus), tokens_per_s=args.n / t,
                peak_extra_mb=peak - base, returned_grads_mb=grads_mb, workspace_mb=peak - base - grads_mb,
                loss=float(loss), grad_w_norm=float(sw.grad.float().norm()))


# ----------------------------------------------------------------------------- driver side
def gemm_tflops(device: str, dtype: str) -> dict | None:
    """Measured dense GEMM rates on this device: 8192^3 and the lm_head shape [512x4096]x[4096x151936]."""
    import torch

    if device != "cuda":
        return None
    dt = getattr(torch, dtype)
    out = {}
    for name, (m, k, n) in {"8192^3": (8192, 8192, 8192), "512x4096x151936": (512, 4096, 151936)}.items():
        a = torch.randn(m, k, device=device, dtype=dt)
        b = torch.randn(k, n, device=device, dtype=dt)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        out[name] = 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e12
        del a, b
    return out


def min_flops(n: int, hs: int, ht: int, vocab: int) -> float:
    """Minimum FLOPs of forward+backward: both logit GEMMs once, grad_h and grad_W once."""
    return 2 * n * vocab * (hs + ht) + 4 * n * vocab * hs


def run_point(impl: str, direction: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--n", str(n), "--hs", str(args.hs),
           "--ht", str(args.ht), "--vocab", str(args.vocab), "--dtype", args.dtype, "--direction",
           direction, "--repeats", str(args.repeats), "--device", args.device]
    env = dict(os.environ)
    if args.threads:
        cmd += ["--threads", str(args.threads)]
        env["OMP_NUM_THREADS"] = str(args.threads)  # inductor's C++ kernels and MKL alike
    # large blocks straight from mmap, returned on free: peak RSS then tracks live memory rather
    # than glibc heap high-water marks (same setting for every implementation)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    m = _TORCH_BUDGET.match(impl)
    if m:
        env["PACED_KL_CHUNK_MB"] = m[1]
    if args.device == "cpu" and impl in ("liger-jsd", "triton"):
        env["TRITON_INTERPRET"] = "1"  # the only way Triton code runs on a CPU
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.point_timeout)
    except subprocess.TimeoutExpired:
        return dict(impl=impl, direction=direction, n=n, error=f"timed out after {args.point_timeout:.0f} s")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return dict(impl=impl, direction=direction, n=n, error=tail[0][:200])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def combine_rounds(parts: list) -> dict:
    """One row per (N, direction, impl): medians over rounds of each round's (per-process) medians."""
    ok = [p for p in parts if "error" not in p]
    if not ok:
        return parts[-1]
    row = dict(ok[0])
    for key in ("seconds", "cpu_seconds_median", "peak_extra_mb", "workspace_mb"):
        row[key] = statistics.median(p[key] for p in ok)
    row["tokens_per_s"] = row["n"] / row["seconds"]
    row["seconds_all"] = [t for p in ok for t in p["seconds_all"]]
    row["rounds"] = [dict(seconds=p["seconds"], cpu_seconds=p["cpu_seconds_median"], peak_extra_mb=p["peak_extra_mb"])
                     for p in ok]
    if len(ok) < len(parts):
        row["failed_rounds"] = [p["error"] for p in parts if "error" in p]
    return row


def add_ratios(rows, peer: str) -> None:
    """speed / memory ratios vs the named peer and vs the fastest chunked-loss variant, same (direction, N)."""
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        same = [p for p in ok if p["direction"] == r["direction"] and p["n"] == r["n"]]
        named = next((p for p in same if p["impl"] == peer), None)
        chunked = [p for p in same if _CHUNKED.match(p["impl"])]
        best = min(chunked, key=lambda p: p["seconds"]) if chunked else None
        for key, p in (("vs_peer", named), ("vs_fastest_chunked", best)):
            if p is None:
                continue
            r[key] = dict(impl=p["impl"], time_ratio=r["seconds"] / p["seconds"],
                          cpu_time_ratio=r["cpu_seconds_median"] / p["cpu_seconds_median"],
                          peak_extra_ratio=r["peak_extra_mb"] / p["peak_extra_mb"],
                          workspace_ratio=r["workspace_mb"] / p["workspace_mb"] if p["workspace_mb"] > 0 else None)


def print_table(rows, peer: str):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fused linear KL, forward+backward (time ratio > 1 = slower than {peer})")
    for col in ("impl", "dir", "N", "median s", "cpu s", "peak extra MB", "workspace MB", "TFLOP/s", "% GEMM",
                "time / peer", "cpu / peer", "workspace / peer", "cpu / fastest chunked"):
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["impl"], r["direction"], str(r["n"]), "error", r["error"][:60], *[""] * 8)
            continue
        vp, vb = r.get("vs_peer"), r.get("vs_fastest_chunked")
        table.add_row(
            r["impl"], r["direction"][:3], str(r["n"]), f"{r['seconds']:.2f}", f"{r['cpu_seconds_median']:.2f}",
            f"{r['peak_extra_mb']:.0f}", f"{r['workspace_mb']:.0f}", f"{r['tflops']:.3g}",
            f"{100 * r['gemm_fraction']:.0f}%" if r.get("gemm_fraction") else "-",
            f"{vp['time_ratio']:.2f}x" if vp else "-",
            f"{vp['cpu_time_ratio']:.2f}x" if vp else "-",
            f"{vp['workspace_ratio']:.2f}x" if vp and vp["workspace_ratio"] is not None else "-",
            f"{vb['cpu_time_ratio']:.2f}x ({vb['impl'].removeprefix('liger-chunked-')})" if vb else "-",
        )
    Console(width=220).print(table)


def plot(rows, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for impl, direction in sorted({(r["impl"], r["direction"]) for r in rows}):
        pts = sorted((r["n"], r["tokens_per_s"], r["peak_extra_mb"]) for r in rows
                     if r["impl"] == impl and r["direction"] == direction and "error" not in r)
        if not pts:
            continue
        ns, tps, mem = zip(*pts)
        ax1.plot(ns, tps, marker="o", label=f"{impl} {direction}")
        ax2.plot(ns, mem, marker="o", label=f"{impl} {direction}")
    for ax, label in ((ax1, "tokens / s (fwd+bwd)"), (ax2, "peak extra memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="cpu (default without a GPU) or qwen3 (the real shape, GPU)")
    ap.add_argument("--n", type=int, nargs="+", help="token counts (several give the plot over N)")
    ap.add_argument("--hs", type=int)
    ap.add_argument("--ht", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--direction", "--directions", dest="directions", nargs="+", choices=["forward", "reverse"])
    ap.add_argument("--impls", nargs="+", help=f"reference torch triton liger-jsd {' '.join(CHUNKED_PEERS)} "
                                               "(any liger-chunked-{compiled,eager}-c<C>)")
    ap.add_argument("--peer", default=DEFAULT_PEER, help="implementation the ratios are taken against")
    ap.add_argument("--repeats", type=int, help="timed runs per point (median), >= 3 for published numbers")
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, help="round-robin passes over all variants (CPU preset: 3)")
    ap.add_argument("--threads", type=int, help="torch/OpenMP threads per process (CPU preset: 1)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--tag", default=None, help="suffix of the output files (default: preset and device)")
    ap.add_argument("--point-timeout", type=float, default=900)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        args.n, args.direction = args.n[0], args.directions[0]
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)
        print(json.dumps(worker(args)))
        return

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset_name = args.preset or ("qwen3" if args.device == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    for key in ("n", "hs", "ht", "vocab", "dtype", "repeats", "impls", "directions", "threads", "rounds"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    for impl in args.impls:
        if impl not in ("reference", "torch", "triton", "liger-jsd") and not (_CHUNKED.match(impl)
                                                                             or _TORCH_BUDGET.match(impl)):
            ap.error(f"--impls: unknown implementation {impl!r}")
    started = time.perf_counter()
    load_before = os.getloadavg()
    gemm = gemm_tflops(args.device, args.dtype)
    runs: dict = {}
    for rnd in range(max(1, args.rounds)):
        for n in args.n:
            for direction in args.directions:
                for impl in args.impls:
                    row = run_point(impl, direction, n, args)
                    runs.setdefault((n, direction, impl), []).append(row)
                    print(f"  round {rnd + 1} {impl:>28} {direction:>8} N={n:<6} " + (
                        f"{row['seconds']:.2f} s (cpu {row['cpu_seconds_median']:.2f} s), peak extra "
                        f"{row['peak_extra_mb']:.0f} MB, workspace {row['workspace_mb']:.0f} MB"
                        if "error" not in row else row["error"]), flush=True)
    rows = [combine_rounds(parts) for parts in runs.values()]
    for row in rows:
        if "error" not in row:
            row["tflops"] = min_flops(row["n"], args.hs, args.ht, args.vocab) / row["seconds"] / 1e12
            if gemm:
                row["gemm_fraction"] = row["tflops"] / gemm["512x4096x151936"]
    add_ratios(rows, args.peer)
    print_table(rows, args.peer)
    tag = args.tag or (preset_name if preset_name == args.device else f"{preset_name}_{args.device}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(
        device=device_name(args.device), torch=torch.__version__, python=platform.python_version(),
        hs=args.hs, ht=args.ht, vocab=args.vocab, dtype=args.dtype, directions=args.directions,
        repeats=args.repeats, rounds=args.rounds, threads=args.threads, gemm_tflops=gemm, peer=args.peer,
        implementations={impl: describe_impl(impl) for impl in args.impls},
        method=("each point in its own process: one untimed warm-up at the real shape, then `repeats` timed "
                "forward+backward runs, median wall time and median process CPU time (cpu_seconds_median); with "
                "rounds > 1 every variant runs once per round (round-robin) and the row holds the median over rounds; "
                "on a shared CPU, CPU time with threads=1 is the comparable measure of each method's work"),
        memory=("peak_extra_mb: CPU peak RSS (VmHWM, reset after warm-up) above the RSS with inputs alive, "
                "MALLOC_MMAP_THRESHOLD_=131072 for every implementation; CUDA max_memory_allocated above inputs. "
                "workspace_mb = peak_extra_mb - returned gradients (grad_h + grad_W)"),
        flops="tflops and gemm_fraction count the minimum FLOPs 2NV(Hs+Ht)+4NVHs for every method",
        load_average_before=load_before, load_average_after=os.getloadavg(),
        time=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.perf_counter() - started, 1))
    json_path = args.out_dir / f"kl_throughput_{tag}.json"
    json_path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {json_path}")
    if len(args.n) > 1:
        png_path = args.out_dir / f"kl_throughput_{tag}.png"
        plot(rows, png_path, f"{meta['device']}: Hs={args.hs} Ht={args.ht} V={args.vocab} {args.dtype}")
        print(f"wrote {png_path}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
