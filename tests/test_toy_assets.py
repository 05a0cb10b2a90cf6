"""The shipped toy models and tokenizer, the toy:// resolver, pretraining and the SNR analysis."""
import json
import math
from pathlib import Path

import pytest
import torch

from paced_train.analysis.snr import bin_by_pass_rate, run_snr, snr_of
from paced_train.toy.assets import ASSETS_DIR, resolve_path
from paced_train.toy.pretrain import TEACHER_PROMPT_TEMPLATE, extract_boxed, main as pretrain_main
from paced_train.toy.world import toy_splits

MAX_ASSET_BYTES = 20 * 1024 * 1024


def _load(spec):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_path(spec)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (several threads contend badly on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_resolve_path():
    for name in ("student", "teacher", "tokenizer"):
        path = Path(resolve_path(f"toy://{name}"))
        assert path == ASSETS_DIR / name and path.is_dir()
    for other in ("Qwen/Qwen3-8B", "/data/models/x", "", "toy:/student"):
        assert resolve_path(other) == other
    with pytest.raises(ValueError, match="toy://nope"):
        resolve_path("toy://nope")


def test_assets_are_small_safetensors():
    files = [p for p in ASSETS_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_ASSET_BYTES
    for name in ("student", "teacher"):
        assert (ASSETS_DIR / name / "model.safetensors").is_file()
        assert not list((ASSETS_DIR / name).glob("*.bin"))


@pytest.mark.parametrize("name", ["student", "teacher"])
def test_models_load_offline_and_generate(name):
    model, tok = _load(f"toy://{name}")
    assert model.config.model_type == "qwen3"
    assert model.config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    shipped_tok = _load_tokenizer()
    assert tok.get_vocab() == shipped_tok.get_vocab() and tok.chat_template == shipped_tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "Compute 3+4."}],
                                     add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0, ids["input_ids"].shape[1]:]), str)


def _load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_path("toy://tokenizer"))


def test_teacher_with_reference_solution_solves_problems():
    """The shipped teacher, greedy, with the expert solution in context: writes the right answer."""
    model, tok = _load("toy://teacher")
    problems = toy_splits(seed=0, n_train=12, n_eval=0, n_mc=0)["train"]
    prompts = [tok.apply_chat_template([{"role": "user", "content": TEACHER_PROMPT_TEMPLATE.format(**p)}],
                                       add_generation_prompt=True, tokenize=False) for p in problems]
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=96, do_sample=False)
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    correct = sum(extract_boxed(t) == p["answer"] for t, p in zip(texts, problems))
    assert correct >= 10, list(zip(texts, [p["answer"] for p in problems]))


def test_pretrain_report_records_a_spread_starting_point():
    report = json.loads((ASSETS_DIR / "pretrain_report.json").read_text())
    rates = report["pass_rates"]
    student = rates["student"]
    assert student["share_0"] > 0 and student["share_1"] > 0 and student["share_mid"] >= 0.2
    assert rates["teacher"]["mean"] > student["mean"] + 0.1
    assert rates["teacher_with_solution"]["mean"] > rates["teacher"]["mean"]
    assert report["k"] == 8 and report["temperature"] == 1.0


def test_pretrain_smoke(tmp_path):
    """Two optimizer steps per model, measurement on 4 problems: writes loadable HF folders."""
    report = pretrain_main(["--out", str(tmp_path), "--student-steps", "2", "--teacher-steps", "2",
                            "--k", "2", "--measure-problems", "4", "--threads", "1"])
    for name in ("student", "teacher"):
        assert (tmp_path / name / "model.safetensors").is_file()
        assert (tmp_path / name / "tokenizer_config.json").is_file()
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    saved = json.loads((tmp_path / "pretrain_report.json").read_text())
    assert saved["pass_rates"]["student"]["n"] == 4 == report["pass_rates"]["teacher"]["n"]
    assert all(math.isfinite(x) for x in saved["models"]["student"]["budget"].values() if isinstance(x, float))


