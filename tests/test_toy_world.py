"""The toy world: problems, solutions, splits, the multiple-choice set and the tokenizer."""
import ast
import json
import operator
import random
import re

import pytest

from paced_train.toy.pretrain import extract_boxed
from paced_train.toy.tokenizer import CHAT_TEMPLATE, build_tokenizer
from paced_train.toy.world import (DIFFICULTIES, LEVELS, MAX_VALUE, generate_problems, make_problem,
                                   toy_splits, write_toy_dataset)

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expr: str) -> int:
    """Independent evaluation of an integer +,-,* expression with standard precedence (via ast)."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected node {ast.dump(node)} in {expr!r}")
    return ev(ast.parse(expr, mode="eval"))


def _expression(problem: str) -> str:
    m = re.fullmatch(r"Compute ([0-9+\-*()]+)\.", problem)
    assert m, problem
    return m.group(1)


@pytest.fixture(scope="module")
def splits():
    return toy_splits(seed=0)


def test_write_toy_dataset_is_deterministic_and_seeded(tmp_path):
    a = write_toy_dataset(tmp_path / "a", seed=3, n_train=40, n_eval=20, n_mc=10)
    b = write_toy_dataset(tmp_path / "b", seed=3, n_train=40, n_eval=20, n_mc=10)
    c = write_toy_dataset(tmp_path / "c", seed=4, n_train=40, n_eval=20, n_mc=10)
    assert set(a) == {"train", "eval", "mc"}
    for name in a:
        assert a[name].name == f"{name}.jsonl"
        assert a[name].read_bytes() == b[name].read_bytes()
        assert a[name].read_bytes() != c[name].read_bytes()
    rows = [json.loads(line) for line in a["train"].read_text().splitlines()]
    assert len(rows) == 40
    assert all(set(r) == {"id", "problem", "answer", "solution", "difficulty"} for r in rows)
    mc = [json.loads(line) for line in a["mc"].read_text().splitlines()]
    assert len(mc) == 10 and all(set(r) == {"id", "question", "choices", "answer"} for r in mc)


def test_answers_are_correct_by_construction(splits):
    for rec in splits["train"] + splits["eval"]:
        expr = _expression(rec["problem"])
        assert str(_evaluate(expr)) == rec["answer"], rec
        assert rec["answer"].isdigit()


def test_solution_steps_are_true_and_end_in_the_gold_box(splits):
    for rec in splits["train"] + splits["eval"]:
        steps = re.findall(r"(\d+)([+\-*])(\d+)=(\d+)\.", rec["solution"])
        assert len(steps) == LEVELS[rec["difficulty"]].n_ops, rec
        for a, op, b, c in steps:
            assert _evaluate(f"{a}{op}{b}") == int(c)
            assert 0 <= int(c) <= MAX_VALUE
        # the chain: each step starts from the previous result, the operands appear in order
        for (_, _, _, prev), (a, _, _, _) in zip(steps, steps[1:]):
            assert a == prev
        assert [f"{op}{b}" for _, op, b, _ in steps] == re.findall(r"[+\-*]\d+", _expression(rec["problem"]))
        assert steps[-1][3] == rec["answer"]
        assert rec["solution"].endswith(f"\\boxed{{{rec['answer']}}}")
        assert extract_boxed(rec["solution"]) == rec["answer"]


def test_project_scorer_agrees_with_the_gold(splits):
    scoring = pytest.importorskip("paced_kernels.scoring")
    verify = getattr(scoring, "verify", None)
    if verify is None:
        pytest.skip("paced_kernels.scoring.verify not available")
    recs = splits["train"][:40]
    assert all(verify(r["answer"], r["solution"]) for r in recs)
    # and it is not vacuous: a wrong answer is rejected
    assert not any(verify(str(int(r["answer"]) + 1), r["solution"]) for r in recs)


def test_splits_are_disjoint_and_ids_unique(splits):
    train_texts = {r["problem"] for r in splits["train"]}
    eval_texts = {r["problem"] for r in splits["eval"]}
    assert len(train_texts) == len(splits["train"]) == 256
    assert len(eval_texts) == len(splits["eval"]) == 128
    assert not train_texts & eval_texts
    ids = [r["id"] for name in ("train", "eval", "mc") for r in splits[name]]
    assert len(ids) == len(set(ids))


def test_difficulty_is_graded_and_recorded(splits):
    counts = {d: 0 for d in DIFFICULTIES}
    for rec in splits["train"]:
        counts[rec["difficulty"]] += 1
    assert min(counts.values()) >= 256 // len(DIFFICULTIES) - 1  # cycled evenly
    mean_len = {d: sum(len(r["solution"]) for r in splits["train"] if r["difficulty"] == d) / counts[d]
                for d in DIFFICULTIES}
    assert all(mean_len[a] < mean_len[b] for a, b in zip(DIFFICULTIES, DIFFICULTIES[1:]))


def test_large_splits_survive_the_small_easy_level():
    """Difficulty 1 has only 190 distinct problems: it leaves the cycle, the others fill the rest."""
    big = toy_splits(seed=1, n_train=1200, n_eval=100, n_mc=0)
    texts = [r["problem"] for r in big["train"] + big["eval"]]
    assert len(texts) == len(set(texts)) == 1300
    assert sum(r["difficulty"] == 1 for r in big["train"] + big["eval"]) <= 190


def test_mc_set_is_well_formed(splits):
    assert len(splits["mc"]) == 64
    letters = []
    for rec in splits["mc"]:
        choices = rec["choices"]
        assert len(choices) == 4 and len(set(choices)) == 4
        assert rec["answer"] in "ABCD"
        best = choices["ABCD".index(rec["answer"])]
        assert int(best) == max(int(c) for c in choices)
        assert all(c in rec["question"] for c in choices)
        letters.append(rec["answer"])
    assert len(set(letters)) >= 3  # the right answer is not always in the same place


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="difficulty"):
        make_problem(random.Random(0), 9)
    with pytest.raises(ValueError, match="n_train"):
        write_toy_dataset(tmp_path, n_train=-1)
    with pytest.raises(ValueError, match="difficulties"):
        generate_problems(random.Random(0), 3, difficulties=())
    with pytest.raises(ValueError, match="distinct"):  # only 9*9 level-1 additions/subtractions/products exist
        generate_problems(random.Random(0), 1000, difficulties=(1,))


def test_extract_boxed():
    assert extract_boxed("1+2=3. \\boxed{3}") == "3"
    assert extract_boxed("\\boxed{1} then \\boxed{ 22 }") == "22"
    assert extract_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{7} \\boxed{8") == "7"
    assert extract_boxed("no box") is None


def test_tokenizer_round_trip_and_special_tokens():
    tok = build_tokenizer()
    text = "Compute (12+7)*3-5.\nReference solution: 12+7=19. \\boxed{57} ~!@#$%^&_`|"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>" and tok.bos_token == "<|bos|>"
    assert len({tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}) == 3
    assert tok.decode([tok.eos_token_id]) == "<|end|>"
    assert tok("<|end|>", add_special_tokens=False)["input_ids"] == [tok.eos_token_id]
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_chat_template(tmp_path):
    tok = build_tokenizer()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Compute 3+4."}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt == "<|bos|><|user|>Compute 3+4.<|end|><|assistant|>"
    full = tok.apply_chat_template([{"role": "user", "content": "Compute 3+4."},
                                    {"role": "assistant", "content": "3+4=7. \\boxed{7}"}], tokenize=False)
    assert full == prompt + "3+4=7. \\boxed{7}<|end|>"
    # prompt tokens + response tokens + EOS == the whole conversation's tokens
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok("3+4=7. \\boxed{7}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok(full, add_special_tokens=False)["input_ids"] == p_ids + r_ids
    assert tok(prompt)["input_ids"] == p_ids  # nothing added automatically
    tok.save_pretrained(str(tmp_path))
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.apply_chat_template([{"role": "user", "content": "Compute 3+4."}],
                                     add_generation_prompt=True, tokenize=False) == prompt
    assert again(full)["input_ids"] == p_ids + r_ids
    assert again.chat_template == CHAT_TEMPLATE
