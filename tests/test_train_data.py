"""Data stage: problem / multiple-choice files (JSONL, Parquet), clear errors, prompt building."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _train_tiny import build_tokenizer, mc_questions, problems, write_jsonl
from paced_train.config import DataConfig
from paced_train.data import Problem, PromptBuilder, build_prompt_ids, load_mc, load_problems


def test_jsonl_and_parquet_give_the_same_problems(tmp_path):
    recs = problems(5)
    recs[1]["solution"] = None
    a = load_problems(write_jsonl(tmp_path / "p.jsonl", recs))
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "p.parquet")
    b = load_problems(tmp_path / "p.parquet")
    assert a == b and len(a) == 5
    assert a[1].solution is None and a[2].solution.endswith("\\boxed{7}")
    assert [p.id for p in load_problems(tmp_path / "p.jsonl", limit=2)] == ["p0", "p1"]
    with pytest.raises(ValueError, match=r"p.jsonl:line 2: missing required field 'solution'"):
        load_problems(tmp_path / "p.jsonl", require_solution=True)
    ints = load_problems(write_jsonl(tmp_path / "i.jsonl", [{"id": 7, "problem": "x", "answer": 42}]))
    assert (ints[0].id, ints[0].answer) == ("7", "42")  # integer ids and answers are read as strings


@pytest.mark.parametrize("line,needle", [
    ('{"id": "a", "problem": "x"', "line 2: invalid JSON"),
    ('["a"]', "line 2: record must be a JSON object"),
    ('{"id": "a", "problem": "x"}', "line 2: missing required field 'answer'"),
    ('{"id": "a", "answer": "1"}', "line 2: missing required field 'problem'"),
    ('{"id": "a", "problem": 3, "answer": "1"}', "line 2: field 'problem' must be str"),
    ('{"id": "a", "problem": "  ", "answer": "1"}', "line 2: field 'problem' is empty"),
    ('{"id": true, "problem": "x", "answer": "1"}', "line 2: field 'id' must be str or int"),
    ('{"id": "a", "problem": "x", "answer": "1", "solution": 5}', "line 2: field 'solution' must be str"),
    ('{"id": "p0", "problem": "x", "answer": "1"}', "line 2: field 'id' duplicates id 'p0'"),
])
def test_malformed_problem_records_name_file_line_and_field(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(problems(1)[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError) as e:
        load_problems(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_parquet_rows_and_bad_files(tmp_path):
    recs = problems(3)
    recs[2]["answer"] = None
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p.parquet:row 2: missing required field 'answer'"):
        load_problems(tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="data file not found"):
        load_problems(tmp_path / "missing.jsonl")
    (tmp_path / "p.csv").write_text("id,problem\n")
    with pytest.raises(ValueError, match="unsupported data file type '.csv'"):
        load_problems(tmp_path / "p.csv")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="cannot read Parquet"):
        load_problems(tmp_path / "broken.parquet")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no problems"):
        load_problems(tmp_path / "empty.jsonl")


def test_multiple_choice_records(tmp_path):
    qs = load_mc(write_jsonl(tmp_path / "mc.jsonl", mc_questions(3)))
    assert [q.answer for q in qs] == [1, 1, 1] and qs[0].choices == ("0", "3") and qs[0].id == "0"
    for rec, needle in [({"answer": "C"}, "field 'answer' must be a letter A..B"),
                        ({"answer": "AB"}, "field 'answer' must be a letter"),
                        ({"choices": ["1"]}, "needs at least 2 choices"),
                        ({"choices": "12"}, "field 'choices' must be list"),
                        ({"choices": ["1", 2]}, "'choices' item 1 must be a non-empty string"),
                        ({"question": None}, "missing required field 'question'")]:
        bad = {**mc_questions(1)[0], **rec}
        path = write_jsonl(tmp_path / "bad.jsonl", [mc_questions(2)[1], bad])
        with pytest.raises(ValueError) as e:
            load_mc(path)
        assert "bad.jsonl:line 2" in str(e.value) and needle in str(e.value)


def test_prompts_use_the_chat_template_without_double_special_tokens():
    tok = build_tokenizer()
    ids = build_prompt_ids(tok, "Compute 1+2.")
    expected = tok.apply_chat_template([{"role": "user", "content": "Compute 1+2."}], add_generation_prompt=True,
                                       tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert ids == list(expected)
    assert ids.count(tok.bos_token_id) == 1 and tok.decode(ids).endswith("<|assistant|>")
    raw = build_prompt_ids(tok, "Compute 1+2.", use_chat_template=False)
    assert tok.decode(raw) == "Compute 1+2."
    sys_ids = build_prompt_ids(tok, "hi", system_prompt="Be brief.")
    assert tok.decode(sys_ids).startswith("<|bos|><|system|>Be brief.<|end|><|user|>hi")
    tok.chat_template = None
    with pytest.raises(ValueError, match="use_chat_template=false"):
        build_prompt_ids(tok, "x")


def test_teacher_prompt_holds_the_expert_solution_student_prompt_does_not():
    tok = build_tokenizer()
    p = Problem("a", "Compute 2+3.", "5", "2+3=5. \\boxed{5}")
    b = PromptBuilder(tok, DataConfig(), "{problem}\nReference solution: {solution}")
    assert tok.decode(b.student(p)) == "<|bos|><|user|>Compute 2+3.<|end|><|assistant|>"
    assert tok.decode(b.teacher(p)) == ("<|bos|><|user|>Compute 2+3.\nReference solution: 2+3=5. \\boxed{5}"
                                        "<|end|><|assistant|>")
    nosol = Problem("b", "Compute 1+1.", "2", None)
    with pytest.raises(ValueError, match="on_missing_solution=problem_only"):
        b.teacher(nosol)
    b2 = PromptBuilder(tok, DataConfig(), "{problem}\nReference solution: {solution}", "problem_only")
    assert b2.teacher(nosol) == b2.student(nosol)
