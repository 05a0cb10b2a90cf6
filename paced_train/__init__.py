"""paced_train: the Paced pipeline (rollouts -> pass rates -> Beta weights -> weighted KL
distillation -> evaluation) as a thin PyTorch/FSDP2 trainer. Entry point: ``python -m paced_train.run``.

Kept import-light: heavy modules (transformers, vllm) load only in the stages that use them.
"""
__all__ = ["config"]
