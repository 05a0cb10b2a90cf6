"""Scorer throughput and agreement: ours (C++, 1 thread and all threads) vs math-verify, same inputs.

Inputs: the generated corpus of tests/test_scoring_corpus.py and the real model responses of the
CHAMP dataset (PyPI `champ-dataset`: 270 competition problems, ~19k GPT-3.5/4/PaLM solutions).
math-verify is slow, so it runs on a random subsample (--mv-sample per source); agreement is
measured on that subsample, speeds on the same inputs. "ours" speeds are the C++ verdicts (golds
the C++ side cannot read are first parsed once each by math-verify, timed apart as
gold_resolution_s); "e2e" is verify_batch(num_threads=1) with the math-verify fallback for undecided
pairs (run in the scorer's worker pool, default settings): "cold" is the first call (pool start-up
and gold parsing included), "warm" a second call on the same pairs. The same call is also made
from a worker thread, with adversarial pairs (math-verify hangs on them) appended, to show it
returns in bounded time.

    python benchmarks/scoring_throughput.py [--mv-sample 1000] [--champ-limit 0]
    python benchmarks/scoring_throughput.py --mv-sample 100000   # math-verify on every pair (~12 min)

Writes benchmarks/results/scoring_throughput.json and scoring_disagreements.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from paced_kernels import scoring, scoring_pool, _scorer  # noqa: E402


def champ_pairs(limit: int = 0):
    import champ_dataset

    ds = champ_dataset.load("v0")
    pairs = []
    for p in ds.problems.values():
        for conv in p.conversations.values():
            # the model's full solution: its longest message in the conversation
            sols = [m.text for m in conv.messages if m.role.startswith("Model") and m.text]
            sol = max(sols, key=len) if sols else None
            if sol:
                pairs.append((p.answer, sol))
    if limit:
        pairs = pairs[:limit]
    return pairs


def time_ours(golds, resps, threads, resolved=None, repeats=3):
    """Best of `repeats` calls (a call takes about a second on CHAMP, so one call is at the mercy
    of whatever else the machine runs; math-verify's single pass over the same pairs takes
    minutes and averages that out)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        codes = _scorer.verify_codes(golds, resps, threads, resolved)
        best = min(best, time.perf_counter() - t)
    return best, codes


# undecided in C++ and endless for math-verify without a timeout (each costs one deadline)
ADVERSARIAL = [("1", "So the answer is $\\boxed{(x+1)^{100000}}$."), ("2", "$\\boxed{\\lfloor (y+3)^{100000} \\rfloor}$"),
               ("0", "$\\boxed{\\log_e (x+2)^{300000}}$")]


def mv_cached_gold(golds, resps, idx, timeout=5):
    """math-verify's strongest per-pair configuration for a pass-rate job: each distinct gold
    parsed once (as a trainer scoring many rollouts per problem would), every response parsed and
    verified with its default timeouts. Returns (seconds, verdicts)."""
    from math_verify import parse, verify

    from paced_kernels._mv_worker import _quiet, wrap_gold

    parsed: dict = {}
    out = []
    t = time.perf_counter()
    with _quiet():
        for i in idx:
            try:
                g = parsed.get(golds[i])
                if g is None:
                    g = parsed[golds[i]] = parse(wrap_gold(golds[i]), parsing_timeout=timeout)
                out.append(bool(verify(g, parse(resps[i], parsing_timeout=timeout), timeout_seconds=timeout)))
            except Exception:  # noqa: BLE001 - math-verify's convention: an error is False
                out.append(False)
    return time.perf_counter() - t, out


def thread_call(golds, resps):
    box = {}

    def run():
        t = time.perf_counter()
        box["out"] = scoring.verify_batch(golds, resps, num_threads=1)
        box["s"] = time.perf_counter() - t
        box["stats"] = scoring.last_stats()

    th = threading.Thread(target=run)
    th.start()
    th.join()
    return box


