"""paced_train.loading: meta-device build + the trainer's FSDP2 sharding + rank-0 broadcast of the
safetensors gives exactly ``from_pretrained``'s weights (in-process with a 1-rank gloo group), and a
distillation stage on 2 ranks (torchrun, gloo) is identical whichever way the models were loaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

import _distill_worker as W
from _torchrun import run_torchrun
from paced_train import loading
from paced_train.toy.assets import resolve_path

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("_loading_worker.py")


@pytest.fixture
def one_rank_group(tmp_path):
    """A real (1-rank, gloo) process group, so load_sharded takes its distributed path in-process."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg_store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _save(model, path: Path) -> Path:
    model.save_pretrained(path)
    return path


def _assert_same_as_from_pretrained(model, path, dtype, trainable):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    ref = loading.load_whole(path, dtype=dtype, trainable=trainable)
    got = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    want = ref.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype == dtype, k
        assert torch.equal(got[k], want[k]), k  # bitwise
    bufs, ref_bufs = dict(model.named_buffers()), dict(ref.named_buffers())
    assert bufs.keys() == ref_bufs.keys() and any("inv_freq" in k for k in bufs)
    for k in ref_bufs:  # non-persistent rotary buffers: rebuilt, not left as to_empty garbage
        assert bufs[k].dtype == ref_bufs[k].dtype and torch.equal(bufs[k], ref_bufs[k]), k
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in ref.parameters()]
    assert model.training == ref.training == trainable
    assert model.generation_config.to_dict() == ref.generation_config.to_dict()


@pytest.mark.parametrize("chunk_bytes", [1, loading.DEFAULT_CHUNK_BYTES])
def test_sharded_load_equals_from_pretrained_bitwise(tmp_path, one_rank_group, chunk_bytes):
    """Tied fp32 student (activation checkpointing, FSDP root StudentKL) and the toy teacher in bf16
    from its fp32 file; one tensor per broadcast (chunk_bytes=1) or all at once."""
    from torch.distributed.fsdp import FSDPModule

    from paced_train.distill import StudentKL, TeacherHidden

    tied = tmp_path / "tied"
    W.tiny_qwen3(1, tie=True).save_pretrained(tied, max_shard_size="20KB")  # several files + an index
    files = sorted(tied.glob("model-*.safetensors"))
    assert len(files) > 1 and (tied / "model.safetensors.index.json").exists()
    assert not any("lm_head.weight" in load_file(f) for f in files)  # the tied weight is written once
    plan = loading.ShardPlan(activation_checkpointing=True)
    student = loading.load_sharded(tied, dtype=torch.float32, trainable=True, plan=plan, chunk_bytes=chunk_bytes)
    assert student.lm_head.weight is student.model.embed_tokens.weight
    assert isinstance(loading.fsdp_root(student), StudentKL) and isinstance(loading.fsdp_root(student), FSDPModule)
    assert loading.shard_plan_of(student) == plan
    assert all(isinstance(layer, FSDPModule) for layer in student.model.layers)
    assert "CheckpointWrapper" in type(student.model.layers[0]).__name__
    _assert_same_as_from_pretrained(student, tied, torch.float32, True)

    toy_teacher = resolve_path("toy://teacher")
    teacher = loading.load_sharded(toy_teacher, dtype=torch.bfloat16, trainable=False, plan=plan, chunk_bytes=chunk_bytes)
    assert isinstance(loading.fsdp_root(teacher), TeacherHidden)
    assert "CheckpointWrapper" not in type(teacher.model.layers[0]).__name__  # the trainer never checkpoints it
    _assert_same_as_from_pretrained(teacher, toy_teacher, torch.bfloat16, False)


def test_tied_weight_stored_under_both_names(tmp_path, one_rank_group):
    """Both names with one value: loaded once, as from_pretrained; with two values: a clear error."""
    path = _save(W.tiny_qwen3(1, tie=True), tmp_path / "m")
    sd = load_file(path / "model.safetensors")
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    model = loading.load_sharded(path, dtype=torch.float32, trainable=True, plan=loading.ShardPlan())
    _assert_same_as_from_pretrained(model, path, torch.float32, True)
    sd["lm_head.weight"].add_(1.0)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="tied weight under 'model.embed_tokens.weight' and 'lm_head.weight' with different values"):
        loading.load_sharded(path, dtype=torch.float32, trainable=True, plan=loading.ShardPlan())


