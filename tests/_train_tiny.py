"""Tiny offline world for the pipeline tests: char tokenizer, random 2-layer Qwen3 models, data files.

Used by tests/test_train_{data,stages,run}.py. Everything is built in a temporary folder in
well under a second; nothing is downloaded.
"""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import torch


def build_tokenizer():
    from paced_train.toy.tokenizer import build_tokenizer as toy_tokenizer
    return toy_tokenizer()


def tiny_model(tok, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    return Qwen3ForCausalLM(cfg).eval()


def problems(n: int = 12) -> list[dict]:
    out = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        out.append({"id": f"p{i}", "problem": f"Compute {a}+{b}.", "answer": str(a + b),
                    "solution": f"{a}+{b}={a + b}. \\boxed{{{a + b}}}"})
    return out


def mc_questions(n: int = 4) -> list[dict]:
    return [{"id": i, "question": f"Largest of {i} and {i + 3}?", "choices": [str(i), str(i + 3)], "answer": "B"}
            for i in range(n)]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def make_world(root: Path, n_train: int = 12) -> dict:
    """Save tokenizer + student/teacher folders and data files under ``root``."""
    tok = build_tokenizer()
    paths = {}
    for name, seed in (("student", 0), ("teacher", 1)):
        m = tiny_model(tok, seed)
        m.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        paths[name] = root / name
    paths["train"] = write_jsonl(root / "train.jsonl", problems(n_train))
    paths["eval"] = write_jsonl(root / "eval.jsonl", problems(6))
    paths["mc"] = write_jsonl(root / "mc.jsonl", mc_questions())
    return paths


def boxed(text: str):
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1].strip() if m else None


def boxed_verify(golds, responses):
    """Exact match of the last \\boxed{} (the tests' stand-in for the math scorer)."""
    return [boxed(r) == g for g, r in zip(golds, responses)]


def lucky_verify(golds, responses):
    """Deterministic pseudo-verdicts (a third of responses 'correct'), so random models get spread
    pass rates and the pipeline has non-zero weights to train on."""
    return [boxed(r) == g or zlib.crc32(r.encode()) % 3 == 0 for g, r in zip(golds, responses)]
