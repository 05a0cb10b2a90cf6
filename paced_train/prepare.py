"""``python -m paced_train.prepare NAME --input PATH_OR_DATASET --output OUT.jsonl``: published data
sets -> our flat schema (``paced_train.data``).

NAME is one of ``dapo`` (DAPO-Math-17k), ``math500`` (MATH-500), ``aime24``, ``aime25``, ``mmlu``, or
``generic`` with ``--id-field/--problem-field/--answer-field/--solution-field`` (dotted paths such as
``reward_model.ground_truth`` reach into nested records). ``--input`` is a local JSONL/Parquet file in
the data set's published schema, or a Hugging Face dataset name (``BytedTsinghua-SIA/DAPO-Math-17k``)
loaded with ``datasets`` when the machine is online.

Why each converter exists:
  * dapo: records are ``prompt=[{content, role}]``, ``reward_model.ground_truth``, ``extra_info.index``;
    the published file repeats its ~17k prompts about 100 times (deduplicated by problem text, the
    count is reported) and wraps every problem in an "Answer: $Answer" instruction that would fight
    the teacher template's ``\\boxed{}`` one (stripped).
  * math500: ``unique_id`` is the id. aime24 / aime25: integer answers become strings (``ID``/``Problem``/
    ``Answer`` and ``id``/``problem``/``answer`` spellings both read). mmlu: integer ``answer`` -> letter.

A bad record raises ValueError naming the file, the row and the field; nothing is skipped silently.
The written file is loaded back with ``load_problems`` / ``load_mc`` before the command reports success.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .data import load_mc, load_problems, read_records, write_jsonl

__all__ = ["DATASETS", "PrepareReport", "prepare", "iter_input", "strip_dapo_instructions", "main"]

# the instruction DAPO-Math-17k wraps around every problem (prefix ... problem ... suffix)
_DAPO_PREFIX = re.compile(
    r"^\s*Solve the following math problem step by step\.\s*The last line of your response should be of "
    r"the form Answer: \$Answer \(without quotes\) where \$Answer is the answer to the problem\.\s*")
_DAPO_SUFFIX = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")


def strip_dapo_instructions(text: str) -> tuple[str, bool]:
    """DAPO's problem text without its "Answer: $Answer" instructions; (text, whether any was found)."""
    out = _DAPO_PREFIX.sub("", text, count=1)
    out = _DAPO_SUFFIX.sub("", out, count=1)
    return out.strip(), out != text


@dataclass
class PrepareReport:
    name: str
    input: str
    output: str
    n_read: int = 0
    n_written: int = 0
    duplicates_dropped: int = 0
    conflicting_answers: int = 0      # duplicates whose gold differs from the first copy's (first kept)
    instructions_stripped: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{self.name}: {self.n_read} records read from {self.input}, {self.n_written} written to "
                 f"{self.output}"]
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped} duplicates dropped (same problem text)")
        if self.conflicting_answers:
            parts.append(f"{self.conflicting_answers} of them with a different answer (first kept)")
        if self.instructions_stripped:
            parts.append(f"answer-format instructions stripped from {self.instructions_stripped}")
        return "; ".join(parts + self.notes)


# ===================================================================== record access
def _get(rec: dict, where: str, path: str, required: bool = True) -> Any:
    """``rec[a][b]`` for ``path = "a.b"``; missing -> ValueError naming the field (or None)."""
    node: Any = rec
    for i, part in enumerate(path.split(".")):
        if not isinstance(node, dict) or node.get(part) is None:
            if not required:
                return None
            sofar = ".".join(path.split(".")[:i + 1])
            raise ValueError(f"{where}: missing required field '{sofar}'")
        node = node[part]
    return node


def _first(rec: dict, where: str, names: tuple[str, ...], required: bool = True) -> Any:
    """The first present field of ``names`` (published spellings differ between uploads)."""
    for n in names:
        v = _get(rec, where, n, required=False)
        if v is not None:
            return v
    if required:
        raise ValueError(f"{where}: missing required field '{names[0]}' (also looked for "
                         f"{', '.join(repr(n) for n in names[1:]) or 'nothing else'})")
    return None


