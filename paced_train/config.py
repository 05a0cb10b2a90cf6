"""Typed run configuration: dataclasses loaded from YAML, with CLI ``key=value`` overrides.

Every section of a run is a dataclass; ``load_config(path, overrides)`` reads the YAML, applies the
overrides (dotted keys such as ``distill.lr=1e-5``; values parsed as YAML scalars), builds the
dataclasses with a type check on every field and finally runs the semantic checks in
``RunConfig.validate``. Any unknown key, ill-typed value or inconsistent setting raises a
``ValueError`` that names the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

__all__ = [
    "ModelConfig", "ToyDataConfig", "DataConfig", "RolloutConfig", "PassRateConfig", "WeightConfig",
    "ReferenceConfig", "DistillConfig", "StageConfig", "ScheduleConfig", "EvalConfig",
    "LoggingConfig", "ExpertConfig", "validate_expert_config", "RunConfig", "load_config", "config_from_dict", "config_to_dict",
    "apply_overrides", "parse_overrides", "default_config_path", "save_config", "config_hash",
]

LOSSES = ("fkl", "rkl", "akl")


@dataclass
class ModelConfig:
    """Where the models come from. ``toy://student`` style specs resolve to the shipped toy assets."""
    student: str = "toy://student"
    teacher: str = "toy://teacher"
    tokenizer: Optional[str] = None          # defaults to the student's folder
    # student weights (the trainable master copy; fp32 by default, FSDP2 mixed precision computes in bf16)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: float32
    # frozen teacher weights; auto: bf16 on GPU, fp32 on CPU
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    attn_implementation: Optional[str] = None  # e.g. "sdpa", "flash_attention_2"


@dataclass
class ToyDataConfig:
    """Generate the toy world's data set (``paced_train.toy.world.write_toy_dataset``) in the run dir."""
    seed: int = 0
    n_train: int = 256
    n_eval: int = 128
    n_mc: int = 64


@dataclass
class DataConfig:
    """Training problems, eval sets and the multiple-choice forgetting set (JSONL or Parquet)."""
    train: Optional[str] = None                      # path to problems (id, problem, answer, solution)
    eval: dict[str, str] = field(default_factory=dict)  # name -> path, same format as train
    mc: Optional[str] = None                          # multiple-choice set (id, question, choices, answer)
    toy: Optional[ToyDataConfig] = None               # when set: generate the toy data, fill unset paths
    max_train_problems: Optional[int] = None          # first N problems (after length filtering)
    max_eval_problems: Optional[int] = None           # per eval set
    max_mc_questions: Optional[int] = None
    max_prompt_tokens: int = 1024                     # student prompt limit; longer problems are dropped
    max_teacher_prompt_tokens: int = 3072             # teacher prompt (problem + expert solution) limit
    max_response_tokens: int = 16384                  # new tokens for rollouts and reference responses
    use_chat_template: bool = True                    # apply tokenizer.chat_template to prompts
    system_prompt: Optional[str] = None               # optional system message for every prompt
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {enable_thinking: false}


@dataclass
class RolloutConfig:
    """Sampling the student's K responses per problem (pass rates, and the RKL training responses)."""
    engine: Literal["hf", "vllm"] = "hf"
    k: int = 8
    k1: Optional[int] = None            # two-phase screening: first K1 samples, rest only if mixed
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                      # 0 disables top-k
    batch_size: int = 16                # hf: sequences per generate() call
    seed: Optional[int] = None          # defaults to the run seed
    tensor_parallel_size: int = 1       # vllm
    gpu_memory_utilization: float = 0.85  # vllm
    max_model_len: Optional[int] = None  # vllm; default prompt limit + max_response_tokens
    enforce_eager: bool = False         # vllm
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)  # extra vllm.LLM(...) arguments


@dataclass
class PassRateConfig:
    """Pass-rate stage: bins of the curriculum table and the saved formats."""
    bins: list[float] = field(default_factory=lambda: [1.0 / 3.0, 2.0 / 3.0])  # Low <= b0 < Med < b1 <= High
    formats: list[str] = field(default_factory=lambda: ["parquet", "jsonl"])
    plot: bool = True


