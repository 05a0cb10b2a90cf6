"""Where the shipped toy models live, and the ``toy://`` model specs that point at them.

``toy://student``, ``toy://teacher`` and ``toy://tokenizer`` resolve to Hugging Face folders inside
the package (safetensors weights; each model folder also holds the tokenizer), loadable offline
with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``. Any other spec
(a local path, a hub id) is returned unchanged. The assets are produced by
``python -m paced_train.toy.pretrain``; ``assets/pretrain_report.json`` records how they measured.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS_DIR", "TOY_ASSETS", "TOY_SCHEME", "is_toy_spec", "resolve_path"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TOY_SCHEME = "toy://"
TOY_ASSETS = ("student", "teacher", "tokenizer")


def is_toy_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(TOY_SCHEME)


def resolve_path(spec: str) -> str:
    """Map ``toy://student|teacher|tokenizer`` to the shipped folder; return anything else unchanged.

    Raises ValueError for an unknown ``toy://`` name, and FileNotFoundError when a known asset is
    missing from the installation (e.g. a source checkout without the committed assets).
    """
    if not is_toy_spec(spec):
        return spec
    name = spec[len(TOY_SCHEME):].strip("/")
    if name not in TOY_ASSETS:
        raise ValueError(f"unknown toy asset {spec!r}; expected one of "
                         + ", ".join(TOY_SCHEME + n for n in TOY_ASSETS))
    path = ASSETS_DIR / name
    marker = "tokenizer_config.json" if name == "tokenizer" else "config.json"
    if not (path / marker).is_file():
        raise FileNotFoundError(f"toy asset {spec!r} not found at {path}; "
                                "rebuild it with `python -m paced_train.toy.pretrain`")
    return str(path)
