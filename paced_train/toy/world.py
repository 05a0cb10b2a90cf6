"""The toy math world: procedurally generated integer-arithmetic problems with graded difficulty.

Every problem is a chain of ``+``, ``-``, ``*`` operations applied to a running value, written as
an ordinary expression with the fewest parentheses standard precedence needs, e.g.
``Compute (12+7)*3-5.``. Its expert solution walks the chain one operation per step and ends with
the answer in ``\\boxed{}``, exactly the shape the toy models are pretrained to write::

    12+7=19. 19*3=57. 57-5=52. \\boxed{52}

The gold ``answer`` is the string inside that ``\\boxed{}`` (a non-negative integer). Difficulty
1..5 sets the number of operations (= the difficulty) and how large the operands get, so errors
compound with length; it is recorded in each record. A multiple-choice set on a skill the toy
student already has (picking the largest of four numbers; the pretrained response is the chosen
number itself) measures forgetting.

Everything is deterministic from a seed (``random.Random`` seeded with strings, stable across
Python runs and platforms).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DIFFICULTIES",
    "LEVELS",
    "Level",
    "make_problem",
    "generate_problems",
    "generate_mc",
    "make_mc_question",
    "toy_splits",
    "write_jsonl",
    "write_toy_dataset",
]

MAX_VALUE = 999  # every intermediate value stays in [0, MAX_VALUE]
_MAX_MISSES = 500  # consecutive duplicates after which a level counts as exhausted


@dataclass(frozen=True)
class Level:
    """How one difficulty level draws its problems."""

    n_ops: int        # number of operations in the chain
    start_max: int    # the first operand is drawn from [1, start_max]
    add_max: int      # operands of + and - are drawn from [1, add_max]
    mul_max: int      # the operand of * is drawn from [2, mul_max]


LEVELS: dict[int, Level] = {
    1: Level(n_ops=1, start_max=9, add_max=9, mul_max=9),
    2: Level(n_ops=2, start_max=20, add_max=20, mul_max=9),
    3: Level(n_ops=3, start_max=50, add_max=50, mul_max=9),
    4: Level(n_ops=4, start_max=99, add_max=99, mul_max=9),
    5: Level(n_ops=5, start_max=99, add_max=99, mul_max=9),
}
DIFFICULTIES: tuple[int, ...] = tuple(sorted(LEVELS))


def _draw_op(rng: random.Random, value: int, level: Level) -> tuple[str, int]:
    """One (operator, operand) that keeps the running value inside [0, MAX_VALUE]."""
    while True:
        op = rng.choice("+-*")
        if op == "*":
            operand = rng.randint(2, level.mul_max)
            if value * operand <= MAX_VALUE and value > 1:
                return op, operand
        elif op == "+":
            operand = rng.randint(1, level.add_max)
            if value + operand <= MAX_VALUE:
                return op, operand
        else:
            operand = rng.randint(1, level.add_max)
            if operand <= value:
                return op, operand


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


def make_problem(rng: random.Random, difficulty: int) -> dict:
    """One problem record (without an id) of the given difficulty level."""
    if difficulty not in LEVELS:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    level = LEVELS[difficulty]
    value = rng.randint(1, level.start_max)
    expr, top_op = str(value), None  # top_op: the lowest-precedence operator at the top level
    steps = []
    for _ in range(level.n_ops):
        op, operand = _draw_op(rng, value, level)
        new_value = _apply(op, value, operand)
        steps.append(f"{value}{op}{operand}={new_value}.")
        if op == "*" and top_op in ("+", "-"):
            expr = f"({expr})"
        expr = f"{expr}{op}{operand}"
        top_op = op  # after a wrap, or on top of a product, the new top-level operator is op
        value = new_value
    answer = str(value)
    return {
        "problem": f"Compute {expr}.",
        "answer": answer,
        "solution": " ".join(steps) + f" \\boxed{{{answer}}}",
        "difficulty": difficulty,
    }


def generate_problems(rng: random.Random, n: int, difficulties=DIFFICULTIES,
                      exclude: set[str] | None = None, prefix: str = "toy") -> list[dict]:
    """``n`` distinct problems cycling through ``difficulties`` (shuffled per cycle).

    Problems whose text is in ``exclude`` are skipped; the texts of the returned problems are
    added to it, so successive calls sharing one set never overlap. A level that has run out of
    new problems (difficulty 1 has only 190 distinct ones) leaves the cycle and the other levels
    fill the rest; ValueError if every level runs out.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    difficulties = tuple(difficulties)
    if not difficulties:
        raise ValueError("difficulties must not be empty")
    for d in difficulties:
        if d not in LEVELS:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {d!r}")
    seen = exclude if exclude is not None else set()
    out: list[dict] = []
    order: list[int] = []
    misses = {d: 0 for d in difficulties}  # consecutive duplicates drawn per level
    live = set(difficulties)
    while len(out) < n:
        if not live:
            raise ValueError(f"could not draw {n} distinct problems from difficulties {difficulties}: "
                             f"every level ran out after {len(out)}")
        if not order:
            order = [d for d in difficulties if d in live]
            rng.shuffle(order)
        d = order.pop()
        rec = make_problem(rng, d)
        if rec["problem"] in seen:
            misses[d] += 1
            if misses[d] >= _MAX_MISSES:
                live.discard(d)
            else:
                order.append(d)  # retry this level
            continue
        misses[d] = 0
        seen.add(rec["problem"])
        out.append({"id": f"{prefix}-{len(out):05d}", **rec})
    return out


