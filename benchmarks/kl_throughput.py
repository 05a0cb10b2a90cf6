"""Throughput and peak extra memory of the fused linear KL: ours (reference, torch, triton) vs Liger.

Each (implementation, N) point runs in a fresh subprocess, so peak memory is measured cleanly:
on CPU the peak resident set size during the first forward+backward minus the RSS once inputs
exist (imports and a tiny warm-up happen before); on CUDA `max_memory_allocated` minus the
memory held by the inputs. Tokens/s is N over the median forward+backward time.

    python benchmarks/kl_throughput.py                  # CPU default (< 3 min): N=256..2048, H=512, V=32768, fp32
    python benchmarks/kl_throughput.py --preset qwen3   # GPU: N=16384, Hs=4096, Ht=5120, V=151936, bf16, + roofline

Liger-Kernel's `LigerFusedLinearJSD` with jsd_beta=0 / 1 is the forward / reverse KL (token mean);
on CPU it runs through the Triton interpreter (TRITON_INTERPRET=1), which is how it runs here.
Writes a JSON file and a PNG plot over N to --out-dir (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = {
    "cpu": dict(n=[256, 512, 1024, 2048], hs=512, ht=512, vocab=32768, dtype="float32", repeats=1,
                impls=["reference", "torch", "liger"]),
    "qwen3": dict(n=[2048, 4096, 8192, 16384], hs=4096, ht=5120, vocab=151936, dtype="bfloat16", repeats=5,
                  impls=["torch", "triton", "liger"]),
}


# ----------------------------------------------------------------------------- worker side
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_loss_fn(impl: str, direction: str):
    if impl == "liger":
        from liger_kernel.transformers.fused_linear_jsd import LigerFusedLinearJSD

        module = LigerFusedLinearJSD(jsd_beta=0.0 if direction == "forward" else 1.0, temperature=1.0)
        return lambda sh, sw, th, tw: module(sh, sw, th, tw, None)
    from paced_kernels import fused_linear_kl

    return lambda sh, sw, th, tw: fused_linear_kl(sh, sw, th, tw, direction=direction, reduction="mean", backend=impl)


def _inputs(n, hs, ht, vocab, dtype, device, seed=0):
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
    """Measure one (impl, N) point in this process; returns a result row."""
    import torch

    device = torch.device(args.device)
    fn = _make_loss_fn(args.impl, args.direction)
    # warm-up on a tiny shape: imports, thread pools, kernel compilation
    tiny = _inputs(16, args.hs, args.ht, min(args.vocab, 1024), args.dtype, device, seed=1)
    fn(*tiny).backward()
    del tiny
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sh, sw, th, tw = _inputs(args.n, args.hs, args.ht, args.vocab, args.dtype, device)
    sync()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    times = []
    for i in range(max(1, args.repeats) + (1 if device.type == "cuda" else 0)):
        sh.grad = sw.grad = None
        sync()
        t0 = time.perf_counter()
        loss = fn(sh, sw, th, tw)
        loss.backward()
        sync()
        dt = time.perf_counter() - t0
        if i == 0:
            peak = (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else _peak_rss_mb()
        if device.type != "cuda" or i > 0:  # on GPU the first call compiles / autotunes
            times.append(dt)
    t = statistics.median(times)
    return dict(impl=args.impl, n=args.n, seconds=t, tokens_per_s=args.n / t, peak_extra_mb=peak - base,
                loss=float(loss))


# ----------------------------------------------------------------------------- driver side
def matmul_tflops(device: str, dtype: str) -> float | None:
    """Measured dense GEMM rate of this device (the roofline we compare against)."""
    import torch

    if device != "cuda":
        return None
    dt = getattr(torch, dtype)
    a = torch.randn(8192, 8192, device=device, dtype=dt)
    b = torch.randn(8192, 8192, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * reps / (time.perf_counter() - t0) / 1e12


def design_flops(impl: str, n: int, hs: int, ht: int, vocab: int) -> float:
    """Minimal FLOPs of each design: logits 2NV(Hs+Ht), gradients 4NVHs, triton also recomputes logits."""
    logits = 2 * n * vocab * (hs + ht)
    grads = 4 * n * vocab * hs
    return logits * (2 if impl == "triton" else 1) + grads


def run_point(impl: str, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--n", str(n), "--hs", str(args.hs),
           "--ht", str(args.ht), "--vocab", str(args.vocab), "--dtype", args.dtype, "--direction",
           args.direction, "--repeats", str(args.repeats), "--device", args.device]
    env = dict(os.environ)
    # large blocks straight from mmap, returned on free: peak RSS then tracks live memory rather
    # than glibc heap high-water marks (same setting for every implementation)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    if args.device == "cpu" and impl in ("liger", "triton"):
        env["TRITON_INTERPRET"] = "1"  # the only way Triton code runs on a CPU
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.point_timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return dict(impl=impl, n=n, error=tail[0][:200])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows, peer="liger"):
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fused linear KL: forward+backward")
    for col in ("impl", "N", "tokens/s", "peak extra MB", "TFLOP/s", "% roofline", f"speed vs {peer}", f"mem vs {peer}"):
        table.add_column(col, justify="right")
    by_n = {}
    for r in rows:
        by_n.setdefault(r["n"], {})[r["impl"]] = r
    for r in rows:
        if "error" in r:
            table.add_row(r["impl"], str(r["n"]), "error", r["error"][:60], "", "", "", "")
            continue
        p = by_n[r["n"]].get(peer)
        ok = p is not None and "error" not in p
        table.add_row(
            r["impl"], str(r["n"]), f"{r['tokens_per_s']:.1f}", f"{r['peak_extra_mb']:.0f}",
            f"{r['tflops']:.3g}" if r.get("tflops") else "-",
            f"{100 * r['roofline_fraction']:.0f}%" if r.get("roofline_fraction") else "-",
            f"{r['tokens_per_s'] / p['tokens_per_s']:.2f}x" if ok else "-",
            f"{r['peak_extra_mb'] / p['peak_extra_mb']:.2f}x" if ok and p["peak_extra_mb"] > 0 else "-",
        )
    Console().print(table)


def plot(rows, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for impl in sorted({r["impl"] for r in rows}):
        pts = sorted((r["n"], r["tokens_per_s"], r["peak_extra_mb"]) for r in rows if r["impl"] == impl and "error" not in r)
        if not pts:
            continue
        ns, tps, mem = zip(*pts)
        ax1.plot(ns, tps, marker="o", label=impl)
        ax2.plot(ns, mem, marker="o", label=impl)
    for ax, label in ((ax1, "tokens / s (fwd+bwd)"), (ax2, "peak extra memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
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
    ap.add_argument("--direction", choices=["forward", "reverse"], default="forward")
    ap.add_argument("--impls", nargs="+", choices=["reference", "torch", "triton", "liger"])
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--tag", default=None, help="suffix of the output files (default: preset and device)")
    ap.add_argument("--point-timeout", type=float, default=900)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        args.n = args.n[0]
        print(json.dumps(worker(args)))
        return

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = PRESETS[args.preset or ("qwen3" if args.device == "cuda" else "cpu")]
    for key in ("n", "hs", "ht", "vocab", "dtype", "repeats", "impls"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    started = time.perf_counter()
    peak_tflops = matmul_tflops(args.device, args.dtype)
    rows = []
    for n in args.n:
        for impl in args.impls:
            row = run_point(impl, n, args)
            if "error" not in row:
                fl = design_flops(impl if impl != "liger" else "torch", n, args.hs, args.ht, args.vocab)
                row["tflops"] = fl / row["seconds"] / 1e12
                if peak_tflops:
                    row["roofline_fraction"] = row["tflops"] / peak_tflops
            rows.append(row)
            print(f"  {impl:>9} N={n:<6} " + (f"{row['tokens_per_s']:.1f} tok/s, {row['peak_extra_mb']:.0f} MB"
                                              if "error" not in row else row["error"]), flush=True)
    print_table(rows)
    preset_name = args.preset or ("qwen3" if args.device == "cuda" else "cpu")
    tag = args.tag or (preset_name if preset_name == args.device else f"{preset_name}_{args.device}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(device=device_name(args.device), torch=torch.__version__, hs=args.hs, ht=args.ht, vocab=args.vocab,
                dtype=args.dtype, direction=args.direction, repeats=args.repeats, matmul_tflops=peak_tflops,
                peer="liger-kernel LigerFusedLinearJSD (jsd_beta 0=forward, 1=reverse)",
                note="CPU: liger and triton run under TRITON_INTERPRET=1; memory = peak RSS above the inputs, with MALLOC_MMAP_THRESHOLD_=131072 for every implementation",
                time=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.perf_counter() - started, 1))
    json_path = args.out_dir / f"kl_throughput_{tag}.json"
    json_path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    png_path = args.out_dir / f"kl_throughput_{tag}.png"
    plot(rows, png_path, f"{meta['device']}: Hs={args.hs} Ht={args.ht} V={args.vocab} {args.dtype} {args.direction}")
    print(f"wrote {json_path} and {png_path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