@dataclass
class WeightConfig:
    """Which per-problem weight scheme turns pass rates into training weights."""
    scheme: Literal["beta", "auto", "uniform", "hard"] = "beta"
    alpha: float = 1.0
    beta: float = 1.0
    eps: Optional[float] = None         # auto: zone cutoff; default 1/K
    normalize: bool = True              # unit mean over the training set


@dataclass
class ReferenceConfig:
    """Teacher reference responses, written with the expert solution in the teacher's context."""
    teacher_prompt_template: str = "{problem}\nReference solution: {solution}"
    on_missing_solution: Literal["error", "problem_only"] = "error"
    temperature: float = 0.0            # 0 = greedy decoding
    top_p: float = 1.0
    batch_size: int = 16
    seed: Optional[int] = None
    keep_only_correct: bool = False     # drop reference responses whose answer is wrong
    rkl_teacher_sees_solution: bool = False  # RKL: teacher context is problem (+ solution if true)


@dataclass
class DistillConfig:
    """The distillation stage (paced_train/distill.py)."""
    loss: Literal["fkl", "rkl", "akl"] = "fkl"
    lr: float = 1e-6
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "warmup_constant", "cosine"] = "constant"
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    global_batch_problems: int = 32
    micro_batch_problems: int = 2
    max_tokens_per_micro_batch: Optional[int] = None  # pack sequences into micro-batches of <= N tokens (None: pad)
    epochs: int = 1
    max_steps: Optional[int] = None
    temperature: float = 1.0
    kl_backend: Literal["auto", "torch", "triton", "reference"] = "auto"
    mixed_precision: Literal["no", "bf16"] = "no"
    activation_checkpointing: bool = False
    cpu_offload: bool = False
    checkpoint_every: int = 0           # steps; 0 = only at the end of the stage
    keep_checkpoints: int = 2           # newest complete checkpoints kept per stage
    seed: Optional[int] = None          # defaults to the run seed
    loss_normalization: Literal["tokens", "problems"] = "tokens"
    recompute_every: Optional[int] = None  # steps; recompute pass rates/weights every R steps
    truncated: Literal["drop", "keep"] = "drop"  # responses that hit the length limit (no EOS) as targets
    shuffle: bool = True
    log_every: int = 1


@dataclass
class StageConfig:
    """One entry of the schedule: the loss plus optional per-stage overrides."""
    loss: Literal["fkl", "rkl", "akl"] = "fkl"
    name: Optional[str] = None          # defaults to "<index>_<loss>"
    distill: dict[str, Any] = field(default_factory=dict)   # overrides of DistillConfig fields
    weights: dict[str, Any] = field(default_factory=dict)   # overrides of WeightConfig fields


@dataclass
class ScheduleConfig:
    """How stages chain: pass-rate recomputation between stages and after the last one."""
    recompute_between_stages: bool = True
    final_pass_rates: bool = True       # measure the curriculum once more after the last stage


@dataclass
class EvalConfig:
    """mean@k accuracy on eval sets and multiple-choice forgetting accuracy."""
    enabled: bool = True
    k: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: Optional[int] = None  # defaults to data.max_response_tokens
    batch_size: int = 16
    seed: Optional[int] = None
    engine: Optional[Literal["hf", "vllm"]] = None  # defaults to rollout.engine
    mc_prompt_template: str = "{question}"
    mc_choice_template: str = "{choice}"
    mc_append_eos: bool = False
    # chat template of the multiple-choice prompts (None: data.use_chat_template / data.chat_template_kwargs),
    # e.g. {enable_thinking: false} so letter scoring does not inherit a thinking-mode template
    mc_use_chat_template: Optional[bool] = None
    mc_chat_template_kwargs: Optional[dict[str, Any]] = None
    mc_batch_size: int = 16
    after_each_stage: bool = True


