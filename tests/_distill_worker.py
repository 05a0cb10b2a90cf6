"""Tiny models and data for the distillation tests, and the script ``torchrun`` launches.

Imported by tests/test_train_*.py for the builders; run as a script (``python`` or ``torchrun
--nproc_per_node 2``) it trains a tiny Qwen3 student on a tiny teacher and writes the losses and the
final student parameters (rank 0) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from paced_train.config import DistillConfig  # noqa: E402
from paced_train.distill import DistillExample  # noqa: E402

VOCAB = 50
POISON = VOCAB - 1  # token id used only by weight-0 problems (tests check it never reaches a model)


def tiny_qwen3(seed: int, hidden: int = 32, tie: bool = False, dtype=torch.float32):
    """A randomly initialised 2-layer Qwen3 (eager attention, deterministic on CPU)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    heads = hidden // 16
    cfg = Qwen3Config(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=1, head_dim=16, vocab_size=VOCAB, tie_word_embeddings=tie,
        max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg).to(dtype)
    # random init has tiny logits; scale the heads so student and teacher disagree noticeably
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


def tiny_examples(n_problems: int = 8, seed: int = 0, weights=None, rollouts: int = 1) -> list[DistillExample]:
    """Problems with varied prompt/response lengths; ``weights[i]`` is problem i's weight (0 => poisoned)."""
    rng = random.Random(seed)
    if weights is None:
        weights = [0.5 + rng.random() for _ in range(n_problems)]
    out = []
    for i, w in enumerate(weights):
        hi = POISON if w == 0 else POISON - 1  # only weight-0 problems may use the poison token
        s_prompt = [rng.randrange(3, hi) for _ in range(rng.randint(2, 6))]
        t_prompt = s_prompt + [rng.randrange(3, hi) for _ in range(rng.randint(1, 4))]
        if w == 0:
            s_prompt[0] = t_prompt[0] = POISON
        for r in range(rollouts):
            resp = [rng.randrange(3, hi) for _ in range(rng.randint(3, 8))] + [1]
            if w == 0:
                resp[0] = POISON
            out.append(DistillExample(f"p{i}", float(w) / rollouts, s_prompt, t_prompt, resp))
    return out


def tiny_config(**overrides) -> DistillConfig:
    base = dict(loss="fkl", lr=1e-2, warmup_steps=0, lr_schedule="constant", weight_decay=0.01,
                max_grad_norm=1.0, global_batch_problems=4, micro_batch_problems=2, epochs=1,
                temperature=1.0, kl_backend="torch", mixed_precision="no", activation_checkpointing=False,
                cpu_offload=False, checkpoint_every=0, seed=0, loss_normalization="tokens")
    base.update(overrides)
    return DistillConfig(**base)


def train_tiny(out: Path, cfg_overrides: dict | None = None, *, tie: bool = False, teacher_hidden: int = 48,
               problems: int = 8, rollouts: int = 1, weights=None, logger=None):
    """Build the tiny student/teacher/data deterministically and run the distillation stage."""
    from paced_train.distill import run_distill_stage

    student = tiny_qwen3(1, tie=tie)
    teacher = tiny_qwen3(2, hidden=teacher_hidden)
    examples = tiny_examples(problems, seed=3, weights=weights, rollouts=rollouts)
    cfg = tiny_config(**(cfg_overrides or {}))
    return run_distill_stage(cfg, student, teacher, examples, Path(out), "stage", logger=logger), student


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cfg", default="{}", help="JSON dict of DistillConfig overrides")
    ap.add_argument("--tie", action="store_true")
    ap.add_argument("--teacher-hidden", type=int, default=48)
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--rollouts", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from paced_train import parallel

    env = parallel.init_distributed()
    out = Path(args.out)
    result, _ = train_tiny(out, json.loads(args.cfg), tie=args.tie, teacher_hidden=args.teacher_hidden,
                           problems=args.problems, rollouts=args.rollouts)
    if env.is_main:
        (out / "result.json").write_text(json.dumps(result.to_json()))
    parallel.teardown_distributed()


if __name__ == "__main__":
    main()
