"""The paper's claims in miniature on the regime world (issue 11; protocol: paced_toy_protocol.md).

    python benchmarks/paced_study.py                         # the protocol's study
    python benchmarks/paced_study.py --methods uniform_fkl --seeds 0 1 2 --no-report   # A/A estimate
    python benchmarks/paced_study.py --report-only           # re-print (and re-plot) from paced_study.json

Every (method, seed) run trains the shipped regime student (``paced_train/toy/regime.py``) in
process with the same step budget and writes ``WORK/seed{s}/{method}.json``; a run whose JSON
exists is skipped, so an interrupted study resumes. Within a seed all methods share the initial
pass rates (per K), the teacher references, the batch-order seeds and the eval sampling
generator (common random numbers). The report prints paired differences against uniform FKL
over seeds with their standard errors and 95% t intervals, in the shapes of the paper's
Tables 2-9 and Figure 3, and writes ``paced_study.json`` / ``paced_study.png`` /
``paced_study_snr.png`` under ``--out-dir``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paced_kernels import weights as W  # noqa: E402
from paced_train.toy import regime as R  # noqa: E402


@dataclass(frozen=True)
class Stage:
    loss: str                 # fkl | rkl | akl
    scheme: str               # uniform | hard | beta
    alpha: float = 1.0
    beta: float = 1.0


@dataclass(frozen=True)
class Method:
    stages: tuple[Stage, ...]
    k: int = 8


METHODS: dict[str, Method] = {
    "uniform_fkl": Method((Stage("fkl", "uniform"),)),
    "hard_fkl": Method((Stage("fkl", "hard"),)),
    "akl": Method((Stage("akl", "uniform"),)),
    "paced_fkl": Method((Stage("fkl", "beta"),)),
    "paced_rkl": Method((Stage("rkl", "beta"),)),
    "paced_fkl_then_rkl": Method((Stage("fkl", "beta"), Stage("rkl", "beta"))),
    "paced_rkl_then_fkl": Method((Stage("rkl", "beta"), Stage("fkl", "beta"))),
    "paced_fkl_a1b2": Method((Stage("fkl", "beta", 1.0, 2.0),)),
    "paced_fkl_a2b1": Method((Stage("fkl", "beta", 2.0, 1.0),)),
    "paced_fkl_k4": Method((Stage("fkl", "beta"),), k=4),
    "paced_fkl_k16": Method((Stage("fkl", "beta"),), k=16),
}
CURRICULUM_METHODS = ("paced_fkl", "uniform_fkl")


@dataclass
class StudyConfig:
    steps: int = 200
    epochs: float = 0.0       # > 0: each stage runs ceil(epochs * loaded / batch) steps instead of steps
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    n_train: int = 1024
    n_eval: int = 2000
    n_mc: int = 2000
    eval_k: int = 4
    eval_temperature: float = 0.6
    curriculum_k: int = 8
    snr_problems: int = 384
    snr_k: int = 8
    student: str = str(R.ASSETS.relative_to(ROOT))  # relative paths are read from the repository root
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- losses
def token_kl(s_logits: torch.Tensor, t_probs: torch.Tensor, kind: str, mu: float = 0.5) -> torch.Tensor:
    """Per-token KL [B, L] between the teacher probabilities and the student logits."""
    log_s = torch.log_softmax(s_logits, -1)
    log_t = torch.log(t_probs)
    fkl = (t_probs * (log_t - log_s)).sum(-1)
    if kind == "fkl":
        return fkl
    p_s = log_s.exp()
    rkl = (p_s * (log_s - log_t)).sum(-1)
    if kind == "rkl":
        return rkl
    if kind != "akl":
        raise ValueError(f"loss must be fkl, rkl or akl, got {kind!r}")
    with torch.no_grad():  # AKL: head = teacher's top tokens whose mass first reaches mu
        sorted_t, order = t_probs.sort(-1, descending=True)
        before = sorted_t.cumsum(-1) - sorted_t
        head_sorted = before < mu
        head = torch.zeros_like(head_sorted).scatter(-1, order, head_sorted)
        gap = (t_probs - p_s).abs()
        g_head = (gap * head).sum(-1)
        g_tail = (gap * ~head).sum(-1)
        c_head = g_head / (g_head + g_tail).clamp_min(1e-12)
    return c_head * fkl + (1 - c_head) * rkl


def problem_losses(model, recs, responses, t_probs, kind) -> torch.Tensor:
    logits, mask = R.response_logits(model, recs, responses)
    tp = torch.full(logits.shape, 1.0 / R.V)
    for i, p in enumerate(t_probs):
        tp[i, :p.shape[0]] = p
    return (token_kl(logits, tp, kind) * mask).sum(-1)


# ----------------------------------------------------------------------------- one run
class World:
    """The fixed world and per-seed shared material (references, initial pass rates)."""

    def __init__(self, cfg: StudyConfig, work: Path):
        self.cfg = cfg
        self.work = work
        self.splits = R.regime_splits(n_train=cfg.n_train, n_eval=cfg.n_eval, n_mc=cfg.n_mc)
        self.base = R.load_student(ROOT / cfg.student)
        self._refs: dict[int, tuple] = {}

    def references(self, seed: int):
        if seed not in self._refs:
            rng = random.Random(f"study-ref-{seed}")
            refs = [R.reference(r, rng) for r in self.splits["train"]]
            self._refs[seed] = (refs, [R.teacher_probs(r, y) for r, y in zip(self.splits["train"], refs)])
        return self._refs[seed]

    def initial_pass_rates(self, seed: int, k: int) -> list[float]:
        path = self.work / f"seed{seed}" / f"pass_rates_k{k}.json"
        if path.exists():
            return json.loads(path.read_text())
        gen = torch.Generator().manual_seed(seed * 7919 + k)
        rates, _ = R.pass_rates(self.base, self.splits["train"], k, gen)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rates))
        return rates

    def evaluate(self, model, seed: int) -> dict:
        gen = torch.Generator().manual_seed(10_000 + seed)  # the same stream for every method
        acc = R.eval_mean_at_k(model, self.splits["eval"], self.cfg.eval_k, gen, self.cfg.eval_temperature)
        by: dict[str, list[float]] = {}
        for r, a in zip(self.splits["eval"], acc):
            by.setdefault(r["type"], []).append(a)
            by.setdefault(f"{r['type']}{r['difficulty']}", []).append(a)
        n = len(acc)
        var = statistics.fmean(a * (1 - a) for a in acc) / self.cfg.eval_k  # within-problem sampling
        return {"eval": 100 * sum(acc) / n, "eval_sampling_se": 100 * math.sqrt(var / n),
                "by_type": {k: 100 * statistics.fmean(v) for k, v in sorted(by.items())},
                "mc": R.mc_accuracy(model, self.splits["mc"])}


def curriculum(rates: list[float], step: int) -> dict:
    n = len(rates)
    return {"step": step, "low": sum(p <= 0.2 for p in rates) / n, "med": sum(0.2 < p < 0.8 for p in rates) / n,
            "high": sum(p >= 0.8 for p in rates) / n, "mean": sum(rates) / n,
            "zero": sum(p == 0 for p in rates) / n, "one": sum(p == 1 for p in rates) / n}


def stage_weights(rates: list[float], st: Stage) -> list[float]:
    if st.scheme == "uniform":
        return [1.0] * len(rates)
    if st.scheme == "hard":
        return W.hard_filter_weights(rates, normalize=False).tolist()
    if st.scheme == "beta":
        return W.beta_weights(rates, alpha=st.alpha, beta=st.beta, normalize=False).tolist()
    raise ValueError(f"weights scheme must be uniform, hard or beta, got {st.scheme!r}")


def run_one(world: World, name: str, seed: int) -> dict:
    """Train one method for one seed from the base student; evaluation and curriculum."""
    cfg, meth = world.cfg, METHODS[name]
    train = world.splits["train"]
    refs, ref_probs = world.references(seed)
    model = copy.deepcopy(world.base).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sample_gen = torch.Generator().manual_seed(20_000 + seed)
    per_stage = [cfg.steps // len(meth.stages) + (1 if i < cfg.steps % len(meth.stages) else 0)
                 for i in range(len(meth.stages))]
    track = name in CURRICULUM_METHODS
    checkpoints = {round(cfg.steps * f) for f in (0.25, 0.5, 0.75)} if track else set()
    out: dict = {"method": name, "seed": seed, "steps": cfg.steps, "stages": [], "curriculum": []}
    t0 = time.time()
    step = 0
    for si, (st, n_steps) in enumerate(zip(meth.stages, per_stage)):
        if si == 0:
            rates = world.initial_pass_rates(seed, meth.k)
        else:
            model.eval()
            rates, _ = R.pass_rates(model, train, meth.k, torch.Generator().manual_seed(30_000 + seed))
            model.train()
        if si == 0:
            ck = rates if meth.k == cfg.curriculum_k else world.initial_pass_rates(seed, cfg.curriculum_k)
            out["curriculum"].append(curriculum(ck, 0))
        w = stage_weights(rates, st)
        loaded = [i for i, x in enumerate(w) if x > 0]
        if not loaded:
            raise RuntimeError(f"{name} seed {seed} stage {si}: every weight is 0")
        mean_w = statistics.fmean(w[i] for i in loaded)
        if cfg.epochs > 0:  # the paper's budget: epochs over the loaded problems, not a step count
            n_steps = math.ceil(cfg.epochs * len(loaded) / cfg.batch)
            if si == 0 and track and len(meth.stages) == 1:
                checkpoints = {round(n_steps * f) for f in (0.25, 0.5, 0.75)} - {0}
        out["stages"].append({"loss": st.loss, "scheme": st.scheme, "alpha": st.alpha, "beta": st.beta,
                              "k": meth.k, "loaded": len(loaded), "steps": n_steps,
                              "pass_rates": curriculum(rates, step)})
        order_rng = random.Random(f"study-order-{seed}-{si}")
        queue: list[int] = []
        losses = []
        for _ in range(n_steps):
            batch = []
            while len(batch) < cfg.batch:
                if not queue:
                    queue = loaded[:]
                    order_rng.shuffle(queue)
                batch.append(queue.pop())
            recs = [train[i] for i in batch]
            if st.loss == "rkl":
                model.eval()
                resps = [r[0] for r in R.generate(model, recs, 1, 1.0, sample_gen)]
                model.train()
                resps = [y if y else [R.EOS] for y in resps]
                tps = [R.teacher_probs(r, y) for r, y in zip(recs, resps)]
            else:
                resps = [refs[i] for i in batch]
                tps = [ref_probs[i] for i in batch]
            wt = torch.tensor([w[i] / mean_w for i in batch])
            loss = (wt * problem_losses(model, recs, resps, tps, st.loss)).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if step in checkpoints:
                model.eval()
                ck, _ = R.pass_rates(model, train, cfg.curriculum_k, torch.Generator().manual_seed(40_000 + seed))
                model.train()
                out["curriculum"].append(curriculum(ck, step))
        out["stages"][-1]["loss_first_last"] = [statistics.fmean(losses[:10]), statistics.fmean(losses[-10:])]
    model.eval()
    out["steps"] = step
    final, _ = R.pass_rates(model, train, cfg.curriculum_k, torch.Generator().manual_seed(40_000 + seed))
    out["curriculum"].append(curriculum(final, step))
    out.update(world.evaluate(model, seed))
    out["seconds"] = time.time() - t0
    return out


def run_base(world: World, seed: int) -> dict:
    t0 = time.time()
    out = {"method": "base", "seed": seed, "steps": 0,
           "curriculum": [curriculum(world.initial_pass_rates(seed, world.cfg.curriculum_k), 0)]}
    out.update(world.evaluate(world.base, seed))
    out["seconds"] = time.time() - t0
    return out


# ----------------------------------------------------------------------------- SNR (Figure 3)
def snr_study(world: World, seed: int = 0) -> dict:
    """Per-problem gradient SNR w.r.t. the head weight, FKL and RKL along each rollout, binned by p."""
    from paced_train.analysis.snr import bin_by_pass_rate, snr_of

    cfg, model = world.cfg, world.base
    recs = world.splits["train"][:cfg.snr_problems]
    gen = torch.Generator().manual_seed(50_000 + seed)
    rates, rolls = R.pass_rates(model, recs, cfg.snr_k, gen)
    result = {}
    for kind in ("fkl", "rkl"):
        snrs, signals, variances = [], [], []
        for rec, resps in zip(recs, rolls):
            resps = [y if y else [R.EOS] for y in resps]
            seqs = [[R.BOS, *rec["prompt"], *y] for y in resps]
            ids, _ = R._pad(seqs)
            with torch.no_grad():
                _, _, hid = model(ids)
            p0 = len(rec["prompt"]) + 1
            Lr = max(len(y) for y in resps)
            h = torch.zeros(len(resps), Lr, hid.shape[-1])
            mask = torch.zeros(len(resps), Lr, dtype=torch.bool)
            tp = torch.full((len(resps), Lr, R.V), 1.0 / R.V)
            for j, y in enumerate(resps):
                h[j, :len(y)] = hid[j, p0 - 1:p0 - 1 + len(y)]
                mask[j, :len(y)] = True
                tp[j, :len(y)] = R.teacher_probs(rec, y)
            z = model.head(h).detach().requires_grad_(True)
            (token_kl(z, tp, kind) * mask).sum().backward()
            dz = z.grad * mask[..., None]
            g = torch.einsum("klv,klh->kvh", dz, h).reshape(len(resps), -1)
            s, sig, var = snr_of(g)
            snrs.append(s)
            signals.append(sig)
            variances.append(var)
        result[kind] = bin_by_pass_rate(rates, snrs, signals, variances, cfg.snr_k)
    return {"seed": seed, "n_problems": len(recs), "k": cfg.snr_k, "bins": result}


def zone_composition(world: World, seeds: list[int]) -> dict:
    """Where the pass-rate weights go: per K, the share of each problem kind among the loaded
    problems (0 < p < 1) and in the p(1-p) weight mass, and the loaded count (mean over seeds)."""
    kind = [f"{r['type']}{r['difficulty'] if r['type'] == 'D' else ''}" for r in world.splits["train"]]
    out: dict = {}
    for k in sorted({m.k for m in METHODS.values()}):
        rows = []
        for s in seeds:
            path = world.work / f"seed{s}" / f"pass_rates_k{k}.json"
            if not path.exists():
                continue
            p = json.loads(path.read_text())
            zone = [i for i, x in enumerate(p) if 0 < x < 1]
            mass = sum(p[i] * (1 - p[i]) for i in zone) or 1.0
            rows.append({"loaded": len(zone), **{f"zone_{c}": sum(kind[i] == c for i in zone) / max(len(zone), 1)
                                                 for c in sorted(set(kind))},
                         **{f"mass_{c}": sum(p[i] * (1 - p[i]) for i in zone if kind[i] == c) / mass
                            for c in sorted(set(kind))}})
        if rows:
            out[f"k{k}"] = {key: statistics.fmean(r[key] for r in rows) for key in rows[0]}
    out["train_share"] = {c: kind.count(c) / len(kind) for c in sorted(set(kind))}
    return out


# ----------------------------------------------------------------------------- statistics
def t975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def paired(xs: list[float], ys: list[float]) -> dict:
    """Mean of x - y over seeds, its SE and 95% t interval (None with fewer than 2 seeds)."""
    d = [x - y for x, y in zip(xs, ys)]
    m = statistics.fmean(d)
    if len(d) < 2:
        return {"mean": m, "se": None, "lo": None, "hi": None, "n": len(d)}
    se = statistics.stdev(d) / math.sqrt(len(d))
    h = t975(len(d) - 1) * se
    return {"mean": m, "se": se, "lo": m - h, "hi": m + h, "n": len(d)}


def aggregate(runs: dict[str, dict[int, dict]]) -> dict:
    """Per method: means over seeds and paired differences against uniform FKL (and other pairs)."""
    agg: dict = {"methods": {}, "pairs": {}}
    for m, by_seed in runs.items():
        seeds = sorted(by_seed)
        base = runs.get("base", {})
        drops = [base[s]["mc"] - by_seed[s]["mc"] for s in seeds if s in base]
        agg["methods"][m] = {
            "seeds": seeds,
            "eval": statistics.fmean(by_seed[s]["eval"] for s in seeds),
            "eval_sd": statistics.stdev([by_seed[s]["eval"] for s in seeds]) if len(seeds) > 1 else None,
            "eval_sampling_se": statistics.fmean(by_seed[s]["eval_sampling_se"] for s in seeds),
            "eval_C": statistics.fmean(by_seed[s]["by_type"]["C"] for s in seeds),
            "eval_D": statistics.fmean(by_seed[s]["by_type"].get("D", 0.0) for s in seeds),
            "mc": statistics.fmean(by_seed[s]["mc"] for s in seeds),
            "forgetting": statistics.fmean(drops) if drops else None,
            "forgetting_ci": paired([base[s]["mc"] for s in seeds if s in base],
                                    [by_seed[s]["mc"] for s in seeds if s in base]) if drops else None,
        }

    def pair(a: str, b: str, key: str):
        if a not in runs or b not in runs:
            return None
        common = sorted(set(runs[a]) & set(runs[b]))
        if not common:
            return None
        return paired([runs[a][s][key] for s in common], [runs[b][s][key] for s in common])

    ref = "uniform_fkl"
    for m in runs:
        if m != ref:
            agg["pairs"][f"{m} - {ref}"] = {"eval": pair(m, ref, "eval"),
                                            "forgetting": pair(ref, m, "mc") if m != "base" else None}
    for a, b in (("paced_fkl", "hard_fkl"), ("paced_fkl", "akl"), ("paced_fkl_then_rkl", "paced_fkl"),
                 ("paced_fkl_then_rkl", "paced_rkl_then_fkl"), ("paced_fkl_a1b2", "paced_fkl"),
                 ("paced_fkl_a2b1", "paced_fkl"), ("paced_fkl_k4", "paced_fkl"), ("paced_fkl_k16", "paced_fkl")):
        agg["pairs"][f"{a} - {b}"] = {"eval": pair(a, b, "eval"), "forgetting": pair(b, a, "mc")}
    agg["curriculum"] = {}
    for m in CURRICULUM_METHODS:
        if m not in runs:
            continue
        rows = list(zip(*[runs[m][s]["curriculum"] for s in sorted(runs[m])]))
        agg["curriculum"][m] = [{k: statistics.fmean(r[k] for r in row) for k in row[0]} for row in rows]
    return agg


def verdicts(agg: dict, snr: dict | None, target: float = 0.7) -> dict:
    """The protocol's section 7 claims, judged on the paired 95% intervals."""
    P = agg["pairs"]

    def judge(p, sign=+1):
        if not p or p.get("se") is None:
            return "not run"
        lo, hi = (p["lo"], p["hi"]) if sign > 0 else (-p["hi"], -p["lo"])
        if lo > 0:
            return "reproduced"
        if hi < 0:
            return "contradicted"
        return "not reproduced" if p["se"] <= target else "not resolved (SE above target)"

    def not_worse(p):  # the alternative (p = alt - paced) must not be significantly above 0
        if not p or p.get("se") is None:
            return "not run"
        return "reproduced" if p["lo"] <= 0 else "contradicted"

    get = lambda k, f="eval": (P.get(k) or {}).get(f)  # noqa: E731
    uni = agg["methods"].get("uniform_fkl", {})
    c2a = uni.get("forgetting_ci")
    out = {
        "C1 paced_fkl > uniform_fkl": judge(get("paced_fkl - uniform_fkl")),
        "C2a uniform_fkl forgets": judge(c2a) if c2a else "not run",
        # forgetting pair: ref - m on mc = (drop of m) - (drop of ref); paced forgets less: < 0
        "C2b paced_fkl forgets less than uniform_fkl": judge(get("paced_fkl - uniform_fkl", "forgetting"), -1),
        "C3a paced_fkl > hard_fkl": judge(get("paced_fkl - hard_fkl")),
        "C3b paced_fkl > akl": judge(get("paced_fkl - akl")),
        "C4a fkl->rkl > rkl->fkl": judge(get("paced_fkl_then_rkl - paced_rkl_then_fkl")),
        "C4b fkl->rkl > paced_fkl": judge(get("paced_fkl_then_rkl - paced_fkl")),
        "C5 (1,1) not worse than (1,2) / (2,1)": min(not_worse(get("paced_fkl_a1b2 - paced_fkl")),
                                                     not_worse(get("paced_fkl_a2b1 - paced_fkl"))),
        "C6 K=8 not worse than K=4 / K=16": min(not_worse(get("paced_fkl_k4 - paced_fkl")),
                                                not_worse(get("paced_fkl_k16 - paced_fkl"))),
    }
    cur = agg["curriculum"].get("paced_fkl")
    if cur and len(cur) >= 3:
        inc = lambda xs: all(b >= a for a, b in zip(xs, xs[1:]))  # noqa: E731
        ok = inc([c["mean"] for c in cur]) and inc([c["high"] for c in cur]) and inc([-c["low"] for c in cur])
        out["C7 curriculum progression (monotone)"] = "reproduced" if ok else "not reproduced"
    else:
        out["C7 curriculum progression (monotone)"] = "not run"
    if snr:
        bins = [b for b in snr["bins"]["fkl"] if b["snr_pooled_scaled"] is not None]
        if len(bins) >= 3:
            vals = [b["snr_pooled_scaled"] for b in bins]
            top = max(range(len(vals)), key=vals.__getitem__)
            from scipy.stats import spearmanr

            rho = float(spearmanr(vals, [b["p_times_1_minus_p_scaled"] for b in bins]).statistic)
            ok = 0 < top < len(vals) - 1 and vals[0] < 0.5 and vals[-1] < 0.5 and rho >= 0.5
            out["C8 FKL SNR bell"] = f"{'reproduced' if ok else 'not reproduced'} (peak at p={bins[top]['pass_rate']:.3f}, spearman {rho:.2f})"
        else:
            out["C8 FKL SNR bell"] = "not run"
    return out