def bench(name, pairs, mv_sample, rng, out_dis):
    golds = [g for g, _ in pairs]
    resps = [r for _, r in pairs]
    n = len(pairs)
    # golds the C++ side cannot read are parsed once each by math-verify (as verify_batch does)
    t = time.perf_counter()
    pre = {}
    resolved = scoring._resolve_golds(golds, pre)
    t_gold = time.perf_counter() - t
    t1, codes = time_ours(golds, resps, 1, resolved)
    tall, _ = time_ours(golds, resps, None, resolved)
    unknown = int((codes == 2).sum())
    t = time.perf_counter()
    ours_fb = scoring.verify_batch(golds, resps, num_threads=1, fallback=True)
    t_fb_cold = time.perf_counter() - t
    t = time.perf_counter()
    again = scoring.verify_batch(golds, resps, num_threads=1, fallback=True)
    t_fb = time.perf_counter() - t
    stats = scoring.last_stats()
    assert again == ours_fb
    adv_g, adv_r = [g for g, _ in ADVERSARIAL], [r for _, r in ADVERSARIAL]
    th = thread_call(golds + adv_g, resps + adv_r)
    assert th["out"][:n] == ours_fb
    idx = sorted(rng.sample(range(n), min(mv_sample, n)))
    for i in idx[:5]:  # warm math-verify up (its lazy imports and sympy caches) before timing it
        scoring.math_verify_verdict(golds[i], resps[i], timeout=5)
    t = time.perf_counter()
    ref = [scoring.math_verify_verdict(golds[i], resps[i], timeout=5) for i in idx]
    t_mv = time.perf_counter() - t
    t_mv_cached, ref_cached = mv_cached_gold(golds, resps, idx)
    agree = sum(ours_fb[i] == r for i, r in zip(idx, ref)) / len(idx)
    dec = [(i, r) for i, r in zip(idx, ref) if codes[i] in (0, 1)]
    agree_dec = sum(bool(codes[i]) == r for i, r in dec) / max(1, len(dec))
    for i, r in zip(idx, ref):
        if ours_fb[i] != r:
            out_dis.append({"source": name, "gold": golds[i], "response_tail": resps[i][-400:], "ours": ours_fb[i],
                            "math_verify": r, "decided_in_cpp": bool(codes[i] in (0, 1))})
    mv_rate = len(idx) / t_mv
    mv_cached_rate = len(idx) / t_mv_cached
    res = {
        "pairs": n,
        "ours_1thread_per_s": n / t1,
        "ours_all_threads_per_s": n / tall,
        "threads": os.cpu_count(),
        "ours_end_to_end_with_fallback_per_s": n / t_fb,
        "ours_end_to_end_cold_per_s": n / t_fb_cold,
        "end_to_end_cold_s": t_fb_cold,
        "end_to_end_warm_s": t_fb,
        "fallback_config": dataclasses.asdict(scoring_pool.get_pool().config) | {
            "n_workers": scoring_pool.get_pool().config.n_workers},
        "worker_thread_call": {"pairs": n + len(ADVERSARIAL), "adversarial_pairs": len(ADVERSARIAL),
                               "seconds": th["s"], "stats": th["stats"]},
        "math_verify_per_s": mv_rate,
        "math_verify_config": "math_verify.verify(parse(gold), parse(response)) per pair, timeouts 5 s "
                              "(paced_kernels.scoring.math_verify_verdict)",
        "math_verify_cached_gold_per_s": mv_cached_rate,
        "math_verify_cached_gold_config": "each distinct gold parsed once, then verify(gold, parse(response)) "
                                          "per pair, timeouts 5 s",
        "math_verify_cached_gold_verdicts_differ": sum(a != b for a, b in zip(ref, ref_cached)),
        "speedup_1thread_vs_math_verify_cached_gold": (n / t1) / mv_cached_rate,
        "speedup_end_to_end_vs_math_verify_cached_gold": (n / t_fb) / mv_cached_rate,
        "speedup_1thread_vs_math_verify": (n / t1) / mv_rate,
        "speedup_end_to_end_vs_math_verify": (n / t_fb) / mv_rate,
        "speedup_end_to_end_cold_vs_math_verify": (n / t_fb_cold) / mv_rate,
        "distinct_golds": len(set(golds)),
        "golds_resolved_by_math_verify": pre.get("golds_resolved", 0),
        "gold_resolution_s": t_gold,
        "undecided_in_cpp": unknown,
        "undecided_share": unknown / n,
        "limit_false": int((codes == 3).sum()),
        "mv_sample": len(idx),
        "agreement_with_fallback": agree,
        "agreement_cpp_decided": agree_dec,
        "cpp_decided_in_sample": len(dec),
        "fallback_stats": stats,
    }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mv-sample", type=int, default=1000, help="pairs per source scored by math-verify")
    ap.add_argument("--champ-limit", type=int, default=0, help="use only the first N CHAMP pairs (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    from test_scoring_corpus import make_corpus

    dis: list[dict] = []
    results = {"generated_corpus": bench("generated", make_corpus(2400, seed=args.seed), args.mv_sample, rng, dis)}
    try:
        results["champ"] = bench("champ", champ_pairs(args.champ_limit), args.mv_sample, rng, dis)
    except ImportError:
        print("champ-dataset is not installed (pip install champ-dataset): skipping the real-text benchmark")
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scoring_throughput.json").write_text(json.dumps(results, indent=2))
    with open(out / "scoring_disagreements.jsonl", "w") as f:
        for d in dis[:200]:
            f.write(json.dumps(d) + "\n")
    hdr = f"{'source':<12}{'pairs':>8}{'ours 1t/s':>12}{'ours all/s':>12}{'e2e/s':>10}{'mv/s':>8}{'x (1t)':>8}" \
          f"{'x (e2e)':>9}{'x cold':>8}{'undecided':>11}{'agree':>8}{'agree C++':>10}"
    print(hdr)
    print("-" * len(hdr))
    for k, r in results.items():
        print(f"{k:<12}{r['pairs']:>8}{r['ours_1thread_per_s']:>12.0f}{r['ours_all_threads_per_s']:>12.0f}"
              f"{r['ours_end_to_end_with_fallback_per_s']:>10.0f}{r['math_verify_per_s']:>8.0f}"
              f"{r['speedup_1thread_vs_math_verify']:>8.0f}{r['speedup_end_to_end_vs_math_verify']:>9.1f}"
              f"{r['speedup_end_to_end_cold_vs_math_verify']:>8.1f}"
              f"{r['undecided_share']:>10.2%}{r['agreement_with_fallback']:>8.2%}{r['agreement_cpp_decided']:>10.2%}")
    for k, r in results.items():
        print(f"{k}: against math-verify with each gold parsed once ({r['math_verify_cached_gold_per_s']:.0f}/s): "
              f"{r['speedup_1thread_vs_math_verify_cached_gold']:.0f}x C++ alone, "
              f"{r['speedup_end_to_end_vs_math_verify_cached_gold']:.1f}x end to end")
    for k, r in results.items():
        w = r["worker_thread_call"]
        print(f"{k}: worker-thread call on {w['pairs']} pairs ({w['adversarial_pairs']} adversarial) took "
              f"{w['seconds']:.1f} s; fallback {w['stats']['fallback_used']} pairs, "
              f"{w['stats']['fallback_timeout']} past the {r['fallback_config']['deadline_s']:g} s deadline")
    print(f"\nwrote {out / 'scoring_throughput.json'} and {len(dis)} disagreement(s) to {out / 'scoring_disagreements.jsonl'}")


if __name__ == "__main__":
    main()
