"""Parallelism for the distillation stage: process group, device mesh, FSDP2, activation checkpointing.

Everything distributed lives here so the training loop reads like single-device PyTorch:

- :func:`init_distributed` / :func:`teardown_distributed` start and stop ``torch.distributed`` from the
  environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); gloo on CPU, NCCL on GPU.
  Without torchrun it returns a single-process :class:`DistEnv` and creates no process group.
- :func:`build_device_mesh` makes the 1-D data-parallel mesh FSDP2 shards over.
- :func:`shard_causal_lm` applies ``fully_shard`` to every decoder layer and then to a root module
  (which must own the embeddings, final norm and ``lm_head``), with an optional
  ``MixedPrecisionPolicy`` (bf16 compute, fp32 gradient reduction) and ``CPUOffloadPolicy``.
- :func:`apply_activation_checkpointing` wraps each decoder layer in a non-reentrant checkpoint.
- :func:`all_reduce_sum` / :func:`shard_for_rank` are the small collectives the trainer needs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

__all__ = [
    "DistEnv",
    "init_distributed",
    "teardown_distributed",
    "get_dist_env",
    "build_device_mesh",
    "decoder_layers",
    "apply_activation_checkpointing",
    "remove_activation_checkpointing",
    "mixed_precision_policy",
    "shard_causal_lm",
    "use_sum_gradient_reduction",
    "all_reduce_sum",
    "shard_for_rank",
    "barrier",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_OWNS_PROCESS_GROUP = False


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, its device, and whether a process group exists."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when there is no process group (single process)

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launched_by_torchrun() -> bool:
    return all(v in os.environ for v in _TORCHRUN_VARS)


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def get_dist_env() -> DistEnv:
    """Describe the current process without initialising anything."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        backend = str(dist.get_backend())
        device = _default_device(local_rank) if "nccl" in backend else torch.device("cpu")
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)
    return DistEnv(0, 1, 0, _default_device(0), None)


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistEnv:
    """Start ``torch.distributed`` if launched by torchrun; otherwise return a single-process env.

    Idempotent: when a process group already exists (e.g. ``run.py`` created it) it is reused.
    ``backend`` defaults to NCCL (plus gloo for CPU tensors) when CUDA is available, else gloo.
    """
    global _OWNS_PROCESS_GROUP
    if dist.is_available() and dist.is_initialized():
        return get_dist_env()
    if not _launched_by_torchrun():
        return get_dist_env()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build, but torchrun env vars are set")
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend is None:
        backend = "cuda:nccl,cpu:gloo" if torch.cuda.is_available() else "gloo"
    if "nccl" in backend:
        if not torch.cuda.is_available():
            raise ValueError(f"backend {backend!r} needs CUDA, but no GPU is visible")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    _OWNS_PROCESS_GROUP = True
    return get_dist_env()


def teardown_distributed() -> None:
    """Destroy the process group if :func:`init_distributed` created it (after a final barrier)."""
    global _OWNS_PROCESS_GROUP
    if _OWNS_PROCESS_GROUP and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _OWNS_PROCESS_GROUP = False


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def build_device_mesh(env: DistEnv):
    """The 1-D data-parallel device mesh (dim name ``"dp"``) that FSDP2 shards parameters over."""
    if not env.is_distributed:
        raise ValueError("build_device_mesh needs an initialised process group (launch with torchrun)")
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(env.device.type, (env.world_size,), mesh_dim_names=("dp",))


# --------------------------------------------------------------------------------------------
# model structure
# --------------------------------------------------------------------------------------------


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a Hugging Face causal LM (``model.model.layers`` for Llama/Qwen/...)."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"cannot find decoder layers on {type(model).__name__}: expected a non-empty "
            "nn.ModuleList at model.model.layers (or get_decoder().layers)"
        )
    return layers


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Wrap every decoder layer in a non-reentrant activation checkpoint; returns how many were wrapped.

    Apply before FSDP so the FSDP hooks sit outside the checkpoint (parameters are unsharded by
    FSDP's pre-backward hook when the layer is recomputed). State-dict keys are unchanged: the
    wrapper strips its ``_checkpoint_wrapped_module`` prefix, and DCP does the same.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointWrapper,
        checkpoint_wrapper,
    )

    layers = decoder_layers(model)
    n = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, CheckpointWrapper):
            continue
        layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)
        n += 1
    return n