# ----------------------------------------------------------------------------- report
def _ci(p, digits=2):
    if not p:
        return "-"
    if p.get("se") is None:
        return f"{p['mean']:+.{digits}f} (1 seed)"
    return f"{p['mean']:+.{digits}f} [{p['lo']:+.{digits}f}, {p['hi']:+.{digits}f}] se {p['se']:.{digits}f}"


def report(payload: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con, agg = Console(width=200), payload["aggregate"]
    M, P = agg["methods"], agg["pairs"]
    cfg = payload["config"]
    t = Table(title=f"Method comparison (Tables 2-5): held-out mean@{cfg['eval_k']} on {cfg['n_eval']} problems, "
                    f"MC on {cfg['n_mc']}; "
                    f"{(str(cfg.get('epochs')) + ' epoch(s) per stage over the loaded problems') if cfg.get('epochs') else (str(cfg['steps']) + ' steps')}; deltas vs uniform FKL paired over seeds, 95% t interval")
    for c in ("method", "seeds", "held-out", "chain", "product", "Δ vs uniform (points)", "MC", "forgetting",
              "Δ forgetting vs uniform"):
        t.add_column(c, justify="right")
    order = ["base", *[m for m in METHODS if m in M]]
    for m in order:
        if m not in M:
            continue
        a = M[m]
        pr = P.get(f"{m} - uniform_fkl", {})
        t.add_row(m, str(len(a["seeds"])), f"{a['eval']:.2f}", f"{a['eval_C']:.2f}", f"{a['eval_D']:.2f}",
                  _ci(pr.get("eval")) if m != "uniform_fkl" else "0", f"{a['mc']:.2f}",
                  "0" if m == "base" else f"{a['forgetting']:+.2f}" if a["forgetting"] is not None else "-",
                  _ci(pr.get("forgetting")) if m not in ("uniform_fkl", "base") else "-")
    con.print(t)
    for title, rows in (("Exponent ablation (Table 6): (alpha, beta) vs (1, 1)",
                         [("(1,2)", "paced_fkl_a1b2 - paced_fkl"), ("(2,1)", "paced_fkl_a2b1 - paced_fkl")]),
                        ("Rollout count K (Table 7) vs K = 8",
                         [("K=4", "paced_fkl_k4 - paced_fkl"), ("K=16", "paced_fkl_k16 - paced_fkl")]),
                        ("Two-stage order (Table 8)",
                         [("FKL->RKL minus RKL->FKL", "paced_fkl_then_rkl - paced_rkl_then_fkl"),
                          ("FKL->RKL minus Paced FKL", "paced_fkl_then_rkl - paced_fkl")]),
                        ("Paced FKL vs the other baselines",
                         [("Paced FKL minus hard filter", "paced_fkl - hard_fkl"),
                          ("Paced FKL minus AKL", "paced_fkl - akl")])):
        t = Table(title=title)
        for c in ("comparison", "Δ held-out (points)", "Δ forgetting (points)"):
            t.add_column(c, justify="right")
        for label, key in rows:
            pr = P.get(key) or {}
            t.add_row(label, _ci(pr.get("eval")), _ci(pr.get("forgetting")))
        con.print(t)
    for m, rows in agg["curriculum"].items():
        t = Table(title=f"Curriculum progression (Table 9), {m}: training-set pass rates (K = {cfg['curriculum_k']}), mean over seeds")
        for c in ("step", "Low (p<=0.2)", "Med", "High (p>=0.8)", "mean p", "p=0", "p=1"):
            t.add_column(c, justify="right")
        for r in rows:
            t.add_row(str(round(r["step"])), *(f"{100 * r[k]:.1f}%" for k in ("low", "med", "high")),
                      f"{r['mean']:.3f}", f"{100 * r['zero']:.1f}%", f"{100 * r['one']:.1f}%")
        con.print(t)
    snr = payload.get("snr")
    if snr:
        t = Table(title=f"Gradient SNR vs pass rate (Figure 3): base student, {snr['n_problems']} problems, K = {snr['k']}")
        for c in ("p", "n", "FKL pooled SNR (scaled)", "RKL pooled SNR (scaled)", "FKL |mean g| (scaled)", "4p(1-p)"):
            t.add_column(c, justify="right")
        rk = {b["pass_rate"]: b for b in snr["bins"]["rkl"]}
        for b in snr["bins"]["fkl"]:
            r = rk.get(b["pass_rate"], {})
            f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
            t.add_row(f"{b['pass_rate']:.3f}", str(b["n"]), f(b["snr_pooled_scaled"]), f(r.get("snr_pooled_scaled")),
                      f(b["mean_grad_norm_scaled"]), f(b["p_times_1_minus_p_scaled"]))
        con.print(t)
    zc = agg.get("zone_composition")
    if zc:
        kinds = sorted(zc["train_share"])
        t = Table(title="Where the weights go: share of each kind in the training set, among loaded problems "
                        "(0 < p < 1) and in the p(1-p) mass (mean over seeds)")
        for c in ("", "loaded", *kinds):
            t.add_column(c, justify="right")
        t.add_row("train set", str(cfg["n_train"]), *(f"{100 * zc['train_share'][c]:.0f}%" for c in kinds))
        for k in [x for x in zc if x.startswith("k")]:
            t.add_row(f"K={k[1:]} loaded", f"{zc[k]['loaded']:.0f}", *(f"{100 * zc[k]['zone_' + c]:.0f}%" for c in kinds))
            t.add_row(f"K={k[1:]} p(1-p) mass", "", *(f"{100 * zc[k]['mass_' + c]:.0f}%" for c in kinds))
        con.print(t)
    t = Table(title="Claims (protocol section 7)")
    t.add_column("claim")
    t.add_column("verdict")
    for k, v in payload["verdicts"].items():
        t.add_row(k, v)
    con.print(t)
    ses = [p["eval"]["se"] for p in P.values() if p.get("eval") and p["eval"].get("se") is not None]
    if ses:
        con.print(f"achieved paired SE of held-out deltas: median {statistics.median(ses):.2f}, max {max(ses):.2f} "
                  f"points (target <= 0.70); mean within-run eval sampling SE "
                  f"{statistics.fmean(a['eval_sampling_se'] for a in M.values()):.2f}")


def plot(payload: dict, out_dir: Path, name: str = "paced_study") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    P = payload["aggregate"]["pairs"]
    keys = [k for k in P if P[k].get("eval") and P[k]["eval"].get("se") is not None]
    if keys:
        fig, axes = plt.subplots(1, 2, figsize=(14, 0.4 * len(keys) + 2))
        for ax, field_, label in ((axes[0], "eval", "Δ held-out mean@k (points)"),
                                  (axes[1], "forgetting", "Δ forgetting (points)")):
            ks = [k for k in keys if P[k].get(field_) and P[k][field_].get("se") is not None]
            ys = range(len(ks))
            ax.errorbar([P[k][field_]["mean"] for k in ks], ys,
                        xerr=[[P[k][field_]["mean"] - P[k][field_]["lo"] for k in ks],
                              [P[k][field_]["hi"] - P[k][field_]["mean"] for k in ks]], fmt="o", capsize=3)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(list(ys))
            ax.set_yticklabels(ks, fontsize=8)
            ax.set_xlabel(label + ", 95% CI")
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle("Paced study on the regime world: paired differences over seeds")
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=110)
        plt.close(fig)
    snr = payload.get("snr")
    if snr:
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, style in (("fkl", "o-"), ("rkl", "s-")):
            bins = [b for b in snr["bins"][kind] if b["snr_pooled_scaled"] is not None]
            ax.plot([b["pass_rate"] for b in bins], [b["snr_pooled_scaled"] for b in bins], style,
                    label=f"{kind.upper()} pooled SNR")
        xs = [i / 100 for i in range(101)]
        ax.plot(xs, [4 * x * (1 - x) for x in xs], "k--", label="4p(1-p)")
        ax.set_xlabel("pass rate p")
        ax.set_ylabel("scaled to max 1")
        ax.legend()
        ax.grid(alpha=0.3)
        ax.set_title("Gradient SNR vs pass rate (base regime student)")
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}_snr.png", dpi=110)
        plt.close(fig)


