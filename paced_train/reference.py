"""Reference-response stage: the frozen teacher writes a solution with privileged context.

The teacher's prompt is ``reference.teacher_prompt_template.format(problem=..., solution=...)``
(problem + expert solution) through the chat template; the student's prompt is the problem alone.
Both models later score the *same* response tokens (the teacher's sampled ids, cut after EOS),
so the positions align: the hidden state at ``len(prompt) - 1 + t`` of either model predicts
response token ``t``.

Output: ``reference.parquet`` (id, student_prompt_ids, teacher_prompt_ids, response_ids, text,
finished, correct) and ``summary.json`` (written last; marks the stage done).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .logging_utils import is_main_process
from .parallel import barrier, decided_by_rank0
from .rollout import SamplingSpec

__all__ = ["ReferenceResponse", "run_reference_stage", "load_reference"]


@dataclass
class ReferenceResponse:
    id: str
    student_prompt_ids: list[int]
    teacher_prompt_ids: list[int]
    response_ids: list[int]
    text: str
    finished: bool
    correct: Optional[bool]


def load_reference(out_dir: Path) -> list[ReferenceResponse]:
    import pyarrow.parquet as pq
    rows = pq.read_table(Path(out_dir) / "reference.parquet").to_pylist()
    return [ReferenceResponse(r["id"], list(r["student_prompt_ids"]), list(r["teacher_prompt_ids"]),
                              list(r["response_ids"]), r["text"], bool(r["finished"]), r["correct"])
            for r in rows]


def run_reference_stage(out_dir: Path, problems, builder, engine_factory: Callable, spec: SamplingSpec,
                        max_teacher_prompt_tokens: int, verify: Optional[Callable], logger,
                        keep_only_correct: bool = False) -> list[ReferenceResponse]:
    """Generate (or reload) one teacher reference response per problem.

    ``problems`` are data.Problem; ``builder`` a data.PromptBuilder carrying the teacher template.
    Problems whose teacher prompt exceeds ``max_teacher_prompt_tokens`` are dropped (logged).
    """
    out_dir = Path(out_dir)
    if decided_by_rank0(lambda: (out_dir / "summary.json").exists(), "reference"):
        refs = load_reference(out_dir)
        logger.info(f"reference responses: reusing {out_dir} ({len(refs)} responses)")
        return refs
    kept, s_prompts, t_prompts, too_long = [], [], [], 0
    for p in problems:
        t_ids = builder.teacher(p)
        if len(t_ids) > max_teacher_prompt_tokens:
            too_long += 1
            continue
        kept.append(p)
        s_prompts.append(builder.student(p))
        t_prompts.append(t_ids)
    if too_long:
        logger.warning(f"reference responses: {too_long} problems dropped, teacher prompt longer than "
                       f"data.max_teacher_prompt_tokens={max_teacher_prompt_tokens}")
    if not kept:
        raise ValueError("reference responses: every teacher prompt is longer than data.max_teacher_prompt_tokens")
    engine = engine_factory()
    try:
        gens = engine.generate(t_prompts, SamplingSpec(**{**spec.__dict__, "n": 1}), desc="reference responses")
    finally:
        engine.close()
    gens = [g[0] for g in gens]
    verdicts: list[Optional[bool]] = [None] * len(gens)
    if verify is not None:
        verdicts = [bool(v) for v in verify([p.answer for p in kept], [g.text for g in gens])]
    refs = [ReferenceResponse(p.id, s, t, g.token_ids, g.text, g.finished, v)
            for p, s, t, g, v in zip(kept, s_prompts, t_prompts, gens, verdicts)]
    n_correct = sum(1 for r in refs if r.correct)
    n_unfinished = sum(1 for r in refs if not r.finished)
    dropped_wrong = 0
    if keep_only_correct and verify is not None:
        dropped_wrong = sum(1 for r in refs if not r.correct)
        refs = [r for r in refs if r.correct]
    summary = {"n": len(refs), "n_generated": len(gens), "teacher_accuracy": n_correct / max(len(gens), 1)
               if verify is not None else None, "n_unfinished": n_unfinished,
               "dropped_too_long_prompt": too_long, "dropped_wrong": dropped_wrong,
               "mean_response_tokens": sum(len(r.response_ids) for r in refs) / max(len(refs), 1)}
    if is_main_process():
        import pyarrow as pa
        import pyarrow.parquet as pq
        out_dir.mkdir(parents=True, exist_ok=True)
        ints = pa.list_(pa.int32())
        table = pa.table({
            "id": [r.id for r in refs],
            "student_prompt_ids": pa.array([r.student_prompt_ids for r in refs], type=ints),
            "teacher_prompt_ids": pa.array([r.teacher_prompt_ids for r in refs], type=ints),
            "response_ids": pa.array([r.response_ids for r in refs], type=ints),
            "text": [r.text for r in refs], "finished": [r.finished for r in refs],
            "correct": pa.array([r.correct for r in refs], type=pa.bool_())})
        tmp = out_dir / "reference.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(out_dir / "reference.parquet")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    barrier()
    acc = f", teacher accuracy {100 * summary['teacher_accuracy']:.1f}%" if verify is not None else ""
    logger.info(f"reference responses: {len(refs)} written{acc}, {n_unfinished} hit the length limit, "
                f"mean {summary['mean_response_tokens']:.0f} tokens")
    logger.log({k: v for k, v in summary.items() if v is not None}, step=0, stage="reference")
    return refs
