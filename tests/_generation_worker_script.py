"""torchrun worker for test_generation_worker: two generation phases through WorkerEngine with the
fake vLLM, the second one with rank 1's generation worker dying; after each, a collective on the
trainer's process group. Rank 0 writes what every rank saw as JSON (argv[1])."""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from paced_train import parallel
from paced_train.generation_worker import GenerationWorkerError, WorkerEngine
from paced_train.rollout import SamplingSpec, stop_token_ids, vllm_llm_kwargs
from paced_train.toy.assets import resolve_path

PROMPTS = [[5, 9, 11, 7], [12, 3], [4, 4, 4], [8], [10, 13, 2]]
SPEC = SamplingSpec(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=7)


def phase(work_dir: Path, crash_here: bool):
    from transformers import AutoTokenizer
    student = resolve_path("toy://student")
    tok = AutoTokenizer.from_pretrained(student)
    if crash_here:  # inherited by the worker this rank starts (worker_env copies os.environ)
        os.environ["PACED_FAKE_VLLM_CRASH"] = "generate"
    eng = WorkerEngine(vllm_llm_kwargs(student, dtype="float32", seed=0, max_model_len=128), stop_token_ids(tok),
                       work_dir, tensor_parallel_size=1)
    os.environ.pop("PACED_FAKE_VLLM_CRASH", None)
    try:
        out = eng.generate(PROMPTS, SPEC)
        status = "ok"
    except GenerationWorkerError as e:
        out, status = None, f"GenerationWorkerError: {e}"
    finally:
        eng.close()
    # the trainer's process group survived the phase: a collective works
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, {"status": status, "pg": dist.is_initialized(), "sum": t.item()})
    rollouts = [[[g.token_ids, g.finished] for g in gens] for gens in out] if out is not None else None
    return {"ranks": seen, "rollouts": rollouts}


if __name__ == "__main__":
    torch.set_num_threads(1)
    parallel.init_distributed()
    dest = Path(sys.argv[1])
    res = {"ok": phase(dest.parent / "gen_ok", crash_here=False),
           "crash": phase(dest.parent / "gen_crash", crash_here=dist.get_rank() == 1)}
    if dist.get_rank() == 0:
        dest.write_text(json.dumps(res))
    parallel.teardown_distributed()
