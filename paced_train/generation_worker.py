"""Generation workers: vLLM in processes of their own, beside the FSDP trainer ranks.

Why: vLLM and the trainer both want the GPUs and both own a ``torch.distributed`` world. Run
inside a trainer rank, vLLM's teardown (``cleanup_dist_env_and_memory``) destroys the trainer's
default process group, its ``external_launcher`` executor ties generation to torchrun's world, and
its memory is only truly returned when its process ends. The pipeline already works stage by
stage on disk, so each generation phase runs in fresh processes that own the GPUs and exit:

* the trainer ranks free their models and ``torch.cuda.empty_cache()`` (``Pipeline``), keeping
  their process group intact;
* one worker per tensor-parallel group of ``tp`` ranks (``python -m paced_train.generation_worker
  DIR``), started by the group's first rank with ``CUDA_VISIBLE_DEVICES`` set to the group's GPUs
  and *without* torchrun's environment, so vLLM runs as a plain single-node ``vllm.LLM`` (its own
  executor for tp > 1);
* requests and answers are Parquet files in the group's folder (``req_NNNN`` / ``out_NNNN``);
  group g answers prompts g, g + G, g + 2G, ... (G groups) with per-prompt seeds from the global
  prompt index, so the samples do not depend on how many groups share the work;
* every rank waits by polling files (never inside a collective, which would time out after 30
  minutes of generation), reads every group's answers and assembles the same result; a worker
  that exits early is reported to *all* ranks as a ``GenerationWorkerError`` with the tail of its
  log (``group_G/worker.log``), and a worker whose parent died exits on its own.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .logging_utils import get_rank, get_world_size

__all__ = ["WorkerEngine", "GenerationWorkerError", "worker_env", "group_gpus", "clear_answers", "main"]

# torchrun / elastic variables a worker must not inherit (vLLM would think it is one rank of a world)
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                  "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")
_LAUNCHER_PREFIXES = ("TORCHELASTIC_", "TORCH_ELASTIC_")
_LOG_TAIL = 40


class GenerationWorkerError(RuntimeError):
    """A generation worker failed (its exit code and the tail of its log are in the message)."""


def worker_env(gpus: Optional[Sequence[str]]) -> dict:
    """This process's environment without torchrun's variables; CUDA_VISIBLE_DEVICES = ``gpus``."""
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCHER_VARS and not k.startswith(_LAUNCHER_PREFIXES)}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def group_gpus(local_rank: int, tp: int) -> list[str]:
    """The GPUs of the tensor-parallel group whose first rank has ``local_rank`` on this node."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [x.strip() for x in visible.split(",") if x.strip()]
    else:
        import torch
        ids = [str(i) for i in range(torch.cuda.device_count())]
    mine = ids[local_rank:local_rank + tp]
    if len(mine) < tp:
        raise ValueError(f"rollout.tensor_parallel_size={tp}: the group starting at local rank {local_rank} "
                         f"needs {tp} GPUs, but only {len(ids)} are visible ({ids})")
    return mine


def _tail(path: Path, n: int = _LOG_TAIL) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)


