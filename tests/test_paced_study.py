"""The regime world and the paced study: the world's teacher / verifier, the losses against float64
formulas written out here, the paired statistic against scipy, and a tiny resumable study run."""
from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch

from paced_train.toy import regime as R

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("paced_study", ROOT / "benchmarks" / "paced_study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paced_study"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_references_are_correct_and_both_orders_occur():
    rng = random.Random(1)
    firsts = set()
    for _ in range(300):
        for rec in (R.make_chain(rng), R.make_direct(rng)):
            y = R.reference(rec, rng)
            assert R.is_correct(rec, y) and y[-1] == R.EOS
            firsts.add(y[0]) if rec["type"] == "C" else None
    assert firsts == {R.TOK["P"], R.TOK["Q"]}


def test_teacher_follows_the_prefix_and_verifier_checks_the_final_answer():
    rec = R.make_chain(random.Random(0), d=2)  # one op per sub-chain
    (s1, [(o1, b1)]), (s2, [(o2, b2)]) = rec["chains"]
    f = lambda v, o, b: (v + b) % 10 if o == "+" else (v * b) % 10  # noqa: E731
    u, v = f(s1, o1, b1), f(s2, o2, b2)
    assert R.teacher_next(rec, [R.TOK["Q"]]) == R.DIGITS[v]
    wrong = (u + 3) % 10
    prefix = [R.TOK["P"], R.DIGITS[wrong], R.DIGITS[v]]
    assert R.teacher_next(rec, prefix) == R.DIGITS[(wrong + v) % 10]  # consistent continuation
    assert R.teacher_next(rec, prefix + [R.DIGITS[0]]) == R.EOS
    gold = (u + v) % 10
    assert R.is_correct(rec, [R.TOK["Q"], R.DIGITS[v], R.DIGITS[u], R.DIGITS[gold], R.EOS])
    assert not R.is_correct(rec, [R.TOK["Q"], R.DIGITS[gold], R.DIGITS[(gold + 1) % 10], R.EOS])
    probs = R.teacher_probs(rec, prefix)
    assert torch.allclose(probs.sum(-1), torch.ones(len(prefix), dtype=probs.dtype))
    assert probs[0, R.TOK["P"]] == pytest.approx(probs[0, R.TOK["Q"]])


def test_token_losses_match_float64_formulas():
    S = _study()
    torch.manual_seed(0)
    z = torch.randn(3, 5, 7, dtype=torch.float64)
    t = torch.softmax(torch.randn(3, 5, 7, dtype=torch.float64) * 2, -1)
    for kind in ("fkl", "rkl", "akl"):
        got = S.token_kl(z, t, kind)
        for b in range(3):
            for i in range(5):
                ps = torch.softmax(z[b, i], -1).tolist()
                pt = t[b, i].tolist()
                fkl = sum(a * (math.log(a) - math.log(c)) for a, c in zip(pt, ps))
                rkl = sum(c * (math.log(c) - math.log(a)) for a, c in zip(pt, ps))
                order = sorted(range(7), key=lambda j: -pt[j])
                head, mass = set(), 0.0
                for j in order:
                    if mass >= 0.5:
                        break
                    head.add(j)
                    mass += pt[j]
                gh = sum(abs(pt[j] - ps[j]) for j in head)
                gt = sum(abs(pt[j] - ps[j]) for j in range(7) if j not in head)
                want = {"fkl": fkl, "rkl": rkl, "akl": gh / (gh + gt) * fkl + gt / (gh + gt) * rkl}[kind]
                assert float(got[b, i]) == pytest.approx(float(want), rel=1e-9, abs=1e-12)


def test_paired_interval_matches_scipy():
    from scipy.stats import ttest_rel

    S = _study()
    x, y = [3.1, 2.4, 5.0, 4.2, 3.3], [2.0, 2.9, 3.1, 3.0, 2.2]
    got = S.paired(x, y)
    ci = ttest_rel(x, y).confidence_interval(0.95)
    assert got["lo"] == pytest.approx(ci.low) and got["hi"] == pytest.approx(ci.high)


def test_bad_loss_and_scheme_are_named():
    S = _study()
    with pytest.raises(ValueError, match="loss"):
        S.token_kl(torch.zeros(1, 1, 3), torch.full((1, 1, 3), 1 / 3), "jsd")
    with pytest.raises(ValueError, match="scheme"):
        S.stage_weights([0.5], S.Stage("fkl", "softmax"))


def test_tiny_study_runs_resumes_and_reprints(tmp_path, capsys):
    S = _study()
    args = ["--seeds", "0", "1", "--methods", "base", "uniform_fkl", "paced_fkl", "paced_fkl_then_rkl", "akl",
            "--steps", "4", "--n-train", "48", "--n-eval", "24", "--n-mc", "24", "--snr-problems", "12",
            "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]
    S.main(args)
    payload = json.loads((tmp_path / "o" / "paced_study.json").read_text())
    pair = payload["aggregate"]["pairs"]["paced_fkl - uniform_fkl"]["eval"]
    runs = payload["runs"]
    d = [runs["paced_fkl"][s]["eval"] - runs["uniform_fkl"][s]["eval"] for s in ("0", "1")]
    assert pair["mean"] == pytest.approx(sum(d) / 2)
    assert runs["paced_fkl_then_rkl"]["0"]["stages"][1]["loss"] == "rkl"
    assert len(runs["paced_fkl"]["0"]["curriculum"]) == 5  # steps 0, T/4, T/2, 3T/4 (rounded), T
    assert (tmp_path / "o" / "paced_study_snr.png").exists()
    stamp = (tmp_path / "w" / "seed0" / "paced_fkl.json").stat().st_mtime_ns
    S.main(args)  # resumes: nothing re-run
    assert (tmp_path / "w" / "seed0" / "paced_fkl.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    S.main(["--report-only", "--out-dir", str(tmp_path / "o")])
    assert "Claims" in capsys.readouterr().out
