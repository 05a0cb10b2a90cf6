"""The default two-stage schedule (FKL, recomputed pass rates, RKL) with every generation phase on
the fake vLLM (rollout.engine=vllm, eval.engine=vllm) and no model.tokenizer, shortened: in one
process, and under ``torchrun --nproc_per_node 2`` (gloo, CPU) with rank 1 made slow before every
rank-0 decision (the issue's deadlock: a late rank finding rank 0's fresh outputs). Both complete,
with the same rollouts, references, evals and losses; the stage-2 export is a complete model
folder (the fake vLLM and from_pretrained both load it). ``rollout.tensor_parallel_size=2`` as in
configs/qwen3_two_stage.yaml: on two ranks one group, whose second rank reads the answers of the
worker its first rank started (one worker per rank, tp=1, is test_generation_worker.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _fake_vllm_fixture import fake_vllm, subprocess_env  # noqa: F401  (fixture)

pytest.importorskip("paced_kernels._scorer", reason="the C++ scorer extension is not built")
ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

SHORT = ["rollout.engine=vllm", "eval.engine=vllm", "model.tokenizer=null", "rollout.tensor_parallel_size=2",
         "data.toy.n_train=16", "data.toy.n_eval=8", "data.toy.n_mc=4", "rollout.k=2", "eval.k=1",
         "distill.max_steps=1", "distill.global_batch_problems=2", "distill.micro_batch_problems=1",
         # uniform weights: a one-step toy run must not depend on how many pass rates are mixed
         "weights.scheme=uniform", "eval.after_each_stage=false", "schedule.final_pass_rates=false",
         "pass_rate.plot=false", "num_threads=1", "logging.progress=false", "logging.tensorboard=false"]
PHASES = ["01_eval_base", "02_pass_rates_before_0_fkl", "03_reference", "04_pass_rates_before_1_rkl",
          "05_eval_after_1_rkl"]


def _start(out: Path, name: str, ranks: int, **env_extra) -> subprocess.Popen:
    launcher = [sys.executable] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    return subprocess.Popen([*launcher, "-m", "paced_train.run", f"output_dir={out}", f"name={name}", *SHORT],
                            cwd=ROOT, env=subprocess_env(**env_extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs at once (each is mostly one process waiting on another: together they fill two cores)."""
    out = tmp_path_factory.mktemp("vllm_runs")
    procs = {"one": _start(out, "one", 1), "two": _start(out, "two", 2, PACED_DEBUG_SLOW_RANK="1:0.3")}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"{name}:\n" + stdout[-3000:] + stderr[-4000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out / "one", out / "two"


def _rows(path: Path):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pylist()


@pytest.mark.slow
def test_two_stage_schedule_on_vllm_completes_in_one_process_and_on_two_ranks_alike(runs):
    one, two = runs
    for run_dir in (one, two):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert set(summary["losses"]) == {"0_fkl", "1_rkl"}
        assert summary["final_student"].endswith("stages/1_rkl/student")
        assert [r["label"] for r in summary["results"]["rows"]] == ["base", "after_1_rkl"]
        assert summary["truncated"]["1_rkl"]["policy"] == "drop"  # counted and recorded per stage
        assert summary["truncated"]["1_rkl"]["responses"] == 16 * 2
        # every generation phase ran in one worker process (one group of tensor_parallel_size=2)
        assert sorted(p.name for p in (run_dir / "generation").iterdir()) == PHASES
        for ph in PHASES:
            assert sorted(p.name for p in (run_dir / "generation" / ph).iterdir()) == ["group_0"]
            assert (run_dir / "generation" / ph / "group_0" / "exited").read_text() == "0"
            assert (run_dir / "generation" / ph / "group_0" / "worker.log").is_file()
        # the request/answer files are gone once every rank has read them; logs stay
        assert not list((run_dir / "generation").glob("*/group_*/*.parquet"))
    # the same samples, references, evaluations and losses on two ranks as in one process
    for rel in ("pass_rates/00_before_0_fkl/rollouts.parquet", "reference/reference.parquet",
                "pass_rates/01_before_1_rkl/rollouts.parquet"):
        a, b = _rows(one / rel), _rows(two / rel)
        assert a == b and len(a) > 0, rel
    for rel in ("eval/base.json", "eval/after_1_rkl.json"):
        assert json.loads((one / rel).read_text()) == json.loads((two / rel).read_text()), rel
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s1["losses"] == s2["losses"] and s1["curriculum"] == s2["curriculum"]


@pytest.mark.slow
def test_stage_exports_are_complete_model_folders(runs, fake_vllm):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from paced_train.toy.assets import resolve_path
    source = AutoTokenizer.from_pretrained(resolve_path("toy://student"))
    for run_dir in runs:
        export = run_dir / "stages/1_rkl/student"
        for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json"):
            assert (export / f).is_file(), f
        tok = AutoTokenizer.from_pretrained(str(export))
        text = "12+7="
        assert tok(text)["input_ids"] == source(text)["input_ids"] and tok.eos_token_id == source.eos_token_id
        assert tok.chat_template == source.chat_template
        model = AutoModelForCausalLM.from_pretrained(str(export))
        llm = fake_vllm.LLM(model=str(export), dtype="float32")  # loads its tokenizer from the folder
        out = llm.generate([{"prompt_token_ids": tok(text)["input_ids"]}],
                           fake_vllm.SamplingParams(temperature=0.0, max_tokens=4))
        ids = torch.tensor([tok(text)["input_ids"]])
        ref = model.generate(ids, do_sample=False, max_new_tokens=4, pad_token_id=tok.eos_token_id,
                             eos_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
        assert list(out[0].outputs[0].token_ids) == ref[:len(out[0].outputs[0].token_ids)] and ref
