"""Distillation throughput: padded vs packed micro-batches on a length-skewed workload (CPU).

A small randomly initialised Qwen3 student and teacher (no download) and a fixed-seed workload whose
response lengths are log-uniform in [16, 2048] (prompts 32..128 tokens, the teacher's prompt adds
32..96 "solution" tokens). One pass = every problem once, each micro-batch through paced_train's own
code: ``_micro_batch_sequences`` -> ``_collate_micro_batch`` -> ``TeacherHidden`` (no grad) ->
``StudentKL`` (fused forward KL, torch backend) -> backward, gradients accumulated (no optimizer
step). Padded = ``micro_batch_problems`` problems right-padded to their longest; packed =
``max_tokens_per_micro_batch`` tokens, no padding.

Each (variant, round) runs in its own process, rounds interleave the variants so machine load hits
them alike; the figure per variant is the median over rounds. Tokens/s counts real (non-pad) student
input tokens; peak memory is the process's peak RSS (ru_maxrss) minus its RSS after the models were
built, i.e. what one pass's activations, gradients and workspaces add. With one thread per process
the process's CPU time is the work done, so tokens per CPU-second is the figure that survives a
shared machine; wall-clock tokens/s is recorded too.

    python benchmarks/distill_throughput.py [--rounds 3] [--threads 1] [--problems 32]

Writes benchmarks/results/distill_throughput_cpu.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, vocab_size=16384, max_position_embeddings=4096)
# (name, micro_batch_problems, max_tokens_per_micro_batch, per-sequence attention); packed budgets are
# matched to the padded micro-batches' worst case (micro_batch_problems x the longest sequence, ~2270
# tokens). "dense" = transformers' own sdpa over the block-diagonal mask (what packing gives without
# paced_train.packed_attention, which run_distill_stage enables for sdpa models).
VARIANTS = [("padded_mb1", 1, None, False), ("padded_mb2", 2, None, False), ("padded_mb4", 4, None, False),
            ("packed_2304", 1, 2304, True), ("packed_4608", 1, 4608, True), ("packed_9216", 1, 9216, True),
            ("packed_4608_dense", 1, 4608, False)]
PEERS = {"packed_2304": "padded_mb1", "packed_4608": "padded_mb2", "packed_9216": "padded_mb4",
         "packed_4608_dense": "padded_mb2"}  # similar peak-memory pairs


def workload(problems: int, seed: int, vocab: int):
    """Fixed-seed problems: log-uniform response lengths in [16, 2048], one sequence per problem."""
    import random

    from paced_train.distill import DistillExample

    rng = random.Random(seed)
    out = []
    for i in range(problems):
        n_resp = int(round(math.exp(rng.uniform(math.log(16), math.log(2048)))))
        s_prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(32, 128))]
        t_prompt = s_prompt + [rng.randrange(3, vocab) for _ in range(rng.randint(32, 96))]
        resp = [rng.randrange(3, vocab) for _ in range(n_resp - 1)] + [1]
        out.append(DistillExample(f"p{i}", 0.5 + rng.random(), s_prompt, t_prompt, resp))
    return out


def build_model(seed: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(**MODEL, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(name: str, micro: int, budget: int | None, varlen: bool, problems: int, seed: int, threads: int) -> dict:
    import torch

    from paced_train import distill, packed_attention

    torch.set_num_threads(threads)
    student, teacher = build_model(1), build_model(2)
    teacher.eval().requires_grad_(False)
    student.train()
    if varlen:
        packed_attention.enable(student, teacher)
    s_fn, t_fn = distill.StudentKL(student), distill.TeacherHidden(teacher)
    examples = workload(problems, seed, MODEL["vocab_size"])
    batch = distill.group_by_problem(examples)
    device = torch.device("cpu")
    micro_batches = distill._micro_batch_sequences(batch, 0, 1, micro, budget)
    normaliser = float(sum(len(ex.response_ids) for ex in examples))
    real_tokens = sum(len(ex.student_prompt_ids) + len(ex.response_ids) - 1 for ex in examples)
    run_tokens = 0  # student input tokens including padding
    base = rss_mib()

    t0, c0 = time.perf_counter(), time.process_time()
    total = 0.0
    for seqs in micro_batches:
        s_mb, t_mb, w = distill._collate_micro_batch(seqs, budget is not None, device)
        run_tokens += s_mb.input_ids.numel()
        with torch.no_grad():
            t_hidden = t_fn(t_mb)
        loss = s_fn(s_mb, t_hidden, t_fn.head_weight(), w, direction="forward", temperature=1.0, backend="torch")
        (loss / normaliser).backward()
        total += float(loss.detach()) / normaliser
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(variant=name, seconds=dt, cpu_seconds=cpu, real_tokens=real_tokens, run_tokens=run_tokens,
                tokens_per_s=real_tokens / dt, tokens_per_cpu_s=real_tokens / cpu, micro_batches=len(micro_batches), loss=total,
                peak_rss_delta_mib=peak - base, base_rss_mib=base)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "distill_throughput_cpu.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    table = {n: (m, b, v) for n, m, b, v in VARIANTS}
    if args.child:
        m, b, v = table[args.child]
        print(json.dumps(child(args.child, m, b, v, args.problems, args.seed, args.threads)), flush=True)
        return

    names = [n for n, _, _, _ in VARIANTS if not args.only or n in args.only.split(",")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    runs: dict[str, list[dict]] = {n: [] for n in names}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for n in names:
            cmd = [sys.executable, __file__, "--child", n, "--problems", str(args.problems),
                   "--seed", str(args.seed), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(f"{n} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[n].append(res)
            print(f"round {r + 1}/{args.rounds} {n}: {res['tokens_per_cpu_s']:.0f} tok/cpu-s, "
                  f"{res['tokens_per_s']:.0f} tok/s, {res['seconds']:.1f} s, "
                  f"peak +{res['peak_rss_delta_mib']:.0f} MiB", flush=True)

    summary = {}
    for n in names:
        rs = runs[n]
        summary[n] = dict(
            micro_batch_problems=table[n][0] if table[n][1] is None else None,
            max_tokens_per_micro_batch=table[n][1],
            attention="per-sequence sdpa (packed_attention)" if table[n][2] else "sdpa" + (" over the block-diagonal mask" if table[n][1] else ""),
            micro_batches=rs[0]["micro_batches"],
            real_tokens=rs[0]["real_tokens"],
            run_tokens=rs[0]["run_tokens"],
            pad_fraction=1 - rs[0]["real_tokens"] / rs[0]["run_tokens"],
            tokens_per_s_median=statistics.median(r["tokens_per_s"] for r in rs),
            tokens_per_s_runs=[r["tokens_per_s"] for r in rs],
            tokens_per_cpu_s_median=statistics.median(r["tokens_per_cpu_s"] for r in rs),
            tokens_per_cpu_s_runs=[r["tokens_per_cpu_s"] for r in rs],
            peak_rss_delta_mib_median=statistics.median(r["peak_rss_delta_mib"] for r in rs),
            loss=rs[0]["loss"],
        )
    pairs = [(p, q) for p, q in PEERS.items() if p in summary and q in summary]
    ratios = {f"{p}_vs_{q}": summary[p]["tokens_per_s_median"] / summary[q]["tokens_per_s_median"] for p, q in pairs}
    cpu_ratios = {f"{p}_vs_{q}": summary[p]["tokens_per_cpu_s_median"] / summary[q]["tokens_per_cpu_s_median"]
                  for p, q in pairs}
    lengths = [len(ex.response_ids) for ex in workload(args.problems, args.seed, MODEL["vocab_size"])]
    out = dict(
        settings=dict(model=MODEL, attn_implementation="sdpa", dtype="float32", kl_backend="torch",
                      direction="forward", problems=args.problems, rollouts_per_problem=1, seed=args.seed,
                      response_lengths="log-uniform in [16, 2048]", prompt_tokens="32..128 (+32..96 teacher)",
                      response_tokens_total=sum(lengths), response_tokens_max=max(lengths),
                      threads=args.threads, rounds=args.rounds, one_process_per_variant_and_round=True,
                      measured="one pass over all problems: teacher fwd + student fwd + fused KL + backward per micro-batch",
                      memory="peak RSS minus RSS after model build (ru_maxrss)"),
        machine=dict(python=platform.python_version(), torch=__import__("torch").__version__,
                     transformers=__import__("transformers").__version__, cpu=platform.processor() or platform.machine(),
                     cpus=os.cpu_count(), loadavg_1_5_15_before=load_before, loadavg_1_5_15_after=os.getloadavg(),
                     note="shared machine: other jobs ran alongside; rounds interleave the variants"),
        results=summary,
        ratios_tokens_per_s=ratios,
        ratios_tokens_per_cpu_s=cpu_ratios,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

    print(f"\n{'variant':<18} {'micro-batches':>13} {'pad %':>6} {'tok/cpu-s':>9} {'tok/s':>7} {'peak MiB':>9}")
    for n, s in summary.items():
        print(f"{n:<18} {s['micro_batches']:>13} {100 * s['pad_fraction']:>6.1f} {s['tokens_per_cpu_s_median']:>9.0f} "
              f"{s['tokens_per_s_median']:>7.0f} {s['peak_rss_delta_mib_median']:>9.0f}")
    for k in ratios:
        print(f"{k}: {cpu_ratios[k]:.2f}x tokens per CPU-second, {ratios[k]:.2f}x tokens/s (wall)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
