"""The schedule: data -> [eval base] -> per stage: pass rates -> weights -> (reference) ->
distill -> eval -> ... -> final pass rates -> results.

``Pipeline(cfg, run_dir, logger).run()`` runs a whole config. Every step writes its outputs into
the run directory and is skipped on a re-run when they exist, so a killed run resumes where it
stopped (the distillation stage resumes mid-stage from its own DCP checkpoints):

  run_dir/
    config.yaml, metrics.jsonl, tensorboard/, results.json, results.txt, summary.json
    data/                      toy data set (when data.toy is set) and data summary
    expert/                    expert solutions from an API (when the expert: section is set)
    reference/                 teacher reference responses (FKL / AKL stages; computed once)
    pass_rates/NN_<label>/     rollouts, pass rates, weights, histogram (one per computation)
    stages/<stage>/            weights/, checkpoints/, student/ (export), distill_result.json
    eval/<checkpoint>.json     mean@k and multiple-choice results per checkpoint
    plots/                     curriculum.png, loss.png

Generation and training share the devices phase by phase: with ``engine=vllm`` every generation
phase runs in worker processes of its own (``paced_train.generation_worker``) while the trainer
ranks hold no model (freed, ``torch.cuda.empty_cache()``) and keep their process group; the models
are reloaded from disk (the latest export) when training or the multiple-choice eval needs them.
Every "skip this stage, its outputs exist" decision is made on rank 0 and broadcast. Settings that
can be checked without running anything are checked before the first stage (``preflight``).

Schedules: ``stages: [fkl, rkl]`` trains stage after stage; pass rates are recomputed with the
updated student before each stage (``schedule.recompute_between_stages``) and, with
``distill.recompute_every = R``, every R steps inside a stage (the stage is split into segments
of R steps; each segment has fresh weights and a fresh optimizer, and its warm-up is not repeated).
"""
from __future__ import annotations

import dataclasses
import gc
import importlib.util
import json
import os
import random
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .config import RunConfig, config_to_dict
from .data import PromptBuilder, load_mc, load_problems
from .logging_utils import RunLogger, get_rank, get_world_size, is_main_process
from .rollout import SamplingSpec, _mix_seed, make_engine, stop_token_ids, vllm_llm_kwargs
from .parallel import barrier, decided_by_rank0
from .pass_rates import bin_stats, load_pass_rates, run_pass_rate_stage

