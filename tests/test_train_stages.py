"""Each pipeline stage on its own, on tiny random Qwen3 models and fake engines."""
import json
import sys
import types

import numpy as np
import pytest
import torch

from _train_tiny import boxed_verify, build_tokenizer, tiny_model
from paced_train.config import DataConfig, EvalConfig, WeightConfig
from paced_train.data import MCQuestion, Problem, PromptBuilder
from paced_train.evaluate import mc_accuracy, mc_choice_logprobs, mean_at_k, results_table
from paced_train.logging_utils import RunLogger
from paced_train.rollout import (Generation, HFEngine, SamplingSpec, VLLMEngine, sample_rollouts, stop_token_ids,
                                  vllm_llm_kwargs)
from paced_train.pass_rates import bin_stats, load_pass_rates, run_pass_rate_stage

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok, 0)


@pytest.fixture
def logger(tmp_path):
    with RunLogger(tmp_path / "log", tensorboard=False, progress_bars=False) as lg:
        yield lg


def prompt(tok, text):
    return PromptBuilder(tok, DataConfig()).text(text)


class FakeEngine:
    """Replays scripted responses: ``script[prompt_index]`` is a list of texts, consumed in order."""

    def __init__(self, tok, script):
        self.tok, self.script, self.calls, self.closed = tok, {i: list(s) for i, s in script.items()}, [], False

    def generate(self, prompts, spec, desc=""):
        self.calls.append((len(prompts), spec.n, spec.seed))
        out = []
        for p in prompts:
            i = self.index[tuple(p)]
            texts = [self.script[i].pop(0) for _ in range(spec.n)]
            out.append([Generation(self.tok(t, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id],
                                   t, True) for t in texts])
        return out

    def close(self):
        self.closed = True


def fake_engine(tok, script):
    prompts = [prompt(tok, f"q{i}") for i in range(len(script))]
    eng = FakeEngine(tok, script)
    eng.index = {tuple(p): i for i, p in enumerate(prompts)}
    return eng, prompts


# ----------------------------------------------------------------------------- rollouts
def test_hf_engine_left_padding_matches_unbatched_greedy(tok, model):
    prompts = [prompt(tok, "Compute 1+2."), prompt(tok, "Compute 12+345+6789.")]
    assert len(prompts[0]) != len(prompts[1])
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=8, seed=0)
    batched = HFEngine(model, tok, batch_size=2, show_progress=False).generate(prompts, spec)
    for p, gens in zip(prompts, batched):
        alone = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               do_sample=False, max_new_tokens=8, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        want = alone[: alone.index(tok.eos_token_id) + 1] if tok.eos_token_id in alone else alone
        assert gens[0].token_ids == want
        assert gens[0].finished == (tok.eos_token_id in alone)
        assert gens[0].text == tok.decode(want, skip_special_tokens=True)


def test_hf_engine_sampling_is_seeded_and_leaves_global_rng_alone(tok, model):
    prompts = [prompt(tok, "Compute 1+2."), prompt(tok, "Compute 3+4.")]
    eng = HFEngine(model, tok, batch_size=3, show_progress=False)
    spec = SamplingSpec(n=3, temperature=1.0, top_p=0.9, max_new_tokens=6, seed=5)
    torch.manual_seed(123)
    a = eng.generate(prompts, spec)
    after = torch.rand(1)
    torch.manual_seed(123)
    b = eng.generate(prompts, spec)
    assert torch.equal(after, torch.rand(1))  # generation ran inside fork_rng
    ids = lambda res: [[g.token_ids for g in gens] for gens in res]
    assert ids(a) == ids(b) and len(a) == 2 and all(len(g) == 3 for g in a)
    assert all(len(g.token_ids) <= 6 for gens in a for g in gens)
    c = eng.generate(prompts, SamplingSpec(n=3, temperature=1.0, top_p=0.9, max_new_tokens=6, seed=6))
    assert ids(c) != ids(a)


