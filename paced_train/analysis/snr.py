"""Gradient signal-to-noise ratio versus pass rate (method.md section 7), on the toy world.

    python -m paced_train.analysis.snr [--out DIR] [--n-problems N] [--k K] [--directions reverse,forward]

For each problem the student samples K responses (temperature 1.0) that are scored against the
gold answer, giving its pass rate p. Along each response y_k the distillation loss (reverse KL,
and forward KL on the same rollouts, full vocabulary, summed over the response tokens, the
teacher seeing the problem and the expert solution as in the trainer) is computed with
``paced_kernels.fused_linear_kl`` (torch backend) and its gradient
g_k with respect to the student's lm_head weight is taken (hidden states held fixed: the
lm_head gradient is exactly sum_t dKL_t/dlogits_t h_t^T). Per problem

    SNR = ||mean_k g_k|| / sqrt(mean_k ||g_k - mean g||^2).

Problems are binned by their pass rate (the K + 1 possible values). Per bin we report the mean
and median of the per-problem SNR (problems whose K responses are all identical have zero
variance, an undefined SNR: they are counted and left out of those two) and the pooled SNR
mean_i ||mean g_i|| / sqrt(mean_i var_i) (defined whenever the bin has any variance), plus the
mean gradient norm ||mean g|| (the signal itself). The figure draws, per direction, the pooled and
median SNR scaled to max 1 with the Beta kernel p(1 - p) scaled to max 1 (left), and the mean
gradient norm scaled to max 1 (right). Writes ``DIR/snr.json`` and ``DIR/snr.png``.

Note on the toy world: the full-vocabulary KL at position t depends on the prefix y_<t only, not
on the sampled token y_t, and toy responses are short and agree up to the first mistake, so
rollouts of one problem often give nearly the same gradient: per-problem SNRs can be huge, and
a problem whose K rollouts are all identical (common at p = 1) has no defined SNR at all. The
pooled and median columns are the robust summaries; the JSON keeps every problem.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

import torch

__all__ = ["problem_gradients", "snr_of", "bin_by_pass_rate", "run_snr", "main"]

DEFAULT_OUT = Path("runs") / "snr"


def snr_of(grads: torch.Tensor) -> tuple[float, float, float]:
    """(SNR, ||mean g||, mean ||g_k - mean g||^2) of K flattened gradients ``grads`` [K, D].

    SNR is ``inf`` when the variance is exactly 0 (and ``nan`` when the mean is 0 too)."""
    if grads.ndim != 2 or grads.shape[0] < 2:
        raise ValueError(f"need [K >= 2, D] gradients, got shape {tuple(grads.shape)}")
    g = grads.double()
    mean = g.mean(0)
    signal = float(mean.norm())
    var = float(((g - mean) ** 2).sum(1).mean())
    if var == 0.0:
        return (math.nan if signal == 0.0 else math.inf), signal, var
    return signal / math.sqrt(var), signal, var


def _last_hidden(model, ids: list[list[int]]) -> list[torch.Tensor]:
    """Final (post-norm) hidden states of each sequence, [len, H], one forward on a right-padded batch."""
    width = max(len(x) for x in ids)
    batch = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, x in enumerate(ids):
        batch[row, :len(x)] = torch.tensor(x)
        mask[row, :len(x)] = 1
    with torch.no_grad():
        hidden = model.model(input_ids=batch, attention_mask=mask).last_hidden_state
    return [hidden[row, :len(x)] for row, x in enumerate(ids)]


def problem_gradients(student, teacher, student_prompt: list[int], teacher_prompt: list[int],
                      responses: list[list[int]], direction: str = "reverse", backend: str = "torch") -> torch.Tensor:
    """[K, V*H] gradients of the summed KL along each response w.r.t. the student's lm_head weight.

    Identical responses share one computation (so K identical rollouts give exactly zero variance,
    not the float noise of differently padded batches)."""
    from paced_kernels import fused_linear_kl

    if not responses or any(len(r) == 0 for r in responses):
        raise ValueError("need non-empty responses to differentiate along")
    unique = list(dict.fromkeys(tuple(r) for r in responses))
    hs = _last_hidden(student, [student_prompt + list(r) for r in unique])
    ht = _last_hidden(teacher, [teacher_prompt + list(r) for r in unique])
    w_s = student.lm_head.weight.detach().float()
    w_t = teacher.lm_head.weight.detach().float()
    grads = {}
    for r, h_s, h_t in zip(unique, hs, ht):
        # the hidden state at position len(prompt) - 1 + j predicts response token j
        s_pos = h_s[len(student_prompt) - 1: len(student_prompt) - 1 + len(r)].float()
        t_pos = h_t[len(teacher_prompt) - 1: len(teacher_prompt) - 1 + len(r)].float()
        weight = w_s.clone().requires_grad_(True)
        loss = fused_linear_kl(s_pos, weight, t_pos, w_t, direction=direction, reduction="sum", backend=backend)
        (grad,) = torch.autograd.grad(loss, weight)
        grads[r] = grad.reshape(-1)
    return torch.stack([grads[tuple(r)] for r in responses])


def bin_by_pass_rate(pass_rates: list[float], snrs: list[float], signals: list[float],
                     variances: list[float], k: int) -> list[dict]:
    """Per pass-rate level j/K: counts, mean/median per-problem SNR (finite only), pooled SNR."""
    bins = []
    for j in range(k + 1):
        idx = [i for i, p in enumerate(pass_rates) if round(p * k) == j]
        if not idx:
            continue
        finite = [snrs[i] for i in idx if math.isfinite(snrs[i])]
        mean_var = statistics.fmean(variances[i] for i in idx)
        mean_signal = statistics.fmean(signals[i] for i in idx)
        bins.append({
            "pass_rate": j / k,
            "n": len(idx),
            "n_zero_variance": len(idx) - len(finite),
            "snr_mean": statistics.fmean(finite) if finite else None,
            "snr_median": statistics.median(finite) if finite else None,
            "snr_pooled": (mean_signal / math.sqrt(mean_var)) if mean_var > 0 else None,
            "mean_grad_norm": mean_signal,
        })
    for key in ("snr_mean", "snr_median", "snr_pooled", "mean_grad_norm"):
        top = max((b[key] for b in bins if b[key] is not None), default=None)
        for b in bins:
            b[key + "_scaled"] = (b[key] / top) if (top and b[key] is not None) else None
    for b in bins:
        b["p_times_1_minus_p_scaled"] = 4 * b["pass_rate"] * (1 - b["pass_rate"])
    return bins


def _plot(by_direction: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    grid = [i / 200 for i in range(201)]
    for a in (ax, ax2):
        a.plot(grid, [4 * p * (1 - p) for p in grid], "k--", label="p(1-p), scaled")
    colors = {"reverse": "tab:blue", "forward": "tab:orange"}
    for direction, bins in by_direction.items():
        c = colors.get(direction)
        for key, style, label in (("snr_pooled_scaled", "o-", "pooled SNR"), ("snr_median_scaled", "s:", "median SNR")):
            pts = [(b["pass_rate"], b[key]) for b in bins if b[key] is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=c, label=f"{direction} KL: {label}")
        pts = [(b["pass_rate"], b["mean_grad_norm_scaled"]) for b in bins if b["mean_grad_norm_scaled"] is not None]
        ax2.plot(*zip(*pts), "o-", color=c, label=f"{direction} KL: ||mean g||")
    first = next(iter(by_direction.values()))
    for b in first:
        if b["snr_pooled"] is None:
            ax.annotate("SNR undefined\n(identical rollouts)", (b["pass_rate"], 0.05), ha="center",
                        fontsize=7, color="gray")
    for b in first:
        ax.annotate(f"n={b['n']}", (b["pass_rate"], 1.05), ha="center", fontsize=7, color="gray")
    ax.set_title("gradient SNR (scaled to max 1)", fontsize=9)
    ax2.set_title("gradient signal ||mean_k g_k|| (scaled to max 1)", fontsize=9)
    for a in (ax, ax2):
        a.set_xlabel("student pass rate p")
        a.set_ylim(0, 1.12)
        a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_snr(out_dir: Path, student_path: str = "toy://student", teacher_path: str = "toy://teacher",
            n_problems: int = 256, k: int = 8, temperature: float = 1.0,
            directions: tuple[str, ...] = ("reverse", "forward"), teacher_context: str = "solution",
            seed: int = 0, backend: str = "torch") -> dict:
    """Measure and write ``snr.json`` and ``snr.png`` under ``out_dir``; returns the numbers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..toy.assets import resolve_path
    from ..toy.pretrain import TEACHER_PROMPT_TEMPLATE, _chat_prompt, generate_response_ids, is_correct
    from ..toy.world import toy_splits

    if k < 2:
        raise ValueError(f"k must be >= 2 to measure a variance, got {k}")
    if n_problems < 1:
        raise ValueError(f"n_problems must be >= 1, got {n_problems}")
    if teacher_context not in ("solution", "problem"):
        raise ValueError(f"teacher_context must be 'solution' or 'problem', got {teacher_context!r}")
    directions = tuple(directions)
    if not directions or any(d not in ("reverse", "forward") for d in directions):
        raise ValueError(f"directions must be a non-empty subset of ('reverse', 'forward'), got {directions!r}")
    t0 = time.time()
    student_dir, teacher_dir = resolve_path(student_path), resolve_path(teacher_path)
    tok = AutoTokenizer.from_pretrained(student_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()

    problems = toy_splits(seed=seed, n_train=max(256, n_problems), n_eval=0, n_mc=0)["train"]
    problems = random.Random(f"snr-{seed}").sample(problems, n_problems)
    rollouts = generate_response_ids(student, tok, [p["problem"] for p in problems], k=k,
                                     temperature=temperature, seed=seed)
    t_roll = time.time() - t0

    records: dict[str, list[dict]] = {d: [] for d in directions}
    for prob, responses in zip(problems, rollouts):
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        p = sum(is_correct(prob["answer"], t) for t in texts) / k
        teacher_content = (TEACHER_PROMPT_TEMPLATE.format(problem=prob["problem"], solution=prob["solution"])
                           if teacher_context == "solution" else prob["problem"])
        s_prompt, t_prompt = _chat_prompt(tok, prob["problem"]), _chat_prompt(tok, teacher_content)
        n_distinct = len({tuple(r) for r in responses})
        for direction in directions:
            grads = problem_gradients(student, teacher, s_prompt, t_prompt, responses, direction=direction,
                                      backend=backend)
            snr, signal, var = snr_of(grads)
            records[direction].append({"id": prob["id"], "difficulty": prob["difficulty"], "pass_rate": p,
                                       "distinct_rollouts": n_distinct, "snr": snr,
                                       "grad_mean_norm": signal, "grad_variance": var})

    by_direction = {
        d: bin_by_pass_rate([r["pass_rate"] for r in recs], [r["snr"] for r in recs],
                            [r["grad_mean_norm"] for r in recs], [r["grad_variance"] for r in recs], k)
        for d, recs in records.items()
    }
    result = {
        "student": student_path, "teacher": teacher_path, "n_problems": n_problems, "k": k,
        "temperature": temperature, "directions": list(directions), "teacher_context": teacher_context,
        "loss": f"fused_linear_kl(direction, reduction='sum', backend={backend!r}) along each student rollout",
        "gradient": "student lm_head weight (hidden states fixed)", "seed": seed,
        "bins": by_direction,
        "problems": {d: [{**r, "snr": (r["snr"] if math.isfinite(r["snr"]) else None)} for r in recs]
                     for d, recs in records.items()},
        "seconds": {"rollouts": round(t_roll, 1), "total": round(time.time() - t0, 1)},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "snr.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(by_direction, out_dir / "snr.png",
          f"Gradient SNR vs pass rate (toy world, K={k}, {n_problems} problems, lm_head gradients)")
    return result


def _table(direction: str, bins: list[dict]) -> str:
    def fmt(v):
        return f"{v:.3f}" if v is not None else "-"

    lines = [f"{direction} KL", f"{'p':>6} {'n':>4} {'0-var':>5} {'pooled':>8} {'scaled':>7} {'median':>8} "
             f"{'|mean g|':>9} {'scaled':>7} {'p(1-p)':>7}"]
    for b in bins:
        lines.append(f"{b['pass_rate']:6.3f} {b['n']:4d} {b['n_zero_variance']:5d} {fmt(b['snr_pooled']):>8} "
                     f"{fmt(b['snr_pooled_scaled']):>7} {fmt(b['snr_median']):>8} {b['mean_grad_norm']:9.3f} "
                     f"{fmt(b['mean_grad_norm_scaled']):>7} {b['p_times_1_minus_p_scaled']:7.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m paced_train.analysis.snr", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--student", default="toy://student")
    ap.add_argument("--teacher", default="toy://teacher")
    ap.add_argument("--n-problems", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--directions", default="reverse,forward",
                    help="comma-separated KL directions along the student rollouts (reverse, forward)")
    ap.add_argument("--teacher-context", choices=("solution", "problem"), default="solution",
                    help="teacher prompt: problem + expert solution (as the trainer does) or problem only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        result = run_snr(args.out, args.student, args.teacher, n_problems=args.n_problems, k=args.k,
                         temperature=args.temperature, directions=tuple(args.directions.split(",")),
                         teacher_context=args.teacher_context, seed=args.seed)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    for direction, bins in result["bins"].items():
        print(_table(direction, bins))
    print(f"wrote {Path(args.out) / 'snr.json'} and snr.png in {result['seconds']['total']:.0f}s")
    return result


if __name__ == "__main__":
    main()