# ===================================================================== the trainer side
class WorkerEngine:
    """A RolloutEngine whose ``generate`` runs in generation workers (see the module doc).

    Every rank constructs it at the same point of the schedule with the same ``work_dir``; the
    first rank of each group starts that group's worker, which loads the model once and serves
    every ``generate`` call until ``close()``.
    """

    def __init__(self, llm_kwargs: dict, stop_ids: Sequence[int], work_dir, tensor_parallel_size: int = 1,
                 use_gpus: bool = False, logger=None, poll_s: float = 0.05):
        from . import parallel
        self.rank, self.world = get_rank(), get_world_size()
        tp = int(tensor_parallel_size)
        if self.world > 1 and self.world % tp:
            raise ValueError(f"rollout.tensor_parallel_size={tp} must divide the number of ranks ({self.world})")
        self.groups = max(1, self.world // tp) if self.world > 1 else 1
        self.group = self.rank // tp if self.world > 1 else 0
        self.lead = self.world == 1 or self.rank % tp == 0
        self.stops = [int(i) for i in stop_ids]
        self.work_dir = Path(work_dir)
        self.log = logger
        self.poll_s = poll_s
        self.calls = 0
        self.proc: Optional[subprocess.Popen] = None
        self._closed = False
        if self.rank == 0:
            if self.work_dir.exists():  # a previous, interrupted attempt of the same phase
                shutil.rmtree(self.work_dir)
            self.work_dir.mkdir(parents=True)
        parallel.barrier()  # every rank arrives here at the same point of the schedule
        if self.rank == 0:  # every rank is past the earlier phases: their answers are read
            clear_answers(self.work_dir.parent)
        self.gdir = self.work_dir / f"group_{self.group}"
        if self.lead:
            self.gdir.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.gdir / "engine.json", json.dumps({"llm_kwargs": llm_kwargs, "stop_ids": self.stops}))
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            gpus = group_gpus(local_rank, tp) if use_gpus else None
            self.gpus = gpus
            self._logf = open(self.gdir / "worker.log", "w")
            self.proc = subprocess.Popen([sys.executable, "-m", "paced_train.generation_worker", str(self.gdir)],
                                         env=worker_env(gpus), stdout=self._logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    # ---------------------------------------------------------------- waiting on files
    def _group_dir(self, g: int) -> Path:
        return self.work_dir / f"group_{g}"

    def _check_failures(self) -> None:
        if self.lead and self.proc is not None and self.proc.poll() is not None \
                and not (self.gdir / "failed.json").exists():
            code = self.proc.returncode
            _write_atomic(self.gdir / "failed.json", json.dumps(
                {"group": self.group, "returncode": code, "log": str(self.gdir / "worker.log"),
                 "tail": _tail(self.gdir / "worker.log")}))
        for g in range(self.groups):
            f = self._group_dir(g) / "failed.json"
            if f.exists():
                try:
                    info = json.loads(f.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # being written
                raise GenerationWorkerError(
                    f"generation worker of group {info['group']} exited with code {info['returncode']} before it "
                    f"answered (model {self._model_name()}); last lines of {info['log']}:\n{info['tail']}")

    def _model_name(self) -> str:
        try:
            return json.loads((self._group_dir(0) / "engine.json").read_text())["llm_kwargs"]["model"]
        except Exception:
            return "?"

    def _wait_for(self, paths: list[Path], desc: str) -> None:
        t0 = last = time.monotonic()
        while True:
            self._check_failures()
            if all(p.exists() for p in paths):
                return
            now = time.monotonic()
            if self.rank == 0 and self.log is not None and now - last >= 60:
                done = sum(p.exists() for p in paths)
                self.log.info(f"{desc}: waiting for generation workers ({done}/{len(paths)} done, "
                              f"{now - t0:.0f}s)")
                last = now
            time.sleep(self.poll_s)

    # ---------------------------------------------------------------- the engine interface
    def generate(self, prompts, spec, desc: str = "rollouts"):
        from .rollout import Generation, _mix_seed
        k = self.calls
        self.calls += 1
        n = len(prompts)
        mine = list(range(self.group, n, self.groups))
        if self.lead:
            _write_parquet(self.gdir / f"req_{k:04d}.parquet", {
                "index": [int(i) for i in mine],
                "prompt_ids": [[int(t) for t in prompts[i]] for i in mine],
                "seed": [int(_mix_seed(spec.seed, i) % (2 ** 31)) for i in mine]})
            _write_atomic(self.gdir / f"req_{k:04d}.json", json.dumps(
                {"n": spec.n, "temperature": spec.temperature, "top_p": spec.top_p, "top_k": spec.top_k,
                 "max_new_tokens": spec.max_new_tokens, "seed": spec.seed}))
        t0 = time.monotonic()
        outs = [self._group_dir(g) / f"out_{k:04d}.parquet" for g in range(self.groups)]
        self._wait_for(outs, desc)
        import pyarrow.parquet as pq
        results: list[list] = [[None] * spec.n for _ in range(n)]
        for path in outs:
            for row in pq.read_table(path).to_pylist():
                results[row["index"]][row["sample"]] = Generation(list(row["token_ids"]), row["text"],
                                                                  bool(row["finished"]))
        missing = sum(g is None for r in results for g in r)
        if missing:
            raise GenerationWorkerError(f"{desc}: the generation workers returned {missing} of {n * spec.n} "
                                        f"samples short (see {self.work_dir})")
        if self.log is not None:
            self.log.info(f"{desc}: {n} prompts x {spec.n} samples on {self.groups} generation worker(s) "
                          f"in {time.monotonic() - t0:.1f}s")
        return results

    def close(self) -> None:
        """Stop this group's worker and wait until it has exited (its GPUs are free again). Waits
        for no other group, so a rank that fails elsewhere can always close."""
        if self._closed:
            return
        self._closed = True
        if self.lead and self.proc is not None:
            _write_atomic(self.gdir / "close", "")
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._logf.close()
            # the answers stay until every rank has read them (clear_answers at the next phase / run end)
            _write_atomic(self.gdir / "exited", str(self.proc.returncode))
        else:  # the group's other ranks share the lead's GPUs: wait until its worker is gone
            while not (self.gdir / "exited").exists():
                time.sleep(self.poll_s)


def clear_answers(root) -> int:
    """Delete the request/answer files of the finished phases under ``root`` (``run_dir/generation``);
    call on one rank once every rank has read them (after a barrier). Returns how many were removed.
    Logs, ``exited`` markers and ``failed.json`` stay for post-mortems."""
    n = 0
    for f in Path(root).glob("*/group_*/*.parquet"):
        if (f.parent / "exited").exists():
            f.unlink(missing_ok=True)
            n += 1
    return n


# ===================================================================== the worker side
def _serve(gdir: Path) -> int:
    from .rollout import SamplingSpec, VLLMEngine
    spec = json.loads((gdir / "engine.json").read_text())
    parent = os.getppid()
    engine = VLLMEngine(spec["llm_kwargs"], spec["stop_ids"], show_progress=False)
    print(f"generation worker: {spec['llm_kwargs']['model']} loaded "
          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})", flush=True)
    k = 0
    import pyarrow.parquet as pq
    while True:
        req = gdir / f"req_{k:04d}.json"
        if req.exists():
            s = json.loads(req.read_text())
            rows = pq.read_table(gdir / f"req_{k:04d}.parquet").to_pylist()
            t0 = time.monotonic()
            gens = engine.generate([r["prompt_ids"] for r in rows], SamplingSpec(**s),
                                   seeds=[r["seed"] for r in rows]) if rows else []
            cols = {"index": [], "sample": [], "token_ids": [], "text": [], "finished": []}
            for r, gs in zip(rows, gens):
                for j, g in enumerate(gs):
                    cols["index"].append(r["index"])
                    cols["sample"].append(j)
                    cols["token_ids"].append(g.token_ids)
                    cols["text"].append(g.text)
                    cols["finished"].append(g.finished)
            import pyarrow as pa
            cols["token_ids"] = pa.array(cols["token_ids"], type=pa.list_(pa.int32()))
            cols["index"] = pa.array(cols["index"], type=pa.int64())
            cols["sample"] = pa.array(cols["sample"], type=pa.int64())
            cols["text"] = pa.array(cols["text"], type=pa.string())
            cols["finished"] = pa.array(cols["finished"], type=pa.bool_())
            _write_parquet(gdir / f"out_{k:04d}.parquet", cols)
            print(f"request {k}: {len(rows)} prompts x {s['n']} in {time.monotonic() - t0:.1f}s", flush=True)
            k += 1
            continue
        if (gdir / "close").exists():
            engine.close()
            return 0
        if os.getppid() != parent:  # the trainer rank that started us is gone
            print("generation worker: parent process exited, stopping", flush=True)
            return 3
        time.sleep(0.05)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m paced_train.generation_worker GROUP_DIR", file=sys.stderr)
        return 2
    return _serve(Path(argv[0]))


if __name__ == "__main__":
    raise SystemExit(main())
