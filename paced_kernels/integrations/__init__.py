"""Paced inside other trainers: a Hugging Face `Trainer` subclass and dataset weight helpers.

Submodules are imported on demand (``from paced_kernels.integrations.hf import PacedDistillTrainer``),
so ``import paced_kernels`` never pulls in ``transformers``, ``trl`` or ``datasets``.
"""
__all__ = ["hf", "weighting"]
