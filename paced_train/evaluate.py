"""Evaluation: plasticity (mean@k on math eval sets) and stability (multiple-choice forgetting).

* mean@k: k samples per problem (temperature / top-p from ``eval``), each verified against the
  gold answer; accuracy = mean over problems of (correct / k), reported in percent.
* Multiple choice: the model's answer is the choice with the highest likelihood, the sum of
  log-probabilities of the choice's tokens (``eval.mc_choice_template``, plus EOS if
  ``eval.mc_append_eos``) after the chat-templated question (``eval.mc_prompt_template``).
  Accuracy in percent. Logits are computed only at the choice positions (``logits_to_keep``),
  never over the whole sequence.

``run_eval`` evaluates one checkpoint (``label``: "base", "after_0_fkl", ...) and writes
``eval/<label>.json`` (skipped on re-run when it exists); ``results_table`` prints and saves the
before/after table of a run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .data import MCQuestion, choice_letter
from .logging_utils import get_rank, get_world_size, is_main_process, progress
from .rollout import SamplingSpec, sample_rollouts

__all__ = ["mean_at_k", "mc_choice_logprobs", "mc_accuracy", "run_eval", "results_table",
           "model_is_sharded"]


def model_is_sharded(model) -> bool:
    """True when parameters are FSDP2 DTensors: every rank must then run the same forwards."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def mean_at_k(engine, prompts: Sequence[Sequence[int]], golds: Sequence[str], verify: Callable,
              spec: SamplingSpec, desc: str = "eval") -> dict:
    """mean@k accuracy (percent) plus per-problem correct counts."""
    rolls = sample_rollouts(engine, prompts, golds, verify, spec, desc=desc)
    per = [r.pass_rate for r in rolls]
    return {"mean_at_k": 100.0 * float(np.mean(per)), "k": spec.n, "n": len(per),
            "n_correct": [r.n_correct for r in rolls],
            "truncated_share": float(np.mean([not g.finished for r in rolls for g in r.generations]))}


def _mc_items(questions: Sequence[MCQuestion], builder, tokenizer, cfg) -> list[tuple[int, list[int], list[int]]]:
    """(question index, prompt ids, continuation ids) for every (question, choice) pair."""
    from .data import build_prompt_ids
    eos = tokenizer.eos_token_id
    d = builder.cfg  # the data section; eval.mc_use_chat_template / mc_chat_template_kwargs override it
    use_chat = getattr(cfg, "mc_use_chat_template", None)
    kwargs = getattr(cfg, "mc_chat_template_kwargs", None)
    chat = dict(use_chat_template=d.use_chat_template if use_chat is None else use_chat,
                system_prompt=d.system_prompt,
                chat_template_kwargs=d.chat_template_kwargs if kwargs is None else kwargs)
    items = []
    for qi, q in enumerate(questions):
        listing = "\n".join(f"{choice_letter(j)}. {c}" for j, c in enumerate(q.choices))
        prompt = build_prompt_ids(tokenizer, cfg.mc_prompt_template.format(question=q.question, choices=listing),
                                  **chat)
        for j, c in enumerate(q.choices):
            cont = tokenizer(cfg.mc_choice_template.format(choice=c, letter=choice_letter(j)),
                             add_special_tokens=False)["input_ids"]
            cont = list(cont) + ([eos] if cfg.mc_append_eos and eos is not None else [])
            if not cont:
                raise ValueError(f"multiple-choice question {q.id!r}: choice {j} tokenises to nothing")
            items.append((qi, prompt, cont))
    return items


@torch.no_grad()
def mc_choice_logprobs(model, items: Sequence[tuple[int, list[int], list[int]]], batch_size: int = 16,
                       pad_id: int = 0, show_progress: bool = True) -> list[float]:
    """Sum log p(continuation | prompt) for each (qi, prompt, continuation) item.

    Left-padded batches with explicit position ids; logits only at the continuation positions.
    Under torch.distributed the items are sharded over ranks (unless the model is FSDP-sharded,
    in which case every rank runs every batch so the collectives match).
    """
    sharded_model = model_is_sharded(model)
    rank, world = (0, 1) if sharded_model else (get_rank(), get_world_size())
    mine = list(range(rank, len(items), world))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[int, float] = {}
    batches = [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]
    for batch in progress(batches, desc="multiple choice", enabled=show_progress, unit="batch"):
        seqs = [items[i][1] + items[i][2] for i in batch]
        conts = [items[i][2] for i in batch]
        width = max(len(s) for s in seqs)
        keep = max(len(c) for c in conts) + 1
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                       logits_to_keep=keep, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, -keep:, :], dim=-1)  # position width-keep+j predicts j+1
        for r, (i, c) in enumerate(zip(batch, conts)):
            L = len(c)
            rows = torch.arange(keep - 1 - L, keep - 1, device=logp.device)
            toks = torch.tensor(c, device=logp.device)
            out[i] = float(logp[r, rows, toks].double().sum())
    if was_training:
        model.train()
    if world > 1:
        import torch.distributed as dist
        parts: list = [None] * world
        dist.all_gather_object(parts, out)
        for p in parts:
            out.update(p)
    return [out[i] for i in range(len(items))]


