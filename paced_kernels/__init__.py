"""Paced kernels: fused linear KL (forward / reverse / AKL) and the math-answer scorer.

`from paced_kernels import scoring` gives the batched C++ scorer (built by setup.py).
"""
from .linear_kl import FusedLinearKL, fused_linear_kl

__all__ = ["fused_linear_kl", "FusedLinearKL"]
__version__ = "0.1.0"
