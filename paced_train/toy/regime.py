"""A toy world in the paper's regime (issue 11; design in ``benchmarks/paced_toy_protocol.md``).

Three problem types over a 26-token vocabulary, a capacity-limited recurrent student and an
oracle teacher with privileged context:

- chain (``C``): two sub-chains of ``(+|*) digit`` mod 10, difficulty d = n1 + n2 in 2..6; the
  response starts with an order token (``P`` / ``Q``: which sub-chain's value u or v is written
  first; both are correct, so rollouts diverge at the first token), then the two values, then
  the answer (u + v) mod 10, then EOS;
- direct product (``D``), the answer written at once (no work): level 2, one digit times a
  number in [10, 199] (the frontier), level 3, two numbers in [32, 99] (4 digits: beyond the
  reach of a one-layer GRU, its references only partly absorbable);
- retained skill (``M``): the letter of the largest of four two-digit numbers; not in the
  distillation data, measured by greedy argmax over the four letters.

``python -m paced_train.toy.regime`` pretrains the student (safetensors + report under
``paced_train/toy/assets/regime``). Everything is deterministic from string seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VOCAB", "TOK", "V", "MAX_RESPONSE", "EPS_TEACHER",
    "make_chain", "make_direct", "make_mc", "regime_splits", "pretrain_stream",
    "reference", "teacher_next", "teacher_probs", "is_correct",
    "GRUStudent", "StudentSpec", "load_student", "save_student",
    "response_logits", "generate", "pass_rates", "eval_mean_at_k", "mc_accuracy", "main",
]

VOCAB = ["<pad>", "<bos>", "<eos>", *"0123456789", "+", "*", "|", "=", "?", "C", "D", "M", "P", "Q",
         "a", "b", "c", "d"]
TOK = {t: i for i, t in enumerate(VOCAB)}
V = len(VOCAB)
PAD, BOS, EOS = TOK["<pad>"], TOK["<bos>"], TOK["<eos>"]
DIGITS = [TOK[str(i)] for i in range(10)]
LETTERS = [TOK[c] for c in "abcd"]
MAX_RESPONSE = 5          # chain: order, two sub-chain values, answer, EOS; product: 4 digits + EOS
EPS_TEACHER = 0.01        # teacher mass spread uniformly over the vocabulary
ASSETS = Path(__file__).resolve().parent / "assets" / "regime"


# ----------------------------------------------------------------------------- problems
def _chain(rng: random.Random, n: int) -> tuple[int, list[tuple[str, int]]]:
    return rng.randint(0, 9), [(rng.choice("+*"), rng.randint(1, 9)) for _ in range(n)]


def _run(start: int, ops: list[tuple[str, int]]) -> list[int]:
    vals, v = [], start
    for o, b in ops:
        v = (v + b) % 10 if o == "+" else (v * b) % 10
        vals.append(v)
    return vals


def make_chain(rng: random.Random, d: int | None = None) -> dict:
    """A chain problem of difficulty ``d`` (2..6; drawn uniformly when None)."""
    d = rng.randint(2, 6) if d is None else d
    if not 2 <= d <= 6:
        raise ValueError(f"chain difficulty must be in 2..6, got {d}")
    n1 = rng.randint(max(1, d - 3), min(3, d - 1))
    s1, o1 = _chain(rng, n1)
    s2, o2 = _chain(rng, d - n1)
    prompt = ["C", str(s1), *[t for o, b in o1 for t in (o, str(b))], "|",
              str(s2), *[t for o, b in o2 for t in (o, str(b))], "="]
    answer = (_run(s1, o1)[-1] + _run(s2, o2)[-1]) % 10
    return {"type": "C", "difficulty": d, "prompt": [TOK[t] for t in prompt],
            "chains": [[s1, o1], [s2, o2]], "answer": [DIGITS[answer]]}


def make_direct(rng: random.Random, level: int | None = None) -> dict:
    """A direct product, answer written at once: level 2 = one digit times 10..199 (the frontier),
    level 3 = two numbers in 32..99 (beyond reach); drawn 50/50 when None."""
    level = rng.choice((2, 3)) if level is None else level
    if level == 2:
        x, y = rng.randint(2, 9), rng.randint(10, 199)
    elif level == 3:
        x, y = rng.randint(32, 99), rng.randint(32, 99)
    else:
        raise ValueError(f"direct-product level must be 2 or 3, got {level}")
    prompt = ["D", *str(x), "*", *str(y), "="]
    return {"type": "D", "difficulty": level, "prompt": [TOK[t] for t in prompt],
            "answer": [TOK[c] for c in str(x * y)]}


def make_mc(rng: random.Random) -> dict:
    nums = rng.sample(range(10, 100), 4)
    prompt = ["M", *[c for n in nums for c in str(n)], "?"]
    return {"type": "M", "difficulty": 0, "prompt": [TOK[t] for t in prompt],
            "answer": [LETTERS[nums.index(max(nums))]]}


def _draw(rng: random.Random, kind: str) -> dict:
    return make_chain(rng) if kind == "C" else make_direct(rng) if kind == "D" else make_mc(rng)


def _distinct(rng: random.Random, n: int, share_d: float, seen: set, prefix: str) -> list[dict]:
    out = []
    n_d = round(n * share_d)
    kinds = ["D"] * n_d + ["C"] * (n - n_d)
    rng.shuffle(kinds)
    for kind in kinds:
        for _ in range(10000):
            rec = _draw(rng, kind)
            key = tuple(rec["prompt"])
            if key not in seen:
                break
        else:
            raise ValueError(f"could not draw a new {kind} problem for {prefix}")
        seen.add(key)
        out.append({"id": f"{prefix}-{len(out):05d}", **rec})
    return out


def regime_splits(n_train: int = 1024, n_eval: int = 2000, n_mc: int = 2000,
                  share_d: float = 0.4) -> dict[str, list[dict]]:
    """The fixed world: train / eval (C and D, ``share_d`` of D) and MC sets, disjoint prompts."""
    for name, n in (("n_train", n_train), ("n_eval", n_eval), ("n_mc", n_mc)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    if not 0.0 <= share_d <= 1.0:
        raise ValueError(f"share_d must be in [0, 1], got {share_d!r}")
    seen: set = set()
    train = _distinct(random.Random("regime-train"), n_train, share_d, seen, "train")
    eval_ = _distinct(random.Random("regime-eval"), n_eval, share_d, seen, "eval")
    mc_rng, mc = random.Random("regime-mc"), []
    while len(mc) < n_mc:
        rec = make_mc(mc_rng)
        if tuple(rec["prompt"]) not in seen:
            seen.add(tuple(rec["prompt"]))
            mc.append({"id": f"mc-{len(mc):05d}", **rec})
    return {"train": train, "eval": eval_, "mc": mc}


def pretrain_stream(seed: int, exclude: set, share_d: float, share_mc: float, chain_max: int = 6):
    """Endless pretraining problems (no prompt of ``exclude``); chains of difficulty 2..chain_max."""
    if not 2 <= chain_max <= 6:
        raise ValueError(f"chain_max must be in 2..6, got {chain_max}")
    rng = random.Random(f"regime-pretrain-{seed}")
    while True:
        u = rng.random()
        kind = "M" if u < share_mc else "D" if u < share_mc + share_d else "C"
        rec = make_chain(rng, rng.randint(2, chain_max)) if kind == "C" else _draw(rng, kind)
        if tuple(rec["prompt"]) not in exclude:
            yield rec


# ----------------------------------------------------------------------------- teacher / verifier
def _digit(tok: int) -> int:
    return DIGITS.index(tok) if tok in DIGITS else 0


def teacher_next(rec: dict, prefix: list[int]) -> list[int] | int:
    """The correct next token after response ``prefix`` (the teacher follows the prefix's own
    intermediate values); a list at the order position (both orders are correct)."""
    t = len(prefix)
    if rec["type"] != "C":
        ans = rec["answer"]
        return ans[t] if t < len(ans) else EOS
    if t == 0:
        return [TOK["P"], TOK["Q"]]
    (s1, o1), (s2, o2) = rec["chains"]
    u, v = _run(s1, o1)[-1], _run(s2, o2)[-1]
    first, second = (u, v) if prefix[0] != TOK["Q"] else (v, u)
    if t == 1:
        return DIGITS[first]
    if t == 2:
        return DIGITS[second]
    if t == 3:  # the answer from the written values (the teacher follows the prefix)
        return DIGITS[(_digit(prefix[1]) + _digit(prefix[2])) % 10]
    return EOS


def teacher_probs(rec: dict, response: list[int], eps: float = EPS_TEACHER) -> torch.Tensor:
    """[len(response), V] teacher distributions at each position of ``response`` (given its prefix)."""
    out = torch.full((len(response), V), eps / V)
    for t in range(len(response)):
        nxt = teacher_next(rec, response[:t])
        for tok in (nxt if isinstance(nxt, list) else [nxt]):
            out[t, tok] += (1.0 - eps) / (len(nxt) if isinstance(nxt, list) else 1)
    return out


def reference(rec: dict, rng: random.Random) -> list[int]:
    """The teacher's reference response (sampled order, then the correct continuation, EOS)."""
    resp: list[int] = []
    while not resp or resp[-1] != EOS:
        nxt = teacher_next(rec, resp)
        resp.append(rng.choice(nxt) if isinstance(nxt, list) else nxt)
    return resp


