"""paced_kernels.rewards: verl's and TRL's reward signatures, scored against math-verify."""
import inspect

import pytest

from paced_kernels import rewards, scoring

PAIRS = [
    ("\\frac{1}{2}", "So the answer is $\\boxed{0.5}$."),
    ("\\frac{1}{2}", "So the answer is $\\boxed{0.6}$."),
    ("x^2-1", "We get \\boxed{(x-1)(x+1)}"),
    ("\\ln 2", "\\boxed{\\log_e 2}"),  # undecided in C++: settled by the math-verify fallback
    ("7", "no answer here"),
]


def _ref():
    return [float(scoring.math_verify_verdict(g, r, timeout=5)) for g, r in PAIRS]


def test_verl_signatures_match_its_documented_form():
    assert list(inspect.signature(rewards.compute_score).parameters)[:4] == [
        "data_source", "solution_str", "ground_truth", "extra_info"]
    assert list(inspect.signature(rewards.compute_score_batch).parameters)[:4] == [
        "data_sources", "solution_strs", "ground_truths", "extra_infos"]


def test_verl_compute_score_equals_math_verify():
    ref = _ref()
    assert 1.0 in ref and 0.0 in ref
    got = [rewards.compute_score("openai/gsm8k", r, g, extra_info={"split": "test"}) for g, r in PAIRS]
    assert got == ref and all(type(x) is float for x in got)
    batch = rewards.compute_score_batch(data_sources=["math"] * len(PAIRS), solution_strs=[r for _, r in PAIRS],
                                        ground_truths=[g for g, _ in PAIRS], extra_infos=[None] * len(PAIRS))
    assert batch == ref


def test_ground_truth_number_and_list():
    assert rewards.compute_score("s", "\\boxed{12}", 12) == 1.0
    assert rewards.compute_score("s", "\\boxed{3}", ["2", "3"]) == 1.0
    assert rewards.compute_score("s", "\\boxed{4}", ["2", "3"]) == 0.0
    with pytest.raises(TypeError, match="ground truth"):
        rewards.compute_score("s", "\\boxed{1}", None)


def test_trl_reward_plain_and_conversational():
    ref = _ref()
    golds = [g for g, _ in PAIRS]
    plain = [r for _, r in PAIRS]
    chat = [[{"role": "assistant", "content": r}] for r in plain]
    f = rewards.trl_accuracy_reward
    assert f.__name__ == "math_accuracy"
    # the keyword form GRPOTrainer uses: prompts, completions, completion_ids, dataset columns, state
    kw = dict(completion_ids=[[0]] * len(PAIRS), trainer_state=None, log_extra=None)
    assert f(prompts=["q"] * len(PAIRS), completions=plain, solution=golds, **kw) == ref
    assert f(prompts=["q"] * len(PAIRS), completions=chat, solution=golds, **kw) == ref
    g = rewards.make_trl_reward("answer")
    assert g(prompts=None, completions=plain, answer=golds) == ref


def test_trl_reward_errors_name_the_column():
    f = rewards.make_trl_reward("answer")
    with pytest.raises(ValueError, match="'answer'.*columns: \\['solution'\\]"):
        f(prompts=["q"], completions=["\\boxed{1}"], solution=["1"])
    with pytest.raises(ValueError, match="2 completions but 1"):
        f(prompts=["q"], completions=["a", "b"], answer=["1"])
    with pytest.raises(TypeError, match="completions\\[0\\]"):
        f(prompts=["q"], completions=[{"content": 1}], answer=["1"])
    with pytest.raises(ValueError, match="answer_column"):
        rewards.make_trl_reward("")


def test_no_heavy_imports():
    import subprocess
    import sys

    code = ("import sys, paced_kernels.rewards as r; r.compute_score('s', '\\\\boxed{1}', '1'); "
            "print('paced_train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