@dataclass
class ExpertConfig:
    """Expert solutions from an OpenAI-compatible API before the run (paced_train/expert.py): the
    pipeline asks for a solution to every data.train problem and trains on the verified ones."""
    base_url: Optional[str] = None      # e.g. http://localhost:8000/v1 (vLLM / SGLang) or a hosted API
    model: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (never logged)
    concurrency: int = 16               # requests in flight
    timeout: float = 600.0              # seconds per request
    max_retries: int = 6                # per request: 429 (Retry-After), 5xx, timeouts, malformed bodies
    max_tokens: int = 8192
    temperature: float = 0.0
    template: Optional[str] = None      # user-message template file with {problem}; default: boxed answer
    system_prompt: Optional[str] = None
    keep_unverified: bool = False       # keep solutions whose answer does not match the gold
    strip_thinking: bool = True         # drop a leading <think>...</think> block from the solution
    output: Optional[str] = None        # solutions file (+ journal beside it); default <run dir>/expert/


def validate_expert_config(e: "ExpertConfig", prefix: str = "expert.") -> None:
    """Checks of an ExpertConfig; ``prefix`` names the keys ("expert." in a config, "--" on the CLI)."""
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            name = prefix + (key.replace("_", "-") if prefix == "--" else key)
            raise ValueError(f"{'option' if prefix == '--' else 'config key'} '{name}': {msg}")
    need(bool(e.base_url and e.base_url.strip()), "base_url", "needs the API's URL, e.g. http://localhost:8000/v1")
    need(bool(e.base_url) and e.base_url.startswith(("http://", "https://")), "base_url",
         f"must start with http:// or https://, got {e.base_url!r}")
    need(bool(e.model and e.model.strip()), "model", "needs the expert model's name")
    need(e.concurrency >= 1, "concurrency", f"must be >= 1, got {e.concurrency}")
    need(e.timeout > 0 and math.isfinite(e.timeout), "timeout", f"must be > 0 seconds, got {e.timeout}")
    need(e.max_retries >= 0, "max_retries", f"must be >= 0, got {e.max_retries}")
    need(e.max_tokens >= 1, "max_tokens", f"must be >= 1, got {e.max_tokens}")
    need(e.temperature >= 0, "temperature", f"must be >= 0, got {e.temperature}")
    need(bool(e.api_key_env), "api_key_env", "needs the name of an environment variable")


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "paced"
    wandb_entity: Optional[str] = None
    progress: bool = True               # progress bars on long loops
    level: Literal["debug", "info", "warning"] = "info"


