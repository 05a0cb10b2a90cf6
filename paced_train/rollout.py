"""Rollouts: K sampled responses per prompt from a model, behind one engine interface.

Engines (``make_engine``):
  * ``hf``   - transformers ``generate`` on the in-memory model: batched over (prompt, sample)
    pairs with left padding, temperature / top-p / top-k / max_new_tokens, seeded per batch with
    ``torch.manual_seed`` inside ``torch.random.fork_rng`` (reproducible, and the caller's RNG
    stream is untouched). The CPU default.
  * ``vllm`` - offline ``vllm.LLM(...).generate(prompts, SamplingParams(n=K, ...))`` from a model
    folder, tensor parallel, in generation worker processes of its own (one per group of
    ``tensor_parallel_size`` ranks; ``paced_train.generation_worker``): each samples its shard of
    the prompts with per-prompt seeds and exits. vllm is imported only inside the workers.

Both return, per prompt, a list of ``Generation`` (response token ids cut after the first stop
token, which is kept; decoded text; whether it finished with a stop token).

``sample_rollouts`` adds two-phase screening: K1 samples first; prompts whose K1 verdicts are all
correct or all wrong stop there, the others get K - K1 more.
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from .logging_utils import get_rank, get_world_size, progress

__all__ = ["SamplingSpec", "Generation", "RolloutEngine", "HFEngine", "VLLMEngine", "make_engine", "vllm_llm_kwargs",
           "ProblemRollouts", "sample_rollouts", "stop_token_ids", "truncate_at_stop"]


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0       # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0                 # 0 = off
    max_new_tokens: int = 256
    seed: int = 0


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finished: bool                 # ended with a stop token (False: hit max_new_tokens)


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], spec: SamplingSpec,
                 desc: str = "rollouts") -> list[list[Generation]]: ...

    def close(self) -> None: ...


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS ids: the tokenizer's plus the model generation config's (Qwen has several)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if eos is not None:
        for i in (eos if isinstance(eos, (list, tuple)) else [eos]):
            if int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer defines no eos_token; responses could never end")
    return ids


def truncate_at_stop(ids: Sequence[int], stops: set[int]) -> tuple[list[int], bool]:
    """Cut after the first stop token (kept). Returns (ids, finished)."""
    out = []
    for t in ids:
        out.append(int(t))
        if t in stops:
            return out, True
    return out, False


# ===================================================================== Hugging Face engine
class HFEngine:
    """Batched ``model.generate`` with left padding; rank-sharded under torch.distributed."""

    def __init__(self, model, tokenizer, batch_size: int = 16, show_progress: bool = True,
                 shard_over_ranks: bool = True):
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.shard = shard_over_ranks
        self.stops = stop_token_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stops[0])

    def _generation_config(self, spec: SamplingSpec):
        from transformers import GenerationConfig
        sample = spec.temperature > 0
        kw = dict(do_sample=sample, max_new_tokens=spec.max_new_tokens, eos_token_id=self.stops,
                  pad_token_id=self.pad_id, num_beams=1)
        if sample:
            kw.update(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k)
        return GenerationConfig(**kw)

    @torch.no_grad()
    def generate(self, prompts, spec: SamplingSpec, desc: str = "rollouts") -> list[list[Generation]]:
        """K samples per prompt. The (prompt, sample) pairs are cut into global batches in one
        fixed order, batch b is seeded from (spec.seed, b) and run by rank b % world: the samples
        do not depend on how many ranks share the work."""
        n = len(prompts)
        rank, world = (get_rank(), get_world_size()) if self.shard else (0, 1)
        # flatten (prompt, sample) pairs so batch_size counts sequences
        pairs = [(i, j) for i in range(n) for j in range(spec.n)]
        batches = [pairs[s:s + self.batch_size] for s in range(0, len(pairs), self.batch_size)]
        mine = list(range(rank, len(batches), world))
        gen_cfg = self._generation_config(spec)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        local: list[tuple[int, int, Generation]] = []
        for b in progress(mine, desc=desc, enabled=self.show_progress, unit="batch"):
            batch = batches[b]
            seqs = [list(prompts[i]) for i, _ in batch]
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                input_ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[r, width - len(s):] = 1
            # seeded per global batch: reproducible whatever ran before, on any number of ranks
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(_mix_seed(spec.seed, 0, b))
                out = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                          generation_config=gen_cfg)
            new = out[:, width:].tolist()
            for (i, j), ids in zip(batch, new):
                ids, finished = truncate_at_stop(ids, set(self.stops))
                text = self.tok.decode(ids, skip_special_tokens=True)
                local.append((i, j, Generation(ids, text, finished)))
        if was_training:
            self.model.train()
        if world > 1:
            import torch.distributed as dist
            parts: list = [None] * world
            dist.all_gather_object(parts, local)
            local = [x for part in parts for x in part]
        results: list[list[Generation]] = [[None] * spec.n for _ in range(n)]  # type: ignore[list-item]
        for i, j, g in local:
            results[i][j] = g
        return results

    def close(self) -> None:
        pass


def _mix_seed(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


# ===================================================================== vLLM engine
class VLLMEngine:
    """Offline vLLM sampling from a model folder, in *this* process (import on first use).

    The pipeline never builds it inside a trainer rank: ``make_engine("vllm")`` runs it in
    generation workers of their own (``paced_train.generation_worker``), one per tensor-parallel
    group, each a plain single-node ``vllm.LLM`` that owns its group's GPUs and exits afterwards,
    so vLLM's process-group setup and teardown never touch the trainer's.
    """

    def __init__(self, llm_kwargs: dict, stop_ids: Sequence[int], show_progress: bool = False):
        try:
            import vllm
        except ImportError:
            raise ValueError("rollout.engine=vllm needs vLLM: pip install 'paced[vllm]' (GPU only); "
                             "use rollout.engine=hf on CPU") from None
        self._vllm = vllm
        self.stops = [int(i) for i in stop_ids]
        if not self.stops:
            raise ValueError("the vllm engine needs at least one stop token id (the EOS)")
        self.show_progress = show_progress
        self.kwargs = dict(llm_kwargs)
        self.llm = vllm.LLM(**self.kwargs)

    def generate(self, prompts, spec: SamplingSpec, desc: str = "rollouts",
                 seeds: Optional[Sequence[int]] = None) -> list[list[Generation]]:
        """K samples per prompt; ``seeds[i]`` seeds prompt i (default: from spec.seed and i), so a
        prompt's samples do not depend on which other prompts share the call."""
        if seeds is None:
            seeds = [_mix_seed(spec.seed, i) % (2 ** 31) for i in range(len(prompts))]
        params = [self._vllm.SamplingParams(
            n=spec.n, temperature=spec.temperature, top_p=spec.top_p,
            top_k=spec.top_k if spec.top_k > 0 else -1, max_tokens=spec.max_new_tokens,
            seed=int(seed), stop_token_ids=self.stops, skip_special_tokens=True)
            for seed in seeds]
        reqs = [{"prompt_token_ids": list(p)} for p in prompts]
        outs = self.llm.generate(reqs, params, use_tqdm=self.show_progress) if reqs else []
        stops = set(self.stops)
        results = []
        for o in outs:
            gens = []
            for c in o.outputs:
                ids = list(c.token_ids)
                finished = c.finish_reason == "stop" or (bool(ids) and ids[-1] in stops)
                if finished and (not ids or ids[-1] not in stops):
                    # a stop token missing from token_ids (stop strings, older vLLM): training needs the EOS
                    ids.append(self.stops[0] if getattr(c, "stop_reason", None) is None
                               or not isinstance(c.stop_reason, int) else int(c.stop_reason))
                gens.append(Generation(ids, c.text, finished))
            results.append(gens)
        return results

    def close(self) -> None:
        """Free the engine (in a generation worker the process exit frees everything anyway)."""
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_RESERVED_VLLM_KWARGS = ("model", "tokenizer", "tensor_parallel_size", "distributed_executor_backend", "seed")