def remove_activation_checkpointing(model: nn.Module) -> None:
    """Undo :func:`apply_activation_checkpointing` (for a model that goes on to generate/evaluate)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        if isinstance(layer, CheckpointWrapper):
            layers[i] = layer._checkpoint_wrapped_module


def mixed_precision_policy(mixed_precision: str, *, cast_forward_inputs: bool = True):
    """FSDP2 ``MixedPrecisionPolicy`` for ``"bf16"`` (bf16 params/compute, fp32 grad reduction), or None."""
    if mixed_precision == "no":
        return None
    if mixed_precision != "bf16":
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=cast_forward_inputs
    )


def shard_causal_lm(
    root: nn.Module,
    layers: Sequence[nn.Module],
    mesh,
    *,
    mixed_precision: str = "no",
    cpu_offload: bool = False,
    trainable: bool = True,
) -> nn.Module:
    """FSDP2-shard ``layers`` one by one, then ``root`` (which owns the remaining parameters).

    ``root`` must contain the layers as descendants plus the embeddings, final norm and lm_head, so a
    tied ``lm_head``/``embed_tokens`` weight stays inside a single FSDP group. The root is sharded with
    ``cast_forward_inputs=False`` because the trainer passes float tensors that must keep their dtype
    (fp32 per-sequence weights). Decoder layers reshard after forward; the root keeps its parameters
    unsharded after forward: the student needs them again at once in backward, and the trainer reads
    the frozen teacher's ``lm_head`` weight from its unsharded root and then calls ``reshard()``.

    Gradients are reduced as a plain SUM over ranks (no division by world size): the trainer divides
    the loss by a normaliser counted over the whole global batch, so summing is what makes the
    gradient equal to the single-process one.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mp = mixed_precision_policy(mixed_precision)
    mp_root = mixed_precision_policy(mixed_precision, cast_forward_inputs=False)
    kwargs = {"mesh": mesh}
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    if not trainable:
        for p in root.parameters():
            p.requires_grad_(False)
    layer_kwargs, root_kwargs = dict(kwargs), dict(kwargs)
    if mp is not None:
        layer_kwargs["mp_policy"], root_kwargs["mp_policy"] = mp, mp_root
    for layer in layers:
        fully_shard(layer, reshard_after_forward=True, **layer_kwargs)
    # Root: params stay unsharded after forward. Student: needed again at once in backward (FSDP
    # reshards after backward). Teacher: its lm_head weight is read after forward, then the trainer
    # calls reshard() once the micro-batch's backward is done.
    fully_shard(root, reshard_after_forward=False, **root_kwargs)
    if trainable:
        use_sum_gradient_reduction(root)
    return root


def use_sum_gradient_reduction(root: nn.Module) -> bool:
    """Make every FSDP2 module under ``root`` reduce gradients as a plain SUM over ranks.

    Returns False when this torch version cannot (then the caller multiplies the loss by the world
    size to undo FSDP's averaging). Idempotent.
    """
    modules = [m for m in root.modules() if hasattr(m, "set_gradient_divide_factor")]
    if not modules or not all(hasattr(m, "set_force_sum_reduction_for_comms") for m in modules):
        return False
    for module in modules:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # gloo has no AVG/PREMUL_SUM
    return True


# --------------------------------------------------------------------------------------------
# small collectives and data sharding
# --------------------------------------------------------------------------------------------


def all_reduce_sum(value: float | torch.Tensor, device: torch.device | None = None) -> float:
    """Sum a scalar over all ranks (returns it unchanged without a process group)."""
    t = value.detach().to(torch.float64) if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        env = get_dist_env()
        t = t.to(device or env.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def shard_for_rank(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The contiguous block of ``items`` that ``rank`` owns; ``len(items)`` must divide evenly."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank/world_size: rank={rank}, world_size={world_size}")
    if len(items) % world_size:
        raise ValueError(f"{len(items)} items cannot be split evenly over {world_size} ranks")
    per_rank = len(items) // world_size
    return list(items[rank * per_rank : (rank + 1) * per_rank])
