"""``RequestOutput`` / ``CompletionOutput`` of the fake vLLM: vLLM's fields in vLLM's order (the
pipeline reads ``outputs``, ``token_ids``, ``text``, ``finish_reason``, ``stop_reason``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[list]
    finish_reason: Optional[str] = None      # "stop" | "length"
    stop_reason: Union[int, str, None] = None  # the matched stop_token_ids id; None for EOS / length

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: Optional[list[int]]
    prompt_logprobs: Optional[list]
    outputs: list[CompletionOutput]
    finished: bool