def vllm_llm_kwargs(model_path: str, *, tokenizer_path: Optional[str] = None, tensor_parallel_size: int = 1,
                    dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.85,
                    max_model_len: Optional[int] = None, enforce_eager: bool = False,
                    trust_remote_code: bool = False, extra: Optional[dict] = None) -> dict:
    """The ``vllm.LLM(...)`` arguments of a generation worker (checked: ``extra`` may not override
    what the pipeline decides)."""
    extra = dict(extra or {})
    bad = [k for k in _RESERVED_VLLM_KWARGS if k in extra]
    if bad:
        raise ValueError(f"config key 'rollout.vllm_kwargs' may not set {bad}: the pipeline sets them "
                         f"(model folders from model.*, rollout.tensor_parallel_size; generation runs in "
                         f"worker processes of their own, never with external_launcher)")
    kwargs = dict(model=model_path, tokenizer=tokenizer_path or model_path, tensor_parallel_size=tensor_parallel_size,
                  dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                  enforce_eager=enforce_eager, trust_remote_code=trust_remote_code)
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    kwargs.update(extra)
    return kwargs


def make_engine(kind: str, *, model=None, model_path: Optional[str] = None, tokenizer=None,
                tokenizer_path: Optional[str] = None, batch_size: int = 16, rollout_cfg=None,
                dtype: str = "auto", seed: int = 0, trust_remote_code: bool = False,
                max_model_len: Optional[int] = None, show_progress: bool = True,
                work_dir=None, logger=None, use_gpus: bool = False,
                stop_ids: Optional[Sequence[int]] = None) -> RolloutEngine:
    """An engine of ``kind``: "hf" runs ``model`` in this process; "vllm" runs ``model_path`` in
    generation worker processes (``paced_train.generation_worker``) that communicate through
    ``work_dir``."""
    if kind == "hf":
        if model is None:
            raise ValueError("the hf rollout engine needs a loaded model")
        return HFEngine(model, tokenizer, batch_size=batch_size, show_progress=show_progress)
    if kind == "vllm":
        if model_path is None:
            raise ValueError("the vllm rollout engine needs a model folder")
        if work_dir is None:
            raise ValueError("the vllm rollout engine needs a work_dir for its generation workers")
        from .generation_worker import WorkerEngine
        r = rollout_cfg
        tp = r.tensor_parallel_size if r else 1
        kwargs = vllm_llm_kwargs(model_path, tokenizer_path=tokenizer_path, tensor_parallel_size=tp, dtype=dtype,
                                 seed=seed, gpu_memory_utilization=r.gpu_memory_utilization if r else 0.85,
                                 max_model_len=(r.max_model_len if r and r.max_model_len else max_model_len),
                                 enforce_eager=r.enforce_eager if r else False,
                                 trust_remote_code=trust_remote_code, extra=r.vllm_kwargs if r else None)
        return WorkerEngine(kwargs, stop_ids or stop_token_ids(tokenizer), work_dir, tensor_parallel_size=tp,
                            use_gpus=use_gpus, logger=logger)
    raise ValueError(f"unknown rollout engine {kind!r} (hf, vllm)")


