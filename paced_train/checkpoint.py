"""Training checkpoints (torch distributed checkpoint) and the final ``save_pretrained`` export.

A checkpoint is a directory ``<root>/step_00000042/`` holding

- ``dcp/``: model + optimizer state through ``torch.distributed.checkpoint`` (sharded on every rank
  under FSDP2, plain tensors in a single process; reloadable at a different world size);
- ``train_state.json``: scheduler state, data position (step, epoch, batch in epoch, sampler order),
  a fingerprint of the training data, and whatever else the trainer records (loss history ...);
- ``rng/rank_XXXXX.pt``: each rank's RNG states (python, numpy, torch CPU, CUDA);
- ``COMPLETE``: written last, by rank 0, after every rank finished writing. A directory without it
  is a half-written checkpoint (the run died while saving) and is never resumed from.

Works in one process (no process group) and under torchrun (every rank calls save/load).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "COMPLETE_MARKER",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "save_checkpoint",
    "load_checkpoint",
    "read_train_state",
    "capture_rng_state",
    "restore_rng_state",
    "export_pretrained",
    "save_tokenizer_files",
]

COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist_on() else 0


def _barrier() -> None:
    if _dist_on():
        dist.barrier()


@contextmanager
def _quiet_single_process():
    """DCP warns that it 'assumes the intent is to save in a single process' without a process group:
    that is exactly the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled, unavailable or uninitialized.*")
        yield


def checkpoint_dir(root: str | Path, step: int) -> Path:
    """Where the checkpoint taken after optimizer step ``step`` lives."""
    return Path(root) / f"step_{int(step):08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (child / COMPLETE_MARKER).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The most recent complete checkpoint under ``root`` (None if there is none)."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


# --------------------------------------------------------------------------------------------
# RNG
# --------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if present) CUDA RNG states of this process."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _app_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict, get_model_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    scheduler: Any | None = None,
    train_state: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write a checkpoint to ``path`` (collective: every rank calls it). Returns ``path``.

    ``train_state`` must be JSON-serialisable (step, epoch, sampler order, ...). With
    ``keep_last=k`` older complete checkpoints next to ``path`` are deleted once this one is complete.
    """
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    rank = _rank()
    if rank == 0:
        if path.exists():  # a half-written (or stale) checkpoint at the same step: start clean
            shutil.rmtree(path)
        (path / "rng").mkdir(parents=True)
    _barrier()

    with _quiet_single_process():
        dcp.save(_app_state(model, optimizer), checkpoint_id=str(path / "dcp"))
    torch.save(capture_rng_state(), path / "rng" / f"rank_{rank:05d}.pt")
    if rank == 0:
        record = {
            "train_state": train_state or {},
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "world_size": dist.get_world_size() if _dist_on() else 1,
        }
        tmp = path / "train_state.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path / "train_state.json")
    _barrier()
    if rank == 0:
        (path / COMPLETE_MARKER).write_text("ok\n")
        if keep_last is not None and keep_last > 0:
            for _, old in list_checkpoints(path.parent)[:-keep_last]:
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return path


def read_train_state(path: str | Path) -> dict[str, Any]:
    """The ``train_state`` of a complete checkpoint, without touching any model (to validate a resume)."""
    path = Path(path)
    if not (path / COMPLETE_MARKER).is_file():
        raise ValueError(f"checkpoint {path} is incomplete (no {COMPLETE_MARKER} marker): refusing to resume from it")
    return json.loads((path / "train_state.json").read_text())["train_state"]


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a complete checkpoint into ``model``/``optimizer``/``scheduler`` in place (collective).

    Returns the saved ``train_state`` dict. RNG states are restored for this rank when the
    checkpoint was written at the same world size (a different world size keeps the current RNG).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    path = Path(path)
    if not (path / COMPLETE_MARKER).is_file():
        raise ValueError(f"checkpoint {path} is incomplete (no {COMPLETE_MARKER} marker): refusing to resume from it")
    record = json.loads((path / "train_state.json").read_text())

    app = _app_state(model, optimizer)
    with _quiet_single_process():
        dcp.load(app, checkpoint_id=str(path / "dcp"))
    if optimizer is None:
        set_model_state_dict(model, app["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=app["model"], optim_state_dict=app["optim"])
    if scheduler is not None and record.get("scheduler") is not None:
        scheduler.load_state_dict(record["scheduler"])

    world = dist.get_world_size() if _dist_on() else 1
    rng_file = path / "rng" / f"rank_{_rank():05d}.pt"
    if restore_rng and record.get("world_size") == world and rng_file.is_file():
        restore_rng_state(torch.load(rng_file, weights_only=False))
    _barrier()
    return record["train_state"]


# --------------------------------------------------------------------------------------------
# final export
# --------------------------------------------------------------------------------------------


def export_pretrained(model: nn.Module, out_dir: str | Path, tokenizer: Any | None = None) -> Path:
    """Save ``model`` with ``save_pretrained`` (safetensors) to ``out_dir`` (collective under FSDP2).

    Under a process group the full, unsharded state dict is gathered to CPU on every rank with
    ``get_model_state_dict(full_state_dict=True, cpu_offload=True)`` and rank 0 writes it; in a
    single process the model is saved directly. ``save_pretrained`` writes ``config.json`` and
    ``generation_config.json``; with ``tokenizer`` (a tokenizer or the folder it comes from) its
    files are written too, so the folder is a complete model directory that both
    ``LLM(model=out_dir)`` and ``from_pretrained(out_dir)`` load. Returns ``out_dir``.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    out_dir = Path(out_dir)
    if not hasattr(model, "save_pretrained"):
        raise ValueError(f"export_pretrained needs a Hugging Face model with save_pretrained, got {type(model).__name__}")
    if _dist_on():
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if _rank() == 0:
            _restore_ties(model, state)
            model.save_pretrained(out_dir, state_dict=state)
            if tokenizer is not None:
                save_tokenizer_files(out_dir, tokenizer)
        _barrier()
    else:
        model.save_pretrained(out_dir)
        if tokenizer is not None:
            save_tokenizer_files(out_dir, tokenizer)
    return out_dir


def save_tokenizer_files(out_dir: str | Path, tokenizer: Any, trust_remote_code: bool = False) -> Path:
    """Write a tokenizer's files (tokenizer.json, tokenizer_config.json, chat template, ...) into
    ``out_dir``. ``tokenizer`` is a tokenizer object or a folder: a folder is loaded afresh, so the
    files are the source's, not a copy altered for batching (pad token, left padding)."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=trust_remote_code)
        except OSError as e:
            raise ValueError(f"cannot load the tokenizer {str(tokenizer)!r} to export it: {e}") from None
    if not hasattr(tokenizer, "save_pretrained"):
        raise ValueError(f"save_tokenizer_files needs a Hugging Face tokenizer or a folder, got {type(tokenizer).__name__}")
    tokenizer.save_pretrained(str(out_dir))
    return Path(out_dir)


def _restore_ties(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Gathering a full state dict makes separate copies of tied tensors; point them back at one
    tensor so ``save_pretrained`` recognises the tie (and writes the weight once)."""
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is None or out is None:
        return
    names = {id(m): n for n, m in model.named_modules()}
    in_key, out_key = f"{names.get(id(inp))}.weight", f"{names.get(id(out))}.weight"
    if in_key in state and out_key in state:
        state[out_key] = state[in_key]
