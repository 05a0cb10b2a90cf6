"""The distillation stage: Paced-weighted forward / reverse / AKL distillation of a student.

``run_distill_stage`` trains the student on ``DistillExample``s (prompt ids for each model plus the
shared response ids) and the problems' Paced weights:

- problems whose weight is 0 are dropped before anything is collated or run (the log says how many
  problems, sequences and tokens that saved);
- a step consumes a *global batch* of ``global_batch_problems`` problems (all sequences of a problem
  travel together: RKL has several rollouts per problem), split evenly over ranks and then into
  micro-batches of ``micro_batch_problems`` problems, right-padded to their longest sequence; or,
  with ``max_tokens_per_micro_batch`` set, the rank's sequences are *packed* (concatenated without
  padding, first-fit decreasing) into micro-batches of at most that many tokens per model, with
  ``position_ids`` restarting at 0 per sequence and no attention mask, so transformers keeps attention
  within each sequence (flash-attention varlen on GPU, a block-diagonal causal mask for sdpa/eager);
  every rank runs the same number of packed micro-batches (zero-weight one-token ones fill up);
  models on sdpa run packed rows per sequence (``packed_attention``), as flash-attention varlen does;
- student and teacher run their decoder body (``model.model``) to last hidden states, never to full
  logits; the hidden state at position ``len(prompt) - 1 + k`` predicts response token ``k``;
- ``paced_kernels.fused_linear_kl`` gives ``sum_j w_{seq(j)} KL_j`` over the response tokens, and is
  divided by a normaliser counted over the *whole* global batch (all micro-batches and ranks:
  response tokens or problems) before backward, so gradient accumulation and data parallelism give
  the single-process gradient of ``sum_i w_i L_KL(x_i) / normaliser``;
- AdamW (weight decay on matrices only), constant / warmup / cosine LR, grad clipping on the global
  (DTensor-aware) norm, per-step metrics to the run logger, a tqdm bar, DCP checkpoints every N steps
  with bitwise-identical resumption on CPU, and a final ``save_pretrained`` export of the student.

Under torchrun both models are FSDP2-sharded (``paced_train.parallel``). The student's loss is
computed inside the forward of its FSDP root (``StudentKL``, which owns the embeddings, final norm and
``lm_head``) so the ``lm_head`` weight is unsharded when the fused KL reads it and its gradient is
reduce-scattered like any other; the teacher's root is unsharded explicitly for its ``lm_head``
weight and resharded after the micro-batch.
"""

from __future__ import annotations

import array
import hashlib
import inspect
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from paced_kernels import fused_linear_kl

from . import checkpoint as ckpt
from . import packed_attention, parallel

__all__ = [
    "DistillExample",
    "DistillResult",
    "SkipStats",
    "drop_zero_weight",
    "group_by_problem",
    "MicroBatch",
    "collate",
    "collate_packed",
    "pack_sequences",
    "check_token_budget",
    "StudentKL",
    "TeacherHidden",
    "build_optimizer",
    "build_lr_scheduler",
    "clip_grad_norm",
    "run_distill_stage",
]

KL_DIRECTIONS = {"fkl": "forward", "rkl": "reverse", "akl": "akl"}


@dataclass
class DistillExample:
    """One sequence to distil on: both models score ``response_ids`` after their own prompt."""

    problem_id: str
    weight: float  # Paced weight of the problem (unit-mean normalised); 0 => never loaded
    student_prompt_ids: list[int]  # chat-templated problem for the student
    teacher_prompt_ids: list[int]  # chat-templated problem (+ expert solution) for the teacher
    response_ids: list[int]  # the response tokens both models score (incl. final EOS)


@dataclass
class SkipStats:
    """What dropping the weight-0 problems saved (per epoch)."""

    problems: int = 0
    examples: int = 0
    response_tokens: int = 0
    forward_tokens: int = 0  # student + teacher input tokens that are never run


@dataclass
class DistillResult:
    steps: int  # optimizer steps done in total (including those before a resume)
    losses: list[float]  # the global normalised loss of every step
    grad_norms: list[float]  # the global grad norm (before clipping) of every step
    lrs: list[float]
    skipped_problems: int
    skipped_examples: int
    skipped_response_tokens: int
    skipped_forward_tokens: int
    trained_problems: int  # problems with weight > 0
    student_dir: Path | None  # the save_pretrained export of the final student
    resumed_from_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["student_dir"] = str(self.student_dir) if self.student_dir is not None else None
        return d


