"""``python -m paced_train.run [--config CONFIG] [key=value ...]``: run Paced end to end.

Without ``--config`` it runs ``configs/default.yaml`` (the toy world on CPU). Overrides are
dotted keys with YAML values, e.g. ``distill.lr=1e-5 stages=[fkl,rkl] rollout.k=4``. The run
directory is ``output_dir/name`` (default name: ``<config stem>-<hash of the settings>``);
re-running the same command resumes it, ``overwrite=true`` starts it afresh. The path of the run
directory is printed as the last line. Multi-GPU: ``torchrun --nproc_per_node 8 -m paced_train.run
--config configs/qwen3_14b_to_8b_fkl.yaml``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional

import yaml

from .config import (RunConfig, config_hash, config_to_dict, default_config_path, load_config, without_volatile_keys,
                     save_config)
from .logging_utils import RunLogger, is_main_process

__all__ = ["main", "run", "resolve_run_dir"]


def resolve_run_dir(cfg: RunConfig) -> Path:
    stem = Path(cfg.config_path).stem if cfg.config_path else "run"
    return Path(cfg.output_dir) / (cfg.name or f"{stem}-{config_hash(cfg)}")


def _check_resume(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to resume a run directory written with different settings."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    old = without_volatile_keys(yaml.safe_load(saved.read_text()) or {})
    new = without_volatile_keys(config_to_dict(cfg))
    diffs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diffs:
        raise ValueError(f"run directory {run_dir} holds a run with different settings (sections: "
                         f"{', '.join(diffs)}); pass overwrite=true to start it afresh or name=... for a new run")


def run(cfg: RunConfig, verify=None) -> tuple[Path, dict]:
    """Run a validated config; returns (run_dir, summary)."""
    import torch
    from . import parallel
    from .schedule import Pipeline

    env = parallel.init_distributed()
    parallel.watch_for_peer_failure()  # another rank's error ends this one at once, with that error
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = resolve_run_dir(cfg)
    failed = False
    try:
        if is_main_process():
            if cfg.overwrite and run_dir.exists():
                shutil.rmtree(run_dir)
            _check_resume(cfg, run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        parallel.barrier()
        logger = RunLogger(run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                           wandb_project=cfg.logging.wandb_project, wandb_entity=cfg.logging.wandb_entity,
                           wandb_config=config_to_dict(cfg), progress_bars=cfg.logging.progress,
                           level=cfg.logging.level, run_name=run_dir.name)
        with logger:
            logger.info(f"run directory: {run_dir} (rank 0 of {env.world_size}, device {env.device})")
            summary = Pipeline(cfg, run_dir, logger, verify=verify).run()
    except BaseException as e:
        failed = True
        parallel.report_failure(e)  # the other ranks stop now instead of at a collective's timeout
        cause = parallel.peer_failure()
        if cause is not None:  # this rank failed because another did (e.g. a broken collective)
            print(f"[rank {env.rank}] {cause}", file=sys.stderr, flush=True)
        raise
    finally:
        parallel.teardown_distributed(failed=failed)
    return run_dir, summary


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paced_train.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"YAML config (default: {default_config_path()})")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. distill.lr=1e-5")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    try:
        run_dir, _ = run(cfg)
    except ValueError as e:  # bad data, bad model path, inconsistent settings: a message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if is_main_process():
        print(run_dir.resolve(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
