"""Run under ``torchrun --nproc_per_node 2``: the same distillation stage twice, once on models loaded
whole on every rank (``from_pretrained``, then sharded by ``run_distill_stage``) and once on models
loaded sharded (``paced_train.loading.load_sharded``), and write what the test compares to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import _distill_worker as W  # noqa: E402
from paced_train import loading, parallel  # noqa: E402
from paced_train.distill import run_distill_stage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--cfg", default="{}")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    env = parallel.init_distributed()
    out = Path(args.out)
    cfg = W.tiny_config(**json.loads(args.cfg))
    plan = loading.ShardPlan.for_stage(cfg, env.device)
    examples = W.tiny_examples(8, seed=3, rollouts=1)
    report: dict = {"world_size": env.world_size}
    for variant in ("old", "new"):
        models = []
        for path, trainable, dtype in ((args.student, True, torch.float32), (args.teacher, False, torch.bfloat16)):
            if variant == "old":
                models.append(loading.load_whole(path, dtype=dtype, trainable=trainable, device=env.device))
            else:
                m = loading.load_sharded(path, dtype=dtype, trainable=trainable, plan=plan, chunk_bytes=4096)
                # before training: every rank holds only its slice, and the gathered whole is from_pretrained's
                local = sum(p.to_local().numel() for p in m.parameters() if isinstance(p, DTensor))
                full = sum(p.numel() for p in m.parameters())
                ref = loading.load_whole(path, dtype=dtype, trainable=trainable).state_dict()
                got = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True))
                same = got.keys() == ref.keys() and all(
                    got[k].dtype == ref[k].dtype and torch.equal(got[k].cpu(), ref[k]) for k in ref)
                report.setdefault("loaded", []).append({"path": path, "local": local, "full": full, "same": same,
                                                         "tied": m.lm_head.weight is m.model.embed_tokens.weight})
                models.append(m)
        result = run_distill_stage(cfg, models[0], models[1], examples, out / variant, "stage")
        report[variant] = result.to_json()
    if env.is_main:
        (out / "report.json").write_text(json.dumps(report))
    parallel.teardown_distributed()


if __name__ == "__main__":
    main()