def test_snr_of_matches_hand_computation():
    g = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])
    mean = g.mean(0)
    var = sum(float(((row - mean) ** 2).sum()) for row in g) / 3
    snr, signal, variance = snr_of(g)
    assert signal == pytest.approx(float(mean.norm()))
    assert variance == pytest.approx(var)
    assert snr == pytest.approx(float(mean.norm()) / math.sqrt(var))
    assert snr_of(torch.ones(4, 3))[0] == math.inf
    with pytest.raises(ValueError):
        snr_of(torch.ones(1, 3))


def test_bin_by_pass_rate():
    bins = bin_by_pass_rate([0.0, 0.5, 0.5, 1.0], [1.0, 2.0, math.inf, 4.0], [1.0, 2.0, 1.0, 4.0],
                            [1.0, 1.0, 0.0, 4.0], k=2)
    by_p = {b["pass_rate"]: b for b in bins}
    assert set(by_p) == {0.0, 0.5, 1.0}
    assert by_p[0.5]["n"] == 2 and by_p[0.5]["n_zero_variance"] == 1 and by_p[0.5]["snr_mean"] == 2.0
    assert by_p[0.5]["snr_pooled"] == pytest.approx(1.5 / math.sqrt(0.5))
    assert max(b["snr_pooled_scaled"] for b in bins) == pytest.approx(1.0)
    assert by_p[0.5]["p_times_1_minus_p_scaled"] == pytest.approx(1.0)


def test_snr_run_writes_figure_and_numbers(tmp_path):
    pytest.importorskip("paced_kernels")
    result = run_snr(tmp_path, n_problems=3, k=2)
    assert (tmp_path / "snr.png").stat().st_size > 0
    saved = json.loads((tmp_path / "snr.json").read_text())
    assert set(saved["bins"]) == {"reverse", "forward"} == set(saved["problems"])
    for direction in ("reverse", "forward"):
        assert len(saved["problems"][direction]) == 3 and sum(b["n"] for b in saved["bins"][direction]) == 3
    assert result["k"] == 2
    with pytest.raises(ValueError, match="directions"):
        run_snr(tmp_path, n_problems=1, k=2, directions=("sideways",))


def test_problem_gradients_match_full_logit_autograd():
    """The lm_head gradient of the summed reverse KL equals autograd through full logits."""
    pytest.importorskip("paced_kernels")
    from paced_train.analysis.snr import problem_gradients

    student, tok = _load("toy://student")
    teacher, _ = _load("toy://teacher")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Compute 2+4."}],
                                     add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt)["input_ids"]
    responses = [tok("2+4=6. \\boxed{6}")["input_ids"] + [tok.eos_token_id],
                 tok("2+4=7. \\boxed{7}")["input_ids"] + [tok.eos_token_id],
                 tok("2+4=6. \\boxed{6}")["input_ids"] + [tok.eos_token_id]]
    grads = problem_gradients(student, teacher, p_ids, p_ids, responses, direction="reverse")
    assert torch.equal(grads[0], grads[2]) and not torch.equal(grads[0], grads[1])
    for row, r in zip(grads, responses):
        ids = torch.tensor([p_ids + r])
        with torch.no_grad():
            hs = student.model(input_ids=ids).last_hidden_state[0].double()
            ht = teacher.model(input_ids=ids).last_hidden_state[0].double()
        pos = slice(len(p_ids) - 1, len(p_ids) - 1 + len(r))
        w = student.lm_head.weight.detach().double().clone().requires_grad_(True)
        log_s = torch.log_softmax(hs[pos] @ w.T, -1)
        log_t = torch.log_softmax(ht[pos] @ teacher.lm_head.weight.detach().double().T, -1)
        kl = (log_s.exp() * (log_s - log_t)).sum()
        (ref,) = torch.autograd.grad(kl, w)
        torch.testing.assert_close(row.double(), ref.reshape(-1), rtol=1e-4, atol=1e-5)
