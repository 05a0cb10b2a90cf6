"""Pretrain the toy teacher and student (tiny Qwen3 models) and measure their starting pass rates.

    python -m paced_train.toy.pretrain [--out DIR] [--seed N] [--threads T]

Writes ``DIR/{tokenizer,student,teacher}`` (Hugging Face folders, safetensors; each model folder
also holds the tokenizer) and ``DIR/pretrain_report.json``. The default ``DIR`` is the shipped
``paced_train/toy/assets``. Deterministic from ``--seed`` on one machine with a fixed thread count.

Both models train with plain PyTorch AdamW on a pretraining stream of toy problems drawn from its
own seeded generator (none of the train/eval problem texts of the dataset with the same seed), in
exactly the chat format the trainer uses: prompt = chat template(user: problem) with the
generation prompt, target = solution + EOS (loss on the target tokens only). A tenth of the
examples are the multiple-choice skill (question -> the largest number), so the forgetting set
measures something the student knows. The teacher is larger, trains longer, and also trains (half
of its arithmetic examples) on the privileged format, user content
``"{problem}\\nReference solution: {solution}"`` (the trainer's default
``teacher_prompt_template``), so with the expert solution in context it is stronger still. The
student's budget (size, steps) was chosen once so that its pass rates on the training split
spread over [0, 1]; the world was not tuned to any downstream result.

Models: student Qwen3 hidden 64 x 2 layers (MLP 192, 4 heads / 2 KV heads, untied lm_head),
111,872 parameters, 2,500 AdamW steps of 32 examples (lr 3e-3, uniform over difficulties 1-5);
teacher hidden 128 x 4 layers (MLP 384), 814,208 parameters, 4,000 steps of 32 (lr 3e-3, mix
tilted to difficulties 3-5, 20% privileged). Vocabulary 103 (characters + specials), fp32
safetensors: student 0.45 MB, teacher 3.3 MB.

Measured with the default settings (seed 0, one thread; K = 8 samples at temperature 1.0,
top-k/top-p off, on the 256 problems of the default training split, scored by
``paced_kernels.scoring.verify``; see ``assets/pretrain_report.json``)::

                               p = 0    0 < p < 1   p = 1    mean p   by difficulty 1..5
    student                    41.8%    50.8%        7.4%    0.254    .65 .36 .18 .05 .04
    teacher                     5.9%    50.8%       43.4%    0.698    .99 .83 .68 .53 .46
    teacher + expert solution   0.0%     7.8%       92.2%    0.979    1.0 .98 1.0 .93 .99

Time on the shared 2-core development machine (other jobs running): student 187 s, teacher
1,386 s, measurement 54 s, 27 minutes in all (a quiet machine is faster). The student part was
re-run and reproduced bitwise.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedModel, Qwen3Config, Qwen3ForCausalLM

from .tokenizer import build_tokenizer
from .world import DIFFICULTIES, make_mc_question, make_problem, toy_splits

__all__ = [
    "TEACHER_PROMPT_TEMPLATE",
    "ModelSpec",
    "TrainBudget",
    "STUDENT_SPEC",
    "TEACHER_SPEC",
    "STUDENT_BUDGET",
    "TEACHER_BUDGET",
    "build_model",
    "extract_boxed",
    "is_correct",
    "generate_response_ids",
    "sample_responses",
    "pass_rates",
    "summarize_pass_rates",
    "main",
]

TEACHER_PROMPT_TEMPLATE = "{problem}\nReference solution: {solution}"
MAX_NEW_TOKENS = 96  # the longest expert solution is 70 characters + EOS
DEFAULT_OUT = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class ModelSpec:
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int = 4
    num_key_value_heads: int = 2


@dataclass(frozen=True)
class TrainBudget:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1          # cosine decay down to lr * min_lr_ratio
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    privileged_share: float = 0.0      # share of arithmetic examples in the privileged format
    mc_share: float = 0.1              # share of multiple-choice examples
    difficulties: tuple[int, ...] = DIFFICULTIES


STUDENT_SPEC = ModelSpec(hidden_size=64, num_hidden_layers=2, intermediate_size=192)
TEACHER_SPEC = ModelSpec(hidden_size=128, num_hidden_layers=4, intermediate_size=384)
STUDENT_BUDGET = TrainBudget(steps=2500, batch_size=32, lr=3e-3)
# the teacher: 7x the parameters, 1.6x the steps, a mix tilted towards the longer chains, and a
# fifth of its arithmetic examples with the expert solution in context
TEACHER_BUDGET = TrainBudget(steps=4000, batch_size=32, lr=3e-3, privileged_share=0.2,
                             difficulties=(1, 2, 3, 3, 4, 4, 5, 5, 5))


# ----------------------------------------------------------------------------- models
def build_model(spec: ModelSpec, tok, seed: int) -> Qwen3ForCausalLM:
    """A freshly initialised tiny Qwen3 with the toy vocabulary (untied lm_head)."""
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    return model


# ----------------------------------------------------------------------------- scoring
_BOXED = "\\boxed{"


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (braces balanced), or None."""
    start = text.rfind(_BOXED)
    while start != -1:
        depth, i = 1, start + len(_BOXED)
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len(_BOXED):i].strip()
            i += 1
        start = text.rfind(_BOXED, 0, start)  # unbalanced: try an earlier one
    return None