def _as_text(v: Any, where: str, name: str, allow_int: bool = True) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int) if allow_int else (str,)):
        want = "a string or an integer" if allow_int else "a string"
        raise ValueError(f"{where}: field '{name}' must be {want}, got {type(v).__name__} {v!r:.60}")
    s = str(v).strip()
    if not s:
        raise ValueError(f"{where}: field '{name}' is empty")
    return s


def _integer_answer(v: Any, where: str, name: str) -> str:
    """AIME answers: an integer (or a float holding one, as pandas writes them) -> its decimal string."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return _as_text(v, where, name)


# ===================================================================== converters: record -> our record
def _dapo(rec: dict, where: str, report: PrepareReport, row: int) -> dict:
    prompt = _get(rec, where, "prompt")
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError(f"{where}: field 'prompt' has no message with role 'user'")
        text = users[-1].get("content")
        if not isinstance(text, str):
            raise ValueError(f"{where}: field 'prompt' user message has no string 'content'")
    else:
        raise ValueError(f"{where}: field 'prompt' must be a list of {{content, role}} messages, got "
                         f"{type(prompt).__name__}")
    problem, stripped = strip_dapo_instructions(text)
    report.instructions_stripped += stripped
    if not problem:
        raise ValueError(f"{where}: field 'prompt' holds no problem text once the answer-format "
                         f"instructions are stripped")
    return {"id": _as_text(_get(rec, where, "extra_info.index"), where, "extra_info.index"),
            "problem": problem,
            "answer": _as_text(_get(rec, where, "reward_model.ground_truth"), where, "reward_model.ground_truth")}


def _math500(rec: dict, where: str, report: PrepareReport, row: int) -> dict:
    out = {"id": _as_text(_get(rec, where, "unique_id"), where, "unique_id"),
           "problem": _as_text(_get(rec, where, "problem"), where, "problem", allow_int=False),
           "answer": _as_text(_get(rec, where, "answer"), where, "answer")}
    sol = _get(rec, where, "solution", required=False)
    if sol is not None:
        out["solution"] = _as_text(sol, where, "solution", allow_int=False)
    return out


def _aime(rec: dict, where: str, report: PrepareReport, row: int) -> dict:
    out = {"id": _as_text(_first(rec, where, ("id", "ID")), where, "id"),
           "problem": _as_text(_first(rec, where, ("problem", "Problem", "question")), where, "problem",
                               allow_int=False),
           "answer": _integer_answer(_first(rec, where, ("answer", "Answer")), where, "answer")}
    sol = _first(rec, where, ("solution", "Solution"), required=False)
    if sol is not None:
        out["solution"] = _as_text(sol, where, "solution", allow_int=False)
    return out


def _mmlu(rec: dict, where: str, report: PrepareReport, row: int) -> dict:
    choices = _get(rec, where, "choices")
    if not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise ValueError(f"{where}: field 'choices' must be a list of at least 2 strings, got {choices!r:.80}")
    choices = [_as_text(c, where, f"choices[{j}]") for j, c in enumerate(choices)]
    ans = _get(rec, where, "answer")
    if isinstance(ans, str) and len(ans.strip()) == 1 and ans.strip().upper().isalpha():
        idx = ord(ans.strip().upper()) - ord("A")
    elif isinstance(ans, int) and not isinstance(ans, bool):
        idx = ans
    else:
        raise ValueError(f"{where}: field 'answer' must be a choice index (0-based integer) or a letter, "
                         f"got {ans!r}")
    if not 0 <= idx < len(choices):
        raise ValueError(f"{where}: field 'answer' {ans!r} is outside the {len(choices)} choices")
    subject = rec.get("subject")
    qid = f"{subject}/{row}" if isinstance(subject, str) and subject else str(row)
    return {"id": qid, "question": _as_text(_get(rec, where, "question"), where, "question", allow_int=False),
            "choices": choices, "answer": chr(ord("A") + idx)}


@dataclass(frozen=True)
class DatasetSpec:
    convert: Callable
    kind: str                      # "problems" or "mc"
    hf_name: str                   # the published data set, for --input's default and the docs
    split: str                     # its split for the paper's use
    subset: Optional[str] = None   # Hugging Face config name
    dedup: bool = False


DATASETS: dict[str, DatasetSpec] = {
    "dapo": DatasetSpec(_dapo, "problems", "BytedTsinghua-SIA/DAPO-Math-17k", "train", dedup=True),
    "math500": DatasetSpec(_math500, "problems", "HuggingFaceH4/MATH-500", "test"),
    "aime24": DatasetSpec(_aime, "problems", "Maxwell-Jia/AIME_2024", "train"),
    "aime25": DatasetSpec(_aime, "problems", "yentinglin/aime_2025", "train"),
    "mmlu": DatasetSpec(_mmlu, "mc", "cais/mmlu", "test", subset="all"),
}


def _generic(fields: dict[str, Optional[str]]) -> Callable:
    """A converter reading the named (dotted) fields; no id field -> the 0-based row number."""
    def convert(rec: dict, where: str, report: PrepareReport, row: int) -> dict:
        out = {"id": _as_text(_get(rec, where, fields["id"]), where, fields["id"]) if fields["id"] else str(row),
               "problem": _as_text(_get(rec, where, fields["problem"]), where, fields["problem"], allow_int=False),
               "answer": _as_text(_get(rec, where, fields["answer"]), where, fields["answer"])}
        if fields["solution"]:
            out["solution"] = _as_text(_get(rec, where, fields["solution"]), where, fields["solution"],
                                       allow_int=False)
        return out
    return convert


# ===================================================================== input
def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def iter_input(source: str, split: str, subset: Optional[str] = None) -> Iterator[tuple[str, dict]]:
    """(location, record) from a local JSONL/Parquet file or a Hugging Face dataset name."""
    path = Path(source)
    if path.is_dir():
        raise ValueError(f"--input {source!r} is a directory: pass one JSONL/Parquet file of it (e.g. "
                         f"the split's data/train-00000-of-00001.parquet)")
    if path.is_file() and path.suffix.lower() in (".parquet", ".pq"):
        yield from _parquet_records(path)
        return
    if path.exists() or path.suffix.lower() in (".jsonl", ".json", ".ndjson", ".parquet", ".pq"):
        yield from read_records(path)  # a missing local file: "data file not found: ..."
        return
    if _offline():
        raise ValueError(f"--input {source!r} is not a local file and the machine is offline (HF_HUB_OFFLINE / "
                         f"HF_DATASETS_OFFLINE set): pass a local JSONL/Parquet file in the published schema")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"--input {source!r} is not a local file and the 'datasets' package is not installed "
                         f"(pip install 'paced[data]'), or pass a local JSONL/Parquet file") from None
    try:
        ds = datasets.load_dataset(source, subset, split=split) if subset else \
            datasets.load_dataset(source, split=split)
    except Exception as e:  # noqa: BLE001 - network, unknown name, unknown split: one clear message
        raise ValueError(f"cannot load dataset {source!r} (split {split!r}) from the Hugging Face Hub "
                         f"({type(e).__name__}: {str(e)[:300]}); if the machine is offline, pass a local "
                         f"JSONL/Parquet file with --input") from None
    for i, rec in enumerate(ds):
        yield f"{source}[{split}]:row {i}", dict(rec)


def _parquet_records(path: Path, batch_rows: int = 8192) -> Iterator[tuple[str, dict]]:
    """Rows of a Parquet file a batch at a time (the published DAPO file has ~1.8M rows; reading it
    whole into Python dicts would take gigabytes). Locations as in ``data.read_records``."""
    import pyarrow.parquet as pq
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read Parquet file ({type(e).__name__}: {e})") from None
    i = 0
    for batch in f.iter_batches(batch_size=batch_rows):
        for rec in batch.to_pylist():
            yield f"{path}:row {i}", rec
            i += 1


# ===================================================================== the command
def prepare(name: str, source: str, output: str, split: Optional[str] = None, subset: Optional[str] = None,
            limit: Optional[int] = None, fields: Optional[dict] = None) -> PrepareReport:
    """Convert ``source`` (data set ``name``) into ``output``; returns the report. See the module doc."""
    if name == "generic":
        if not fields or not fields.get("problem") or not fields.get("answer"):
            raise ValueError("generic needs --problem-field and --answer-field (and optionally --id-field, "
                             "--solution-field)")
        spec = DatasetSpec(_generic(fields), "problems", "", split or "train", subset)
    elif name in DATASETS:
        spec = DATASETS[name]
    else:
        raise ValueError(f"unknown data set {name!r}: use one of {', '.join(DATASETS)} or generic")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    out_path = Path(output)
    if out_path.suffix.lower() not in (".jsonl", ".parquet"):
        raise ValueError(f"--output {output!r}: write a .jsonl (or .parquet) file")
    report = PrepareReport(name, source, output)
    seen_text: dict[str, str] = {}  # problem text -> answer of the first copy
    seen_id: dict[str, str] = {}    # id -> location of the first record
    records: list[dict] = []
    for row, (where, rec) in enumerate(iter_input(source, split or spec.split, subset or spec.subset)):
        report.n_read += 1
        out = spec.convert(rec, where, report, row)
        key = out.get("problem", out.get("question"))
        if spec.dedup and key in seen_text:
            report.duplicates_dropped += 1
            report.conflicting_answers += seen_text[key] != out["answer"]
            continue
        if out["id"] in seen_id:
            raise ValueError(f"{where}: field 'id' duplicates id {out['id']!r} first seen at {seen_id[out['id']]}"
                             + (" (with a different problem text)" if spec.dedup else ""))
        seen_id[out["id"]] = where
        seen_text[key] = out["answer"]
        records.append(out)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise ValueError(f"{source}: no records")
    _write(out_path, records)
    loaded = load_mc(out_path) if spec.kind == "mc" else load_problems(out_path)  # the output must load
    report.n_written = len(loaded)
    return report


def _write(path: Path, records: list[dict]) -> None:
    if path.suffix.lower() == ".jsonl":
        write_jsonl(path, records)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(records), tmp)
    tmp.replace(path)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m paced_train.prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=[*DATASETS, "generic"], help="which published data set")
    p.add_argument("--input", required=True,
                   help="local JSONL/Parquet file in the published schema, or a Hugging Face dataset name "
                        f"({', '.join(f'{k}: {v.hf_name}' for k, v in DATASETS.items())})")
    p.add_argument("--output", required=True, help="our-schema file to write (.jsonl, or .parquet)")
    p.add_argument("--split", default=None, help="Hugging Face split (default per data set: "
                   + ", ".join(f"{k}={v.split}" for k, v in DATASETS.items()) + ")")
    p.add_argument("--subset", default=None, help="Hugging Face config name (mmlu default: all)")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N (unique) records")
    for f in ("id", "problem", "answer", "solution"):
        p.add_argument(f"--{f}-field", default=None, help=f"generic: the field holding the {f} (dotted path)")
    args = p.parse_args(argv)
    fields = {"id": args.id_field, "problem": args.problem_field, "answer": args.answer_field,
              "solution": args.solution_field}
    if args.name != "generic" and any(fields.values()):
        print("error: --id-field/--problem-field/--answer-field/--solution-field are for 'generic' only",
              file=sys.stderr)
        return 2
    try:
        report = prepare(args.name, args.input, args.output, split=args.split, subset=args.subset,
                         limit=args.limit, fields=fields)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.line(), flush=True)
    print(json.dumps({k: v for k, v in report.__dict__.items() if k != "notes"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