# --------------------------------------------------------------------------------------------
# data: filtering, grouping, batching, collation
# --------------------------------------------------------------------------------------------


def _validate_examples(examples: Sequence[DistillExample], vocab_size: int) -> None:
    for i, ex in enumerate(examples):
        where = f"example {i} (problem_id={getattr(ex, 'problem_id', '?')!r})"
        if not isinstance(ex, DistillExample):
            raise ValueError(f"{where}: expected a DistillExample, got {type(ex).__name__}")
        w = ex.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{where}: weight must be a finite number >= 0, got {w!r}")
        for name in ("student_prompt_ids", "teacher_prompt_ids", "response_ids"):
            ids = getattr(ex, name)
            if len(ids) == 0:
                raise ValueError(f"{where}: {name} is empty")
            if not isinstance(ids[0], int) or isinstance(ids[0], bool):
                raise ValueError(f"{where}: {name} must be a list of int token ids, got {type(ids[0]).__name__}")
            lo, hi = min(ids), max(ids)  # C-speed scan; responses can be 16k tokens
            if lo < 0 or hi >= vocab_size:
                raise ValueError(f"{where}: {name} has token ids outside [0, {vocab_size}) (min {lo}, max {hi})")


def drop_zero_weight(examples: Sequence[DistillExample]) -> tuple[list[DistillExample], SkipStats]:
    """Keep the examples with weight > 0; count what the weight-0 ones would have cost."""
    live, stats = [], SkipStats()
    dead_problems, live_problems = set(), set()
    for ex in examples:
        if ex.weight > 0:
            live.append(ex)
            live_problems.add(ex.problem_id)
        else:
            dead_problems.add(ex.problem_id)
            stats.examples += 1
            stats.response_tokens += len(ex.response_ids)
            stats.forward_tokens += len(ex.student_prompt_ids) + len(ex.teacher_prompt_ids) + 2 * (len(ex.response_ids) - 1)
    stats.problems = len(dead_problems - live_problems)
    return live, stats


def group_by_problem(examples: Sequence[DistillExample]) -> list[list[DistillExample]]:
    """Examples grouped by ``problem_id`` (first-appearance order); a group is the unit of batching."""
    groups: dict[str, list[DistillExample]] = {}
    for ex in examples:
        groups.setdefault(ex.problem_id, []).append(ex)
    return list(groups.values())


def epoch_order(n_groups: int, epoch: int, seed: int, shuffle: bool) -> list[int]:
    """The problem order of an epoch: a permutation seeded by (seed, epoch), identical on every rank."""
    if not shuffle:
        return list(range(n_groups))
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n_groups, generator=g).tolist()


def data_fingerprint(groups: Sequence[Sequence[DistillExample]]) -> str:
    """A hash of the training data, stored in checkpoints so a resume on different data fails loudly."""
    h = hashlib.sha256()
    for group in groups:
        for ex in group:
            h.update(json.dumps([ex.problem_id, float(ex.weight), len(ex.student_prompt_ids),
                                 len(ex.teacher_prompt_ids), len(ex.response_ids)]).encode())
            for ids in (ex.student_prompt_ids, ex.teacher_prompt_ids, ex.response_ids):
                h.update(array.array("q", ids).tobytes())
    return h.hexdigest()[:16]


