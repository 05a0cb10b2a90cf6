"""Data stage: problems and multiple-choice questions from JSONL or Parquet, and prompt building.

Formats (one record per line / row):
  problems: {"id": str|int, "problem": str, "answer": str|int, "solution": str (optional)}
  multiple choice: {"id": str|int, "question": str, "choices": [str, ...], "answer": "A"|"B"|...}

A malformed record raises a ValueError naming the file, the line (JSONL, 1-based) or row (Parquet,
0-based) and the field. Prompts are built with the tokenizer's chat template and tokenised without
adding special tokens again (the template already holds them), so the ids are exactly what the
model sees during rollouts and training.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

__all__ = [
    "Problem", "MCQuestion", "load_problems", "load_mc", "read_records", "write_jsonl", "read_jsonl",
    "build_prompt_text", "build_prompt_ids", "PromptBuilder", "choice_letter",
]


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    solution: Optional[str] = None


@dataclass(frozen=True)
class MCQuestion:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices


def choice_letter(i: int) -> str:
    return chr(ord("A") + i)


# ===================================================================== raw records
def read_records(path: Union[str, Path]) -> Iterator[tuple[str, dict]]:
    """Yield (location, record) from a .jsonl/.json-lines or .parquet file.

    ``location`` reads "file:line N" (JSONL) or "file:row N" (Parquet), for error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:line {lineno}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{where}: record must be a JSON object, got {type(rec).__name__}")
                yield where, rec
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot read Parquet file ({type(e).__name__}: {e})") from None
        for i, rec in enumerate(table.to_pylist()):
            yield f"{path}:row {i}", rec
    else:
        raise ValueError(f"{path}: unsupported data file type {suffix!r} (use .jsonl or .parquet)")


def _field(rec: dict, where: str, name: str, kinds: tuple, required: bool = True) -> Any:
    if name not in rec or rec[name] is None:
        if required:
            raise ValueError(f"{where}: missing required field '{name}'")
        return None
    v = rec[name]
    if isinstance(v, bool) or not isinstance(v, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{where}: field '{name}' must be {want}, got {type(v).__name__} {v!r:.60}")
    return v


def _text(rec: dict, where: str, name: str, required: bool = True, allow_int: bool = False) -> Optional[str]:
    v = _field(rec, where, name, (str, int) if allow_int else (str,), required)
    if v is None:
        return None
    v = str(v)
    if required and not v.strip():
        raise ValueError(f"{where}: field '{name}' is empty")
    return v


def load_problems(path: Union[str, Path], require_solution: bool = False,
                  limit: Optional[int] = None) -> list[Problem]:
    """Problems from JSONL/Parquet; checks every record and that ids are unique."""
    out: list[Problem] = []
    seen: dict[str, str] = {}
    for where, rec in read_records(path):
        pid = _text(rec, where, "id", allow_int=True)
        if pid in seen:
            raise ValueError(f"{where}: field 'id' duplicates id {pid!r} first seen at {seen[pid]}")
        seen[pid] = where
        problem = _text(rec, where, "problem")
        answer = _text(rec, where, "answer", allow_int=True)
        solution = _text(rec, where, "solution", required=require_solution)
        out.append(Problem(id=pid, problem=problem, answer=answer, solution=solution))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path}: no problems in the file")
    return out


def load_mc(path: Union[str, Path], limit: Optional[int] = None) -> list[MCQuestion]:
    """Multiple-choice questions; ``answer`` is a letter A, B, ... within the number of choices."""
    out: list[MCQuestion] = []
    seen: set[str] = set()
    for where, rec in read_records(path):
        qid = _text(rec, where, "id", allow_int=True)
        if qid in seen:
            raise ValueError(f"{where}: field 'id' duplicates id {qid!r}")
        seen.add(qid)
        question = _text(rec, where, "question")
        choices = _field(rec, where, "choices", (list, tuple))
        if len(choices) < 2:
            raise ValueError(f"{where}: field 'choices' needs at least 2 choices, got {len(choices)}")
        for j, c in enumerate(choices):
            if not isinstance(c, str) or not c:
                raise ValueError(f"{where}: field 'choices' item {j} must be a non-empty string, got {c!r}")
        letter = _text(rec, where, "answer").strip().upper()
        if len(letter) != 1 or not ("A" <= letter < choice_letter(len(choices))):
            raise ValueError(f"{where}: field 'answer' must be a letter A..{choice_letter(len(choices) - 1)}"
                             f" (one per choice), got {rec['answer']!r}")
        out.append(MCQuestion(id=qid, question=question, choices=tuple(choices),
                              answer=ord(letter) - ord("A")))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path}: no questions in the file")
    return out


# ===================================================================== JSONL helpers for stage outputs
def write_jsonl(path: Path, records) -> None:
    """Write records atomically (tmp file + rename), so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ===================================================================== prompts
def build_prompt_text(tokenizer, user_text: str, use_chat_template: bool = True,
                      system_prompt: Optional[str] = None, chat_template_kwargs: Optional[dict] = None) -> str:
    """The prompt string: the chat template with a generation prompt, or the raw text."""
    if not use_chat_template:
        return user_text if system_prompt is None else f"{system_prompt}\n{user_text}"
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat_template; set data.use_chat_template=false to use "
                         "raw problem text as the prompt")
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_text})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                         **(chat_template_kwargs or {}))


def build_prompt_ids(tokenizer, user_text: str, **kwargs) -> list[int]:
    """Prompt token ids; a chat template already holds its special tokens, raw text gets the
    tokenizer's usual ones (e.g. BOS)."""
    text = build_prompt_text(tokenizer, user_text, **kwargs)
    chat = kwargs.get("use_chat_template", True)
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


class PromptBuilder:
    """Builds student / teacher prompt ids from the data config (templates, system prompt)."""

    def __init__(self, tokenizer, data_cfg, teacher_template: str = "{problem}",
                 on_missing_solution: str = "error"):
        self.tok = tokenizer
        self.cfg = data_cfg
        self.teacher_template = teacher_template
        self.on_missing_solution = on_missing_solution

    def _ids(self, text: str) -> list[int]:
        return build_prompt_ids(self.tok, text, use_chat_template=self.cfg.use_chat_template,
                                system_prompt=self.cfg.system_prompt,
                                chat_template_kwargs=self.cfg.chat_template_kwargs)

    def student(self, p: Problem) -> list[int]:
        return self._ids(p.problem)

    def teacher_text(self, p: Problem) -> str:
        if p.solution is None and "{solution}" in self.teacher_template:
            if self.on_missing_solution == "error":
                raise ValueError(f"problem {p.id!r} has no 'solution' field but the teacher prompt template "
                                 f"uses {{solution}}; add expert solutions (python -m paced_train.expert, or an "
                                 f"expert: config section) or set "
                                 f"reference.on_missing_solution=problem_only")
            return p.problem
        return self.teacher_template.format(problem=p.problem, solution=p.solution or "")

    def teacher(self, p: Problem) -> list[int]:
        return self._ids(self.teacher_text(p))

    def text(self, user_text: str) -> list[int]:
        return self._ids(user_text)
