"""A rank that fails brings the others down promptly, with its error in their output.

The two ranks are started by hand (RANK / WORLD_SIZE / MASTER_* set, no torchrun), so nothing
but the pipeline's own machinery (``parallel.report_failure`` + the peer-failure watcher) can stop
rank 0: it waits in a collective that rank 1 never joins, whose timeout is 30 minutes. The slow
rank (decisions made on rank 0 and broadcast) is tested with the whole schedule in
test_pipeline_vllm.py (PACED_DEBUG_SLOW_RANK)."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from _fake_vllm_fixture import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["data.toy.n_train=8", "data.toy.n_eval=4", "data.toy.n_mc=4", "rollout.k=2", "eval.k=1",
         "distill.max_steps=1", "distill.global_batch_problems=2", "distill.micro_batch_problems=1",
         "num_threads=1", "logging.progress=false", "logging.tensorboard=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_rank_that_raises_stops_the_other_promptly_with_its_error(tmp_path):
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = subprocess_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                             MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                             PACED_DEBUG_FAIL="1:eval")  # rank 1 raises at the base eval's decision
        procs.append(subprocess.Popen([sys.executable, "-m", "paced_train.run", f"output_dir={tmp_path}",
                                       "name=fail", *SHORT], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        # the guard is far below the collective's 30-minute timeout: without the watcher rank 0 hangs
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    (out0, err0), (out1, err1) = outs
    assert procs[1].returncode != 0 and "PACED_DEBUG_FAIL: rank 1 fails on purpose at 'eval'" in err1
    assert procs[0].returncode != 0, out0[-2000:] + err0[-2000:]
    # rank 0 says why it stopped: rank 1's error, not a timeout or a bare broken pipe
    assert "rank 1 failed: RuntimeError: PACED_DEBUG_FAIL: rank 1 fails on purpose" in err0, err0[-3000:]
    assert not (tmp_path / "fail" / "eval" / "base.json").exists()