def test_two_phase_screening_only_resamples_mixed_problems(tok):
    script = {0: ["\\boxed{1}"] * 4,                                    # all correct after K1
              1: ["\\boxed{9}"] * 4,                                    # all wrong after K1
              2: ["\\boxed{1}", "\\boxed{9}", "\\boxed{1}", "\\boxed{1}"]}  # mixed -> K samples
    eng, prompts = fake_engine(tok, script)
    res = sample_rollouts(eng, prompts, ["1", "1", "1"], boxed_verify, SamplingSpec(n=4, seed=3), k1=2)
    assert eng.calls == [(3, 2, 3), (1, 2, 4)]  # phase 2: one prompt, K - K1 samples, seed + 1
    assert [r.n for r in res] == [2, 2, 4] and [r.screened for r in res] == [True, True, False]
    assert [r.pass_rate for r in res] == [1.0, 0.0, 0.75]
    eng, prompts = fake_engine(tok, {0: ["\\boxed{1}", "x", "x", "\\boxed{1}"]})
    res = sample_rollouts(eng, prompts, ["1"], boxed_verify, SamplingSpec(n=4), k1=None)
    assert res[0].correct == [True, False, False, True] and res[0].pass_rate == 0.5


def test_vllm_engine_against_a_fake_vllm(monkeypatch, tok):
    seen = {}

    class SamplingParams:
        def __init__(self, **kw):
            seen["params"] = kw

    class LLM:
        def __init__(self, **kw):
            seen["llm"] = kw

        def generate(self, reqs, params, use_tqdm=True):
            seen["reqs"] = reqs
            outs = []
            for r in reqs:
                comp = [types.SimpleNamespace(token_ids=[50, 51], text="ab", finish_reason="stop", stop_reason=None),
                        types.SimpleNamespace(token_ids=[50, 51, 52], text="abc", finish_reason="length",
                                              stop_reason=None)]
                outs.append(types.SimpleNamespace(outputs=comp))
            return outs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    kwargs = vllm_llm_kwargs("/models/x", tensor_parallel_size=2, dtype="bfloat16", seed=1, max_model_len=64)
    eng = VLLMEngine(kwargs, stop_token_ids(tok))
    res = eng.generate([[1, 2], [3]], SamplingSpec(n=2, temperature=0.7, top_p=0.9, max_new_tokens=16, seed=4))
    assert seen["llm"]["tensor_parallel_size"] == 2 and seen["llm"]["model"] == "/models/x"
    assert "distributed_executor_backend" not in seen["llm"]  # single process: vLLM's own workers
    p = seen["params"]
    assert (p["n"], p["temperature"], p["top_p"], p["max_tokens"], p["top_k"]) == (2, 0.7, 0.9, 16, -1)
    assert seen["reqs"] == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    # a stop-finished response gets its EOS back (training scores it), a length-capped one does not
    assert res[0][0].token_ids == [50, 51, tok.eos_token_id] and res[0][0].finished
    assert res[0][1].token_ids == [50, 51, 52] and not res[0][1].finished
    eng.close()


def test_vllm_missing_gives_a_clear_error(monkeypatch, tok):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValueError, match="rollout.engine=hf"):
        VLLMEngine(vllm_llm_kwargs("/models/x"), stop_token_ids(tok))


# ----------------------------------------------------------------------------- pass rates
def test_bin_stats_by_hand():
    s = bin_stats([0, 1 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 1, 1])
    # Low p <= 1/3: 0, 1/8; Med: 3/8, 4/8, 5/8; High p >= 2/3: 6/8, 1, 1
    assert (s["low"], s["med"], s["high"]) == (2 / 8, 3 / 8, 3 / 8)
    assert s["mean"] == pytest.approx(np.mean([0, 1 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 1, 1]))
    assert (s["n_zero"], s["n_one"], s["n_mixed"]) == (1, 2, 5)
    assert bin_stats([1 / 3, 2 / 3])["low"] == 0.5 and bin_stats([1 / 3, 2 / 3])["high"] == 0.5
    with pytest.raises(ValueError):
        bin_stats([0.5, 1.5])


