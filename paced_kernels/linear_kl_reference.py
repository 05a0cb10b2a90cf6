"""Plain PyTorch reference for the linear KL: materialises both [N, V] logit tensors.

This is the ground truth the fast backends are tested against (call it with float64 inputs) and
the `backend="reference"` path of `fused_linear_kl`. Gradients come from ordinary autograd.
Low-precision inputs are upcast to float32 first, so the reference never rounds logits to bf16.
"""
from __future__ import annotations

import torch

AKL_HEAD_MASS = 0.5  # mu of AKL: the teacher's head is the top tokens whose mass first reaches mu


def reference_logprobs(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(hidden @ weight^T / temperature) in at least float32."""
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    logits = hidden.to(dtype) @ weight.to(dtype).T
    return torch.log_softmax(logits / temperature, dim=-1)


def akl_coefficients(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, head_mass: float = AKL_HEAD_MASS):
    """AKL's per-token (head, tail) mixing coefficients (Wu et al. 2025), detached.

    The head is the set of most probable teacher tokens whose cumulative mass first reaches
    `head_mass` (the token that crosses it is included); g = sum |p_t - p_s| over head and tail.
    """
    with torch.no_grad():
        p_t, p_s = log_p_teacher.exp(), log_p_student.exp()
        sorted_p, order = torch.sort(p_t, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        head_sorted = mass_before < head_mass
        head = torch.zeros_like(head_sorted).scatter_(-1, order, head_sorted)
        gap = (p_t - p_s).abs()
        g_head = (gap * head).sum(-1)
        g_tail = gap.sum(-1) - g_head
        total = g_head + g_tail
        safe = torch.where(total > 0, total, torch.ones_like(total))
        c_head = torch.where(total > 0, g_head / safe, torch.full_like(total, 0.5))
        return c_head, 1.0 - c_head


def reference_kl_per_token(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    direction: str = "forward",
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL per token, [N], differentiable by autograd; float64 in -> float64 out."""
    log_ps = reference_logprobs(student_hidden, student_weight, temperature)
    log_pt = reference_logprobs(teacher_hidden, teacher_weight, temperature)
    fkl = lambda: (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # noqa: E731
    rkl = lambda: (log_ps.exp() * (log_ps - log_pt)).sum(-1)  # noqa: E731
    if direction == "forward":
        return fkl()
    if direction == "reverse":
        return rkl()
    if direction == "akl":
        c_head, c_tail = akl_coefficients(log_pt, log_ps)
        return c_head * fkl() + c_tail * rkl()
    raise ValueError(f"unknown direction {direction!r}")