def test_sharded_load_refuses_a_checkpoint_that_does_not_match(tmp_path, one_rank_group):
    path = _save(W.tiny_qwen3(1), tmp_path / "m")
    sd = load_file(path / "model.safetensors")
    sd.pop("model.layers.1.mlp.up_proj.weight")
    sd["model.layers.1.mlp.extra.weight"] = torch.zeros(2)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\].*unexpected \['model.layers.1.mlp.extra.weight'\]"):
        loading.load_sharded(path, dtype=torch.float32, trainable=True, plan=loading.ShardPlan())
    (path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        loading.load_sharded(path, dtype=torch.float32, trainable=True, plan=loading.ShardPlan())
    with pytest.raises(ValueError, match="cannot load model"):
        loading.load_sharded(tmp_path / "nowhere", dtype=torch.float32, trainable=True, plan=loading.ShardPlan())


def test_single_process_is_plain_from_pretrained_and_plans_are_checked(tmp_path):
    assert not dist.is_initialized()
    path = _save(W.tiny_qwen3(1, tie=True), tmp_path / "m")
    model = loading.load_causal_lm(path, dtype=torch.float32, trainable=True, plan=loading.ShardPlan())
    assert loading.fsdp_root(model) is None and loading.shard_plan_of(model) is None
    ref = loading.load_whole(path, dtype=torch.float32, trainable=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    with pytest.raises(ValueError, match="cannot load model"):
        loading.load_causal_lm(tmp_path / "nowhere", dtype=torch.float32, trainable=True)

    cfg = W.tiny_config(mixed_precision="bf16", activation_checkpointing=True, cpu_offload=True)
    cpu = torch.device("cpu")
    assert loading.ShardPlan.for_stage(cfg, cpu) == loading.ShardPlan("bf16", False, True)  # no offload on CPU
    loading.check_shard_plan(model, cfg, cpu, "student")  # a whole model passes
    model.__dict__[loading._PLAN_ATTR] = loading.ShardPlan("no", False, True)
    with pytest.raises(ValueError, match="distill.mixed_precision: loaded 'no', stage 'bf16'"):
        loading.check_shard_plan(model, cfg, cpu, "student")
    model.__dict__[loading._PLAN_ATTR] = loading.ShardPlan("bf16", False, False)
    loading.check_shard_plan(model, cfg, cpu, "teacher")  # the teacher is never checkpointed
    with pytest.raises(ValueError, match="distill.activation_checkpointing"):
        loading.check_shard_plan(model, cfg, cpu, "student")


@pytest.mark.slow
def test_torchrun_two_ranks_sharded_loading_trains_identically(tmp_path):
    """2 ranks: loss, gradient norms and the exported student are bitwise the same after loading
    whole-then-sharding and after sharded loading; each rank held about half of each model."""
    student = _save(W.tiny_qwen3(1, tie=True), tmp_path / "student")
    teacher = _save(W.tiny_qwen3(2, hidden=48), tmp_path / "teacher")
    cfg = dict(loss="fkl", global_batch_problems=4, micro_batch_problems=1, activation_checkpointing=True)
    out = tmp_path / "out"
    run_torchrun(WORKER, "--out", str(out), "--student", str(student), "--teacher", str(teacher),
                 "--cfg", json.dumps(cfg))
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2
    for info in report["loaded"]:
        assert info["same"], info  # the gathered shards are from_pretrained's tensors, bitwise
        assert info["local"] < 0.6 * info["full"], info  # rank 0 materialised about half
    assert report["loaded"][0]["tied"]
    old, new = report["old"], report["new"]
    assert old["steps"] == new["steps"] == 2
    assert new["losses"] == old["losses"] and new["grad_norms"] == old["grad_norms"]  # exactly
    a = load_file(Path(old["student_dir"]) / "model.safetensors")
    b = load_file(Path(new["student_dir"]) / "model.safetensors")
    assert a.keys() == b.keys() and "lm_head.weight" not in b
    assert all(torch.equal(a[k], b[k]) for k in a)
    moved = max(float((b[k] - load_file(student / "model.safetensors")[k]).abs().max()) for k in b)
    assert moved > 1e-3  # it trained
    for name in ("config.json", "generation_config.json"):
        assert json.loads((Path(old["student_dir"]) / name).read_text()) == json.loads((Path(new["student_dir"]) / name).read_text())
