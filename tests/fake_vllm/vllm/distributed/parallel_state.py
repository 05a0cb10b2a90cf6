"""``cleanup_dist_env_and_memory`` of the fake vLLM: like vLLM's, it tears down the distributed
environment, which destroys torch's *default* process group when one exists (vLLM's
``destroy_distributed_environment`` calls ``torch.distributed.destroy_process_group()``)."""
from __future__ import annotations

import gc


def destroy_model_parallel() -> None:
    pass


def destroy_distributed_environment() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cleanup_dist_env_and_memory(shutdown_ray: bool = False) -> None:
    destroy_model_parallel()
    destroy_distributed_environment()
    gc.collect()
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