def is_correct(rec: dict, response: list[int]) -> bool:
    """Final-answer verification: C, the last digit before EOS; D, the digits before EOS; M, the letter."""
    body = response[:response.index(EOS)] if EOS in response else response
    if rec["type"] == "C":
        return bool(body) and body[-1] == rec["answer"][0]
    return body == rec["answer"]


# ----------------------------------------------------------------------------- student
@dataclass(frozen=True)
class StudentSpec:
    embed: int = 32
    hidden: int = 96


class GRUStudent(nn.Module):
    """One-layer GRU language model (untied head): the capacity-limited student."""

    def __init__(self, spec: StudentSpec = StudentSpec()):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(V, spec.embed)
        self.gru = nn.GRU(spec.embed, spec.hidden, batch_first=True)
        self.head = nn.Linear(spec.hidden, V)

    def forward(self, ids: torch.Tensor, h: torch.Tensor | None = None):
        out, h = self.gru(self.embed(ids), h)
        return self.head(out), h, out


def save_student(model: GRUStudent, path: Path, report: dict | None = None) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "student.safetensors"))
    (path / "student.json").write_text(json.dumps({"spec": asdict(model.spec), "vocab": VOCAB}, indent=2))
    if report is not None:
        (path / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")


def load_student(path: Path = ASSETS) -> GRUStudent:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "student.safetensors").is_file():
        raise FileNotFoundError(f"no regime student at {path}; build it with `python -m paced_train.toy.regime`")
    meta = json.loads((path / "student.json").read_text())
    if meta.get("vocab") != VOCAB:
        raise ValueError(f"regime student at {path} was built for another vocabulary")
    model = GRUStudent(StudentSpec(**meta["spec"]))
    model.load_state_dict(load_file(str(path / "student.safetensors")))
    return model.eval()


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


