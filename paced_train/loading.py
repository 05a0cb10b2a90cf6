"""Loading the student and teacher for FSDP2 training without a full copy of either per rank.

Today's simple path, ``from_pretrained`` on every rank and then ``fully_shard``, holds ``world_size``
full copies of both models in host memory (and on each GPU before sharding). Under a process group
:func:`load_causal_lm` instead

1. builds the model from its config with every parameter on the ``meta`` device (buffers, e.g. the
   rotary ``inv_freq``, are computed for real as usual: they are small and non-persistent, so no
   checkpoint carries them);
2. applies the *same* sharding ``run_distill_stage`` applies (activation checkpointing, the
   ``StudentKL`` / ``TeacherHidden`` FSDP2 root, ``parallel.shard_causal_lm`` with the stage's mixed
   precision and CPU offload), so only this rank's shards exist;
3. allocates those shards (``to_empty``), puts the buffers back, and fills the shards from the
   safetensors: rank 0 memory-maps the files (``safetensors.safe_open``) and broadcasts them a chunk
   of tensors at a time with ``set_model_state_dict(..., full_state_dict=True,
   broadcast_from_rank0=True)``; each rank keeps only its slice. Tied weights (``lm_head`` =
   ``embed_tokens``) are one parameter and are loaded once. Tensors are cast on rank 0 to the dtype
   the model was built in (fp32 student master weights, bf16 teacher), as ``from_pretrained`` does.

The sharded model remembers its FSDP root and the :class:`ShardPlan` it was sharded with
(:func:`fsdp_root`, :func:`shard_plan_of`); ``run_distill_stage`` uses that root instead of sharding
again. Without a process group :func:`load_causal_lm` is plain ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from . import parallel

__all__ = ["ShardPlan", "check_shard_plan", "load_causal_lm", "load_whole", "load_sharded", "fsdp_root", "shard_plan_of"]

_ROOT_ATTR = "_paced_fsdp_root"  # stored in __dict__: not a registered submodule (no cycle, no new keys)
_PLAN_ATTR = "_paced_shard_plan"
DEFAULT_CHUNK_BYTES = 128 * 2 ** 20  # rank 0 holds about this much of the checkpoint at once (plus the largest tensor)


@dataclass(frozen=True)
class ShardPlan:
    """How ``run_distill_stage`` shards a model: its mixed precision, CPU offload, activation checkpointing."""

    mixed_precision: str = "no"
    cpu_offload: bool = False
    activation_checkpointing: bool = False

    @classmethod
    def for_stage(cls, cfg, device: torch.device) -> "ShardPlan":
        """The plan for distill config ``cfg`` on ``device`` (``cpu_offload`` has no effect on CPU, as in the trainer)."""
        if cfg.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"distill.mixed_precision must be 'no' or 'bf16', got {cfg.mixed_precision!r}")
        return cls(str(cfg.mixed_precision), bool(cfg.cpu_offload) and device.type != "cpu",
                   bool(cfg.activation_checkpointing))


def fsdp_root(model: nn.Module) -> nn.Module | None:
    """The FSDP2 root (``StudentKL`` / ``TeacherHidden``) :func:`load_sharded` built for ``model``, or None."""
    return model.__dict__.get(_ROOT_ATTR)


def shard_plan_of(model: nn.Module) -> ShardPlan | None:
    """The :class:`ShardPlan` ``model`` was loaded with by :func:`load_sharded`, or None."""
    return model.__dict__.get(_PLAN_ATTR)


def check_shard_plan(model: nn.Module, cfg, device: torch.device, role: str) -> None:
    """Raise ValueError when ``model`` was loaded sharded with settings other than distill config
    ``cfg``'s (the teacher is never activation-checkpointed); a plain model passes."""
    have = shard_plan_of(model)
    if have is None:
        return
    want = ShardPlan.for_stage(cfg, device)
    fields = ("mixed_precision", "cpu_offload") + (("activation_checkpointing",) if role == "student" else ())
    diff = {f: (getattr(have, f), getattr(want, f)) for f in fields if getattr(have, f) != getattr(want, f)}
    if diff:
        raise ValueError(
            f"the {role} was loaded sharded for other settings than this stage's: "
            + ", ".join(f"distill.{f}: loaded {a!r}, stage {b!r}" for f, (a, b) in diff.items())
            + " (load it with ShardPlan.for_stage(stage config))"
        )


