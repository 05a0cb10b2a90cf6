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
- :func:`decided_by_rank0` makes a decision that gates a collective (skip a stage whose outputs
  exist, resume, stop) once, on rank 0, and broadcasts it, so ranks never take different paths.
- :func:`watch_for_peer_failure` / :func:`report_failure`: a rank that fails publishes its error in
  the process group's store; a watcher thread on every other rank sees it within a second and
  ends that rank with the error, instead of leaving it in a collective until the 30-minute timeout.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

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
    "decided_by_rank0",
    "watch_for_peer_failure",
    "report_failure",
    "peer_failure",
    "debug_hook",
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


def teardown_distributed(failed: bool = False) -> None:
    """Destroy the process group if :func:`init_distributed` created it.

    After a final barrier on success; without one when this rank ``failed`` (the other ranks are
    somewhere else, a barrier would only hang)."""
    global _OWNS_PROCESS_GROUP
    _stop_watch()
    if _OWNS_PROCESS_GROUP and dist.is_initialized():
        if not failed:
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


# --------------------------------------------------------------------------------------------
# decisions made once, failures that reach every rank
# --------------------------------------------------------------------------------------------


def debug_hook(point: str) -> None:
    """Test hooks: ``PACED_DEBUG_SLOW_RANK=r:seconds`` sleeps on rank r before every rank-0 decision
    (a rank that reaches a file check late); ``PACED_DEBUG_FAIL=r:point`` raises on rank r at the
    named point (e.g. ``1:pass_rates``)."""
    slow, fail = os.environ.get("PACED_DEBUG_SLOW_RANK"), os.environ.get("PACED_DEBUG_FAIL")
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if slow:
        r, _, secs = slow.partition(":")
        if int(r) == rank:
            time.sleep(float(secs or 1.0))
    if fail:
        r, _, where = fail.partition(":")
        if int(r) == rank and where == point:
            raise RuntimeError(f"PACED_DEBUG_FAIL: rank {rank} fails on purpose at {point!r}")


def decided_by_rank0(decide: Callable[[], T], point: str = "decision") -> T:
    """``decide()`` evaluated on rank 0 only and broadcast to every rank (picklable result).

    Use for every choice that decides whether a rank enters a collective: "are this stage's
    outputs on disk?", "is there a checkpoint to resume?". Checked per rank, a slower rank can see
    files rank 0 has just written and take another path (the deadlock of issue 13).
    """
    debug_hook(point)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decide()
    box = [decide() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_FAILURE_KEY = "paced/failed"
_FAILURE_COUNT_KEY = "paced/failures"
_watch_stop: threading.Event | None = None


def _store():
    try:
        from torch.distributed.distributed_c10d import _get_default_store
        return _get_default_store()
    except Exception:  # no process group, or a torch without the (private) accessor
        return None


def report_failure(exc: BaseException) -> None:
    """Publish this rank's error to the others (see :func:`watch_for_peer_failure`). The first
    failure is kept: a rank that fails *because* a peer did (a broken collective) does not
    overwrite the cause. Never raises."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    store = _store()
    if store is None:
        return
    try:
        if store.add(_FAILURE_COUNT_KEY, 1) == 1:
            msg = f"rank {dist.get_rank()} failed: {type(exc).__name__}: {exc}"
            store.set(_FAILURE_KEY, msg[:4000])
    except Exception:
        pass


def peer_failure(wait_s: float = 0.0) -> str | None:
    """The first failure another rank reported (``"rank R failed: ..."``), or None: lets a rank whose
    collective broke say what broke it. Waits up to ``wait_s`` for the message. Never raises."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    store = _store()
    if store is None:
        return None
    deadline = time.monotonic() + wait_s
    try:
        while True:
            if store.check([_FAILURE_KEY]):
                msg = store.get(_FAILURE_KEY).decode(errors="replace")
                return None if msg.startswith(f"rank {dist.get_rank()} failed") else msg
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
    except Exception:
        return None


def watch_for_peer_failure(poll_s: float = 0.5) -> bool:
    """Start a daemon thread that ends this process (exit code 1) as soon as another rank has
    called :func:`report_failure`, printing that rank's error. Returns whether a watcher runs.

    torchrun already stops every rank when one exits; the watcher covers ranks blocked in a
    collective under any launcher, and says why they stop.
    """
    global _watch_stop
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    store = _store()
    if store is None:
        return False
    _stop_watch()
    stop = threading.Event()
    me = dist.get_rank()

    def watch() -> None:
        while not stop.wait(poll_s):
            try:
                if not store.check([_FAILURE_KEY]):
                    continue
                msg = store.get(_FAILURE_KEY).decode(errors="replace")
            except Exception:
                return  # the store went away: the run is ending
            if msg.startswith(f"rank {me} failed"):
                return
            print(f"[rank {me}] stopping: {msg}", file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=watch, name="paced-peer-failure-watch", daemon=True).start()
    _watch_stop = stop
    return True


def _stop_watch() -> None:
    global _watch_stop
    if _watch_stop is not None:
        _watch_stop.set()
        _watch_stop = None