# ===================================================================== K samples + screening
@dataclass
class ProblemRollouts:
    """The samples of one problem with their verdicts."""
    generations: list[Generation] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    screened: bool = False          # stopped after phase 1 of two-phase screening

    @property
    def n(self) -> int:
        return len(self.generations)

    @property
    def n_correct(self) -> int:
        return int(sum(self.correct))

    @property
    def pass_rate(self) -> float:
        return self.n_correct / self.n if self.n else math.nan


Verifier = Callable[[list[str], list[str]], list[bool]]


def sample_rollouts(engine: RolloutEngine, prompts: Sequence[Sequence[int]], golds: Sequence[str],
                    verify: Verifier, spec: SamplingSpec, k1: Optional[int] = None,
                    desc: str = "rollouts") -> list[ProblemRollouts]:
    """K = spec.n samples per prompt, each verified against its gold answer.

    With ``k1`` (two-phase screening): K1 samples for all; prompts whose K1 samples are all
    correct or all wrong stop (pass rate 1 or 0); the rest get K - K1 more (seed + 1).
    """
    if len(prompts) != len(golds):
        raise ValueError(f"{len(prompts)} prompts but {len(golds)} gold answers")
    k = spec.n
    first = k if not k1 else k1
    phase1 = engine.generate(prompts, _replace(spec, n=first), desc=desc if not k1 else f"{desc} (phase 1)")
    results = [ProblemRollouts(list(g)) for g in phase1]
    _verify_into(results, golds, verify, start=0)
    if k1:
        from paced_kernels.weights import needs_second_phase
        mixed = [int(i) for i in np.flatnonzero(needs_second_phase([r.n_correct for r in results], k1))]
        for i, r in enumerate(results):
            r.screened = i not in set(mixed)
        if mixed:
            phase2 = engine.generate([prompts[i] for i in mixed],
                                     _replace(spec, n=k - k1, seed=spec.seed + 1), desc=f"{desc} (phase 2)")
            for i, g in zip(mixed, phase2):
                results[i].generations.extend(g)
            _verify_into(results, golds, verify, start=None, only=mixed)
    return results


def _replace(spec: SamplingSpec, **kw) -> SamplingSpec:
    d = dict(spec.__dict__)
    d.update(kw)
    return SamplingSpec(**d)


def _verify_into(results: list[ProblemRollouts], golds, verify: Verifier, start, only=None) -> None:
    """Verify every generation not yet verified (flattened into one verifier call)."""
    idx = range(len(results)) if only is None else only
    flat_gold, flat_text, where = [], [], []
    for i in idx:
        r = results[i]
        for j in range(len(r.correct), r.n):
            flat_gold.append(golds[i])
            flat_text.append(r.generations[j].text)
            where.append(i)
    if not flat_text:
        return
    verdicts = list(verify(flat_gold, flat_text))
    if len(verdicts) != len(flat_text):
        raise RuntimeError(f"verifier returned {len(verdicts)} verdicts for {len(flat_text)} responses")
    for i, v in zip(where, verdicts):
        results[i].correct.append(bool(v))
