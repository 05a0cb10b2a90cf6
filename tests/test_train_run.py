"""A shortened whole run on tiny random models: artifacts, determinism, resume skipping, schedules."""
import json

import pytest
import torch

from _train_tiny import lucky_verify, make_world
from paced_train.config import load_config
from paced_train.run import run

pytest.importorskip("paced_kernels.weights", reason="paced_kernels.weights (scorer developer) not landed yet")
pytest.importorskip("paced_train.distill", reason="paced_train.distill not landed yet")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def short_cfg(world, out, *extra):
    return load_config(None, [
        f"model.student={world['student']}", f"model.teacher={world['teacher']}", "model.tokenizer=null",
        "data.toy=null", f"data.train={world['train']}", f"data.eval={{tiny: {world['eval']}}}",
        f"data.mc={world['mc']}", "data.max_response_tokens=8", "rollout.k=4", "rollout.batch_size=64",
        "eval.k=2", "eval.batch_size=64", "distill.global_batch_problems=4", "distill.micro_batch_problems=2",
        "distill.max_steps=2", "logging.progress=false", "logging.tensorboard=false", f"output_dir={out}",
        "num_threads=1", "stages=[fkl]",
        "distill.truncated=keep",  # 8 response tokens: most random-model responses hit the limit
        *extra])


class CountingVerify:
    def __init__(self):
        self.calls = 0

    def __call__(self, golds, responses):
        self.calls += 1
        return lucky_verify(golds, responses)


def test_short_run_writes_every_artifact_resumes_and_is_deterministic(world, tmp_path):
    v = CountingVerify()
    run_dir, summary = run(short_cfg(world, tmp_path, "name=a"), verify=v)
    assert v.calls > 0
    for f in ["config.yaml", "metrics.jsonl", "summary.json", "results.json", "results.txt", "data/summary.json",
              "eval/base.json", "eval/after_0_fkl.json", "reference/reference.parquet",
              "pass_rates/00_before_0_fkl/pass_rates.parquet", "pass_rates/00_before_0_fkl/pass_rates.png",
              "pass_rates/01_final/summary.json", "stages/0_fkl/weights/weights.jsonl",
              "stages/0_fkl/distill_result.json", "stages/0_fkl/student/config.json",
              "plots/curriculum.png", "plots/loss.png"]:
        assert (run_dir / f).is_file(), f
    assert len(summary["losses"]["0_fkl"]) == 2
    assert [c["label"] for c in summary["curriculum"]] == ["before_0_fkl", "final"]
    assert [r["label"] for r in summary["results"]["rows"]] == ["base", "after_0_fkl"]
    assert summary["final_student"].endswith("stages/0_fkl/student")
    # weights saved for training are the pass rates' p(1-p), unit mean
    rows = [json.loads(x) for x in (run_dir / "stages/0_fkl/weights/weights.jsonl").read_text().splitlines()]
    raw = [r["pass_rate"] * (1 - r["pass_rate"]) for r in rows]
    assert [r["weight"] for r in rows] == pytest.approx([x / (sum(raw) / len(raw)) for x in raw])

    # re-run: every stage is skipped (no sampling, no verification), same summary
    v2 = CountingVerify()
    run_dir2, summary2 = run(short_cfg(world, tmp_path, "name=a"), verify=v2)
    assert run_dir2 == run_dir and v2.calls == 0 and summary2 == summary

    # a fresh run with the same seed gives the same numbers
    run_dir3, summary3 = run(short_cfg(world, tmp_path, "name=b"), verify=lucky_verify)
    assert summary3["losses"] == summary["losses"] and summary3["curriculum"] == summary["curriculum"]
    assert summary3["results"] == summary["results"]

    # resuming with different settings is refused
    with pytest.raises(ValueError, match="different settings"):
        run(short_cfg(world, tmp_path, "name=a", "distill.lr=0.5"), verify=lucky_verify)


def test_two_stage_schedule_recomputes_pass_rates_between_stages(world, tmp_path):
    cfg = short_cfg(world, tmp_path, "name=two", "stages=[fkl,rkl]", "eval.enabled=false", "rollout.k1=2",
                    "schedule.final_pass_rates=false")
    run_dir, summary = run(cfg, verify=lucky_verify)
    assert sorted(p.name for p in (run_dir / "pass_rates").iterdir()) == ["00_before_0_fkl", "01_before_1_rkl"]
    assert set(summary["losses"]) == {"0_fkl", "1_rkl"} and all(len(v) == 2 for v in summary["losses"].values())
    # stage 2 starts from stage 1's student and ends in its own export
    assert summary["final_student"].endswith("stages/1_rkl/student")
    s1 = json.loads((run_dir / "pass_rates/01_before_1_rkl/summary.json").read_text())
    assert s1["k1"] == 2 and s1["n_rollouts"] <= 4 * s1["n"]
    assert not (run_dir / "eval").exists() and summary["results"] == {}
