"""Gradient signal-to-noise ratio versus pass rate (method.md section 7), on the toy world.

    python -m paced_train.analysis.snr [--out DIR] [--n-problems N] [--k K] [--direction reverse]

For each problem the student samples K responses (temperature 1.0) that are scored against the
gold answer, giving its pass rate p. Along each response y_k the distillation loss
(default: reverse KL, sum over the response tokens, teacher seeing the problem and the expert
solution as in the trainer) is computed with ``paced_kernels.fused_linear_kl`` and its gradient
g_k with respect to the student's lm_head weight is taken (hidden states held fixed: the
lm_head gradient is exactly sum_t dKL_t/dlogits_t h_t^T). Per problem

    SNR = ||mean_k g_k|| / sqrt(mean_k ||g_k - mean g||^2).

Problems are binned by their pass rate (the K + 1 possible values). Per bin we report the mean
and median of the per-problem SNR (problems whose K responses are all identical have zero
variance, an undefined SNR: they are counted and left out of those two) and the pooled SNR
mean_i ||mean g_i|| / sqrt(mean_i var_i) (defined whenever the bin has any variance). The figure
draws the pooled and mean SNR, each scaled to max 1, with the Beta kernel p(1 - p) scaled to max 1.
Writes ``DIR/snr.json`` and ``DIR/snr.png``.
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
    """[K, V*H] gradients of the summed KL along each response w.r.t. the student's lm_head weight."""
    from paced_kernels import fused_linear_kl

    hs = _last_hidden(student, [student_prompt + r for r in responses])
    ht = _last_hidden(teacher, [teacher_prompt + r for r in responses])
    w_s = student.lm_head.weight.detach().float()
    w_t = teacher.lm_head.weight.detach().float()
    grads = []
    for r, h_s, h_t in zip(responses, hs, ht):
        if not r:
            raise ValueError("empty response: nothing to differentiate")
        # the hidden state at position len(prompt) - 1 + j predicts response token j
        s_pos = h_s[len(student_prompt) - 1: len(student_prompt) - 1 + len(r)].float()
        t_pos = h_t[len(teacher_prompt) - 1: len(teacher_prompt) - 1 + len(r)].float()
        weight = w_s.clone().requires_grad_(True)
        loss = fused_linear_kl(s_pos, weight, t_pos, w_t, direction=direction, reduction="sum", backend=backend)
        (grad,) = torch.autograd.grad(loss, weight)
        grads.append(grad.reshape(-1))
    return torch.stack(grads)


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
    for key in ("snr_mean", "snr_pooled"):
        top = max((b[key] for b in bins if b[key] is not None), default=None)
        for b in bins:
            b[key + "_scaled"] = (b[key] / top) if (top and b[key] is not None) else None
    for b in bins:
        b["p_times_1_minus_p_scaled"] = 4 * b["pass_rate"] * (1 - b["pass_rate"])
    return bins


def _plot(bins: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = [i / 200 for i in range(201)]
    ax.plot(grid, [4 * p * (1 - p) for p in grid], "k--", label="p(1-p), scaled")
    for key, style, label in (("snr_pooled_scaled", "o-", "pooled SNR"), ("snr_mean_scaled", "s:", "mean per-problem SNR")):
        pts = [(b["pass_rate"], b[key]) for b in bins if b[key] is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    for b in bins:
        ax.annotate(f"n={b['n']}", (b["pass_rate"], 0.02), ha="center", fontsize=7, color="gray")
    ax.set_xlabel("student pass rate p")
    ax.set_ylabel("SNR (scaled to max 1)")
    ax.set_ylim(0, 1.1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_snr(out_dir: Path, student_path: str = "toy://student", teacher_path: str = "toy://teacher",
            n_problems: int = 128, k: int = 8, temperature: float = 1.0, direction: str = "reverse",
            teacher_context: str = "solution", seed: int = 0, backend: str = "torch") -> dict:
    """Measure and write ``snr.json`` and ``snr.png`` under ``out_dir``; returns the numbers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..toy.assets import resolve_path
    from ..toy.pretrain import TEACHER_PROMPT_TEMPLATE, _chat_prompt, generate_response_ids, is_correct
    from ..toy.world import toy_splits

    if k < 2:
        raise ValueError(f"k must be >= 2 to measure a variance, got {k}")
    if teacher_context not in ("solution", "problem"):
        raise ValueError(f"teacher_context must be 'solution' or 'problem', got {teacher_context!r}")
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

    records = []
    for prob, responses in zip(problems, rollouts):
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        p = sum(is_correct(prob["answer"], t) for t in texts) / k
        teacher_content = (TEACHER_PROMPT_TEMPLATE.format(problem=prob["problem"], solution=prob["solution"])
                           if teacher_context == "solution" else prob["problem"])
        grads = problem_gradients(student, teacher, _chat_prompt(tok, prob["problem"]),
                                  _chat_prompt(tok, teacher_content), responses, direction=direction,
                                  backend=backend)
        snr, signal, var = snr_of(grads)
        records.append({"id": prob["id"], "difficulty": prob["difficulty"], "pass_rate": p, "snr": snr,
                        "grad_mean_norm": signal, "grad_variance": var})

    bins = bin_by_pass_rate([r["pass_rate"] for r in records], [r["snr"] for r in records],
                            [r["grad_mean_norm"] for r in records], [r["grad_variance"] for r in records], k)
    result = {
        "student": student_path, "teacher": teacher_path, "n_problems": n_problems, "k": k,
        "temperature": temperature, "direction": direction, "teacher_context": teacher_context,
        "loss": f"fused_linear_kl(direction={direction!r}, reduction='sum', backend={backend!r}) along student rollouts",
        "gradient": "student lm_head weight", "seed": seed,
        "bins": bins,
        "problems": [{**r, "snr": (r["snr"] if math.isfinite(r["snr"]) else None)} for r in records],
        "seconds": {"rollouts": round(t_roll, 1), "total": round(time.time() - t0, 1)},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "snr.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(bins, out_dir / "snr.png",
          f"Gradient SNR vs pass rate (toy world, {direction} KL, K={k}, {n_problems} problems)")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m paced_train.analysis.snr", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--student", default="toy://student")
    ap.add_argument("--teacher", default="toy://teacher")
    ap.add_argument("--n-problems", type=int, default=128)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--direction", choices=("reverse", "forward"), default="reverse")
    ap.add_argument("--teacher-context", choices=("solution", "problem"), default="solution",
                    help="teacher prompt: problem + expert solution (as the trainer does) or problem only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.n_problems < 1:
        raise SystemExit("--n-problems must be >= 1")
    torch.set_num_threads(args.threads)
    result = run_snr(args.out, args.student, args.teacher, n_problems=args.n_problems, k=args.k,
                     temperature=args.temperature, direction=args.direction,
                     teacher_context=args.teacher_context, seed=args.seed)
    print(f"{'p':>6} {'n':>4} {'0-var':>5} {'SNR mean':>9} {'pooled':>8} {'scaled':>7} {'p(1-p)':>7}")
    for b in result["bins"]:
        fmt = lambda v: f"{v:.3f}" if v is not None else "   -"  # noqa: E731
        print(f"{b['pass_rate']:6.3f} {b['n']:4d} {b['n_zero_variance']:5d} {fmt(b['snr_mean']):>9} "
              f"{fmt(b['snr_pooled']):>8} {fmt(b['snr_pooled_scaled']):>7} {b['p_times_1_minus_p_scaled']:7.3f}")
    print(f"wrote {Path(args.out) / 'snr.json'} and snr.png in {result['seconds']['total']:.0f}s")
    return result


if __name__ == "__main__":
    main()