def load_runs(work: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for f in sorted(work.glob("seed*/*.json")):
        if f.name.startswith("pass_rates"):
            continue
        r = json.loads(f.read_text())
        runs.setdefault(r["method"], {})[r["seed"]] = r
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--methods", nargs="+", choices=["base", *METHODS], default=["base", *METHODS])
    ap.add_argument("--steps", type=int, default=StudyConfig.steps)
    ap.add_argument("--epochs", type=float, default=0.0,
                    help="> 0: every stage trains this many epochs over its loaded problems (the paper's budget)")
    ap.add_argument("--n-eval", type=int, default=StudyConfig.n_eval)
    ap.add_argument("--n-train", type=int, default=StudyConfig.n_train)
    ap.add_argument("--n-mc", type=int, default=StudyConfig.n_mc)
    ap.add_argument("--snr-problems", type=int, default=StudyConfig.snr_problems)
    ap.add_argument("--student", default=str(R.ASSETS.relative_to(ROOT)))
    ap.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "paced_study")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="paced_study", help="stem of the JSON / PNG files written")
    ap.add_argument("--no-report", action="store_true", help="only run (e.g. the A/A estimate)")
    ap.add_argument("--no-snr", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="re-print the tables of an existing JSON")
    args = ap.parse_args(argv)
    if args.report_only:
        payload = json.loads((args.out_dir / f"{args.name}.json").read_text())
        report(payload)
        plot(payload, args.out_dir, args.name)
        return
    for key in ("steps", "n_eval", "n_train", "n_mc"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    torch.set_num_threads(1)
    if args.epochs < 0:
        raise ValueError(f"--epochs must be >= 0, got {args.epochs}")
    cfg = StudyConfig(steps=args.steps, epochs=args.epochs, n_train=args.n_train, n_eval=args.n_eval, n_mc=args.n_mc,
                      snr_problems=args.snr_problems, student=args.student)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "config.json"
    # keys added to StudyConfig later read as their defaults in an older work directory
    if cfg_path.exists() and {**asdict(StudyConfig()), **json.loads(cfg_path.read_text())} != asdict(cfg):
        raise ValueError(f"{work} holds runs of another configuration ({cfg_path}); use another --work-dir")
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2))
    world = World(cfg, work)
    t0 = time.time()
    # seeds outer, methods inner: an interrupted study has complete seeds for every method
    for seed in args.seeds:
        for m in args.methods:
            path = work / f"seed{seed}" / f"{m}.json"
            if path.exists():
                continue
            res = run_base(world, seed) if m == "base" else run_one(world, m, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=1))
            print(f"seed {seed} {m}: eval {res['eval']:.2f} mc {res['mc']:.2f} ({res['seconds']:.0f}s)", flush=True)
    if args.no_report:
        return
    snr_path = work / "snr.json"
    snr = None
    if not args.no_snr:
        if not snr_path.exists():
            snr_path.write_text(json.dumps(snr_study(world)))
        snr = json.loads(snr_path.read_text())
    runs = load_runs(work)
    agg = aggregate(runs)
    agg["zone_composition"] = zone_composition(world, sorted({s for v in runs.values() for s in v}))
    payload = {"config": asdict(cfg), "protocol": "benchmarks/paced_toy_protocol.md",
               "student_report": json.loads((ROOT / cfg.student / "pretrain_report.json").read_text())
               if (ROOT / cfg.student / "pretrain_report.json").exists() else None,
               "minutes_this_invocation": (time.time() - t0) / 60, "aggregate": agg, "snr": snr,
               "runs": {m: {str(s): r for s, r in v.items()} for m, v in runs.items()}}
    payload["verdicts"] = verdicts(agg, snr)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(payload, indent=1, default=str))
    report(payload)
    plot(payload, args.out_dir, args.name)
    print(f"wrote {args.out_dir / (args.name + '.json')}")


if __name__ == "__main__":
    main()