__all__ = ["Pipeline", "seed_everything", "resolve_model_path", "build_distill_examples", "count_truncated"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def resolve_model_path(spec: str) -> str:
    """``toy://...`` specs -> the shipped toy assets; anything else unchanged."""
    if spec.startswith("toy://"):
        from .toy.assets import resolve_path
        return str(resolve_path(spec))
    return spec


def build_distill_examples(loss: str, ids, weights, *, references=None, rollouts=None,
                           student_prompts: dict, teacher_prompts: Optional[dict] = None,
                           truncated: str = "keep"):
    """DistillExamples for a stage.

    fkl / akl: one example per problem along the teacher's reference response (problems without a
    reference, e.g. dropped for length, are left out). rkl: one example per student rollout, the
    problem's weight split evenly over its rollouts; the teacher sees ``teacher_prompts[id]``.
    ``truncated="drop"`` leaves out responses that hit the length limit (no EOS) as training
    targets; an rkl problem's weight is then split over its remaining rollouts.
    """
    from .distill import DistillExample
    if truncated not in ("drop", "keep"):
        raise ValueError(f"distill.truncated must be 'drop' or 'keep', got {truncated!r}")
    drop = truncated == "drop"
    w = {pid: float(x) for pid, x in zip(ids, weights)}
    out = []
    if loss in ("fkl", "akl"):
        for r in references:
            if r.id in w and not (drop and not r.finished):
                out.append(DistillExample(r.id, w[r.id], list(r.student_prompt_ids), list(r.teacher_prompt_ids),
                                          list(r.response_ids)))
    elif loss == "rkl":
        tp = teacher_prompts or student_prompts
        for pid, roll in zip(ids, rollouts):
            gens = [g for g in roll.generations if not (drop and not g.finished)]
            n = max(len(gens) if drop else roll.n, 1)
            for g in gens:
                if not g.token_ids:
                    continue
                out.append(DistillExample(pid, w[pid] / n, list(student_prompts[pid]), list(tp[pid]),
                                          list(g.token_ids)))
    else:  # pragma: no cover - validated by the config
        raise ValueError(f"unknown loss {loss!r}")
    return out


def count_truncated(loss: str, ids, *, references=None, rollouts=None) -> dict:
    """How many of a stage's training responses hit the length limit (no EOS)."""
    if loss in ("fkl", "akl"):
        keep = set(ids)
        refs = [r for r in references if r.id in keep]
        return {"responses": len(refs), "truncated": sum(not r.finished for r in refs),
                "problems_without_response": sum(not r.finished for r in refs)}
    gens = [[g.finished for g in roll.generations] for roll in rollouts]
    return {"responses": sum(len(g) for g in gens), "truncated": sum(g.count(False) for g in gens),
            "problems_without_response": sum(1 for g in gens if g and not any(g))}


class Pipeline:
    """One run of a RunConfig in ``run_dir`` (see module doc)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, logger: RunLogger, verify: Optional[Callable] = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = logger
        self._verify = verify
        self.device = self._device()
        self._student = None
        self._teacher = None
        self.student_path = resolve_model_path(cfg.model.student)
        self.teacher_path = resolve_model_path(cfg.model.teacher)
        self.tokenizer = None
        self.tokenizer_source = resolve_model_path(cfg.model.tokenizer) if cfg.model.tokenizer else self.student_path
        self.generation_phase = 0
        self.truncated: dict[str, dict] = {}
        self.pr_index = 0
        self.curriculum: list[tuple[str, dict]] = []
        self.stage_losses: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        want = self.cfg.device
        if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ValueError("device=cuda but no CUDA GPU is visible (use device=cpu)")
            import os
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")

    _DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

    def _dtype(self, teacher: bool = False) -> torch.dtype:
        d = self.cfg.model.teacher_dtype if teacher else self.cfg.model.dtype
        if d == "auto":
            return torch.bfloat16 if teacher and self.device.type == "cuda" else torch.float32
        return self._DTYPES[d]

    @property
    def verify(self) -> Callable:
        if self._verify is None:
            from .pass_rates import default_verifier
            self._verify = default_verifier()
        return self._verify

    def _load_model(self, path: str, trainable: bool, shard_for=None):
        """The model at ``path``, whole on ``self.device``; with ``shard_for`` (a stage's distill config)
        under torchrun, built on the meta device with only this rank's FSDP2 shards read, sharded as
        that stage shards it (``paced_train.loading``: rank 0 reads the safetensors and broadcasts)."""
        from .loading import ShardPlan, load_causal_lm
        plan = ShardPlan.for_stage(shard_for, self.device) if shard_for is not None else None
        return load_causal_lm(path, dtype=self._dtype(teacher=not trainable), trainable=trainable, plan=plan,
                              device=self.device, attn_implementation=self.cfg.model.attn_implementation,
                              trust_remote_code=self.cfg.model.trust_remote_code)

    def _training_models(self, dcfg):
        """Student and teacher for ``run_distill_stage``. Under torchrun both are loaded sharded for
        the stage (a model held whole, e.g. for HF generation, is dropped first), so no rank ever
        holds a full copy; in one process the cached whole models, as before."""
        from .loading import ShardPlan, shard_plan_of
        from .parallel import get_dist_env
        if not get_dist_env().is_distributed:
            return self.student, self.teacher
        plan = ShardPlan.for_stage(dcfg, self.device)
        if self._student is not None and shard_plan_of(self._student) != plan:
            self._student = None
        if self._teacher is not None and shard_plan_of(self._teacher) != plan:
            self._teacher = None
        if self._student is None or self._teacher is None:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self._student is None:
            self.log.info(f"loading student from {self.student_path} (sharded over ranks)")
            self._student = self._load_model(self.student_path, trainable=True, shard_for=dcfg)
        if self._teacher is None:
            self.log.info(f"loading teacher from {self.teacher_path} (sharded over ranks)")
            self._teacher = self._load_model(self.teacher_path, trainable=False, shard_for=dcfg)
        return self._student, self._teacher

    @property
    def student(self):
        if self._student is None:
            self.log.info(f"loading student from {self.student_path}")
            self._student = self._load_model(self.student_path, trainable=True)
        return self._student

    @property
    def teacher(self):
        if self._teacher is None:
            self.log.info(f"loading teacher from {self.teacher_path}")
            self._teacher = self._load_model(self.teacher_path, trainable=False)
        return self._teacher

    def free_models(self) -> None:
        """Drop the in-memory student and teacher and return their GPU memory (before a generation
        phase takes the devices; they are reloaded from disk when needed)."""
        self._student = None
        self._teacher = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load_tokenizer(self):
        from transformers import AutoTokenizer
        path = self.tokenizer_source
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=self.cfg.model.trust_remote_code)
        except OSError as e:
            raise ValueError(f"cannot load tokenizer from {path!r}: {e}") from None
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return tok

    def setup_data(self) -> None:
        """Data stage: (toy data), problems, eval sets, MC set, prompts and length filtering."""
        cfg, d = self.cfg, self.cfg.data
        data_dir = self.run_dir / "data"
        train, evals, mc = d.train, dict(d.eval), d.mc
        if d.toy is not None:
            files = {k: data_dir / f"{k}.jsonl" for k in ("train", "eval", "mc")}
            if decided_by_rank0(lambda: not all(f.exists() for f in files.values()), "toy_data"):
                if is_main_process():
                    from .toy.world import write_toy_dataset
                    files = write_toy_dataset(data_dir, seed=d.toy.seed, n_train=d.toy.n_train,
                                              n_eval=d.toy.n_eval, n_mc=d.toy.n_mc)
                barrier()  # every rank: the decision above is rank 0's, broadcast
                files = {k: data_dir / f"{k}.jsonl" for k in ("train", "eval", "mc")}
            train = train or str(files["train"])
            if not evals:
                evals = {"toy_eval": str(files["eval"])}
            mc = mc or str(files["mc"])
        if cfg.expert is not None:  # expert solutions from an API first; train on the verified ones
            from .expert import run_expert_stage
            train = str(run_expert_stage(cfg.expert, train, self.run_dir / "expert", self.log))
        self.tokenizer = self._load_tokenizer()
        self.builder = PromptBuilder(self.tokenizer, d, cfg.reference.teacher_prompt_template,
                                     cfg.reference.on_missing_solution)
        problems = load_problems(train)
        self.prompts: dict[str, list[int]] = {}
        kept, too_long = [], 0
        for p in problems:
            ids = self.builder.student(p)
            if len(ids) > d.max_prompt_tokens:
                too_long += 1
                continue
            self.prompts[p.id] = ids
            kept.append(p)
            if d.max_train_problems is not None and len(kept) >= d.max_train_problems:
                break
        if too_long:
            self.log.warning(f"data: {too_long} training problems dropped, prompt longer than "
                             f"data.max_prompt_tokens={d.max_prompt_tokens}")
        if not kept:
            raise ValueError(f"no training problem fits data.max_prompt_tokens={d.max_prompt_tokens}")
        self.problems = kept
        self.eval_sets: dict[str, tuple[list, list]] = {}
        for name, path in evals.items():
            eps = load_problems(path, limit=d.max_eval_problems)
            ps = [(self.builder.student(p), p.answer) for p in eps]
            ps = [x for x in ps if len(x[0]) <= d.max_prompt_tokens]
            self.eval_sets[name] = ([x[0] for x in ps], [x[1] for x in ps])
        self.mc = load_mc(mc, limit=d.max_mc_questions) if mc else None
        summary = {"train": str(train), "n_train": len(kept), "dropped_long_prompts": too_long,
                   "eval": {n: len(v[0]) for n, v in self.eval_sets.items()}, "mc": str(mc) if mc else None,
                   "n_mc": len(self.mc) if self.mc else 0,
                   "mean_prompt_tokens": float(np.mean([len(v) for v in self.prompts.values()]))}
        if is_main_process():
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.log.info(f"data: {len(kept)} training problems, eval sets "
                      f"{ {n: len(v[0]) for n, v in self.eval_sets.items()} }, "
                      f"{summary['n_mc']} multiple-choice questions")

    # ------------------------------------------------------------------ engines
    def _engine_factory(self, kind: Optional[str] = None, batch_size: Optional[int] = None,
                        teacher: bool = False, phase: str = "generation") -> Callable:
        kind = kind or self.cfg.rollout.engine
        bs = batch_size or self.cfg.rollout.batch_size

        def factory():
            if kind == "hf":
                return make_engine("hf", model=self.teacher if teacher else self.student, tokenizer=self.tokenizer,
                                   batch_size=bs, show_progress=self.log.progress_bars)
            # vLLM in worker processes of their own: they own the GPUs until the phase ends
            self.free_models()
            self.generation_phase += 1
            path = self.teacher_path if teacher else self.student_path
            return make_engine("vllm", model_path=path, tokenizer=self.tokenizer, stop_ids=self._stop_ids(path),
                               tokenizer_path=self.cfg.model.tokenizer and resolve_model_path(self.cfg.model.tokenizer),
                               rollout_cfg=self.cfg.rollout,
                               dtype="bfloat16" if self.device.type == "cuda" else "float32",
                               seed=self.cfg.rollout.seed if self.cfg.rollout.seed is not None else self.cfg.seed,
                               trust_remote_code=self.cfg.model.trust_remote_code,
                               max_model_len=self.cfg.data.max_teacher_prompt_tokens + self.cfg.data.max_response_tokens,
                               show_progress=self.log.progress_bars,
                               work_dir=self.run_dir / "generation" / f"{self.generation_phase:02d}_{phase}",
                               logger=self.log, use_gpus=self.device.type == "cuda")
        return factory

    def _stop_ids(self, model_path: str) -> list[int]:
        """The tokenizer's EOS plus the model folder's generation-config EOS ids (Qwen has several)."""
        from types import SimpleNamespace
        try:
            from transformers import GenerationConfig
            gen = GenerationConfig.from_pretrained(model_path)
        except Exception:  # no generation_config.json: the tokenizer's EOS alone
            gen = None
        return stop_token_ids(self.tokenizer, SimpleNamespace(generation_config=gen))

    def _rollout_spec(self, label_index: int) -> SamplingSpec:
        r = self.cfg.rollout
        base = r.seed if r.seed is not None else self.cfg.seed
        return SamplingSpec(n=r.k, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                            max_new_tokens=self.cfg.data.max_response_tokens,
                            seed=_mix_seed(base, 1, label_index) % (2 ** 31))

    # ------------------------------------------------------------------ stages
    def pass_rates(self, label: str, weight_cfg, step: int = 0, index: Optional[int] = None):
        from .weighting import compute_weights
        idx = self.pr_index if index is None else index
        out = self.run_dir / "pass_rates" / f"{idx:02d}_{label}"
        self.pr_index = idx + 1
        ids = [p.id for p in self.problems]
        res = run_pass_rate_stage(
            out, ids, [self.prompts[i] for i in ids], [p.answer for p in self.problems],
            self._engine_factory(phase=f"pass_rates_{label}"), self._rollout_spec(idx), self.cfg.rollout.k1,
            self.verify, self.log,
            label=f"pass rates {label}", bins=self.cfg.pass_rate.bins, formats=self.cfg.pass_rate.formats,
            weight_fn=lambda p, k: compute_weights(p, weight_cfg, k), plot=self.cfg.pass_rate.plot, step=step)
        self.curriculum.append((label, res.summary))
        return res, out

    def references(self):
        if getattr(self, "_refs", None) is None:
            from .reference import run_reference_stage
            rc = self.cfg.reference
            spec = SamplingSpec(n=1, temperature=rc.temperature, top_p=rc.top_p, top_k=0,
                                max_new_tokens=self.cfg.data.max_response_tokens,
                                seed=_mix_seed(rc.seed if rc.seed is not None else self.cfg.seed, 2) % (2 ** 31))
            self._refs = run_reference_stage(
                self.run_dir / "reference", self.problems, self.builder,
                self._engine_factory(batch_size=rc.batch_size, teacher=True, phase="reference"), spec,
                self.cfg.data.max_teacher_prompt_tokens, self.verify, self.log, rc.keep_only_correct)
        return self._refs

    def evaluate(self, label: str, step: int = 0) -> Optional[dict]:
        if not self.cfg.eval.enabled:
            return None
        from .evaluate import run_eval
        e = self.cfg.eval
        out = self.run_dir / "eval" / f"{label}.json"
        spec = SamplingSpec(n=e.k, temperature=e.temperature, top_p=e.top_p, top_k=0,
                            max_new_tokens=e.max_new_tokens or self.cfg.data.max_response_tokens,
                            seed=_mix_seed(e.seed if e.seed is not None else self.cfg.seed, 3) % (2 ** 31))
        if decided_by_rank0(out.exists, "eval"):
            return run_eval(out, label, engine_factory=None, eval_sets={}, verify=None, spec=spec, model=None,
                            tokenizer=None, builder=None, mc_questions=None, cfg=e, logger=self.log)
        # the MC eval asks for the student after generation: reloaded onto self.device if the
        # generation workers had the devices
        return run_eval(out, label, engine_factory=self._engine_factory(kind=e.engine, batch_size=e.batch_size,
                                                                        phase=f"eval_{label}"),
                        eval_sets=self.eval_sets, verify=self.verify, spec=spec,
                        model=(lambda: self.student) if self.mc else None, tokenizer=self.tokenizer,
                        builder=self.builder, mc_questions=self.mc, cfg=e, logger=self.log, step=step)

    def _distill_segment(self, i: int, seg: int, n_segs: int, seg_name: str, dcfg, wcfg, pr, pr_dir):
        """Weights + examples + distillation of one segment (one call of run_distill_stage)."""
        from .distill import run_distill_stage
        from .weighting import run_weight_stage
        stages_dir = self.run_dir / "stages"
        sdir = stages_dir / seg_name
        ids = [p.id for p in self.problems]
        weights, winfo = run_weight_stage(sdir / "weights", ids, pr.pass_rates, wcfg, self.cfg.rollout.k,
                                          self.log, label=f"weights {seg_name}", formats=self.cfg.pass_rate.formats,
                                          plot=self.cfg.pass_rate.plot)
        if winfo["all_zero"]:
            self.log.warning(f"{seg_name}: every problem has weight 0 (all pass rates are 0 or 1 under "
                             f"{winfo['description']}); nothing to train on, the stage is skipped")
            result = {"steps": 0, "losses": [], "skipped": "all weights zero", "student_dir": None}
            if is_main_process():
                sdir.mkdir(parents=True, exist_ok=True)
                (sdir / "distill_result.json").write_text(json.dumps(result))
            barrier()
            return result
        loss = self.cfg.stages[i].loss
        refs = self.references() if loss in ("fkl", "akl") else None
        teacher_prompts = None
        if loss == "rkl":
            if self.cfg.reference.rkl_teacher_sees_solution:
                teacher_prompts = {p.id: self.builder.teacher(p) for p in self.problems}
            else:
                teacher_prompts = self.prompts
        examples = build_distill_examples(loss, ids, weights, references=refs, rollouts=pr.rollouts,
                                          student_prompts=self.prompts, teacher_prompts=teacher_prompts,
                                          truncated=dcfg.truncated)
        self._record_truncated(seg_name, loss, ids, dcfg.truncated, refs, pr.rollouts)
        if seg > 0:  # later segments continue the stage: no second warm-up
            dcfg = dataclasses.replace(dcfg, warmup_steps=0,
                                       lr_schedule="constant" if dcfg.lr_schedule == "warmup_constant"
                                       else dcfg.lr_schedule)
        res = run_distill_stage(dcfg, *self._training_models(dcfg), examples, stages_dir, seg_name, self.log)
        from .checkpoint import save_tokenizer_files
        from .evaluate import model_is_sharded
        # a complete model folder: vLLM and from_pretrained load the tokenizer from it
        if is_main_process():
            save_tokenizer_files(res.student_dir, self.tokenizer_source,
                                 trust_remote_code=self.cfg.model.trust_remote_code)
        barrier()
        # continue from the exported student (also makes a resumed run identical to a fresh one)
        self.student_path = str(res.student_dir)
        self._student = None
        if self._teacher is not None and model_is_sharded(self._teacher):
            self._teacher = None
        return res.to_json()

    def _record_truncated(self, seg_name: str, loss: str, ids, how: str, refs, rollouts) -> None:
        """Log and keep (summary.json, stages/<seg>/truncated.json) how many training responses hit
        the length limit and whether they were dropped (distill.truncated)."""
        c = count_truncated(loss, ids, references=refs, rollouts=rollouts)
        c.update(policy=how, source="reference responses" if loss in ("fkl", "akl") else "rollouts")
        self.truncated[seg_name] = c
        if c["truncated"]:
            self.log.info(f"{seg_name}: {c['truncated']} of {c['responses']} {c['source']} hit the length limit "
                          f"(no EOS): {'dropped as training targets' if how == 'drop' else 'kept (distill.truncated=keep)'}"
                          + (f"; {c['problems_without_response']} problems have no response left"
                             if how == "drop" and c["problems_without_response"] else ""))
        self.log.log({f"truncated_{k}": v for k, v in c.items() if isinstance(v, int)}, step=0, stage=seg_name)
        if is_main_process():
            d = self.run_dir / "stages" / seg_name
            d.mkdir(parents=True, exist_ok=True)
            (d / "truncated.json").write_text(json.dumps(c, indent=1))

    def _segment_done(self, seg_name: str) -> Optional[dict]:
        f = self.run_dir / "stages" / seg_name / "distill_result.json"
        return decided_by_rank0(lambda: json.loads(f.read_text()) if f.exists() else None, "segment_done")

    # ------------------------------------------------------------------ the run
    def preflight(self) -> None:
        """Check what can be checked before any expensive stage: batch sizes against the number of
        ranks, tensor-parallel size against ranks and GPUs, vLLM installed, model folders and data
        files present. Raises ValueError naming the config key."""
        cfg, world = self.cfg, get_world_size()
        for i, name in enumerate(cfg.stage_names()):
            d = cfg.stage_distill_config(i)
            G, M = d.global_batch_problems, d.micro_batch_problems
            packed = getattr(d, "max_tokens_per_micro_batch", None) is not None
            unit = world if packed else M * world
            if G % unit:
                how = f"the number of ranks ({world})" if packed else \
                    f"micro_batch_problems * number of ranks = {M} * {world} = {unit}"
                raise ValueError(f"config key 'distill.global_batch_problems' (stage {name}): {G} must be a "
                                 f"multiple of {how}, so every rank runs the same number of micro-batches")
            if d.recompute_every is not None and d.max_steps is None:
                raise ValueError(f"config key 'distill.recompute_every' (stage {name}) needs distill.max_steps "
                                 f"(the stage is split into segments of R steps)")
        engines = {cfg.rollout.engine}
        if cfg.eval.enabled:
            engines.add(cfg.eval.engine or cfg.rollout.engine)
        if "vllm" in engines:
            if importlib.util.find_spec("vllm") is None:
                raise ValueError("rollout.engine=vllm / eval.engine=vllm needs vLLM: pip install 'paced[vllm]' "
                                 "(GPU only); use rollout.engine=hf and eval.engine=hf on CPU")
            tp = cfg.rollout.tensor_parallel_size
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            if world > 1 and (world % tp or local % tp):
                raise ValueError(f"config key 'rollout.tensor_parallel_size': {tp} must divide the number of "
                                 f"ranks ({world}) and the ranks per node ({local}): each group of {tp} ranks "
                                 f"on one node runs one generation worker on its GPUs")
            if self.device.type == "cuda" and tp > torch.cuda.device_count():
                raise ValueError(f"config key 'rollout.tensor_parallel_size': {tp} GPUs per generation worker, "
                                 f"but only {torch.cuda.device_count()} are visible")
            vllm_llm_kwargs("check", extra=cfg.rollout.vllm_kwargs)  # reserved keys -> ValueError
        for key, path in (("model.student", self.student_path), ("model.teacher", self.teacher_path),
                          ("model.tokenizer", self.tokenizer_source)):
            _check_local_folder(key, path, need="config.json" if key != "model.tokenizer" else None)
        d = cfg.data
        for key, path in [("data.train", d.train), ("data.mc", d.mc)] + [(f"data.eval.{k}", v)
                                                                          for k, v in d.eval.items()]:
            if path is not None and not Path(path).is_file():
                raise ValueError(f"config key '{key}': file not found: {path}")

    def _check_problem_count(self) -> None:
        for i, name in enumerate(self.cfg.stage_names()):
            G = self.cfg.stage_distill_config(i).global_batch_problems
            if len(self.problems) < G:
                raise ValueError(f"config key 'distill.global_batch_problems' (stage {name}): {G} problems per "
                                 f"step, but the training set has only {len(self.problems)} (after length "
                                 f"filtering); lower it or add problems")

    def run(self) -> dict:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.preflight()
        self.setup_data()
        self._check_problem_count()
        results = []
        base = self.evaluate("base")
        if base is not None:
            results.append(base)
        names = cfg.stage_names()
        prev_pr = None
        step = 0
        for i, name in enumerate(names):
            dcfg, wcfg = cfg.stage_distill_config(i), cfg.stage_weight_config(i)
            R = dcfg.recompute_every
            if R is not None:  # with max_steps (preflight)
                seg_steps = [min(R, dcfg.max_steps - s) for s in range(0, dcfg.max_steps, R)]
            else:
                seg_steps = [dcfg.max_steps]
            self.stage_losses[name] = []
            for seg, n_steps in enumerate(seg_steps):
                seg_name = name if len(seg_steps) == 1 else f"{name}_seg{seg:02d}"
                seg_cfg = dataclasses.replace(dcfg, max_steps=n_steps, seed=_mix_seed(dcfg.seed, seg) % (2 ** 31)
                                              if seg else dcfg.seed)
                done = self._segment_done(seg_name)
                need_pr = seg > 0 or prev_pr is None or cfg.schedule.recompute_between_stages
                label = f"before_{seg_name}"
                if done is not None:  # resume: skip the segment, continue from its export
                    self.log.info(f"stage {seg_name}: done already ({done.get('steps')} steps), skipping")
                    if need_pr:
                        idx = self.pr_index
                        pr_dir = self.run_dir / "pass_rates" / f"{idx:02d}_{label}"
                        self.pr_index += 1
                        done_pr = decided_by_rank0(lambda: json.loads((pr_dir / "summary.json").read_text())
                                                   if (pr_dir / "summary.json").exists() else None, "pass_rates")
                        if done_pr is not None:
                            self.curriculum.append((label, done_pr))
                            prev_pr = pr_dir
                    if done.get("student_dir"):
                        self.student_path = done["student_dir"]
                        self._student = None
                    tfile = self.run_dir / "stages" / seg_name / "truncated.json"
                    if tfile.exists():
                        self.truncated[seg_name] = json.loads(tfile.read_text())
                else:
                    if need_pr:
                        pr, pr_dir = self.pass_rates(label, wcfg, step=step)
                    else:
                        pr = load_pass_rates(prev_pr) if isinstance(prev_pr, Path) else prev_pr
                        pr_dir = None
                    prev_pr = pr_dir or prev_pr
                    done = self._distill_segment(i, seg, len(seg_steps), seg_name, seg_cfg, wcfg, pr, pr_dir)
                self.stage_losses[name].extend(done.get("losses", []))
                step += int(done.get("steps", 0) or 0)
            if cfg.eval.after_each_stage or i == len(names) - 1:
                r = self.evaluate(f"after_{name}", step=step)
                if r is not None:
                    results.append(r)
        if cfg.schedule.final_pass_rates:
            from .weighting import compute_weights  # noqa: F401  (weights shown for the final curriculum)
            self.pass_rates("final", cfg.weights, step=step)
        return self._finish(results)

    def _finish(self, results: list) -> dict:
        from .evaluate import results_table
        from .plots import curriculum_bars, loss_curve
        table = results_table(results, self.log, self.run_dir) if results else {}
        rows = [[label, f"{100 * s['low']:.1f}%", f"{100 * s['med']:.1f}%", f"{100 * s['high']:.1f}%",
                 f"{s['mean']:.3f}", s["n_zero"], s["n_one"]] for label, s in self.curriculum]
        if rows:
            self.log.table("curriculum progression (Low / Med / High pass-rate bins)",
                           ["computation", "Low", "Med", "High", "mean p", "p=0", "p=1"], rows)
        losses = {k: v for k, v in self.stage_losses.items()}
        if is_main_process():
            plots = self.run_dir / "plots"
            if self.curriculum:
                curriculum_bars([c[0] for c in self.curriculum], [c[1] for c in self.curriculum],
                                plots / "curriculum.png")
            if any(losses.values()):
                loss_curve(losses, plots / "loss.png")
        summary = {"run_dir": str(self.run_dir), "results": table,
                   "curriculum": [{"label": l, **{k: s[k] for k in ("low", "med", "high", "mean", "n_zero", "n_one")}}
                                  for l, s in self.curriculum],
                   "losses": losses, "final_student": self.student_path, "truncated": self.truncated}
        if is_main_process():
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        barrier()
        if is_main_process() and (self.run_dir / "generation").is_dir():  # every rank has read its answers
            from .generation_worker import clear_answers
            clear_answers(self.run_dir / "generation")
        return summary


def _check_local_folder(key: str, path: str, need: Optional[str]) -> None:
    """A path that names a local folder must exist (and hold ``need``); hub ids are left to loading."""
    p = Path(path)
    local = p.is_absolute() or path.startswith(".") or p.exists() or path.count("/") >= 2
    if not local:
        return
    if not p.is_dir():
        raise ValueError(f"config key '{key}': model folder not found: {path}")
    if need and not (p / need).is_file():
        raise ValueError(f"config key '{key}': {path} has no {need} (not a Hugging Face model folder)")
