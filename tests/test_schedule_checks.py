"""distill.truncated (drop | keep) and the checks made before any expensive stage (preflight)."""
import sys

import pytest

from _fake_vllm_fixture import fake_vllm  # noqa: F401  (fixture)
from paced_train.config import load_config
from paced_train.reference import ReferenceResponse
from paced_train.rollout import Generation, ProblemRollouts
from paced_train.schedule import build_distill_examples, count_truncated

pytest.importorskip("paced_train.distill")

G = Generation


def _rolls():
    return [ProblemRollouts([G([5, 2], "a", True), G([6], "b", False), G([7, 2], "c", True), G([8], "d", False)],
                            [True, False, True, False]),
            ProblemRollouts([G([9], "e", False), G([9, 9], "e", False)], [False, False]),
            ProblemRollouts([G([4, 2], "f", True), G([3, 2], "g", True)], [True, True])]


def _examples(truncated):
    ex = build_distill_examples("rkl", ["a", "b", "c"], [2.0, 1.0, 3.0], rollouts=_rolls(),
                                student_prompts={"a": [1], "b": [1], "c": [1]}, truncated=truncated)
    return [(e.problem_id, e.weight, e.response_ids) for e in ex]


def test_rkl_drop_leaves_out_truncated_rollouts_and_splits_the_weight_over_the_rest():
    # drop: a keeps its 2 finished rollouts (2.0 / 2 each), b has none left, c is untouched
    assert _examples("drop") == [("a", 1.0, [5, 2]), ("a", 1.0, [7, 2]), ("c", 1.5, [4, 2]), ("c", 1.5, [3, 2])]
    # keep: every rollout, the weight split over all of the problem's rollouts
    keep = _examples("keep")
    assert [w for pid, w, _ in keep if pid == "a"] == [0.5] * 4 and [w for pid, w, _ in keep if pid == "b"] == [0.5] * 2
    assert sum(w for pid, w, _ in keep if pid == "c") == 3.0 and len(keep) == 8
    assert count_truncated("rkl", ["a", "b", "c"], rollouts=_rolls()) == \
        {"responses": 8, "truncated": 4, "problems_without_response": 1}


def test_fkl_drop_leaves_out_truncated_references_and_counts_them():
    refs = [ReferenceResponse("a", [1], [1, 7], [5, 2], "x", True, True),
            ReferenceResponse("b", [1], [1, 7], [6, 6, 6], "y", False, None),
            ReferenceResponse("z", [1], [1, 7], [6], "w", False, None)]  # not in this stage's ids
    kw = dict(references=refs, student_prompts={"a": [1], "b": [1]})
    assert [e.problem_id for e in build_distill_examples("fkl", ["a", "b"], [1.0, 1.0], truncated="drop", **kw)] == ["a"]
    assert [e.problem_id for e in build_distill_examples("fkl", ["a", "b"], [1.0, 1.0], truncated="keep", **kw)] == ["a", "b"]
    assert count_truncated("fkl", ["a", "b"], references=refs) == \
        {"responses": 2, "truncated": 1, "problems_without_response": 1}
    with pytest.raises(ValueError, match="distill.truncated"):
        build_distill_examples("fkl", ["a"], [1.0], truncated="maybe", **kw)


def test_truncated_setting_is_validated_and_defaults_to_drop():
    assert load_config(None, []).distill.truncated == "drop"
    with pytest.raises(ValueError, match="truncated"):
        load_config(None, ["distill.truncated=maybe"])


# ----------------------------------------------------------------------------- preflight
def _cfg(tmp_path, *extra):
    return load_config(None, [f"output_dir={tmp_path}", "name=pre", "overwrite=true", "logging.progress=false",
                              "logging.tensorboard=false", "num_threads=1", *extra])


def _run_must_fail_before_any_stage(cfg, match):
    from paced_train.run import resolve_run_dir, run
    with pytest.raises(ValueError, match=match):
        run(cfg)
    run_dir = resolve_run_dir(cfg)
    # nothing was computed: no data, no generation, no pass rates
    assert not any((run_dir / d).exists() for d in ("data", "generation", "pass_rates", "eval")), \
        sorted(p.name for p in run_dir.iterdir())


def test_a_global_batch_that_does_not_split_over_the_ranks_fails_before_any_stage(tmp_path, monkeypatch):
    import paced_train.schedule as schedule
    monkeypatch.setattr(schedule, "get_world_size", lambda: 2)  # as under torchrun x2
    cfg = _cfg(tmp_path, "distill.global_batch_problems=6", "distill.micro_batch_problems=2")
    _run_must_fail_before_any_stage(cfg, r"'distill.global_batch_problems' \(stage 0_fkl\): 6 must be a multiple of "
                                         r"micro_batch_problems \* number of ranks = 2 \* 2 = 4")


def test_vllm_missing_fails_before_any_stage(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable, even where vLLM is installed
    _run_must_fail_before_any_stage(_cfg(tmp_path, "rollout.engine=vllm"), r"needs vLLM: pip install")
    _run_must_fail_before_any_stage(_cfg(tmp_path, "eval.engine=vllm"), r"needs vLLM: pip install")


def test_vllm_settings_are_checked_before_any_stage(tmp_path, monkeypatch, fake_vllm):
    import paced_train.schedule as schedule
    monkeypatch.setattr(schedule, "get_world_size", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    _run_must_fail_before_any_stage(_cfg(tmp_path, "rollout.engine=vllm", "rollout.tensor_parallel_size=3"),
                                    r"'rollout.tensor_parallel_size': 3 must divide the number of ranks \(2\)")
    _run_must_fail_before_any_stage(_cfg(tmp_path, "rollout.engine=vllm", "rollout.vllm_kwargs={seed: 3}"),
                                    r"'rollout.vllm_kwargs' may not set \['seed'\]")


def test_a_missing_model_folder_fails_before_any_stage(tmp_path):
    _run_must_fail_before_any_stage(_cfg(tmp_path, f"model.teacher={tmp_path / 'nope'}"),
                                    r"'model.teacher': model folder not found")