def test_pass_rate_stage_writes_outputs_and_is_skipped_on_rerun(tmp_path, tok, logger):
    script = {0: ["\\boxed{1}"] * 4, 1: ["\\boxed{1}", "no", "no", "no"], 2: ["no"] * 4}
    eng, prompts = fake_engine(tok, script)
    weight_fn = lambda p, k: (np.asarray(p) * (1 - np.asarray(p)) / 0.0625,
                              {"scheme": "beta", "alpha": 1.0, "beta": 1.0, "description": "p(1-p)", "normalize": True,
                               "n_zero_weight": 2})
    out = tmp_path / "pr"
    res = run_pass_rate_stage(out, ["a", "b", "c"], prompts, ["1", "1", "1"], lambda: eng, SamplingSpec(n=4),
                              None, boxed_verify, logger, weight_fn=weight_fn)
    assert eng.closed and res.pass_rates.tolist() == [1.0, 0.25, 0.0]
    assert res.weights.tolist() == [0.0, 3.0, 0.0]
    for f in ("rollouts.parquet", "pass_rates.parquet", "pass_rates.jsonl", "pass_rates.png", "summary.json"):
        assert (out / f).is_file(), f
    rows = [json.loads(x) for x in (out / "pass_rates.jsonl").read_text().splitlines()]
    assert [(r["id"], r["n_correct"], r["pass_rate"], r["weight"]) for r in rows] == \
        [("a", 4, 1.0, 0.0), ("b", 1, 0.25, 3.0), ("c", 0, 0.0, 0.0)]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["low"], summary["high"], summary["n_rollouts"]) == (2 / 3, 1 / 3, 12)

    def boom():
        raise AssertionError("a finished stage must not sample again")
    again = run_pass_rate_stage(out, ["a", "b", "c"], prompts, ["1", "1", "1"], boom, SamplingSpec(n=4), None,
                                boxed_verify, logger)
    assert again.pass_rates.tolist() == res.pass_rates.tolist() and again.weights.tolist() == [0.0, 3.0, 0.0]
    assert [g.token_ids for g in again.rollouts[1].generations] == [g.token_ids for g in res.rollouts[1].generations]
    assert again.rollouts[1].correct == [True, False, False, False]
    assert load_pass_rates(out).summary == summary


# ----------------------------------------------------------------------------- weights
def test_weight_schemes():
    pytest.importorskip("paced_kernels.weights", reason="paced_kernels.weights (scorer developer) not landed yet")
    from paced_train.weighting import compute_weights
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    w, info = compute_weights(p, WeightConfig(scheme="beta"), k=4)
    raw = p * (1 - p)
    np.testing.assert_allclose(w, raw / raw.mean())
    assert info["n_zero_weight"] == 2 and not info["all_zero"]
    w, _ = compute_weights(p, WeightConfig(scheme="hard"), k=4)
    np.testing.assert_allclose(w, np.array([0, 1, 1, 1, 0]) / 0.6)
    w, _ = compute_weights(p, WeightConfig(scheme="uniform"), k=4)
    np.testing.assert_allclose(w, np.ones(5))
    w, info = compute_weights(np.array([0.0, 1.0, 1.0]), WeightConfig(scheme="beta"), k=4)
    assert info["all_zero"] and (w == 0).all()
    w, info = compute_weights(p, WeightConfig(scheme="auto"), k=4)
    assert w[0] == 0 and w[-1] == 0 and w.mean() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- reference responses
def test_reference_stage_aligns_teacher_and_student_on_the_same_response(tmp_path, tok, model, logger):
    from paced_train.reference import load_reference, run_reference_stage
    probs = [Problem("a", "Compute 1+2.", "3", "1+2=3. \\boxed{3}"), Problem("b", "Compute 22+22.", "44", "22+22=44. \\boxed{44}")]
    builder = PromptBuilder(tok, DataConfig(), "{problem}\nReference solution: {solution}")
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=6)
    engine = HFEngine(model, tok, batch_size=4, show_progress=False)
    refs = run_reference_stage(tmp_path / "ref", probs, builder, lambda: engine, spec, 256, boxed_verify, logger)
    for p, r in zip(probs, refs):
        assert r.student_prompt_ids == builder.student(p)
        assert r.teacher_prompt_ids == builder.teacher(p)
        assert "Reference solution" in tok.decode(r.teacher_prompt_ids)
        assert "Reference solution" not in tok.decode(r.student_prompt_ids)
        # the response is the teacher's greedy continuation of its privileged prompt
        assert r.response_ids == engine.generate([r.teacher_prompt_ids], spec)[0][0].token_ids
        assert r.correct is False
    assert [(r.id, r.response_ids) for r in load_reference(tmp_path / "ref")] == [(r.id, r.response_ids) for r in refs]
    short = run_reference_stage(tmp_path / "ref2", probs, builder, lambda: engine, spec, len(builder.teacher(probs[0])),
                                None, logger)
    assert [r.id for r in short] == ["a"]  # b's teacher prompt is longer than the limit


