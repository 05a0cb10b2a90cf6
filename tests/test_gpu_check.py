"""benchmarks/gpu_check.py's checks at tiny shapes on CPU (Triton interpreter).

These tests run its accuracy and NaN/inf sections directly and show that the accuracy check
fails when a kernel's gradient is off by 2%; one (slow) test runs the whole
`python benchmarks/gpu_check.py --smoke` (~30 s on an idle 2-core box, 2-3 min under load).
"""
import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

from paced_kernels.linear_kl_triton import triton_available  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs CUDA or TRITON_INTERPRET=1")

CFG = dict(main=(40, 16, 24, 200), timed=(16, 16, 24, 200), ragged=(13, 10, 12, 97), sample=8,
           timing_repeats=1, warmups=1, dtype="bfloat16")
CPU = torch.device("cpu")


def test_accuracy_section_passes_and_beats_plain_bf16():
    out = gpu_check.section_accuracy(CPU, CFG, smoke=True)
    assert set(out) == {"flat_forward", "flat_reverse", "peaked_forward", "peaked_reverse"}
    for case, res in out.items():
        assert all(res["pass"].values()), (case, res["pass"])
        # fp32 softmax from fp32 logits: far below a bf16 softmax's KL error
        assert res["triton"]["kl"]["fro_rel"] < 0.1 * res["plain_bf16"]["kl"]["fro_rel"], case
    assert out["peaked_forward"]["mean_top_prob_student"] > 0.8  # "peaked" really is low-entropy


def test_accuracy_section_catches_a_two_percent_gradient_error(monkeypatch):
    real = gpu_check.triton_linear_kl

    def off_by_two_percent(*args, **kwargs):
        kl, gh, gw = real(*args, **kwargs)
        return kl, gh * 1.02, gw  # 1% would be ~1 bf16 ulp, within rounding

    monkeypatch.setattr(gpu_check, "triton_linear_kl", off_by_two_percent)
    cfg = dict(CFG, main=(24, 16, 24, 200))
    out = gpu_check.section_accuracy(CPU, cfg, smoke=True)
    assert not any(res["pass"]["triton"] for res in out.values())
    assert all(res["pass"]["torch"] for res in out.values())


def test_nonfinite_and_ragged_sections_pass():
    assert gpu_check.section_nonfinite(CPU, CFG)["pass"]
    ragged = gpu_check.section_ragged(CPU, CFG)
    for direction in ("forward", "reverse"):
        assert all(ragged[direction]["pass"].values()), ragged[direction]["pass"]


@pytest.mark.slow
def test_smoke_run_of_the_whole_script_passes(tmp_path):
    """`python benchmarks/gpu_check.py --smoke` end to end (every section, ~30 s on an idle 2-core box)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(_PATH), "--smoke", "--out-dir", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = tmp_path.glob("gpu_check_*.json")
    report = json.loads(result.read_text())
    assert report["failed"] == [], report["failed"]
    assert {"accuracy", "ragged", "nonfinite", "determinism", "trainer"} <= set(report["sections"])
