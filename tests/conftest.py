"""Shared test setup: run Triton kernels through the interpreter on machines without a GPU."""
import os

import torch

if not torch.cuda.is_available():
    # must be set before triton is first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
