"""The fake vLLM behaves like vLLM where the pipeline depends on it, and generation in worker
processes survives those behaviours: the trainer's process group outlives a generation phase
under torchrun, rollouts do not depend on the number of ranks, a dying worker reaches every rank."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from _fake_vllm_fixture import fake_vllm, subprocess_env  # noqa: F401  (fixture)
from paced_train.rollout import VLLMEngine, stop_token_ids, vllm_llm_kwargs
from paced_train.toy.assets import resolve_path

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)


def test_fake_vllm_needs_tokenizer_files_in_the_model_folder(tmp_path, fake_vllm):
    src = Path(resolve_path("toy://student"))
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(src / f, bare / f)
    with pytest.raises(OSError, match="tokenizer"):
        fake_vllm.LLM(model=str(bare))
    # the same weights load with a tokenizer from elsewhere (only the tokenizer was missing)
    llm = fake_vllm.LLM(model=str(bare), tokenizer=resolve_path("toy://tokenizer"))
    assert llm.get_tokenizer().eos_token_id is not None


def test_fake_vllm_cleanup_destroys_the_default_process_group(tmp_path, fake_vllm):
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cleanup_dist_env_and_memory()
        assert not dist.is_initialized()  # what killed the trainer's group when vLLM ran inside a rank
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_fake_vllm_external_launcher_needs_torchrun_env(monkeypatch, fake_vllm):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(KeyError, match="RANK"):
        fake_vllm.LLM(model=resolve_path("toy://student"), distributed_executor_backend="external_launcher")
    with pytest.raises(TypeError, match="not_an_engine_arg"):  # EngineArgs rejects unknown arguments
        fake_vllm.LLM(model=resolve_path("toy://student"), not_an_engine_arg=1)


def test_fake_vllm_keeps_the_stop_token_and_reports_why_it_stopped(fake_vllm):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = resolve_path("toy://student")
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok.apply_chat_template([{"role": "user", "content": "12+7="}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) else prompt)
    llm = fake_vllm.LLM(model=path, dtype="float32")
    greedy = fake_vllm.SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=[tok.eos_token_id])
    c = llm.generate([{"prompt_token_ids": prompt}], greedy)[0].outputs[0]
    # independent reference: HF greedy decoding of the same model
    ref = AutoModelForCausalLM.from_pretrained(path).eval().generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=40, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    assert c.finish_reason == "stop" and c.token_ids == ref and c.token_ids[-1] == tok.eos_token_id
    capped = llm.generate([{"prompt_token_ids": prompt}], fake_vllm.SamplingParams(temperature=0.0, max_tokens=2))
    assert capped[0].outputs[0].finish_reason == "length" and capped[0].outputs[0].token_ids == ref[:2]


@pytest.mark.slow
def test_generation_workers_under_torchrun_keep_the_trainer_group_and_report_a_dying_worker(tmp_path, fake_vllm):
    env = subprocess_env()
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_generation_worker_script.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())

    ok = res["ok"]
    assert [r["status"] for r in ok["ranks"]] == ["ok", "ok"]
    assert all(r["pg"] and r["sum"] == 3.0 for r in ok["ranks"])  # the trainer's group is intact
    # two generation workers (one per rank, each its share of the prompts) give the samples of one
    # in-process engine over all prompts: per-prompt seeds, independent of the number of groups
    from transformers import AutoTokenizer
    sys.path.insert(0, str(HERE))
    from _generation_worker_script import PROMPTS, SPEC
    student = resolve_path("toy://student")
    eng = VLLMEngine(vllm_llm_kwargs(student, dtype="float32", seed=0, max_model_len=128),
                     stop_token_ids(AutoTokenizer.from_pretrained(student)))
    ref = [[[g.token_ids, g.finished] for g in gens] for gens in eng.generate(PROMPTS, SPEC)]
    assert ok["rollouts"] == ref and len(ref) == len(PROMPTS) and all(len(r) == SPEC.n for r in ref)

    # rank 1's worker died in generate: both ranks get a GenerationWorkerError naming the group,
    # the exit code and the worker's last words, and the trainer's group is still usable
    crash = res["crash"]
    for r in crash["ranks"]:
        assert r["status"].startswith("GenerationWorkerError"), r["status"]
        assert "group 1" in r["status"] and "code 17" in r["status"] and "the engine dies" in r["status"]
        assert r["pg"] and r["sum"] == 3.0
    assert crash["rollouts"] is None
