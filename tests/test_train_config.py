"""Run configuration: YAML + key=value overrides, type checks and semantic validation."""
from pathlib import Path

import pytest
import yaml

from paced_train.config import (DistillConfig, RunConfig, apply_overrides, config_from_dict, config_hash,
                                config_to_dict, default_config_path, load_config, parse_overrides)
from paced_train.run import main, resolve_run_dir

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MINIMAL = {"data": {"train": "train.jsonl"}}


def build(*overrides, base=None):
    return config_from_dict(apply_overrides(base or MINIMAL, parse_overrides(list(overrides))))


def test_default_config_is_the_toy_world_on_cpu():
    assert default_config_path() == CONFIGS / "default.yaml"
    cfg = load_config()
    assert cfg.model.student == "toy://student" and cfg.model.teacher == "toy://teacher"
    assert cfg.data.toy is not None and cfg.device == "cpu"
    assert cfg.rollout.engine == "hf" and cfg.distill.kl_backend == "torch"
    assert [s.loss for s in cfg.stages] == ["fkl", "rkl"]


@pytest.mark.parametrize("name,losses", [("qwen3_14b_to_8b_fkl", ["fkl"]), ("qwen25_math_7b_self_rkl", ["rkl"]),
                                         ("qwen3_two_stage", ["fkl", "rkl"])])
def test_paper_configs_load_and_match_method_section_8(name, losses):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert [s.loss for s in cfg.stages] == losses
    assert cfg.rollout.engine == "vllm" and cfg.rollout.k == 8 and cfg.rollout.tensor_parallel_size == 2
    assert cfg.data.max_response_tokens == 16384
    assert (cfg.data.max_prompt_tokens, cfg.data.max_teacher_prompt_tokens) == (1024, 3072)
    d = cfg.distill
    assert d.mixed_precision == "bf16" and d.activation_checkpointing and d.cpu_offload
    assert (d.weight_decay, d.max_grad_norm, d.global_batch_problems, d.micro_batch_problems, d.epochs) == \
        (0.01, 1.0, 32, 2, 1)
    assert d.lr_schedule == "constant"
    # 8 GPUs: the global batch splits evenly into micro-batches on every rank
    assert d.global_batch_problems % (d.micro_batch_problems * 8) == 0
    assert (cfg.eval.k, cfg.eval.temperature, cfg.eval.top_p) == (8, 0.6, 0.95)
    assert cfg.weights.scheme == "beta" and (cfg.weights.alpha, cfg.weights.beta) == (1.0, 1.0)


def test_dotted_overrides_parse_as_yaml_scalars():
    cfg = build("distill.lr=1e-5", "rollout.k=4", "logging.wandb=false", "stages=[fkl,rkl]",
                "stages.1.distill.lr=2e-5", "weights.scheme=auto", "data.eval={a: x.jsonl}", "data.toy.n_train=7")
    assert cfg.distill.lr == 1e-5 and isinstance(cfg.distill.lr, float)  # YAML 1.1 reads 1e-5 as a string
    assert cfg.rollout.k == 4 and cfg.logging.wandb is False
    assert [s.loss for s in cfg.stages] == ["fkl", "rkl"]
    assert cfg.stage_distill_config(1).lr == 2e-5 and cfg.stage_distill_config(1).loss == "rkl"
    assert cfg.stage_distill_config(0).lr == 1e-5
    assert cfg.data.eval == {"a": "x.jsonl"} and cfg.data.toy.n_train == 7
    assert cfg.stage_names() == ["0_fkl", "1_rkl"]
    assert isinstance(cfg.stage_distill_config(0), DistillConfig) and cfg.stage_distill_config(0).seed == cfg.seed


@pytest.mark.parametrize("override,needle", [
    ("distill.lrr=1", "unknown config key 'distill.lrr'"),
    ("bogus=1", "unknown config key 'bogus'"),
    ("distill.lr=abc", "'distill.lr' expects float"),
    ("rollout.k=1.5", "'rollout.k' expects int"),
    ("rollout.k=[1]", "'rollout.k' expects int"),
    ("logging.tensorboard=1", "'logging.tensorboard' expects bool"),
    ("rollout.engine=sglang", "'rollout.engine' must be one of"),
    ("stages=[fkl,xkl]", "'stages[1].loss' must be one of"),
    ("stages=[{loss: rkl, distill: {lrr: 1}}]", "unknown config key 'stages[0].distill.lrr'"),
    ("stages=[{loss: rkl, weights: {alpha: x}}]", "'stages[0].weights.alpha' expects float"),
    ("rollout.k1=8", "'rollout.k1'"),
    ("rollout.top_p=0", "'rollout.top_p'"),
    ("distill.global_batch_problems=1", "'distill.global_batch_problems'"),
    ("distill.lr=-1", "'distill.lr'"),
    ("pass_rate.bins=[0.7,0.3]", "'pass_rate.bins'"),
    ("reference.teacher_prompt_template='{problem} {answer}'", "'reference.teacher_prompt_template'"),
    ("stages=[]", "'stages'"),
    ("stages=[fkl,fkl]", ""),  # two fkl stages are fine: names 0_fkl, 1_fkl
])
def test_bad_configs_name_the_key(override, needle):
    if not needle:
        assert build(override).stage_names() == ["0_fkl", "1_fkl"]
        return
    with pytest.raises(ValueError) as e:
        build(override)
    assert needle in str(e.value)


def test_missing_training_data_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="data.train"):
        config_from_dict({})
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(bad)
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["distill.lr"])


def test_round_trip_and_run_dir_hash(tmp_path):
    cfg = load_config()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    again = load_config(path)
    assert config_to_dict(again) == {**config_to_dict(cfg), "config_path": str(path)}
    assert config_hash(again) == config_hash(cfg)  # output location and logging do not count
    assert config_hash(build("distill.lr=1e-4")) != config_hash(build("distill.lr=1e-5"))
    assert config_hash(build("output_dir=a", "logging.progress=false")) == config_hash(build("output_dir=b"))
    assert resolve_run_dir(build("output_dir=/x", "name=myrun")) == Path("/x/myrun")
    # where the expert API is served does not count; which model answers does
    e = ("expert.model=m", "expert.base_url=http://localhost:8000/v1")
    assert config_hash(build(*e)) == config_hash(build("expert.model=m", "expert.base_url=http://h:9/v1",
                                                       "expert.concurrency=3"))
    assert config_hash(build(*e)) != config_hash(build("expert.model=other", e[1]))


def test_resume_ignores_where_the_expert_api_is_served(tmp_path):
    from paced_train.config import save_config
    from paced_train.run import _check_resume

    first = build("expert.model=m", "expert.base_url=http://localhost:8000/v1")
    save_config(first, tmp_path / "config.yaml")
    _check_resume(build("expert.model=m", "expert.base_url=http://localhost:8001/v1"), tmp_path)
    with pytest.raises(ValueError, match="sections: expert"):
        _check_resume(build("expert.model=n", "expert.base_url=http://localhost:8000/v1"), tmp_path)


def test_cli_print_config_and_errors(capsys):
    assert main(["--print-config", "distill.lr=3e-4"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["distill"]["lr"] == 3e-4
    assert main(["--print-config", "distill.nope=1"]) == 2
    assert "unknown config key 'distill.nope'" in capsys.readouterr().err
