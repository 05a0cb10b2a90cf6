"""One optimizer step of Paced distillation under torchrun (CPU, gloo), two ways:

* ``ddp``: ``PacedDistillTrainer`` (the Trainer wraps the student in DDP);
* ``fsdp2``: a user's own loop: both models ``fully_shard``-ed per decoder layer and at the root,
  ``distillation_loss`` with the step's global normaliser. (accelerate enables the Trainer's FSDP
  integration only on accelerators, never for MULTI_CPU, so the Trainer+FSDP path cannot run here.)

Rank 0 writes the step's loss and the student's full gradients (gathered when sharded) to
``--out`` so the test can compare them with a single-process float64 reference over the same
global batch. Run by tests/test_integrations_hf_multirank.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
import transformers  # noqa: E402

from paced_kernels.integrations.hf import (  # noqa: E402
    PacedDistillCollator,
    PacedDistillTrainer,
    distillation_loss,
    response_token_count,
)


class _GradCapture(transformers.TrainerCallback):
    """The student's gradients right before the first optimizer step (after the DP reduction)."""

    def __init__(self):
        self.grads = None
        self.model = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is not None:
            return
        self.grads = {}
        for name, p in (self.model or model).named_parameters():
            g = p.grad
            if hasattr(g, "full_tensor"):  # FSDP2: a sharded DTensor; collective on every rank
                g = g.full_tensor()
            self.grads[name] = g.detach().double().cpu()


def _fsdp2_own_loop(rows, student, teacher, direction: str) -> dict:
    """Rank r takes rows r, r + W, ...; loss = its weighted KL sum / global token count, times W
    (FSDP2 averages gradients over ranks)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for model in (student, teacher):
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    teacher.eval().requires_grad_(False)
    live = [r for r in rows if r["paced_weight"] > 0]
    batch = PacedDistillCollator()(live[rank::world])
    n = response_token_count(batch).to(torch.float64)
    dist.all_reduce(n)
    loss = distillation_loss(student, teacher, batch, direction=direction, normaliser=n, backend="torch")
    (loss * world).backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    grads = {name: p.grad.full_tensor().detach().double() for name, p in student.named_parameters()}
    return {"loss": float(total), "grads": grads, "world_size": world, "distributed_type": "FSDP2 (own loop)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", required=True, help="JSON file with the dataset rows")
    ap.add_argument("--mode", choices=["ddp", "fsdp2"], required=True)
    ap.add_argument("--direction", default="forward")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from test_integrations_hf import _models  # the shipped toy student / teacher

    rows = json.loads(Path(a.rows).read_text())
    student, teacher = _models()
    if a.mode == "fsdp2":
        result = _fsdp2_own_loop(rows, student, teacher, a.direction)
        import torch.distributed as dist
        if dist.get_rank() == 0:
            torch.save(result, a.out)
        dist.barrier()
        dist.destroy_process_group()
        return
    args = transformers.TrainingArguments(
        output_dir=str(Path(a.out).parent / "trainer"), max_steps=1, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, learning_rate=1e-3, max_grad_norm=0.0, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0, ddp_backend="gloo")
    capture = _GradCapture()
    trainer = PacedDistillTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=datasets.Dataset.from_list(rows), direction=a.direction,
                                  kl_backend="torch", callbacks=[capture])
    capture.model = trainer.model
    trainer.train()
    if trainer.args.process_index == 0:
        torch.save({"loss": trainer.state.log_history[0]["loss"], "grads": capture.grads,
                    "world_size": trainer.args.world_size,
                    "distributed_type": str(trainer.accelerator.distributed_type)}, a.out)
    # the result is written: leave without interpreter shutdown, where the Trainer's gloo group
    # sometimes aborted a rank ("terminate called without an active exception") or hung its teardown
    import os
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