@dataclass
class RunConfig:
    """The whole run."""
    seed: int = 0
    output_dir: str = "runs"
    name: Optional[str] = None          # run dir = output_dir/name; default <config stem>-<hash>
    overwrite: bool = False             # start from scratch instead of resuming
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = None   # torch.set_num_threads on CPU
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(loss="fkl")])
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    pass_rate: PassRateConfig = field(default_factory=PassRateConfig)
    weights: WeightConfig = field(default_factory=WeightConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    expert: Optional[ExpertConfig] = None  # set: expert solutions for data.train from an API first
    config_path: Optional[str] = None   # filled by load_config; informational

    # ----------------------------------------------------------------- derived settings
    def stage_distill_config(self, index: int) -> DistillConfig:
        """The DistillConfig of stage ``index``: base settings, the stage's loss and overrides."""
        stage = self.stages[index]
        base = config_to_dict(self.distill)
        base.update(stage.distill)
        base["loss"] = stage.loss
        if base.get("seed") is None:
            base["seed"] = self.seed
        return _build(DistillConfig, base, f"stages[{index}].distill")

    def stage_weight_config(self, index: int) -> WeightConfig:
        base = config_to_dict(self.weights)
        base.update(self.stages[index].weights)
        return _build(WeightConfig, base, f"stages[{index}].weights")

    def stage_names(self) -> list[str]:
        return [s.name or f"{i}_{s.loss}" for i, s in enumerate(self.stages)]

    # ----------------------------------------------------------------- semantic validation
    def validate(self) -> "RunConfig":
        """Cross-field checks; raises ValueError naming the offending key."""
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"config key '{key}': {msg}")

        need(len(self.stages) >= 1, "stages", "needs at least one stage (e.g. [fkl])")
        names = self.stage_names()
        need(len(set(names)) == len(names), "stages", f"stage names must be unique, got {names}")
        for n in names:
            need(n.replace("_", "").replace("-", "").isalnum(), "stages",
                 f"stage name {n!r} must be alphanumeric with '_' or '-' (it names a folder)")
        for i in range(len(self.stages)):
            d = self.stage_distill_config(i)
            _validate_distill(d, f"stages[{i}].distill" if self.stages[i].distill else "distill")
            if d.max_tokens_per_micro_batch is not None:  # every sequence must fit a packed micro-batch
                longest = max(self.data.max_prompt_tokens, self.data.max_teacher_prompt_tokens) + self.data.max_response_tokens - 1
                need(d.max_tokens_per_micro_batch >= longest,
                     f"stages[{i}].distill.max_tokens_per_micro_batch" if "max_tokens_per_micro_batch" in self.stages[i].distill
                     else "distill.max_tokens_per_micro_batch",
                     f"must be >= the longest sequence a model runs, max(data.max_prompt_tokens, "
                     f"data.max_teacher_prompt_tokens) + data.max_response_tokens - 1 = {longest}, "
                     f"got {d.max_tokens_per_micro_batch}")
            _validate_weights(self.stage_weight_config(i), "weights")
        r = self.rollout
        need(r.k >= 1, "rollout.k", f"must be >= 1, got {r.k}")
        if r.k1 is not None:
            need(1 <= r.k1 < r.k, "rollout.k1", f"two-phase screening needs 1 <= k1 < k={r.k}, got {r.k1}")
        need(r.temperature >= 0, "rollout.temperature", f"must be >= 0, got {r.temperature}")
        need(0 < r.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
        need(r.top_k >= 0, "rollout.top_k", f"must be >= 0, got {r.top_k}")
        need(r.batch_size >= 1, "rollout.batch_size", f"must be >= 1, got {r.batch_size}")
        need(r.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
        need(0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]")
        d = self.data
        need(d.train is not None or d.toy is not None, "data.train",
             "no training problems: set data.train to a JSONL/Parquet file (or data.toy for the toy world)")
        for key in ("max_prompt_tokens", "max_teacher_prompt_tokens", "max_response_tokens"):
            need(getattr(d, key) >= 1, f"data.{key}", f"must be >= 1, got {getattr(d, key)}")
        for key in ("max_train_problems", "max_eval_problems", "max_mc_questions"):
            v = getattr(d, key)
            need(v is None or v >= 1, f"data.{key}", f"must be >= 1 or null, got {v}")
        b = self.pass_rate.bins
        need(len(b) == 2 and 0 <= b[0] < b[1] <= 1, "pass_rate.bins",
             f"needs two thresholds 0 <= low < high <= 1, got {b}")
        for f in self.pass_rate.formats:
            need(f in ("parquet", "jsonl"), "pass_rate.formats", f"unknown format {f!r} (parquet, jsonl)")
        need(len(self.pass_rate.formats) >= 1, "pass_rate.formats", "needs at least one format")
        ref = self.reference
        try:
            ref.teacher_prompt_template.format(problem="p", solution="s")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"config key 'reference.teacher_prompt_template': bad template "
                             f"({type(e).__name__}: {e}); use the fields {{problem}} and {{solution}}") from None
        need(ref.temperature >= 0, "reference.temperature", "must be >= 0")
        need(0 < ref.top_p <= 1, "reference.top_p", "must be in (0, 1]")
        need(ref.batch_size >= 1, "reference.batch_size", "must be >= 1")
        e = self.eval
        need(e.k >= 1, "eval.k", f"must be >= 1, got {e.k}")
        need(e.temperature >= 0, "eval.temperature", "must be >= 0")
        need(0 < e.top_p <= 1, "eval.top_p", "must be in (0, 1]")
        need(e.batch_size >= 1 and e.mc_batch_size >= 1, "eval.batch_size", "must be >= 1")
        for key, tmpl, fields in (("eval.mc_prompt_template", e.mc_prompt_template, ("question", "choices")),
                                  ("eval.mc_choice_template", e.mc_choice_template, ("choice", "letter"))):
            try:
                tmpl.format(**{f: "x" for f in fields})
            except (KeyError, IndexError, ValueError) as ex:
                raise ValueError(f"config key '{key}': bad template ({type(ex).__name__}: {ex}); "
                                 f"allowed fields: {', '.join(fields)}") from None
        need(self.num_threads is None or self.num_threads >= 1, "num_threads", "must be >= 1 or null")
        if self.expert is not None:
            validate_expert_config(self.expert)
        if self.logging.wandb:
            pass  # wandb is imported only when the run starts, with a clear error if missing
        return self


def _validate_distill(d: DistillConfig, key: str) -> None:
    def need(cond: bool, sub: str, msg: str) -> None:
        if not cond:
            raise ValueError(f"config key '{key}.{sub}': {msg}")
    need(d.lr > 0 and math.isfinite(d.lr), "lr", f"must be a positive number, got {d.lr}")
    need(d.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    need(d.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(d.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 disables clipping)")
    need(d.micro_batch_problems >= 1, "micro_batch_problems", "must be >= 1")
    need(d.global_batch_problems >= d.micro_batch_problems, "global_batch_problems",
         f"must be >= micro_batch_problems ({d.micro_batch_problems}), got {d.global_batch_problems}")
    need(d.max_tokens_per_micro_batch is None or d.max_tokens_per_micro_batch >= 1, "max_tokens_per_micro_batch",
         f"must be >= 1 or null, got {d.max_tokens_per_micro_batch}")
    need(d.epochs >= 1, "epochs", "must be >= 1")
    need(d.max_steps is None or d.max_steps >= 1, "max_steps", "must be >= 1 or null")
    need(d.temperature > 0, "temperature", "must be > 0")
    need(d.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
    need(d.recompute_every is None or d.recompute_every >= 1, "recompute_every", "must be >= 1 or null")
    need(d.log_every >= 1, "log_every", "must be >= 1")


def _validate_weights(w: WeightConfig, key: str) -> None:
    if w.alpha < 0 or w.beta < 0:
        raise ValueError(f"config key '{key}.alpha/beta': exponents must be >= 0, got {w.alpha}, {w.beta}")
    if w.eps is not None and not 0 <= w.eps < 0.5:
        raise ValueError(f"config key '{key}.eps': must be in [0, 0.5), got {w.eps}")


# ===================================================================== building and type checks
_MISSING = object()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (with lossless coercions)."""
    origin = typing.get_origin(tp)
    bad = ValueError(f"config key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ValueError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise bad
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            return value
        raise ValueError(f"config key '{key}' must be one of {', '.join(repr(a) for a in typing.get_args(tp))}, "
                         f"got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad
        return {_coerce(k, kt, f"{key} (a key)"): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if tp is StageConfig and isinstance(value, str):
            value = {"loss": value}
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # pragma: no cover - programming error


def _build(cls: type, data: dict, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types."""
    if not isinstance(data, dict):
        raise ValueError(f"config section '{prefix or '<root>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ValueError(f"unknown config key '{where}{unknown[0]}' (valid keys in "
                         f"'{prefix or '<root>'}': {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
    obj = cls(**kwargs)
    if cls is StageConfig:  # per-stage override dicts are checked against their sections
        for k, v in obj.distill.items():
            if k == "loss":
                raise ValueError(f"config key '{prefix}.distill.loss': set the stage's 'loss' instead")
        obj.distill = _coerce_partial(DistillConfig, obj.distill, f"{prefix}.distill")
        obj.weights = _coerce_partial(WeightConfig, obj.weights, f"{prefix}.weights")
    return obj


def _coerce_partial(cls: type, data: dict, prefix: str) -> dict:
    """Type-check a partial override dict of dataclass ``cls`` (keys given only)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in data.items():
        if k not in hints:
            raise ValueError(f"unknown config key '{prefix}.{k}' (valid keys: {', '.join(hints)})")
        out[k] = _coerce(v, hints[k], f"{prefix}.{k}")
    return out


def config_from_dict(data: dict) -> RunConfig:
    """Build and validate a RunConfig from a plain dict."""
    return _build(RunConfig, data or {}, "").validate()


def config_to_dict(cfg: Any) -> Any:
    """Plain dict (YAML/JSON-serialisable) of a config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return copy.deepcopy(cfg)


# ===================================================================== overrides and loading
def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """``["distill.lr=1e-5", "stages=[fkl,rkl]"]`` -> [(key, parsed value)], values as YAML scalars."""
    out = []
    for arg in args:
        if "=" not in arg:
            raise ValueError(f"override {arg!r} must look like key=value (e.g. distill.lr=1e-5)")
        key, raw = arg.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ValueError(f"override {arg!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"override {arg!r}: value is not valid YAML ({e})") from None
        out.append((key, value))
    return out


def apply_overrides(data: dict, overrides: list[tuple[str, Any]]) -> dict:
    """Set dotted keys in a nested dict (a copy); ``stages.1.loss=rkl`` indexes lists.

    Unknown keys are caught afterwards by the type check, which names them.
    """
    data = copy.deepcopy(data or {})
    for key, value in overrides:
        parts = key.split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f"config override '{key}': '{where}' is not an index of a "
                                     f"{len(node)}-element list")
                idx = int(part)
                if last:
                    node[idx] = value
                elif isinstance(node[idx], (dict, list)):
                    node = node[idx]
                elif isinstance(node[idx], str) and parts[0] == "stages":
                    node[idx] = {"loss": node[idx]}  # "fkl" shorthand -> mapping
                    node = node[idx]
                else:
                    raise ValueError(f"config override '{key}': '{where}' is not a section")
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                elif node.get(part) is None:
                    node[part] = {}
                    node = node[part]
                elif isinstance(node[part], (dict, list)):
                    node = node[part]
                else:
                    raise ValueError(f"unknown config key '{key}': '{where}' is a value, not a section")
            else:  # pragma: no cover - guarded above
                raise ValueError(f"config override '{key}': '{where}' is not a section")
    return data


def default_config_path() -> Path:
    """configs/default.yaml at the repository root (the package is installed editable)."""
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Load a YAML config (default: configs/default.yaml), apply ``key=value`` overrides, validate."""
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    data = apply_overrides(data, parse_overrides(list(overrides or [])))
    data["config_path"] = str(path)  # where this config came from (names the default run dir)
    return config_from_dict(data)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# keys that do not change a run's numbers: excluded from the run hash and the resume check
# (dotted keys name a field of a section: where the expert API is served and how it is asked do not
# change the solutions the run trains on, which live in a file of their own)
VOLATILE_KEYS = ("output_dir", "name", "overwrite", "config_path", "logging", "num_threads",
                 "expert.base_url", "expert.api_key_env", "expert.concurrency", "expert.timeout",
                 "expert.max_retries")


def without_volatile_keys(d: dict) -> dict:
    """A config dict (``config_to_dict``) without VOLATILE_KEYS, nested sections copied."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for key in VOLATILE_KEYS:
        section, _, field = key.partition(".")
        if not field:
            out.pop(section, None)
        elif isinstance(out.get(section), dict):
            out[section].pop(field, None)
    return out


def config_hash(cfg: RunConfig) -> str:
    """Short hash of everything that changes a run's numbers (names the default run dir)."""
    d = without_volatile_keys(config_to_dict(cfg))
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]
