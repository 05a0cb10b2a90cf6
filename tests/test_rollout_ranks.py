"""Rollouts do not depend on how many ranks share them: torchrun x2 (gloo) == one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_hf_rollouts_are_the_same_on_two_ranks_and_one_process(tmp_path):
    sys.path.insert(0, str(HERE))
    from _rollout_worker import rollouts

    single = rollouts()
    assert len(single) == 7 and all(len(g) == 3 for g in single)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    out = tmp_path / "ranks2.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_rollout_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert json.loads(out.read_text()) == single
