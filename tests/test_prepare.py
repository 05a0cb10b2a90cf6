"""paced_train.prepare: each published schema (fixtures written here in that schema) -> our schema -> loads."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paced_train.data import load_mc, load_problems
from paced_train.prepare import main, prepare, strip_dapo_instructions

DAPO_HEAD = ("Solve the following math problem step by step. The last line of your response should be of the form "
             "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_TAIL = '\n\nRemember to put your answer on its own line after "Answer:".'


def dapo_row(problem, gold, index):
    return {"data_source": "math_dapo", "prompt": [{"content": DAPO_HEAD + problem + DAPO_TAIL, "role": "user"}],
            "ability": "MATH", "reward_model": {"ground_truth": gold, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": index}}


def write_parquet(path, rows, schema=None):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


DAPO_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
    ("extra_info", pa.struct([("index", pa.string())])),
])


def test_dapo_dedups_strips_instructions_and_reports(tmp_path, capsys):
    problems = [("Find $x$ if $2x = 6$.", "3", "id-a"), ("What is $\\frac{1}{2} + \\frac{1}{2}$?", "1", "id-b"),
                ("Compute $7 \\cdot 6$. Answer: is not a hint here.", "42", "id-c")]
    rows = [dapo_row(p, g, i) for _ in range(3) for p, g, i in problems]  # the published file repeats prompts
    rows.append(dapo_row(problems[0][0], "4", "id-a"))                   # a copy with another gold
    src = write_parquet(tmp_path / "dapo-math-17k.parquet", rows, DAPO_SCHEMA)
    out = tmp_path / "dapo.jsonl"
    assert main(["dapo", "--input", str(src), "--output", str(out)]) == 0
    line = capsys.readouterr().out
    assert "7 duplicates dropped" in line and "1 of them with a different answer" in line
    got = load_problems(out)
    assert [(p.problem, p.answer, p.id) for p in got] == problems  # first copy kept, text exactly the problem
    assert all(p.solution is None for p in got)
    report = json.loads(line.strip().splitlines()[-1])
    assert report["n_read"] == 10 and report["n_written"] == 3 and report["instructions_stripped"] == 10


def test_dapo_strip_leaves_other_text_alone():
    assert strip_dapo_instructions("Plain problem, no wrapper.") == ("Plain problem, no wrapper.", False)
    text, hit = strip_dapo_instructions(DAPO_HEAD + "P" + DAPO_TAIL)
    assert (text, hit) == ("P", True)


def test_dapo_bad_record_names_file_row_and_field(tmp_path):
    rows = [dapo_row("ok", "1", "a"), {**dapo_row("x", "2", "b"), "reward_model": {"ground_truth": None, "style": "r"}}]
    src = write_parquet(tmp_path / "d.parquet", rows, DAPO_SCHEMA)
    with pytest.raises(ValueError, match=r"d\.parquet:row 1: missing required field 'reward_model.ground_truth'"):
        prepare("dapo", str(src), str(tmp_path / "o.jsonl"))
    rows = [dapo_row("one", "1", "same"), dapo_row("two", "2", "same")]  # one id, two problems
    src = write_parquet(tmp_path / "d2.parquet", rows, DAPO_SCHEMA)
    with pytest.raises(ValueError, match=r"row 1: field 'id' duplicates id 'same'.*different problem"):
        prepare("dapo", str(src), str(tmp_path / "o.jsonl"))


def test_math500_uses_unique_id_and_keeps_solutions(tmp_path):
    rows = [{"problem": "Compute $1+1$.", "solution": "It is $\\boxed{2}$.", "answer": "2", "subject": "Algebra",
             "level": 1, "unique_id": "test/algebra/1.json"},
            {"problem": "Simplify $\\frac{2}{4}$.", "solution": "$\\boxed{\\frac12}$", "answer": "\\frac{1}{2}",
             "subject": "Prealgebra", "level": 2, "unique_id": "test/prealgebra/7.json"}]
    src = write_jsonl(tmp_path / "test.jsonl", rows)
    prepare("math500", str(src), str(tmp_path / "math500.jsonl"))
    got = load_problems(tmp_path / "math500.jsonl", require_solution=True)
    assert [(p.id, p.answer, p.solution) for p in got] == [(r["unique_id"], r["answer"], r["solution"]) for r in rows]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{k: v for k, v in rows[0].items() if k != "unique_id"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:line 1: missing required field 'unique_id'"):
        prepare("math500", str(bad), str(tmp_path / "x.jsonl"))


def test_aime24_and_aime25_integer_answers_become_strings(tmp_path):
    rows24 = [{"ID": "2024-I-1", "Problem": "Find $n$.", "Solution": "So $n=204$.", "Answer": 204},
              {"ID": "2024-II-15", "Problem": "Find $m$.", "Solution": "Thus 33.", "Answer": 33}]
    schema = pa.schema([("ID", pa.string()), ("Problem", pa.string()), ("Solution", pa.string()),
                        ("Answer", pa.int64())])
    src = write_parquet(tmp_path / "aime_2024_problems.parquet", rows24, schema)
    prepare("aime24", str(src), str(tmp_path / "aime24.jsonl"))
    got = load_problems(tmp_path / "aime24.jsonl")
    assert [(p.id, p.problem, p.answer) for p in got] == [("2024-I-1", "Find $n$.", "204"), ("2024-II-15", "Find $m$.", "33")]
    rows25 = [{"id": 0, "problem": "Sum of bases.", "answer": 70, "url": "u", "year": "2025"},
              {"id": 1, "problem": "Count.", "answer": "588", "url": "u", "year": "2025"}]
    src = write_jsonl(tmp_path / "aime25.raw.jsonl", rows25)
    prepare("aime25", str(src), str(tmp_path / "aime25.jsonl"))
    assert [(p.id, p.answer) for p in load_problems(tmp_path / "aime25.jsonl")] == [("0", "70"), ("1", "588")]
    bad = write_jsonl(tmp_path / "b.jsonl", [{"id": 3, "problem": "x", "answer": [1]}])
    with pytest.raises(ValueError, match=r"b\.jsonl:line 1: field 'answer' must be a string or an integer"):
        prepare("aime25", str(bad), str(tmp_path / "x.jsonl"))


def test_mmlu_integer_answers_become_letters(tmp_path):
    rows = [{"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1},
            {"question": "Capital of France?", "subject": "geography", "choices": ["Rome", "Oslo", "Paris", "Bern"],
             "answer": 2}]
    schema = pa.schema([("question", pa.string()), ("subject", pa.string()), ("choices", pa.list_(pa.string())),
                        ("answer", pa.int64())])
    src = write_parquet(tmp_path / "test-00000-of-00001.parquet", rows, schema)
    prepare("mmlu", str(src), str(tmp_path / "mmlu.jsonl"))
    got = load_mc(tmp_path / "mmlu.jsonl")
    assert [(q.id, q.choices, q.answer) for q in got] == [
        ("elementary_mathematics/0", ("3", "4", "5", "6"), 1), ("geography/1", ("Rome", "Oslo", "Paris", "Bern"), 2)]
    assert json.loads((tmp_path / "mmlu.jsonl").read_text().splitlines()[1])["answer"] == "C"
    bad = write_parquet(tmp_path / "bad.parquet", [{**rows[0], "answer": 4}], schema)
    with pytest.raises(ValueError, match=r"bad\.parquet:row 0: field 'answer' 4 is outside the 4 choices"):
        prepare("mmlu", str(bad), str(tmp_path / "x.jsonl"))


def test_generic_mapping_with_dotted_fields_and_limit(tmp_path):
    rows = [{"meta": {"uid": f"q{i}"}, "question": f"What is {i}+{i}?", "target": {"value": 2 * i},
             "worked": f"{i}+{i}={2 * i}"} for i in range(5)]
    src = write_jsonl(tmp_path / "any.jsonl", rows)
    out = tmp_path / "g.parquet"
    rc = main(["generic", "--input", str(src), "--output", str(out), "--id-field", "meta.uid", "--problem-field",
               "question", "--answer-field", "target.value", "--solution-field", "worked", "--limit", "3"])
    assert rc == 0
    got = load_problems(out, require_solution=True)
    assert [(p.id, p.answer, p.solution) for p in got] == [("q0", "0", "0+0=0"), ("q1", "2", "1+1=2"), ("q2", "4", "2+2=4")]
    assert main(["generic", "--input", str(src), "--output", str(out), "--problem-field", "question",
                 "--answer-field", "nope"]) == 2  # missing field: an error, not a skip


def test_dataset_name_offline_says_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline.*pass a local JSONL/Parquet file"):
        prepare("math500", "HuggingFaceH4/MATH-500", str(tmp_path / "m.jsonl"))
    with pytest.raises(ValueError, match="data file not found"):
        prepare("math500", str(tmp_path / "missing.jsonl"), str(tmp_path / "m.jsonl"))


def test_dataset_name_goes_through_datasets_with_each_sets_split(tmp_path, monkeypatch):
    import datasets
    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return [{"question": "2+2?", "subject": "math", "choices": ["3", "4"], "answer": 1}]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    prepare("mmlu", "cais/mmlu", str(tmp_path / "mmlu.jsonl"))
    assert calls == [("cais/mmlu", "all", "test")]
    assert [(q.id, q.answer) for q in load_mc(tmp_path / "mmlu.jsonl")] == [("math/0", 1)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"problem": "p", "answer": "1"}])
    with pytest.raises(ValueError, match=r"HuggingFaceH4/MATH-500\[test\]:row 0: missing required field 'unique_id'"):
        prepare("math500", "HuggingFaceH4/MATH-500", str(tmp_path / "m.jsonl"))
