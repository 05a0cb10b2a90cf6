"""Per-sequence ("varlen") sdpa attention for packed micro-batches, where flash-attention is absent.

A packed row (batch 1, ``position_ids`` restarting at 0 per sequence, no attention mask) is run
correctly by transformers' sdpa through a dense block-diagonal causal mask, but that attention then
costs ``T^2`` for a row of ``T`` tokens rather than ``sum_i L_i^2``: on a length-skewed workload the
packed row can cost more than the padding it removed. Flash-attention varlen does it per sequence on
GPU; this module does the same for sdpa (CPU, or GPUs without flash-attn): it registers the attention
implementation ``"paced_varlen_sdpa"``, which splits q/k/v at the sequence starts and runs causal sdpa
on each sequence, exactly as that sequence would run alone.

It takes that path only when the mask transformers built is exactly the block-diagonal causal mask of
the row's ``position_ids`` (checked), so it never changes what is computed; any other call (padded
batches, sliding windows, caches) goes to transformers' sdpa unchanged. ``enable`` switches models
whose implementation is ``"sdpa"`` and returns a function that restores them.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch import nn

NAME = "paced_varlen_sdpa"
_registered = False
_verified: tuple = (None, None)  # (weakref to the last mask found block-causal, its sequence starts)


def sequence_starts(position_ids: torch.Tensor) -> list[int] | None:
    """Start offsets of the sequences packed in a ``[1, T]`` row (where positions do not step by 1)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1 or position_ids.shape[1] < 2:
        return None
    steps = torch.diff(position_ids[0])
    starts = (torch.nonzero(steps != 1).squeeze(1) + 1).tolist()
    return [0] + starts if starts else None


def _is_block_causal(mask: torch.Tensor, starts: list[int], length: int) -> bool:
    """Whether a [1, 1, T, T] bool mask is exactly the causal mask of each sequence and False elsewhere.

    Each diagonal block must equal ``tril`` and the mask must hold no other True: one pass over the
    mask plus sum_i L_i^2 compares, done once per mask (the layers of one forward share it)."""
    global _verified
    if mask is None or mask.dtype != torch.bool or tuple(mask.shape) != (1, 1, length, length):
        return False
    ref, ref_starts = _verified
    if ref is not None and ref() is mask and ref_starts == starts:  # every layer gets the same mask object
        return True
    m = mask[0, 0]
    bounds = starts + [length]
    inside = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        tri = torch.ones(b - a, b - a, dtype=torch.bool, device=m.device).tril_()
        if not torch.equal(m[a:b, a:b], tri):
            return False
        inside += (b - a) * (b - a + 1) // 2
    if int(torch.count_nonzero(m)) != inside:
        return False
    _verified = (weakref.ref(mask), list(starts))
    return True


def varlen_sdpa_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs):
    """transformers attention-interface function: causal sdpa per packed sequence, else plain sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    length = query.shape[2]
    starts = sequence_starts(kwargs.get("position_ids"))
    if (starts is None or query.shape[0] != 1 or key.shape[2] != length or kwargs.get("sliding_window") is not None
            or not _is_block_causal(attention_mask, starts, length)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("position_ids", "is_causal")}
    bounds = starts + [length]
    outs = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, is_causal=True, **kwargs)[0]
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outs, dim=1), None


def register() -> None:
    """Register ``NAME`` with transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, varlen_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same mask sdpa gets; checked before use
    _registered = True


def enable(*models: nn.Module) -> Callable[[], None]:
    """Switch the models that use ``"sdpa"`` to ``NAME``; returns a function restoring their setting."""
    changed = []
    for model in models:
        config = getattr(model, "config", None)
        if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
            register()
            config._attn_implementation = NAME
            changed.append(config)

    def restore() -> None:
        for config in changed:
            config._attn_implementation = "sdpa"

    return restore
