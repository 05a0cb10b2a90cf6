"""The ``fake_vllm`` fixture: tests/fake_vllm importable as ``vllm`` in this process, for one test
(the module cache is cleared after it, so "vllm missing" checks elsewhere still see no vllm)."""
import os
import sys
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parent / "fake_vllm"


def _vllm_modules():
    return [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]


@pytest.fixture
def fake_vllm(monkeypatch):
    for m in _vllm_modules():
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.syspath_prepend(str(FAKE))
    import vllm
    assert vllm.__version__.endswith("paced.fake")
    yield vllm
    for m in _vllm_modules():
        del sys.modules[m]


def subprocess_env(**extra) -> dict:
    """This environment for a child run with the fake vLLM on PYTHONPATH (generation workers are
    grandchildren: they inherit it), without any torchrun variables or fake-vLLM test hooks."""
    root = FAKE.parents[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PACED_FAKE_VLLM_CRASH",
                        "PACED_DEBUG_SLOW_RANK", "PACED_DEBUG_FAIL")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(FAKE), str(root), env.get("PYTHONPATH", "")) if p))
    env.update(extra)
    return env