def make_mc_question(rng: random.Random) -> dict:
    """One multiple-choice record (without an id): pick the largest of four distinct numbers."""
    digits = rng.choice((1, 2, 2, 3))
    low, high = (1, 9) if digits == 1 else (10 ** (digits - 1), 10 ** digits - 1)
    numbers = rng.sample(range(low, high + 1), 4)
    choices = [str(x) for x in numbers]
    best = numbers.index(max(numbers))
    question = f"Which number is the largest: {choices[0]}, {choices[1]}, {choices[2]} or {choices[3]}?"
    return {"question": question, "choices": choices, "answer": "ABCD"[best]}


def generate_mc(rng: random.Random, n: int, exclude: set[str] | None = None,
                prefix: str = "toy-mc") -> list[dict]:
    """``n`` distinct multiple-choice records (see :func:`make_mc_question`)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seen = exclude if exclude is not None else set()
    out: list[dict] = []
    while len(out) < n:
        rec = make_mc_question(rng)
        if rec["question"] in seen:
            continue
        seen.add(rec["question"])
        out.append({"id": f"{prefix}-{len(out):05d}", **rec})
    return out


def toy_splits(seed: int = 0, n_train: int = 256, n_eval: int = 128, n_mc: int = 64) -> dict[str, list[dict]]:
    """The three splits as lists of records; train and eval never share a problem text."""
    for name, n in (("n_train", n_train), ("n_eval", n_eval), ("n_mc", n_mc)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    rng = random.Random(f"paced-toy-problems-{seed}")
    seen: set[str] = set()
    train = generate_problems(rng, n_train, exclude=seen, prefix="toy-train")
    eval_ = generate_problems(rng, n_eval, exclude=seen, prefix="toy-eval")
    mc = generate_mc(random.Random(f"paced-toy-mc-{seed}"), n_mc, prefix="toy-mc")
    return {"train": train, "eval": eval_, "mc": mc}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def write_toy_dataset(out_dir: Path, seed: int = 0, n_train: int = 256, n_eval: int = 128,
                      n_mc: int = 64) -> dict[str, Path]:
    """Write ``train.jsonl``, ``eval.jsonl`` and ``mc.jsonl`` under ``out_dir``.

    Problem records: ``{"id", "problem", "answer", "solution", "difficulty"}``;
    multiple-choice records: ``{"id", "question", "choices", "answer"}`` (answer is a letter).
    Returns ``{"train": path, "eval": path, "mc": path}``. Deterministic from ``seed``.
    """
    out_dir = Path(out_dir)
    splits = toy_splits(seed=seed, n_train=n_train, n_eval=n_eval, n_mc=n_mc)
    return {name: write_jsonl(out_dir / f"{name}.jsonl", recs) for name, recs in splits.items()}


if __name__ == "__main__":  # pragma: no cover - quick look at the world
    for rec in toy_splits(n_train=10, n_eval=0, n_mc=2)["train"]:
        print(rec)
