"""``SamplingParams`` of the fake vLLM: the fields the pipeline sets, with vLLM's checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                 # vLLM: 0 or -1 disables
    max_tokens: Optional[int] = 16
    seed: Optional[int] = None
    stop_token_ids: Optional[list[int]] = field(default=None)
    skip_special_tokens: bool = True

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1 (disable), or at least 0, got {self.top_k}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.max_tokens is None:
            self.max_tokens = 1 << 30