# ----------------------------------------------------------------------------- evaluation
def test_mc_logprobs_equal_an_unpadded_forward(tok, model):
    items = [(0, prompt(tok, "Largest of 1 and 4?"), tok("4", add_special_tokens=False)["input_ids"] + [2]),
             (0, prompt(tok, "Largest of 1 and 4?"), tok("1", add_special_tokens=False)["input_ids"] + [2]),
             (1, prompt(tok, "Pick the largest: 10, 200?"), tok("200", add_special_tokens=False)["input_ids"])]
    got = mc_choice_logprobs(model, items, batch_size=3, pad_id=tok.pad_token_id, show_progress=False)
    for (qi, p, c), g in zip(items, got):
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        want = sum(lp[len(p) - 1 + t, c[t]].item() for t in range(len(c)))
        assert g == pytest.approx(want, abs=1e-4)


def test_mc_accuracy_picks_the_most_likely_choice(tok, model):
    qs = [MCQuestion("q0", "Largest of 1 and 4?", ("1", "4"), 1), MCQuestion("q1", "Largest of 7 and 2?", ("7", "2"), 0)]
    builder = PromptBuilder(tok, DataConfig())
    cfg = EvalConfig(mc_append_eos=True)
    res = mc_accuracy(model, tok, qs, builder, cfg, show_progress=False)
    scores = mc_choice_logprobs(model, [(0, builder.text(q.question), tok(c, add_special_tokens=False)["input_ids"] + [2])
                                        for q in qs for c in q.choices], show_progress=False)
    preds = [int(np.argmax(scores[0:2])), int(np.argmax(scores[2:4]))]
    assert res["predictions"] == preds
    assert res["accuracy"] == 100.0 * np.mean([p == q.answer for p, q in zip(preds, qs)])


def test_mean_at_k_and_results_table(tok, logger, tmp_path):
    eng, prompts = fake_engine(tok, {0: ["\\boxed{1}", "\\boxed{2}"], 1: ["\\boxed{5}", "\\boxed{5}"]})
    r = mean_at_k(eng, prompts, ["1", "5"], boxed_verify, SamplingSpec(n=2))
    assert r["mean_at_k"] == 75.0 and r["n_correct"] == [1, 2]
    results = [{"label": "base", "sets": {"s": {"mean_at_k": 50.0, "k": 2}}, "mc": {"accuracy": 80.0}},
               {"label": "after_0_fkl", "sets": {"s": {"mean_at_k": 75.0, "k": 2}}, "mc": {"accuracy": 70.0}}]
    out = results_table(results, logger, tmp_path)
    assert out["rows"][1] == {"label": "after_0_fkl", "s": 75.0, "mc_accuracy": 70.0, "mc_drop": 10.0}
    assert "s mean@2" in (tmp_path / "results.txt").read_text()


# ----------------------------------------------------------------------------- distillation examples
def test_rkl_examples_split_each_problem_weight_over_its_rollouts():
    pytest.importorskip("paced_train.distill")
    from paced_train.rollout import ProblemRollouts
    from paced_train.schedule import build_distill_examples
    rolls = [ProblemRollouts([Generation([5, 2], "a", True), Generation([6, 2], "b", True)], [True, False]),
             ProblemRollouts([Generation([7], "c", False)] * 4, [False] * 4)]
    ex = build_distill_examples("rkl", ["a", "b"], [2.0, 0.0], rollouts=rolls, student_prompts={"a": [1], "b": [3]},
                                teacher_prompts={"a": [1, 9], "b": [3, 9]})
    assert [(e.problem_id, e.weight, e.response_ids, e.teacher_prompt_ids) for e in ex[:2]] == \
        [("a", 1.0, [5, 2], [1, 9]), ("a", 1.0, [6, 2], [1, 9])]
    assert sum(e.weight for e in ex if e.problem_id == "a") == 2.0 and len(ex) == 6