def _project_verify():
    try:
        from paced_kernels.scoring import verify  # written concurrently by the scorer developer
    except Exception:  # noqa: BLE001 - any import problem means "not available yet"
        return None
    return verify


def is_correct(gold: str, response: str) -> bool:
    """The project's scorer when it exists, else exact match of the last ``\\boxed{}`` content."""
    verify = _project_verify()
    if verify is not None:
        return bool(verify(gold, response))
    got = extract_boxed(response)
    return got is not None and got == gold.strip()


def scorer_name() -> str:
    return "paced_kernels.scoring.verify" if _project_verify() is not None else "last-boxed exact match"


# ----------------------------------------------------------------------------- data
def _chat_prompt(tok, content: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": content}],
                                   add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def _encode(tok, content: str, target: str) -> tuple[list[int], list[int]]:
    prompt = _chat_prompt(tok, content)
    response = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + response, [-100] * len(prompt) + response


class PretrainStream:
    """Seeded, endless stream of (input_ids, labels) pretraining examples."""

    def __init__(self, tok, budget: TrainBudget, seed: int, exclude: set[str]):
        self.tok, self.budget, self.exclude = tok, budget, exclude
        self.rng = random.Random(f"paced-toy-pretrain-{seed}")

    def example(self) -> tuple[list[int], list[int]]:
        rng, b = self.rng, self.budget
        if rng.random() < b.mc_share:
            q = make_mc_question(rng)
            return _encode(self.tok, q["question"], q["choices"]["ABCD".index(q["answer"])])
        while True:
            rec = make_problem(rng, rng.choice(b.difficulties))
            if rec["problem"] not in self.exclude:
                break
        content = rec["problem"]
        if rng.random() < b.privileged_share:
            content = TEACHER_PROMPT_TEMPLATE.format(problem=rec["problem"], solution=rec["solution"])
        return _encode(self.tok, content, rec["solution"])

    def batches(self, batch_size: int, group: int = 16):
        """Batches of similar length (``group`` batches drawn, sorted by length, shuffled)."""
        while True:
            pool = sorted((self.example() for _ in range(batch_size * group)), key=lambda e: len(e[0]))
            chunks = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
            self.rng.shuffle(chunks)
            for chunk in chunks:
                yield _collate(chunk, self.tok.pad_token_id)


def _collate(examples, pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(lab)] = torch.tensor(lab)
        mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


# ----------------------------------------------------------------------------- training
def train(model: PreTrainedModel, tok, budget: TrainBudget, seed: int, exclude: set[str],
          name: str, log_every: int = 50, callback=None) -> list[float]:
    """Plain AdamW, linear warmup then cosine decay; returns the per-step losses.

    ``callback(step, model)``, when given, runs after every optimizer step (e.g. to measure)."""
    torch.manual_seed(seed)
    stream = PretrainStream(tok, budget, seed, exclude).batches(budget.batch_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": budget.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=budget.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < budget.warmup_steps:
            return budget.lr * (step + 1) / budget.warmup_steps
        t = (step - budget.warmup_steps) / max(1, budget.steps - budget.warmup_steps)
        return budget.lr * (budget.min_lr_ratio + (1 - budget.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses, t0 = [], time.time()
    for step in range(budget.steps):
        batch = next(stream)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), budget.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == budget.steps:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"[{name}] step {step + 1}/{budget.steps} loss {recent:.4f} "
                  f"lr {lr_at(step):.2e} {time.time() - t0:.0f}s", flush=True)
        if callback is not None:
            callback(step + 1, model)
            model.train()
    model.eval()
    return losses


# ----------------------------------------------------------------------------- measurement
@torch.no_grad()
def generate_response_ids(model: PreTrainedModel, tok, contents: list[str], k: int = 8,
                          temperature: float = 1.0, max_new_tokens: int = MAX_NEW_TOKENS,
                          batch_size: int = 32, seed: int = 0) -> list[list[list[int]]]:
    """``k`` sampled responses per user-message content, as token ids up to and including EOS
    (a response cut by ``max_new_tokens`` has no EOS). Pure sampling: top-k/top-p off."""
    torch.manual_seed(seed)
    model.eval()
    out: list[list[list[int]]] = []
    for start in range(0, len(contents), batch_size):
        prompts = [_chat_prompt(tok, c) for c in contents[start:start + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left padding
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                             top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=k,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        responses = []
        for row in gen[:, width:].tolist():
            if tok.eos_token_id in row:
                row = row[:row.index(tok.eos_token_id) + 1]
            responses.append(row)
        out.extend(responses[i:i + k] for i in range(0, len(responses), k))
    return out


def sample_responses(model: PreTrainedModel, tok, contents: list[str], k: int = 8,
                     temperature: float = 1.0, max_new_tokens: int = MAX_NEW_TOKENS,
                     batch_size: int = 32, seed: int = 0) -> list[list[str]]:
    """``k`` sampled responses (decoded, special tokens dropped) per user-message content."""
    ids = generate_response_ids(model, tok, contents, k=k, temperature=temperature,
                                max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    return [tok.batch_decode(rs, skip_special_tokens=True) for rs in ids]


def pass_rates(model, tok, problems: list[dict], k: int = 8, temperature: float = 1.0,
               privileged: bool = False, seed: int = 0, batch_size: int = 32) -> list[float]:
    """Per-problem share of ``k`` samples whose answer is correct."""
    if privileged:
        contents = [TEACHER_PROMPT_TEMPLATE.format(problem=p["problem"], solution=p["solution"]) for p in problems]
    else:
        contents = [p["problem"] for p in problems]
    samples = sample_responses(model, tok, contents, k=k, temperature=temperature, seed=seed,
                               batch_size=batch_size)
    return [sum(is_correct(p["answer"], r) for r in rs) / k for p, rs in zip(problems, samples)]


def summarize_pass_rates(rates: list[float], difficulties: list[int] | None = None) -> dict:
    """Share at 0, strictly inside (0, 1), at 1, the mean, and the mean per difficulty."""
    n = len(rates)
    if n == 0:
        raise ValueError("no pass rates to summarize")
    summary = {
        "n": n,
        "share_0": sum(r == 0 for r in rates) / n,
        "share_mid": sum(0 < r < 1 for r in rates) / n,
        "share_1": sum(r == 1 for r in rates) / n,
        "mean": sum(rates) / n,
    }
    if difficulties is not None:
        by: dict[int, list[float]] = {}
        for d, r in zip(difficulties, rates):
            by.setdefault(int(d), []).append(r)
        summary["mean_by_difficulty"] = {str(d): round(sum(v) / len(v), 4) for d, v in sorted(by.items())}
    return summary


def _fmt(name: str, s: dict) -> str:
    return (f"{name:<22} at 0: {s['share_0']:.3f}  in (0,1): {s['share_mid']:.3f}  at 1: {s['share_1']:.3f}"
            f"  mean: {s['mean']:.3f}  by difficulty: {s.get('mean_by_difficulty')}")


def measure(student, teacher, tok, problems: list[dict], k: int, seed: int) -> dict:
    diffs = [p["difficulty"] for p in problems]
    report = {}
    for name, model, privileged in (("student", student, False), ("teacher", teacher, False),
                                    ("teacher_with_solution", teacher, True)):
        if model is None:
            continue
        t0 = time.time()
        rates = pass_rates(model, tok, problems, k=k, privileged=privileged, seed=seed)
        report[name] = summarize_pass_rates(rates, diffs)
        report[name]["seconds"] = round(time.time() - t0, 1)
        print(_fmt(name, report[name]), flush=True)
    return report


# ----------------------------------------------------------------------------- main
def _save(model, tok, path: Path) -> None:
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m paced_train.toy.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the shipped assets)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the shipped assets were built so; results depend on it)")
    ap.add_argument("--student-steps", type=int, default=STUDENT_BUDGET.steps)
    ap.add_argument("--teacher-steps", type=int, default=TEACHER_BUDGET.steps)
    ap.add_argument("--k", type=int, default=8, help="samples per problem when measuring pass rates")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="during training, print pass rates (K=4, first 64 training problems) every N steps")
    ap.add_argument("--measure-problems", type=int, default=None,
                    help="measure pass rates on only the first N training problems (default: all)")
    ap.add_argument("--only", choices=("student", "teacher", "both"), default="both",
                    help="train only one model (the other is loaded from --out if present)")
    args = ap.parse_args(argv)
    for flag in ("threads", "student_steps", "teacher_steps", "k", "measure_problems"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.eval_every < 0:
        ap.error(f"--eval-every must be >= 0, got {args.eval_every}")
    torch.set_num_threads(args.threads)
    t_start = time.time()

    tok = build_tokenizer()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out / "tokenizer"))
    splits = toy_splits(seed=args.seed)
    exclude = {p["problem"] for p in splits["train"] + splits["eval"]}

    timings, losses = {}, {}
    models = {}
    for name, spec, budget, steps, offset in (("student", STUDENT_SPEC, STUDENT_BUDGET, args.student_steps, 1),
                                              ("teacher", TEACHER_SPEC, TEACHER_BUDGET, args.teacher_steps, 2)):
        if args.only not in (name, "both"):
            if (out / name / "config.json").exists():
                models[name] = Qwen3ForCausalLM.from_pretrained(str(out / name)).eval()
            continue
        budget = TrainBudget(**{**asdict(budget), "steps": steps})
        model = build_model(spec, tok, seed=args.seed * 1000 + offset)
        t0 = time.time()
        callback = None
        if args.eval_every > 0:
            def callback(step, m, _name=name):
                if step % args.eval_every != 0:
                    return
                with torch.random.fork_rng():  # measuring must not move the training RNG
                    for privileged in (False, True) if _name == "teacher" else (False,):
                        rates = pass_rates(m, tok, splits["train"][:64], k=4, privileged=privileged, seed=step)
                        summary = summarize_pass_rates(rates, [p["difficulty"] for p in splits["train"][:64]])
                        print(_fmt(f"  {_name}{'+solution' if privileged else ''}@{step}", summary), flush=True)
        losses[name] = train(model, tok, budget, seed=args.seed * 1000 + offset, exclude=exclude, name=name,
                             callback=callback)
        timings[f"{name}_train_s"] = round(time.time() - t0, 1)
        _save(model, tok, out / name)
        models[name] = model

    t0 = time.time()
    problems = splits["train"][:args.measure_problems] if args.measure_problems else splits["train"]
    measured = measure(models.get("student"), models.get("teacher"), tok, problems, k=args.k, seed=args.seed)
    timings["measure_s"] = round(time.time() - t0, 1)
    timings["total_s"] = round(time.time() - t_start, 1)

    report = {
        "seed": args.seed,
        "threads": args.threads,
        "k": args.k,
        "temperature": 1.0,
        "split": f"train split of toy_splits(seed={args.seed}), first {len(problems)} problems",
        "scorer": scorer_name(),
        "teacher_prompt_template": TEACHER_PROMPT_TEMPLATE,
        "max_new_tokens": MAX_NEW_TOKENS,
        "pass_rates": measured,
        "models": {
            name: {"spec": asdict(spec), "budget": {**asdict(b), "steps": s},
                   "parameters": sum(p.numel() for p in models[name].parameters()) if name in models else None,
                   "final_loss": (sum(losses[name][-50:]) / len(losses[name][-50:])) if name in losses else None}
            for name, spec, b, s in (("student", STUDENT_SPEC, STUDENT_BUDGET, args.student_steps),
                                     ("teacher", TEACHER_SPEC, TEACHER_BUDGET, args.teacher_steps))
        },
        "timings": timings,
    }
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} in {timings['total_s']:.0f}s")
    return report


if __name__ == "__main__":
    main()