def load_causal_lm(path: str | Path, *, dtype: torch.dtype, trainable: bool, plan: ShardPlan | None = None,
                   device: torch.device | None = None, attn_implementation: str | None = None,
                   trust_remote_code: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> nn.Module:
    """The model at ``path`` for training: sharded per rank under a process group when ``plan`` is given
    (:func:`load_sharded`), else whole on ``device`` (:func:`load_whole`)."""
    if plan is not None and parallel.get_dist_env().is_distributed:
        return load_sharded(path, dtype=dtype, trainable=trainable, plan=plan,
                            attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
                            chunk_bytes=chunk_bytes)
    return load_whole(path, dtype=dtype, trainable=trainable, device=device,
                      attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)


def _model_kwargs(dtype, attn_implementation, trust_remote_code) -> dict:
    kw = dict(dtype=dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    return kw


def _set_mode(model: nn.Module, trainable: bool) -> None:
    if trainable:
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)


def load_whole(path: str | Path, *, dtype: torch.dtype, trainable: bool, device: torch.device | None = None,
               attn_implementation: str | None = None, trust_remote_code: bool = False) -> nn.Module:
    """``from_pretrained`` the whole model onto ``device`` (one process, or a model used for generation)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **_model_kwargs(dtype, attn_implementation, trust_remote_code))
    except OSError as e:
        raise ValueError(f"cannot load model from {str(path)!r}: {e}") from None
    if device is not None:
        model.to(device)
    _set_mode(model, trainable)
    return model


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside the block is moved to the meta device as it is registered
    (its initialisation then costs nothing); buffers stay real. A parameter already on meta is kept
    as is, so tied weights stay one object."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _tie_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names that share one parameter (e.g. ``lm_head.weight`` and ``model.embed_tokens.weight``)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return [g for g in names.values() if len(g) > 1]


def _safetensors_files(path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (single file or a sharded index)."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: path / v for k, v in weight_map.items()}
    single = path / "model.safetensors"
    if not single.exists():
        raise ValueError(f"cannot load model from {str(path)!r} sharded: no model.safetensors or "
                         "model.safetensors.index.json there (sharded loading reads a local folder of safetensors: "
                         "download a Hub model first, e.g. `hf download <name> --local-dir <folder>`)")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {k: single for k in f.keys()}


_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _chunk_plan(path: Path, expected: dict[str, torch.dtype], ties: list[list[str]], buffers: set[str],
                chunk_bytes: int) -> list[list[tuple[str, str]]]:
    """Rank 0: (file, name) chunks of at most ~``chunk_bytes`` covering every model tensor once.

    Raises ValueError when a model tensor is in no file (a tied group needs one member) or a file has
    a tensor the model does not (other than a non-persistent buffer, e.g. an old ``inv_freq``)."""
    from safetensors import safe_open

    files = _safetensors_files(path)
    loaded = set(files)
    covered = set(loaded)
    for group in ties:
        if loaded.intersection(group):
            covered.update(group)
    missing = sorted(set(expected) - covered)
    unexpected = sorted(set(loaded) - set(expected) - buffers)
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint in {str(path)!r} does not match the model built from its config.json: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)}); "
            "sharded loading needs the model's own tensor names (convert the checkpoint with "
            "from_pretrained + save_pretrained once)"
        )
    # a tied parameter is read once; a file carrying it under several names must agree with itself
    # (which copy from_pretrained keeps otherwise depends on the transformers version)
    skip: set[str] = set()
    for group in ties:
        present = [n for n in group if n in loaded]
        for other in present[1:]:
            with safe_open(str(files[present[0]]), framework="pt") as f:
                first = f.get_tensor(present[0])
            with safe_open(str(files[other]), framework="pt") as f:
                if not torch.equal(first, f.get_tensor(other)):
                    raise ValueError(f"the checkpoint in {str(path)!r} stores the tied weight under {present[0]!r} "
                                     f"and {other!r} with different values; the model ties them into one "
                                     "(keep one of them, or set tie_word_embeddings: false in config.json)")
            skip.add(other)
    chunks: list[list[tuple[str, str]]] = [[]]
    size = 0
    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        if name in expected and name not in skip:
            by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with safe_open(str(file), framework="pt") as f:
            for name in names:
                sl = f.get_slice(name)
                numel = 1
                for d in sl.get_shape():
                    numel *= int(d)
                nbytes = numel * _BYTES.get(sl.get_dtype(), 4)
                if chunks[-1] and size + nbytes > chunk_bytes:
                    chunks.append([])
                    size = 0
                chunks[-1].append((str(file), name))
                size += nbytes
    return [c for c in chunks if c]


def _read_chunk(chunk: list[tuple[str, str]], expected: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """Rank 0: one chunk's tensors, cast to the model's dtypes (the files are mapped only meanwhile)."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    by_file: dict[str, list[str]] = {}
    for file, name in chunk:
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with safe_open(file, framework="pt") as f:
            for name in names:
                t = f.get_tensor(name)
                want = expected[name]
                out[name] = t.to(want) if t.dtype != want and t.is_floating_point() else t
    return out


def _broadcast_checkpoint(model: nn.Module, path: Path, expected: dict[str, torch.dtype], ties: list[list[str]],
                          buffers: set[str], chunk_bytes: int) -> None:
    """Fill ``model``'s shards from rank 0's safetensors, chunk by chunk (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    plan: list | str | None = None
    if dist.get_rank() == 0:
        try:
            plan = _chunk_plan(path, expected, ties, buffers, chunk_bytes)
        except (ValueError, OSError, KeyError) as e:  # every rank raises it, none waits in a broadcast
            plan = str(e) if isinstance(e, ValueError) else f"cannot read the checkpoint in {str(path)!r}: {e}"
    box = [plan]
    dist.broadcast_object_list(box, src=0)
    plan = box[0]
    if isinstance(plan, str):
        raise ValueError(plan)
    # strict=False: each call carries one chunk; coverage of every tensor was checked above
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    for chunk in plan:
        sd = _read_chunk(chunk, expected) if dist.get_rank() == 0 else {}
        set_model_state_dict(model, sd, options=options)
        del sd


def _restore_buffers(model: nn.Module, buffers: dict[str, torch.Tensor], device: torch.device) -> None:
    for name, value in buffers.items():
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = value.to(device)


def load_sharded(path: str | Path, *, dtype: torch.dtype, trainable: bool, plan: ShardPlan,
                 attn_implementation: str | None = None, trust_remote_code: bool = False,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> nn.Module:
    """Meta-device build, the trainer's FSDP2 sharding, and only this rank's shards read (collective).

    ``trainable`` picks the root ``run_distill_stage`` uses: ``StudentKL`` (trainable student) or
    ``TeacherHidden`` (frozen teacher). See the module docstring."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from .distill import StudentKL, TeacherHidden

    env = parallel.get_dist_env()
    if not env.is_distributed:
        raise ValueError("load_sharded needs an initialised process group (launch with torchrun); use load_whole")
    path = Path(path)
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ValueError(f"cannot load model from {str(path)!r}: {e}") from None
    with _parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, **_model_kwargs(dtype, attn_implementation, trust_remote_code))
    if (path / "generation_config.json").exists():  # as from_pretrained: exports carry the same one
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    _set_mode(model, trainable)
    expected = {k: v.dtype for k, v in model.state_dict().items()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    non_persistent = {k for k in buffers if k not in expected}
    ties = _tie_groups(model)

    if plan.activation_checkpointing and trainable:
        parallel.apply_activation_checkpointing(model)
    root = StudentKL(model) if trainable else TeacherHidden(model)
    mesh = parallel.build_device_mesh(env)
    parallel.shard_causal_lm(root, parallel.decoder_layers(model), mesh, mixed_precision=plan.mixed_precision,
                             cpu_offload=plan.cpu_offload, trainable=trainable)
    root.to_empty(device=torch.device("cpu") if plan.cpu_offload else env.device)
    _restore_buffers(model, buffers, env.device)  # computed at build time; buffers live on the compute device
    _broadcast_checkpoint(model, path, expected, ties, non_persistent, chunk_bytes)
    model.__dict__[_ROOT_ATTR] = root
    model.__dict__[_PLAN_ATTR] = plan
    return model