@dataclass
class MicroBatch:
    """One model's inputs (padded [B, L] or packed [1, T]) plus where the response-predicting hidden states are."""

    input_ids: torch.Tensor  # [B, L] int64, right-padded; packed: [1, T]
    attention_mask: torch.Tensor | None  # [B, L] int64; packed: None (sequences told apart by position_ids)
    position_ids: torch.Tensor  # [B, L] int64; packed: restarts at 0 for every sequence
    gather_index: torch.Tensor  # [N] flat indices into [B * L] of the response-predicting positions
    seq_ids: torch.Tensor  # [N] int64 sequence of each gathered position

    def to(self, device: torch.device) -> "MicroBatch":
        return MicroBatch(**{k: None if v is None else v.to(device, non_blocking=True) for k, v in vars(self).items()})


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int = 0) -> MicroBatch:
    """Right-pad ``prompt + response[:-1]`` per sequence and index the positions that predict the response.

    The last response token is never an input (nothing after it is predicted). Position
    ``len(prompt) - 1 + k`` predicts response token ``k`` for ``k = 0 .. len(response) - 1``.
    """
    seqs = [list(p) + list(r[:-1]) for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    batch = len(seqs)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    gather, seq_ids = [], []
    for b, (s, p, r) in enumerate(zip(seqs, prompts, responses)):
        input_ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[b, : len(s)] = 1
        start = b * width + len(p) - 1
        gather.append(torch.arange(start, start + len(r)))
        seq_ids.append(torch.full((len(r),), b, dtype=torch.long))
    position_ids = torch.arange(width, dtype=torch.long).unsqueeze(0).expand(batch, width).contiguous()
    return MicroBatch(input_ids, attention_mask, position_ids, torch.cat(gather), torch.cat(seq_ids))


def collate_packed(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> MicroBatch:
    """Concatenate ``prompt + response[:-1]`` of every sequence into one row of ``sum`` tokens, no padding.

    ``position_ids`` restart at 0 for each sequence and there is no attention mask: transformers
    (``masking_utils.find_packed_sequence_indices``) then builds a block-diagonal causal mask for
    sdpa/eager and flash-attention runs varlen, so no token attends across sequences. Sequence ``b``
    starting at offset ``o`` has its response token ``k`` predicted at ``o + len(prompt) - 1 + k``.
    """
    ids, pos, gather, seq_ids = [], [], [], []
    offset = 0
    for b, (p, r) in enumerate(zip(prompts, responses)):
        s = list(p) + list(r[:-1])
        ids.extend(s)
        pos.append(torch.arange(len(s), dtype=torch.long))
        start = offset + len(p) - 1
        gather.append(torch.arange(start, start + len(r)))
        seq_ids.append(torch.full((len(r),), b, dtype=torch.long))
        offset += len(s)
    input_ids = torch.tensor(ids, dtype=torch.long).unsqueeze(0)
    return MicroBatch(input_ids, None, torch.cat(pos).unsqueeze(0), torch.cat(gather), torch.cat(seq_ids))


def _input_lengths(ex: DistillExample) -> tuple[int, int]:
    """Tokens the student and the teacher run for one sequence (the last response token is no input)."""
    n = len(ex.response_ids) - 1
    return len(ex.student_prompt_ids) + n, len(ex.teacher_prompt_ids) + n


def check_token_budget(examples: Sequence[DistillExample], budget: int) -> None:
    """Every sequence must fit a packed micro-batch on its own, else a ValueError naming the key."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"distill.max_tokens_per_micro_batch must be a positive int or null, got {budget!r}")
    for ex in examples:
        s_len, t_len = _input_lengths(ex)
        if max(s_len, t_len) > budget:
            raise ValueError(
                f"distill.max_tokens_per_micro_batch={budget} is smaller than a sequence of problem "
                f"{ex.problem_id!r} (student {s_len}, teacher {t_len} input tokens: prompt + response - 1); "
                "raise it to at least the longest teacher prompt + response"
            )


def pack_sequences(lengths: Sequence[Sequence[int]], budget: int) -> list[list[int]]:
    """First-fit decreasing: bins of sequence indices whose token sums stay <= ``budget`` for every model.

    ``lengths[i]`` holds sequence i's input length per model (student, teacher). Sequences are placed
    longest first (ties by index), each into the first bin with room for it in every model; indices
    within a bin are ascending. Deterministic, so every rank can pack every rank's share.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-max(lengths[i]), i))
    bins: list[list[int]] = []
    used: list[list[int]] = []
    for i in order:
        need = list(lengths[i])
        if max(need) > budget:
            raise ValueError(f"distill.max_tokens_per_micro_batch={budget} is smaller than sequence {i} ({max(need)} tokens)")
        for b, u in enumerate(used):
            if all(x + n <= budget for x, n in zip(u, need)):
                bins[b].append(i)
                used[b] = [x + n for x, n in zip(u, need)]
                break
        else:
            bins.append([i])
            used.append(need)
    return [sorted(b) for b in bins]


def _micro_batch_sequences(
    batch: Sequence[Sequence[DistillExample]], rank: int, world: int, per_micro: int, budget: int | None
) -> list[list[DistillExample]]:
    """This rank's micro-batches of one step, as lists of sequences.

    Padded: ``per_micro`` problems each. Packed: first-fit bins of the rank's sequences, padded with
    empty lists (run as zero-weight one-token micro-batches) up to the largest bin count of any rank,
    which every rank computes alike from the whole batch, so FSDP's collectives line up without a
    collective of their own."""
    mine = parallel.shard_for_rank(batch, rank, world)
    if budget is None:
        return [[ex for group in mine[m0 : m0 + per_micro] for ex in group] for m0 in range(0, len(mine), per_micro)]

    def packed(groups: Sequence[Sequence[DistillExample]]) -> list[list[DistillExample]]:
        seqs = [ex for group in groups for ex in group]
        return [[seqs[i] for i in b] for b in pack_sequences([_input_lengths(ex) for ex in seqs], budget)]

    own = packed(mine)
    most = max(len(packed(parallel.shard_for_rank(batch, r, world))) if r != rank else len(own) for r in range(world))
    return own + [[] for _ in range(most - len(own))]


def _collate_micro_batch(
    seqs: Sequence[DistillExample], packed: bool, device: torch.device
) -> tuple[MicroBatch, MicroBatch, torch.Tensor]:
    """Student and teacher inputs and the per-sequence weights; ``[]`` -> a zero-weight one-token filler."""
    if not seqs:
        filler = collate_packed([[0]], [[0]]).to(device)
        return filler, filler, torch.zeros(1, dtype=torch.float32, device=device)
    responses = [ex.response_ids for ex in seqs]
    make = collate_packed if packed else collate
    s_mb = make([ex.student_prompt_ids for ex in seqs], responses).to(device)
    t_mb = make([ex.teacher_prompt_ids for ex in seqs], responses).to(device)
    seq_weights = torch.tensor([float(ex.weight) for ex in seqs], dtype=torch.float32, device=device)
    return s_mb, t_mb, seq_weights


# --------------------------------------------------------------------------------------------
# models: the FSDP roots that run the decoder body and the fused KL
# --------------------------------------------------------------------------------------------


def _lm_parts(causal_lm: nn.Module, role: str) -> tuple[nn.Module, nn.Linear]:
    body = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else getattr(causal_lm, "model", None)
    head = causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
    if body is None or not isinstance(head, nn.Linear):
        raise ValueError(f"{role} ({type(causal_lm).__name__}) must be a causal LM with .model (decoder) and an nn.Linear lm_head")
    if head.bias is not None:
        raise ValueError(f"{role}: lm_head has a bias, which the fused linear KL does not model")
    return body, head


def _last_hidden(body: nn.Module, mb: MicroBatch) -> torch.Tensor:
    out = body(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.gather_index)


class TeacherHidden(nn.Module):
    """Frozen teacher: decoder body to the hidden states at response-predicting positions.

    Holds the teacher's ``lm_head`` so that, under FSDP2, it sits in the root's parameter group and is
    unsharded with it (:meth:`head_weight`)."""

    def __init__(self, causal_lm: nn.Module):
        super().__init__()
        self.body, self.lm_head = _lm_parts(causal_lm, "teacher")

    def forward(self, mb: MicroBatch) -> torch.Tensor:
        return _last_hidden(self.body, mb)

    def head_weight(self) -> torch.Tensor:
        """The full lm_head weight (unsharding the FSDP root first when sharded)."""
        if hasattr(self, "unshard"):  # FSDPModule: no-op when already unsharded after forward
            self.unshard()
        return self.lm_head.weight.detach()

    def release(self) -> None:
        if hasattr(self, "reshard"):
            self.reshard()


class StudentKL(nn.Module):
    """Trainable student: decoder body + ``lm_head`` -> weighted KL sum over response tokens.

    Under FSDP2 this is the student's root module: its forward unshards the embeddings, final norm
    and ``lm_head`` (tied or not), so the fused KL reads the full ``lm_head`` weight and gradients
    reach it through FSDP's reduce-scatter."""

    def __init__(self, causal_lm: nn.Module):
        super().__init__()
        self.body, self.lm_head = _lm_parts(causal_lm, "student")

    def forward(
        self,
        mb: MicroBatch,
        teacher_hidden: torch.Tensor,
        teacher_weight: torch.Tensor,
        seq_weights: torch.Tensor,
        *,
        direction: str,
        temperature: float,
        backend: str,
        autocast_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        device_type = mb.input_ids.device.type
        with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            hidden = _last_hidden(self.body, mb)
        weight = self.lm_head.weight
        if weight.dtype != hidden.dtype:
            weight = weight.to(hidden.dtype)
        if teacher_hidden.dtype != hidden.dtype:
            teacher_hidden = teacher_hidden.to(hidden.dtype)
        if teacher_weight.dtype != hidden.dtype:
            teacher_weight = teacher_weight.to(hidden.dtype)
        return fused_linear_kl(
            hidden,
            weight,
            teacher_hidden,
            teacher_weight,
            direction=direction,
            temperature=temperature,
            seq_ids=mb.seq_ids,
            seq_weights=seq_weights,
            reduction="sum",
            backend=backend,
        )


# --------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (ndim >= 2) and none on norms/biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(getattr(cfg, "adam_beta1", 0.9), getattr(cfg, "adam_beta2", 0.999)),
        eps=getattr(cfg, "adam_eps", 1e-8),
    )


class LRMultiplier:
    """LR multiplier of step s (0-based): linear warmup over ``warmup_steps`` then constant or cosine."""

    def __init__(self, schedule: str, warmup_steps: int, total_steps: int):
        if schedule not in ("constant", "warmup_constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant', 'warmup_constant' or 'cosine', got {schedule!r}")
        self.schedule, self.total_steps = schedule, max(int(total_steps), 1)
        self.warmup_steps = 0 if schedule == "constant" else int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRMultiplier(cfg.lr_schedule, cfg.warmup_steps, total_steps))


def clip_grad_norm(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 grad norm over all ranks (DTensor-aware); clips in place when ``max_norm > 0``."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    try:
        from torch.distributed.tensor import DTensor

        if isinstance(total, DTensor):
            total = total.full_tensor()
    except ImportError:  # pragma: no cover - torch without DTensor
        pass
    if max_norm and max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


# --------------------------------------------------------------------------------------------
# logging helpers (work with paced_train.logging_utils.RunLogger or any object with .log(dict, step))
# --------------------------------------------------------------------------------------------


class _Log:
    def __init__(self, logger, stage: str, main: bool):
        self.logger, self.stage, self.main = logger, stage, main
        self._stage_kw = False
        if logger is not None and hasattr(logger, "log"):
            try:
                self._stage_kw = "stage" in inspect.signature(logger.log).parameters
            except (TypeError, ValueError):
                self._stage_kw = False

    def info(self, msg: str) -> None:
        if self.logger is not None and hasattr(self.logger, "info"):
            self.logger.info(msg)
        elif self.main:
            print(f"[{self.stage}] {msg}", flush=True)

    def warning(self, msg: str) -> None:
        if self.logger is not None and hasattr(self.logger, "warning"):
            self.logger.warning(msg)
        elif self.main:
            print(f"[{self.stage}] WARNING: {msg}", flush=True)

    def metrics(self, values: dict[str, Any], step: int) -> None:
        if self.logger is not None and hasattr(self.logger, "log"):
            if self._stage_kw:
                self.logger.log(values, step=step, stage=self.stage)
            else:
                self.logger.log(values, step)
        elif self.main:
            print(f"[{self.stage}] step {step}: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()), flush=True)

    @property
    def progress_enabled(self) -> bool:
        return self.main and bool(getattr(self.logger, "progress_bars", True))


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    groups: list[list[DistillExample]]
    steps_per_epoch: int
    total_steps: int
    seed: int
    shuffle: bool
    global_batch: int

    saved_orders: dict[int, list[int]] = field(default_factory=dict)  # from a checkpoint (wins on resume)

    def order(self, epoch: int) -> list[int]:
        if epoch in self.saved_orders:
            return self.saved_orders[epoch]
        return epoch_order(len(self.groups), epoch, self.seed, self.shuffle)

    def batch(self, step: int) -> tuple[int, int, list[int], list[list[DistillExample]]]:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        idx = order[in_epoch * self.global_batch : (in_epoch + 1) * self.global_batch]
        return epoch, in_epoch, order, [self.groups[i] for i in idx]


def _normaliser(batch: Sequence[Sequence[DistillExample]], how: str) -> float:
    if how == "tokens":
        return float(sum(len(ex.response_ids) for group in batch for ex in group))
    if how == "problems":
        return float(len(batch))
    raise ValueError(f"loss_normalization must be 'tokens' or 'problems', got {how!r}")


def _vocab_size(model: nn.Module) -> int:
    emb = model.get_input_embeddings()
    return int(emb.num_embeddings)


def run_distill_stage(
    cfg,
    student: nn.Module,
    teacher: nn.Module,
    examples: Sequence[DistillExample],
    run_dir: str | Path,
    stage_name: str,
    logger=None,
) -> DistillResult:
    """Train ``student`` towards ``teacher`` on the weighted ``examples``; see the module docstring.

    Writes under ``run_dir / stage_name``: ``checkpoints/step_XXXXXXXX`` (resumed from automatically
    when present), ``student/`` (``save_pretrained`` export of the final student) and
    ``distill_result.json``. Under torchrun every rank calls this with the same arguments; the
    in-memory ``student`` is then FSDP-sharded afterwards (reload ``result.student_dir`` for
    generation), while in a single process it is trained in place and stays usable.
    """
    env = parallel.init_distributed()
    log = _Log(logger, stage_name, env.is_main)
    if cfg.loss not in KL_DIRECTIONS:
        raise ValueError(f"distill loss must be one of {sorted(KL_DIRECTIONS)}, got {cfg.loss!r}")
    direction = KL_DIRECTIONS[cfg.loss]
    G, M, W = int(cfg.global_batch_problems), int(cfg.micro_batch_problems), env.world_size
    budget = getattr(cfg, "max_tokens_per_micro_batch", None)
    if budget is not None:
        check_token_budget([], budget)  # type/range
        if G < 1 or G % W:
            raise ValueError(f"global_batch_problems={G} must be a positive multiple of world_size={W} "
                             "(every rank gets the same number of problems)")
    elif G < 1 or M < 1 or G % (W * M):
        raise ValueError(
            f"global_batch_problems={G} must be a positive multiple of micro_batch_problems * world_size "
            f"= {M} * {W} = {M * W} (every rank runs the same number of micro-batches)"
        )
    s_vocab, t_vocab = _vocab_size(student), _vocab_size(teacher)
    s_out = student.get_output_embeddings().out_features
    t_out = teacher.get_output_embeddings().out_features
    if s_out != t_out:
        raise ValueError(f"student and teacher vocabularies differ (lm_head sizes {s_out} vs {t_out}); distillation needs one vocabulary")
    if student is teacher:
        raise ValueError("student and teacher are the same model object: pass a separate frozen teacher (e.g. a copy for self-distillation)")
    _validate_examples(examples, min(s_vocab, t_vocab))
    if budget is not None:
        check_token_budget([ex for ex in examples if ex.weight > 0], budget)

    live, skipped = drop_zero_weight(examples)
    groups = group_by_problem(live)
    log.info(
        f"dropped {skipped.problems} problems with weight 0 ({skipped.examples} of {len(examples)} sequences, "
        f"{skipped.response_tokens:,} response tokens, {skipped.forward_tokens:,} student+teacher forward tokens "
        f"per epoch never computed); training on {len(groups)} problems"
    )
    steps_per_epoch = len(groups) // G
    if steps_per_epoch == 0:
        raise ValueError(
            f"only {len(groups)} problems have weight > 0, fewer than global_batch_problems={G}: lower "
            "global_batch_problems or add problems"
        )
    if len(groups) % G:
        log.info(f"{len(groups) % G} problems per epoch do not fill a global batch of {G} and are left out of that epoch (reshuffled each epoch)")
    total_steps = int(cfg.max_steps) if cfg.max_steps is not None else steps_per_epoch * int(cfg.epochs)
    seed = int(cfg.seed) if getattr(cfg, "seed", None) is not None else 0
    plan = _Plan(groups, steps_per_epoch, total_steps, seed, bool(getattr(cfg, "shuffle", True)), G)
    fingerprint = data_fingerprint(groups)

    # ---- models --------------------------------------------------------------------------
    device = env.device
    torch.manual_seed(seed + env.rank)
    teacher.eval()
    teacher.requires_grad_(False)
    student.train()
    if cfg.mixed_precision == "bf16" and any(p.dtype == torch.bfloat16 for p in student.parameters()):
        log.warning("student parameters are bf16: AdamW updates will be lossy; load the student in fp32 (mixed_precision=bf16 computes in bf16 anyway)")
    from .loading import check_shard_plan, fsdp_root  # models paced_train.loading built already sharded
    pre_student, pre_teacher = fsdp_root(student), fsdp_root(teacher)
    if cfg.activation_checkpointing and pre_student is None:
        parallel.apply_activation_checkpointing(student)
    student_kl = pre_student if pre_student is not None else StudentKL(student)
    teacher_hidden_fn = pre_teacher if pre_teacher is not None else TeacherHidden(teacher)
    autocast_dtype = None
    grad_scale = 1.0  # multiplies the loss for backward when FSDP cannot be told to SUM gradients
    if env.is_distributed:
        cpu_offload = bool(cfg.cpu_offload)
        if cpu_offload and device.type == "cpu":
            log.warning("cpu_offload=true has no effect on a CPU-only run; ignoring it")
            cpu_offload = False
        check_shard_plan(student, cfg, device, "student")  # a pre-sharded model must match this stage
        check_shard_plan(teacher, cfg, device, "teacher")
        mesh = parallel.build_device_mesh(env) if pre_student is None or pre_teacher is None else None
        if pre_student is None:
            parallel.shard_causal_lm(student_kl, parallel.decoder_layers(student), mesh,
                                     mixed_precision=cfg.mixed_precision, cpu_offload=cpu_offload, trainable=True)
        if not parallel.use_sum_gradient_reduction(student_kl):
            grad_scale = float(W)  # FSDP averages over ranks: undo it
        if pre_teacher is None:
            parallel.shard_causal_lm(teacher_hidden_fn, parallel.decoder_layers(teacher), mesh,
                                     mixed_precision=cfg.mixed_precision, cpu_offload=cpu_offload, trainable=False)
    else:
        if cfg.cpu_offload:
            log.warning("cpu_offload=true needs FSDP2 (launch with torchrun); ignoring it in a single process")
        student.to(device)
        teacher.to(device)
        if cfg.mixed_precision == "bf16":
            autocast_dtype = torch.bfloat16

    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = build_optimizer(student, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg, total_steps)

    # ---- resume --------------------------------------------------------------------------
    stage_dir = Path(run_dir) / stage_name
    ckpt_root = stage_dir / "checkpoints"
    history: dict[str, list[float]] = {"losses": [], "grad_norms": [], "lrs": []}
    start_step, resumed_from = 0, None
    latest = ckpt.latest_checkpoint(ckpt_root)
    if latest is not None:
        saved = ckpt.read_train_state(latest)  # checked before anything is loaded into the models
        expected = {"data_fingerprint": fingerprint, "global_batch_problems": G, "seed": seed, "shuffle": plan.shuffle}
        changed = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
        if changed:
            raise ValueError(
                f"checkpoint {latest} was written for different training data or settings "
                f"({', '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in changed.items())}); "
                f"delete {ckpt_root} to start the stage afresh"
            )
        state = ckpt.load_checkpoint(latest, student, optimizer, scheduler=scheduler)
        start_step, resumed_from = int(state["step"]), int(state["step"])
        history = {k: list(state.get(k, [])) for k in history}
        plan.saved_orders[int(state["epoch"])] = [int(i) for i in state["sampler_order"]]
        log.info(f"resumed from {latest} at step {start_step}/{total_steps}")

    def save(step: int) -> None:
        train_state = {
            "step": step,
            "epoch": step // steps_per_epoch,
            "batch_in_epoch": step % steps_per_epoch,
            "sampler_order": plan.order(step // steps_per_epoch),
            "data_fingerprint": fingerprint,
            "global_batch_problems": G,
            "seed": seed,
            "shuffle": plan.shuffle,
            "total_steps": total_steps,
            **history,
        }
        ckpt.save_checkpoint(ckpt.checkpoint_dir(ckpt_root, step), student, optimizer, scheduler=scheduler,
                             train_state=train_state, keep_last=cfg.keep_checkpoints)

    micro = (f"packed micro-batches of <= {budget} tokens" if budget is not None
             else f"{G // (W * M)} micro-batch(es) of {M} problem(s)")
    log.info(
        f"{cfg.loss} distillation: {total_steps} steps ({steps_per_epoch} per epoch) of {G} problems, "
        f"{W} rank(s) x {micro}, normalised by "
        f"{cfg.loss_normalization}, {'FSDP2' if env.is_distributed else 'single process'} on {device}"
    )

    # ---- train ---------------------------------------------------------------------------
    # packed rows under sdpa: attention per sequence (sum L_i^2), not over the dense block-diagonal mask
    restore_attention = packed_attention.enable(student, teacher) if budget is not None else (lambda: None)
    bar = None
    if log.progress_enabled and start_step < total_steps:
        from .logging_utils import progress_bar  # tqdm on a terminal, a line every ~30 s otherwise

        bar = progress_bar(total=total_steps, initial=start_step, desc=f"distill {stage_name}", unit="step")
    every = int(getattr(cfg, "checkpoint_every", 0) or 0)
    log_every = int(getattr(cfg, "log_every", 1) or 1)
    backend = getattr(cfg, "kl_backend", "auto")
    step = start_step
    try:
        for step in range(start_step, total_steps):
            t0 = time.perf_counter()
            epoch, _, _, batch = plan.batch(step)
            normaliser = _normaliser(batch, cfg.loss_normalization)
            micro_batches = _micro_batch_sequences(batch, env.rank, W, M, budget)
            optimizer.zero_grad(set_to_none=True)
            local_loss = torch.zeros((), dtype=torch.float64, device=device)
            for seqs in micro_batches:
                s_mb, t_mb, seq_weights = _collate_micro_batch(seqs, budget is not None, device)
                with torch.no_grad():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_dtype is not None):
                        t_hidden = teacher_hidden_fn(t_mb)
                    t_weight = teacher_hidden_fn.head_weight()
                loss_sum = student_kl(s_mb, t_hidden, t_weight, seq_weights, direction=direction,
                                      temperature=float(cfg.temperature), backend=backend, autocast_dtype=autocast_dtype)
                loss = loss_sum / normaliser
                (loss * grad_scale if grad_scale != 1.0 else loss).backward()
                teacher_hidden_fn.release()
                local_loss += loss.detach().double()
            grad_norm = clip_grad_norm(params, float(cfg.max_grad_norm))
            lr = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            step_loss = parallel.all_reduce_sum(local_loss)
            gnorm = float(grad_norm)
            history["losses"].append(step_loss)
            history["grad_norms"].append(gnorm)
            history["lrs"].append(lr)
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"{stage_name}: loss became {step_loss} at step {step + 1}")
            dt = time.perf_counter() - t0
            n_tokens = sum(len(ex.response_ids) for group in batch for ex in group)
            if (step + 1) % log_every == 0 or step + 1 == total_steps:
                log.metrics({"loss": step_loss, "lr": lr, "grad_norm": gnorm, "epoch": epoch,
                             "problems": len(batch), "response_tokens": n_tokens, "normaliser": normaliser,
                             "micro_batches": len(micro_batches),
                             "step_time_s": dt, "response_tokens_per_s": n_tokens / dt if dt > 0 else 0.0}, step + 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4g}", lr=f"{lr:.2e}", gnorm=f"{gnorm:.3g}")
            if (every and (step + 1) % every == 0) or step + 1 == total_steps:
                save(step + 1)
    finally:
        restore_attention()
        if bar is not None:
            bar.close()

    # ---- export --------------------------------------------------------------------------
    if not env.is_distributed and cfg.activation_checkpointing:
        parallel.remove_activation_checkpointing(student)
    student_dir = ckpt.export_pretrained(student, stage_dir / "student")
    result = DistillResult(
        steps=len(history["losses"]),
        losses=history["losses"],
        grad_norms=history["grad_norms"],
        lrs=history["lrs"],
        skipped_problems=skipped.problems,
        skipped_examples=skipped.examples,
        skipped_response_tokens=skipped.response_tokens,
        skipped_forward_tokens=skipped.forward_tokens,
        trained_problems=len(groups),
        student_dir=student_dir,
        resumed_from_step=resumed_from,
    )
    if env.is_main:
        (stage_dir / "distill_result.json").write_text(json.dumps(result.to_json(), indent=1))
    parallel.barrier()
    return result
