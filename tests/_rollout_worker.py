"""torchrun worker for test_rollout_ranks: HF rollouts on a tiny model, written by rank 0 as JSON."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_tiny import build_tokenizer, tiny_model  # noqa: E402

from paced_train import parallel  # noqa: E402
from paced_train.rollout import HFEngine, SamplingSpec  # noqa: E402


def rollouts() -> list[list[list[int]]]:
    tok = build_tokenizer()
    model = tiny_model(tok, seed=3)
    prompts = [tok.encode(f"{a}+{a + 1}=", add_special_tokens=False) for a in range(7)]
    engine = HFEngine(model, tok, batch_size=4, show_progress=False)
    spec = SamplingSpec(n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=11)
    return [[g.token_ids for g in gens] for gens in engine.generate(prompts, spec)]


if __name__ == "__main__":
    torch.set_num_threads(1)
    parallel.init_distributed()
    out = rollouts()
    if torch.distributed.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps(out))
    parallel.teardown_distributed()