def response_logits(model: GRUStudent, recs: list[dict], responses: list[list[int]]):
    """Student logits [B, Lr, V] predicting each response token, and the mask [B, Lr]."""
    seqs = [[BOS, *r["prompt"], *resp] for r, resp in zip(recs, responses)]
    ids, _ = _pad(seqs)
    logits, _, _ = model(ids)
    Lr = max(len(x) for x in responses)
    out = logits.new_zeros(len(recs), Lr, V)
    mask = torch.zeros(len(recs), Lr, dtype=torch.bool)
    for i, (r, resp) in enumerate(zip(recs, responses)):
        p = len(r["prompt"]) + 1
        out[i, :len(resp)] = logits[i, p - 1:p - 1 + len(resp)]
        mask[i, :len(resp)] = True
    return out, mask


@torch.no_grad()
def generate(model: GRUStudent, recs: list[dict], k: int, temperature: float,
             gen: torch.Generator, max_new: int = MAX_RESPONSE) -> list[list[list[int]]]:
    """``k`` sampled responses per problem (temperature 0 = greedy), each ending at EOS or max_new."""
    prompts = [[BOS, *r["prompt"]] for r in recs for _ in range(k)]
    ids, lens = _pad(prompts)
    packed = nn.utils.rnn.pack_padded_sequence(model.embed(ids), lens, batch_first=True, enforce_sorted=False)
    _, h = model.gru(packed)
    logits = model.head(h[0])
    n = len(prompts)
    out = torch.full((n, max_new), PAD, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(max_new):
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        else:
            tok = logits.argmax(-1)
        tok = torch.where(done, torch.full_like(tok, PAD), tok)
        out[:, t] = tok
        done |= tok == EOS
        if bool(done.all()):
            break
        o, h = model.gru(model.embed(tok[:, None]), h)
        logits = model.head(o[:, 0])
    res = []
    for row in out.tolist():
        r = []
        for x in row:
            if x == PAD:
                break
            r.append(x)
            if x == EOS:
                break
        res.append(r)
    return [res[i * k:(i + 1) * k] for i in range(len(recs))]


def pass_rates(model, recs, k: int, gen: torch.Generator, batch: int = 512, temperature: float = 1.0):
    """Per-problem pass rates (K samples at ``temperature``) and the rollouts."""
    rates, rolls = [], []
    for i in range(0, len(recs), batch):
        chunk = recs[i:i + batch]
        for r, resps in zip(chunk, generate(model, chunk, k, temperature, gen)):
            rates.append(sum(is_correct(r, x) for x in resps) / k)
            rolls.append(resps)
    return rates, rolls


def eval_mean_at_k(model, recs, k: int, gen: torch.Generator, temperature: float = 0.6) -> list[float]:
    """Per-problem mean@k accuracy (0..1) at ``temperature``."""
    return pass_rates(model, recs, k, gen, temperature=temperature)[0]


@torch.no_grad()
def mc_accuracy(model, recs) -> float:
    """Greedy multiple-choice accuracy (%): argmax over the four letters after the prompt."""
    ids, lens = _pad([[BOS, *r["prompt"]] for r in recs])
    logits, _, _ = model(ids)
    last = logits[torch.arange(len(recs)), lens - 1][:, LETTERS]
    pick = last.argmax(-1)
    gold = torch.tensor([LETTERS.index(r["answer"][0]) for r in recs])
    return 100.0 * float((pick == gold).float().mean())


# ----------------------------------------------------------------------------- pretraining
@dataclass(frozen=True)
class PretrainBudget:
    steps: int = 3000
    batch: int = 64
    lr: float = 3e-3
    share_d: float = 0.3
    share_mc: float = 0.05
    seed: int = 0
    chain_max: int = 6        # longest chain in the pretraining stream (longer ones: the frontier)


def pretrain(budget: PretrainBudget, exclude: set, spec: StudentSpec = StudentSpec(), log_every: int = 250):
    """Supervised pretraining on teacher references of the pretraining stream (cosine lr)."""
    torch.manual_seed(budget.seed)
    model = GRUStudent(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=0.01)
    stream = pretrain_stream(budget.seed, exclude, budget.share_d, budget.share_mc, budget.chain_max)
    rng = random.Random(f"regime-pretrain-ref-{budget.seed}")
    losses = []
    for step in range(budget.steps):
        lr = budget.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / budget.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        recs = [next(stream) for _ in range(budget.batch)]
        resps = [reference(r, rng) for r in recs]
        logits, mask = response_logits(model, recs, resps)
        tgt, _ = _pad(resps)
        loss = F.cross_entropy(logits[mask], tgt[:, :logits.shape[1]][mask])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.3f}", flush=True)
    return model.eval(), losses