def mc_accuracy(model, tokenizer, questions: Sequence[MCQuestion], builder, cfg,
                show_progress: bool = True) -> dict:
    """Accuracy (percent) of highest-likelihood choices, with per-question predictions."""
    items = _mc_items(questions, builder, tokenizer, cfg)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = mc_choice_logprobs(model, items, batch_size=cfg.mc_batch_size, pad_id=int(pad or 0),
                                show_progress=show_progress)
    per_q: dict[int, list[float]] = {}
    for (qi, _, _), s in zip(items, scores):
        per_q.setdefault(qi, []).append(s)
    preds = [int(np.argmax(per_q[qi])) for qi in range(len(questions))]
    correct = [p == q.answer for p, q in zip(preds, questions)]
    return {"accuracy": 100.0 * float(np.mean(correct)), "n": len(questions), "predictions": preds}


def run_eval(out_path: Path, label: str, *, engine_factory: Optional[Callable], eval_sets: dict,
             verify: Optional[Callable], spec: SamplingSpec, model, tokenizer, builder,
             mc_questions: Optional[Sequence[MCQuestion]], cfg, logger, step: int = 0) -> dict:
    """Evaluate one checkpoint; ``eval_sets`` maps name -> (prompts, golds). Cached in ``out_path``."""
    out_path = Path(out_path)
    from .parallel import decided_by_rank0
    cached = decided_by_rank0(lambda: json.loads(out_path.read_text()) if out_path.exists() else None, "eval")
    if cached is not None:
        logger.info(f"eval {label}: reusing {out_path}")
        return cached
    result: dict = {"label": label, "sets": {}, "mc": None}
    if eval_sets:
        engine = engine_factory()
        try:
            for name, (prompts, golds) in eval_sets.items():
                r = mean_at_k(engine, prompts, golds, verify, spec, desc=f"eval {label} {name}")
                result["sets"][name] = r
        finally:
            engine.close()
    if mc_questions:
        # ``model`` may be a callable returning it: asked for only now, after the generation engine
        # has closed (a vLLM phase has the devices while it runs; the model is reloaded onto them)
        if callable(model) and not isinstance(model, torch.nn.Module):
            model = model()
        result["mc"] = mc_accuracy(model, tokenizer, mc_questions, builder, cfg,
                                   show_progress=logger.progress_bars)
    if is_main_process():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out_path)
    metrics = {f"{n}_mean_at_{r['k']}": r["mean_at_k"] for n, r in result["sets"].items()}
    if result["mc"] is not None:
        metrics["mc_accuracy"] = result["mc"]["accuracy"]
    logger.log(metrics, step=step, stage=f"eval_{label}")
    summary = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())
    logger.info(f"eval {label}: {summary}")
    return result


def results_table(results: Sequence[dict], logger, out_dir: Optional[Path] = None) -> dict:
    """Before/after table: one row per checkpoint, mean@k per eval set, MC accuracy and its drop."""
    if not results:
        return {}
    names = list(results[0]["sets"].keys())
    k = next((r["k"] for r in results[0]["sets"].values()), None)
    has_mc = results[0].get("mc") is not None
    columns = ["checkpoint"] + [f"{n} mean@{k}" for n in names]
    if has_mc:
        columns += ["MC acc", "MC drop"]
    base_mc = results[0]["mc"]["accuracy"] if has_mc else None
    rows, table = [], []
    for r in results:
        row = [r["label"]] + [f"{r['sets'][n]['mean_at_k']:.1f}" if n in r["sets"] else "-" for n in names]
        rec = {"label": r["label"], **{n: r["sets"][n]["mean_at_k"] for n in names if n in r["sets"]}}
        if has_mc and r.get("mc") is not None:
            acc = r["mc"]["accuracy"]
            row += [f"{acc:.1f}", f"{base_mc - acc:+.1f}"]
            rec.update(mc_accuracy=acc, mc_drop=base_mc - acc)
        rows.append(row)
        table.append(rec)
    text = logger.table("evaluation (percent; MC drop = base - now, positive = forgetting)", columns, rows)
    out = {"columns": columns, "rows": table}
    if out_dir is not None and is_main_process():
        (Path(out_dir) / "results.json").write_text(json.dumps(out, indent=2))
        (Path(out_dir) / "results.txt").write_text(text)
    return out
