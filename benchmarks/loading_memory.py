"""Peak host memory per rank of loading the student and teacher for FSDP2 training: today's loading
vs ``paced_train.loading``.

A randomly initialised Qwen3 (~217M parameters by default: hidden 1024, 12 layers, vocab 32768,
untied lm_head) is saved once with ``save_pretrained`` (fp32 safetensors) to a temporary folder.
Then, for each variant, a fresh ``torchrun --nproc_per_node 2`` (gloo, CPU) loads that model as the
fp32 student and as the bf16 teacher, exactly as the trainer would:

- ``from_pretrained`` (today): every rank ``from_pretrained``s both models whole, then shards them as
  ``run_distill_stage`` does (``StudentKL`` / ``TeacherHidden`` roots, ``parallel.shard_causal_lm``);
- ``sharded`` (new): ``paced_train.loading.load_sharded``: meta-device build, the same sharding,
  rank 0 reads the memory-mapped safetensors and broadcasts chunk by chunk, each rank keeps its slice.

Per rank it records the peak resident set size of the process (``getrusage`` ``ru_maxrss``, so a
fresh process per variant), the RSS after the imports (before any model exists), the RSS once
loaded, and the wall time of the loading; the ratio is today's peak over the new peak, rank by rank.

    python benchmarks/loading_memory.py            # ~1-2 min on 2 cores; writes benchmarks/results/loading_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
VARIANTS = ("from_pretrained", "sharded")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args) -> None:
    """One rank of one variant (under torchrun): load student + teacher, write this rank's numbers."""
    import torch

    torch.set_num_threads(1)
    # everything the loading imports, imported first: counted in the baseline, not in the loading
    import safetensors.torch  # noqa: F401
    import torch.distributed.checkpoint.state_dict  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig  # noqa: F401
    from transformers.models.qwen3 import modeling_qwen3  # noqa: F401

    from paced_train import loading, parallel
    from paced_train.distill import StudentKL, TeacherHidden

    env = parallel.init_distributed()
    parallel.barrier()
    baseline = _rss_mib()
    t0 = time.perf_counter()
    plan = loading.ShardPlan()
    models = []
    for trainable, dtype in ((True, torch.float32), (False, torch.bfloat16)):
        if args.variant == "sharded":
            models.append(loading.load_sharded(args.model, dtype=dtype, trainable=trainable, plan=plan,
                                               chunk_bytes=int(args.chunk_mib * 2 ** 20)))
        else:
            model = loading.load_whole(args.model, dtype=dtype, trainable=trainable, device=env.device)
            root = StudentKL(model) if trainable else TeacherHidden(model)
            parallel.shard_causal_lm(root, parallel.decoder_layers(model), parallel.build_device_mesh(env),
                                     trainable=trainable)
            models.append(model)
    parallel.barrier()
    load_s = time.perf_counter() - t0
    from torch.distributed.tensor import DTensor

    local_params = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel()
                       for m in models for p in m.parameters())
    rec = {"rank": env.rank, "variant": args.variant, "baseline_rss_mib": baseline, "peak_rss_mib": _peak_rss_mib(),
           "rss_after_load_mib": _rss_mib(), "load_s": load_s, "local_parameters": local_params}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.variant}_rank{env.rank}.json").write_text(json.dumps(rec))
    parallel.teardown_distributed()


def make_model(path: Path, hidden: int, layers: int, vocab: int, seed: int) -> dict:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128), head_dim=64,
                      vocab_size=vocab, tie_word_embeddings=False, max_position_embeddings=4096)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return {"hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": 3 * hidden, "vocab_size": vocab,
            "tie_word_embeddings": False, "parameters": n, "safetensors_bytes": size, "file_dtype": "float32"}


def run_variant(variant: str, model_dir: Path, out: Path, nproc: int, chunk_mib: float) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), __file__,
           "--worker", "--variant", variant, "--model", str(model_dir), "--out", str(out), "--chunk-mib", str(chunk_mib)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return [json.loads((out / f"{variant}_rank{r}.json").read_text()) for r in range(nproc)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=VARIANTS)
    ap.add_argument("--model")
    ap.add_argument("--out")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-mib", type=float, default=None,
                    help="rank 0 broadcasts at most this much at once (default: paced_train.loading's)")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "loading_memory.json"))
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import torch
    import transformers

    from paced_train.loading import DEFAULT_CHUNK_BYTES

    chunk_mib = args.chunk_mib if args.chunk_mib is not None else DEFAULT_CHUNK_BYTES / 2 ** 20
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paced_loading_") as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "model", args.hidden, args.layers, args.vocab, args.seed)
        print(f"model: {model['parameters'] / 1e6:.1f}M parameters, {model['safetensors_bytes'] / 2**20:.0f} MiB "
              f"safetensors (fp32); loaded as fp32 student + bf16 teacher on {args.nproc} ranks")
        results = {v: run_variant(v, tmp / "model", tmp / "out", args.nproc, chunk_mib) for v in VARIANTS}

    rows = []
    for r in range(args.nproc):
        old, new = results["from_pretrained"][r], results["sharded"][r]
        rows.append({"rank": r, "from_pretrained": old, "sharded": new,
                     "peak_ratio": old["peak_rss_mib"] / new["peak_rss_mib"],
                     "peak_above_baseline_ratio": (old["peak_rss_mib"] - old["baseline_rss_mib"])
                     / max(new["peak_rss_mib"] - new["baseline_rss_mib"], 1e-9)})
    full = {"student_fp32_mib": model["parameters"] * 4 / 2**20, "teacher_bf16_mib": model["parameters"] * 2 / 2**20}
    print(f"\none full copy: fp32 student {full['student_fp32_mib']:.0f} MiB + bf16 teacher {full['teacher_bf16_mib']:.0f} MiB")
    hdr = f"{'rank':>4} | {'variant':<15} | {'baseline MiB':>12} | {'peak RSS MiB':>12} | {'peak-baseline':>13} | {'after load':>10} | {'load s':>6}"
    print(hdr + "\n" + "-" * len(hdr))
    for row in rows:
        for v in VARIANTS:
            x = row[v]
            print(f"{row['rank']:>4} | {v:<15} | {x['baseline_rss_mib']:>12.0f} | {x['peak_rss_mib']:>12.0f} | "
                  f"{x['peak_rss_mib'] - x['baseline_rss_mib']:>13.0f} | {x['rss_after_load_mib']:>10.0f} | {x['load_s']:>6.1f}")
        print(f"{row['rank']:>4} | ratio from_pretrained / sharded: peak {row['peak_ratio']:.2f}x, "
              f"above baseline {row['peak_above_baseline_ratio']:.2f}x")
    payload = {
        "benchmark": "loading_memory",
        "settings": {**model, "world_size": args.nproc, "backend": "gloo", "device": "cpu",
                     "student_dtype": "float32", "teacher_dtype": "bfloat16", "mixed_precision": "no",
                     "chunk_bytes": int(chunk_mib * 2 ** 20), "peak": "getrusage ru_maxrss of a fresh torchrun process per variant",
                     "baseline": "VmRSS after imports and process-group start, before any model"},
        "one_full_copy_mib": full,
        "per_rank": rows,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "cpu_count": os.cpu_count(),
        "wall_s": time.perf_counter() - t_start,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {args.json} ({payload['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
