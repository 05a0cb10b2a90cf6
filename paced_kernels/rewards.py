"""Math-answer rewards (1.0 correct, 0.0 not) in the signatures verl and TRL call, on verify_batch.

verl (``custom_reward_function.path`` = this file's module path, ``name`` = one of these):

    compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float
    compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None) -> list[float]
        (the form verl's ``BatchRewardManager`` calls, with keyword arguments)

TRL (``GRPOTrainer(reward_funcs=[...])``): ``trl_accuracy_reward`` reads the gold answer from the
dataset column ``solution`` (TRL's own convention); ``make_trl_reward("answer")`` reads another
column. Completions may be plain strings or conversational (lists of ``{"role", "content"}``
messages; the last message's content is scored).

A ground truth may be a string, a number, or a list / tuple of acceptable answers (correct when
any matches). Verdicts are math-verify's (see ``paced_kernels.scoring``), bounded in time from any
thread; nothing here imports torch or paced_train.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Sequence

__all__ = ["compute_score", "compute_score_batch", "make_trl_reward", "trl_accuracy_reward"]


def _golds_of(ground_truth: Any, where: str) -> list[str]:
    if isinstance(ground_truth, str):
        return [ground_truth]
    if isinstance(ground_truth, numbers.Number) and not isinstance(ground_truth, bool):
        return [str(ground_truth)]
    if isinstance(ground_truth, (list, tuple)) and ground_truth:
        return [g for x in ground_truth for g in _golds_of(x, where)]
    raise TypeError(f"{where}: a ground truth must be a str, a number or a non-empty list of them, "
                    f"got {type(ground_truth).__name__}")


def _text_of(completion: Any, where: str) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict) \
            and isinstance(completion[-1].get("content"), str):
        return completion[-1]["content"]
    raise TypeError(f"{where}: a completion must be a str or a list of chat messages "
                    f"({{'role', 'content'}} dicts), got {type(completion).__name__}")


def _score(ground_truths: Sequence[Any], texts: Sequence[str], num_threads: Optional[int]) -> list[float]:
    """One reward per (ground truth, text); a list ground truth scores its best answer."""
    from . import scoring

    golds, resps, owner = [], [], []
    for k, (gt, text) in enumerate(zip(ground_truths, texts)):
        for g in _golds_of(gt, f"ground truth {k}"):
            golds.append(g)
            resps.append(text)
            owner.append(k)
    verdicts = scoring.verify_batch(golds, resps, num_threads=num_threads)
    out = [0.0] * len(texts)
    for k, ok in zip(owner, verdicts):
        if ok:
            out[k] = 1.0
    return out


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None,
                  **kwargs) -> float:
    """verl's custom reward function: 1.0 when ``solution_str``'s final answer equals
    ``ground_truth`` (math-verify's verdict), else 0.0. ``data_source`` and ``extra_info`` are
    accepted and not used: every source is scored as math."""
    return _score([ground_truth], [_text_of(solution_str, "solution_str")], num_threads=1)[0]


def compute_score_batch(data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Optional[Sequence[Optional[dict]]] = None, num_threads: Optional[int] = None,
                        **kwargs) -> list[float]:
    """verl's batched reward (``reward_manager=batch``): one score per solution, scored together
    on ``num_threads`` C++ threads (default: all cores)."""
    solution_strs, ground_truths = list(solution_strs), list(ground_truths)
    if len(solution_strs) != len(ground_truths):
        raise ValueError(f"solution_strs and ground_truths must have the same length, got "
                         f"{len(solution_strs)} and {len(ground_truths)}")
    texts = [_text_of(s, f"solution_strs[{i}]") for i, s in enumerate(solution_strs)]
    return _score(ground_truths, texts, num_threads)


def make_trl_reward(answer_column: str = "solution", num_threads: Optional[int] = None
                    ) -> Callable[..., list[float]]:
    """A TRL reward function, ``f(prompts, completions, **columns) -> list[float]``, reading each
    completion's gold answer from the dataset column ``answer_column``."""
    if not isinstance(answer_column, str) or not answer_column:
        raise ValueError(f"answer_column must be a column name, got {answer_column!r}")

    def reward(prompts=None, completions=None, **kwargs) -> list[float]:
        if completions is None:
            raise ValueError("the TRL reward needs `completions`")
        if answer_column not in kwargs:
            cols = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric",
                                                         "completion_ids", "environments"))
            raise ValueError(f"the TRL reward reads the gold answer from the dataset column "
                             f"{answer_column!r} (answer_column), which the batch lacks; columns: {cols}")
        golds = list(kwargs[answer_column])
        completions = list(completions)
        if len(golds) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(golds)} values in column {answer_column!r}")
        texts = [_text_of(c, f"completions[{i}]") for i, c in enumerate(completions)]
        return _score(golds, texts, num_threads)

    reward.__name__ = f"math_accuracy_{answer_column}" if answer_column != "solution" else "math_accuracy"
    reward.__qualname__ = reward.__name__
    return reward


trl_accuracy_reward = make_trl_reward("solution")
