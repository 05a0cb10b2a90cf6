"""The embedded default: `python -m paced_train.run` on the shipped toy world, shortened for CI.

Runs the real command (toy assets, real C++ scorer, torch KL backend) as a user would, with
overrides that make it small, and checks the artifacts the issue names, the printed run
directory, and that the same seed gives the same numbers.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("paced_kernels._scorer", reason="the C++ scorer extension is not built")

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["data.toy.n_train=48", "data.toy.n_eval=16", "data.toy.n_mc=8", "rollout.k=4", "eval.k=2",
         "distill.max_steps=2", "distill.global_batch_problems=4", "distill.micro_batch_problems=2",
         "num_threads=1", "logging.progress=false"]


def run_default(out: Path, name: str, *extra: str) -> tuple[Path, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "paced_train.run", f"output_dir={out}", f"name={name}", *SHORT, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    return run_dir, proc.stdout


@pytest.mark.slow
def test_shortened_default_run_writes_every_artifact_and_is_deterministic(tmp_path):
    run_dir, stdout = run_default(tmp_path, "a")
    assert run_dir.is_dir() and run_dir.parent == tmp_path
    for table in ("pass rates", "curriculum progression", "evaluation", "MC acc"):
        assert table in stdout, table
    for rel in ["config.yaml", "metrics.jsonl", "summary.json", "results.json", "plots/curriculum.png",
                "plots/loss.png", "eval/base.json"]:
        assert (run_dir / rel).is_file(), rel
    assert any((run_dir / "tensorboard").iterdir())
    first = sorted((run_dir / "pass_rates").iterdir())[0]
    assert (first / "pass_rates.png").is_file() and (first / "pass_rates.parquet").is_file()
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in json.dumps(m) for m in metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    p0 = summary["curriculum"][0]
    assert 0.0 <= p0["mean"] <= 1.0 and abs(p0["low"] + p0["med"] + p0["high"] - 1.0) < 1e-6
    assert len(summary["losses"]["0_fkl"]) == 2 and len(summary["losses"]["1_rkl"]) == 2

    run_dir_b, _ = run_default(tmp_path, "b")
    summary_b = json.loads((run_dir_b / "summary.json").read_text())
    for key in ("results", "curriculum", "losses"):
        assert summary_b[key] == summary[key], key
