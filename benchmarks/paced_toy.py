"""The paper's comparison in miniature, on the embedded toy world (several seeds, same step budget).

    python benchmarks/paced_toy.py                       # 3 seeds x 8 methods, < 60 min on 2 cores
    python benchmarks/paced_toy.py --seeds 0 --steps 4   # a quick look

Methods (all from configs/default.yaml, only the schedule and the weighting change):
base (no training), uniform FKL, hard-filter FKL, AKL (token-level, uniform weights), Paced FKL,
Paced RKL, two-stage FKL -> RKL and RKL -> FKL. Every method trains for the same number of
optimizer steps (two-stage runs split them evenly between their stages).

Within a seed, work that does not depend on the method is done once and shared: the data set,
the base evaluation, the teacher's reference responses and the first pass-rate computation (the
same student, the same sampling seed) are copied into each method's run directory before it
starts; the trainer then skips those stages because their outputs exist.

Prints three tables shaped like the paper's (plasticity: eval mean@k; stability: multiple-choice
accuracy drop; curriculum progression: Low / Med / High pass-rate shares and mean p before and
after), with mean and standard deviation over seeds, and writes JSON and a PNG.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

METHODS = {
    "uniform_fkl": dict(stages=["fkl"], scheme="uniform"),
    "hard_fkl": dict(stages=["fkl"], scheme="hard"),
    "akl": dict(stages=["akl"], scheme="uniform"),
    "paced_fkl": dict(stages=["fkl"], scheme="beta"),
    "paced_rkl": dict(stages=["rkl"], scheme="beta"),
    "paced_fkl_then_rkl": dict(stages=["fkl", "rkl"], scheme="beta"),
    "paced_rkl_then_fkl": dict(stages=["rkl", "fkl"], scheme="beta"),
}


def overrides_for(method: str, seed: int, steps: int, out_dir: Path, threads: int, extra: list[str]) -> list[str]:
    spec = METHODS[method]
    per_stage = [steps // len(spec["stages"]) + (1 if i < steps % len(spec["stages"]) else 0)
                 for i in range(len(spec["stages"]))]
    stages = ", ".join(f"{{loss: {loss}, distill: {{max_steps: {n}}}}}" for loss, n in zip(spec["stages"], per_stage))
    return [f"seed={seed}", f"data.toy.seed={seed}", f"output_dir={out_dir}", f"name={method}",
            f"num_threads={threads}", "logging.progress=false", "logging.tensorboard=false",
            f"weights.scheme={spec['scheme']}", "distill.epochs=1000", f"stages=[{stages}]", *extra]


def share_method_independent_outputs(src: Path, dst: Path, first_loss: str) -> None:
    """Copy data, base eval, references and the first pass rates of a finished run into a new one."""
    dst.mkdir(parents=True, exist_ok=True)
    for rel in ("data", "reference"):
        if (src / rel).exists() and not (dst / rel).exists():
            shutil.copytree(src / rel, dst / rel)
    if (src / "eval" / "base.json").exists():
        (dst / "eval").mkdir(exist_ok=True)
        shutil.copy2(src / "eval" / "base.json", dst / "eval" / "base.json")
    first = sorted((src / "pass_rates").glob("00_*")) if (src / "pass_rates").exists() else []
    if first:
        target = dst / "pass_rates" / f"00_before_0_{first_loss}"
        if not target.exists():
            shutil.copytree(first[0], target)
            # the copied weights column belongs to the source's scheme; the trainer recomputes the
            # stage's weights from the pass rates, so only the pass rates themselves are reused


def run_method(method: str, seed: int, args, seed_dir: Path, log_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "paced_train.run", "--config", str(args.config),
           *overrides_for(method, seed, args.steps, seed_dir, args.threads, args.override)]
    t0 = time.time()
    with open(log_dir / f"seed{seed}_{method}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=args.run_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} (seed {seed}) failed; see {log_dir / f'seed{seed}_{method}.log'}")
    summary = json.loads((seed_dir / method / "summary.json").read_text())
    summary["seconds"] = time.time() - t0
    return summary


def run_seed(seed: int, args, out: Path) -> dict:
    seed_dir = out / f"seed{seed}"
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    order = [m for m in args.methods]
    first = order[0]
    results = {first: run_method(first, seed, args, seed_dir, log_dir)}
    for m in order[1:]:
        share_method_independent_outputs(seed_dir / first, seed_dir / m, METHODS[m]["stages"][0])
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {m: pool.submit(run_method, m, seed, args, seed_dir, log_dir) for m in order[1:]}
        results.update({m: f.result() for m, f in futures.items()})
    return results


def extract(summary: dict) -> dict:
    rows = summary["results"]["rows"]
    base, final = rows[0], rows[-1]
    eval_keys = [k for k in base if k not in ("label", "mc_accuracy", "mc_drop")]
    cur = summary["curriculum"]
    return {
        "base": {k: base[k] for k in eval_keys} | {"mc_accuracy": base.get("mc_accuracy")},
        "final": {k: final[k] for k in eval_keys} | {"mc_accuracy": final.get("mc_accuracy"),
                                                     "mc_drop": final.get("mc_drop")},
        "curriculum_start": cur[0] if cur else None,
        "curriculum_end": cur[-1] if cur else None,
        "steps": sum(len(v) for v in summary["losses"].values()),
        "seconds": summary.get("seconds"),
    }


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(ms, digits=1):
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def report(per_seed: dict, out: Path) -> dict:
    from rich.console import Console
    from rich.table import Table

    methods = list(next(iter(per_seed.values())).keys())
    eval_key = next(k for k in per_seed[next(iter(per_seed))][methods[0]]["base"] if k != "mc_accuracy")
    agg = {"base": {"eval": mean_sd([r[methods[0]]["base"][eval_key] for r in per_seed.values()]),
                    "mc_accuracy": mean_sd([r[methods[0]]["base"]["mc_accuracy"] for r in per_seed.values()]),
                    "mc_drop": (0.0, 0.0)}}
    for m in methods:
        rs = [per_seed[s][m] for s in per_seed]
        agg[m] = {"eval": mean_sd([r["final"][eval_key] for r in rs]),
                  "mc_accuracy": mean_sd([r["final"]["mc_accuracy"] for r in rs]),
                  "mc_drop": mean_sd([r["final"]["mc_drop"] for r in rs]),
                  "steps": mean_sd([r["steps"] for r in rs])}
        for when in ("start", "end"):
            for b in ("low", "med", "high", "mean"):
                agg[m][f"{when}_{b}"] = mean_sd([(r[f"curriculum_{when}"] or {}).get(b) for r in rs])
    con = Console()
    t = Table(title=f"Plasticity and stability on the toy world ({len(per_seed)} seeds, mean ± sd)")
    for c in ("method", f"{eval_key} mean@k (%)", "MC accuracy (%)", "MC drop (points)", "steps"):
        t.add_column(c, justify="right")
    t.add_row("base", fmt(agg["base"]["eval"]), fmt(agg["base"]["mc_accuracy"]), "0.0", "0")
    for m in methods:
        t.add_row(m, fmt(agg[m]["eval"]), fmt(agg[m]["mc_accuracy"]), fmt(agg[m]["mc_drop"]), fmt(agg[m]["steps"]))
    con.print(t)
    t = Table(title="Curriculum progression: share of training problems in pass-rate bins (Low / Med / High), mean p")
    for c in ("method", "start L/M/H", "start mean p", "end L/M/H", "end mean p"):
        t.add_column(c, justify="right")
    for m in methods:
        a = agg[m]
        lmh = lambda w: "/".join(f"{100 * a[f'{w}_{b}'][0]:.0f}" if a[f'{w}_{b}'][0] is not None else "-"  # noqa: E731
                                 for b in ("low", "med", "high"))
        t.add_row(m, lmh("start"), fmt(a["start_mean"], 3), lmh("end"), fmt(a["end_mean"], 3))
    con.print(t)
    return {"eval_set": eval_key, "aggregate": agg}


def plot(agg: dict, eval_key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(agg.keys())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, label in ((axes[0], "eval", f"{eval_key} mean@k (%)"), (axes[1], "mc_drop", "MC drop (points)")):
        means = [agg[n][key][0] or 0 for n in names]
        sds = [agg[n][key][1] or 0 for n in names]
        ax.bar(range(len(names)), means, yerr=sds, capsize=3, color=["#999"] + ["#4c72b0"] * (len(names) - 1))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Paced on the toy world")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per method (split over stages)")
    ap.add_argument("--jobs", type=int, default=2, help="methods run at once (each single-threaded)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--override", nargs="*", default=[], help="extra key=value overrides for every run")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "paced_toy")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--run-timeout", type=float, default=1800)
    ap.add_argument("--report-only", action="store_true", help="re-print the tables of an existing paced_toy.json")
    args = ap.parse_args(argv)

    if args.report_only:
        saved = json.loads((args.out_dir / "paced_toy.json").read_text())
        report({int(k): v for k, v in saved["per_seed"].items()}, args.out_dir)
        return

    t0 = time.time()
    per_seed = {}
    for seed in args.seeds:
        print(f"seed {seed}: {len(args.methods)} methods ...", flush=True)
        per_seed[seed] = {m: extract(s) for m, s in run_seed(seed, args, args.work_dir).items()}
    rep = report(per_seed, args.out_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"seeds": args.seeds, "steps": args.steps, "config": str(args.config.relative_to(ROOT))
               if args.config.is_relative_to(ROOT) else str(args.config), "overrides": args.override,
               "minutes": (time.time() - t0) / 60, "per_seed": per_seed, **rep}
    (args.out_dir / "paced_toy.json").write_text(json.dumps(payload, indent=2, default=str))
    plot(rep["aggregate"], rep["eval_set"], args.out_dir / "paced_toy.png")
    print(f"wrote {args.out_dir / 'paced_toy.json'} and {args.out_dir / 'paced_toy.png'} "
          f"({payload['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