def describe(model, splits, k: int = 8, seed: int = 0) -> dict:
    """Starting pass-rate shares (train, K at T=1), eval mean@4 at 0.6, MC accuracy."""
    gen = torch.Generator().manual_seed(seed)
    rates, _ = pass_rates(model, splits["train"], k, gen)
    by = {}
    for r, p in zip(splits["train"], rates):
        by.setdefault(f"{r['type']}{r['difficulty']}", []).append(p)
    ev = eval_mean_at_k(model, splits["eval"], 4, torch.Generator().manual_seed(seed))
    n = len(rates)
    return {"train_share_0": sum(p == 0 for p in rates) / n, "train_share_1": sum(p == 1 for p in rates) / n,
            "train_share_mid": sum(0 < p < 1 for p in rates) / n, "train_mean_p": sum(rates) / n,
            "train_mean_p_by_kind": {k_: round(sum(v) / len(v), 4) for k_, v in sorted(by.items())},
            "eval_mean_at_4": 100 * sum(ev) / len(ev), "mc_accuracy": mc_accuracy(model, splits["mc"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--steps", type=int, default=PretrainBudget.steps)
    ap.add_argument("--share-mc", type=float, default=PretrainBudget.share_mc)
    ap.add_argument("--share-d", type=float, default=PretrainBudget.share_d)
    ap.add_argument("--batch", type=int, default=PretrainBudget.batch)
    ap.add_argument("--lr", type=float, default=PretrainBudget.lr)
    ap.add_argument("--chain-max", type=int, default=PretrainBudget.chain_max)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    splits = regime_splits(n_eval=4000)
    exclude = {tuple(r["prompt"]) for s in splits.values() for r in s}
    budget = PretrainBudget(steps=args.steps, batch=args.batch, lr=args.lr, share_mc=args.share_mc, share_d=args.share_d, seed=args.seed,
                            chain_max=args.chain_max)
    model, losses = pretrain(budget, exclude)
    t_train = time.time() - t0
    report = {"budget": asdict(budget), "spec": asdict(model.spec),
              "parameters": sum(p.numel() for p in model.parameters()),
              "final_loss": sum(losses[-100:]) / 100, "train_seconds": round(t_train, 1),
              "measured": describe(model, {**splits, "eval": splits["eval"][:2000]})}
    save_student(model, args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
