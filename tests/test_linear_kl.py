"""fused_linear_kl (reference and torch backends) against a float64 PyTorch ground truth."""
import pytest
import torch

import paced_kernels.linear_kl as linear_kl_module
from paced_kernels import FusedLinearKL, fused_linear_kl
from paced_kernels.linear_kl_torch import chunked_linear_kl


def float64_truth(sh, sw, th, tw, direction, tau, weights=None):
    """Independent float64 ground truth: full logits, log_softmax, autograd."""
    sh = sh.detach().double().requires_grad_()
    sw = sw.detach().double().requires_grad_()
    log_ps = torch.log_softmax(sh @ sw.T / tau, -1)
    log_pt = torch.log_softmax(th.double() @ tw.double().T / tau, -1)
    if direction == "forward":
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    else:
        kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1)
    per_token = kl if weights is None else kl * weights.double()
    total = per_token.sum()
    grad_h, grad_w = torch.autograd.grad(total, (sh, sw))
    return per_token.detach(), total.detach(), grad_h, grad_w


def make_inputs(n, hs, ht, v, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    sh = (torch.randn(n, hs, generator=g) * scale).to(dtype)
    sw = (torch.randn(v, hs, generator=g) / hs**0.5).to(dtype)
    th = (torch.randn(n, ht, generator=g) * scale).to(dtype)
    tw = (torch.randn(v, ht, generator=g) / ht**0.5).to(dtype)
    return sh, sw, th, tw


def assert_near(actual, expected, rel=2e-5):
    """max |actual - expected| <= rel * max |expected| (scale-aware for float32 math)."""
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), 1e-12)
    assert err <= rel * scale, f"max error {err:.3g} > {rel:g} * {scale:.3g}"


def run(sh, sw, th, tw, **kw):
    x, y = sh.detach().clone().requires_grad_(), sw.detach().clone().requires_grad_()
    out = fused_linear_kl(x, y, th, tw, **kw)
    (out.sum() if out.dim() else out).backward()
    return out.detach(), x.grad, y.grad


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("tau", [1.0, 0.6, 2.0])
def test_matches_float64_with_weights(backend, direction, tau):
    n, hs, ht, v = 53, 29, 41, 257  # odd sizes, Hs != Ht
    sh, sw, th, tw = make_inputs(n, hs, ht, v, scale=2.0)
    seq_ids = torch.arange(n) % 7
    seq_w = torch.tensor([0.0, 1.0, 2.5, 0.0, 0.3, 1.7, 0.9])
    _, total, gh, gw = float64_truth(sh, sw, th, tw, direction, tau, seq_w[seq_ids])
    loss, xh, xw = run(sh, sw, th, tw, direction=direction, temperature=tau, seq_ids=seq_ids,
                       seq_weights=seq_w, reduction="sum", backend=backend)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), total, rtol=1e-5, atol=1e-5)
    assert_near(xh, gh)
    assert_near(xw, gw)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(reduction):
    n, hs, ht, v = 20, 16, 12, 75
    sh, sw, th, tw = make_inputs(n, hs, ht, v, seed=1)
    seq_ids = torch.tensor([0] * 8 + [1] * 5 + [2] * 7)
    seq_w = torch.tensor([0.5, 0.0, 3.0])
    per_token, total, _, _ = float64_truth(sh, sw, th, tw, "forward", 1.0, seq_w[seq_ids])
    out, xh, xw = run(sh, sw, th, tw, seq_ids=seq_ids, seq_weights=seq_w, reduction=reduction, backend="torch")
    expected = {"sum": total, "mean": total / n, "none": per_token}[reduction]
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    if reduction == "none":
        assert torch.all(out[8:13] == 0)  # weight-0 tokens: exactly zero
        # gradients of out.sum() equal those of reduction="sum"
        _, _, gh, gw = float64_truth(sh, sw, th, tw, "forward", 1.0, seq_w[seq_ids])
        assert_near(xh, gh)
        assert_near(xw, gw)


def test_none_backward_with_nonuniform_upstream():
    n, hs, ht, v = 15, 10, 9, 40
    sh, sw, th, tw = make_inputs(n, hs, ht, v, seed=2)
    up = torch.linspace(-1, 2, n)
    x, y = sh.clone().requires_grad_(), sw.clone().requires_grad_()
    (fused_linear_kl(x, y, th, tw, direction="reverse", reduction="none", backend="torch") * up).sum().backward()
    xs, ys = sh.double().requires_grad_(), sw.double().requires_grad_()
    log_ps = torch.log_softmax(xs @ ys.T, -1)
    log_pt = torch.log_softmax(th.double() @ tw.double().T, -1)
    ((log_ps.exp() * (log_ps - log_pt)).sum(-1) * up.double()).sum().backward()
    assert_near(x.grad, xs.grad)
    assert_near(y.grad, ys.grad)


@pytest.mark.parametrize("direction", ["forward", "reverse", "akl"])
@pytest.mark.parametrize("rows,cols", [(4, None), (23, 8), (5, 7), (3, 1), (23, 33)])
def test_chunk_and_vocab_block_boundaries_do_not_matter(direction, rows, cols):
    sh, sw, th, tw = make_inputs(23, 8, 9, 33, seed=3, scale=3.0)
    scale = torch.rand(23)
    whole = chunked_linear_kl(sh, sw, th, tw, scale, direction, 1.3, chunk_size=23)
    pieces = chunked_linear_kl(sh, sw, th, tw, scale, direction, 1.3, chunk_size=rows, vocab_block=cols)
    for a, b in zip(whole, pieces):
        assert_near(b, a, rel=1e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_slab_path_matches_float64_and_the_full_tile_path(direction, dtype):
    """The CPU row-chunk path works slab by slab (5 slabs of 3 rows, the last short) in place;
    it must give the float64 truth, and the full-tile path the GPU uses must agree with it."""
    from paced_kernels.linear_kl_torch import _row_chunk_kl, _row_chunk_kl_slabs

    sh, sw, th, tw = make_inputs(13, 12, 10, 97, dtype=dtype, seed=8, scale=2.5)
    weights = torch.rand(13, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    kl_true, _, gh_true, gw_true = float64_truth(sh, sw, th, tw, direction, 1.7, weights)
    s, t = sh @ sw.T / 1.7, th @ tw.T / 1.7
    scale = (weights.to(dtype) / 1.7).unsqueeze(1)
    kl = torch.empty(13, dtype=dtype)
    g = _row_chunk_kl_slabs(s.clone(), t.clone(), direction, scale, kl, slab=3)
    kl_tile, g_tile = _row_chunk_kl(s.clone(), t.clone(), direction, True)
    rel = 1e-12 if dtype == torch.float64 else 2e-5
    assert_near(kl * weights.to(dtype), kl_true, rel=rel)
    assert_near(g @ sw, gh_true, rel=rel)
    assert_near(g.T @ sh, gw_true, rel=rel)
    assert_near(g, g_tile * scale, rel=rel)
    kl_only = torch.empty(13, dtype=dtype)
    assert _row_chunk_kl_slabs(s.clone(), t.clone(), direction, None, kl_only, slab=3) is None
    assert torch.equal(kl_only, kl)


def test_chunk_plan_respects_the_memory_budget(monkeypatch):
    from paced_kernels.linear_kl_torch import plan_chunks

    monkeypatch.setenv("PACED_KL_CHUNK_MB", "32")
    cpu = torch.device("cpu")
    # CPU row chunks hold two [rows, V] fp32 logit buffers (slab-wise elementwise work)
    rows, cols = plan_chunks(2048, 32768, cpu, "forward")
    assert cols is None and rows >= 128 and rows * 32768 * 4 * 2 <= 32 * 2**20
    # a vocabulary too large for 128-token row chunks: vocabulary blocks (4 live buffers)
    rows, cols = plan_chunks(2048, 151936, cpu, "reverse")
    assert cols is not None and rows * cols * 4 * 4 <= 32 * 2**20
    rows, cols = plan_chunks(100, 1000, cpu, "forward")
    assert (rows, cols) == (100, None)  # everything fits: one row chunk
    rows, cols = plan_chunks(2048, 32768, cpu, "akl")  # full-tile passes: 4 live buffers
    assert cols is None and rows * 32768 * 4 * 4 <= 32 * 2**20


def test_akl_torch_matches_reference_in_float64():
    sh, sw, th, tw = make_inputs(17, 12, 14, 61, dtype=torch.float64, seed=4, scale=2.0)
    ids = torch.arange(17) % 3
    w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    a = run(sh, sw, th, tw, direction="akl", seq_ids=ids, seq_weights=w, reduction="sum", backend="torch")
    b = run(sh, sw, th, tw, direction="akl", seq_ids=ids, seq_weights=w, reduction="sum", backend="reference")
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)


def test_akl_is_a_mix_of_forward_and_reverse():
    sh, sw, th, tw = make_inputs(9, 6, 6, 20, dtype=torch.float64, seed=5)
    f = fused_linear_kl(sh, sw, th, tw, direction="forward", reduction="none", backend="reference")
    r = fused_linear_kl(sh, sw, th, tw, direction="reverse", reduction="none", backend="reference")
    a = fused_linear_kl(sh, sw, th, tw, direction="akl", reduction="none", backend="reference")
    lo, hi = torch.minimum(f, r), torch.maximum(f, r)
    assert torch.all(a >= lo - 1e-12) and torch.all(a <= hi + 1e-12)


def test_single_token_and_identical_models_give_zero():
    sh, sw, _, _ = make_inputs(1, 7, 7, 13, seed=6)
    out, xh, xw = run(sh, sw, sh, sw, direction="reverse", backend="torch")
    assert abs(out.item()) < 1e-6
    assert xh.abs().max() < 1e-6 and xw.abs().max() < 1e-6


def test_all_zero_weights_cost_nothing_and_give_zero(monkeypatch):
    calls = []
    monkeypatch.setattr(linear_kl_module, "chunked_linear_kl", lambda *a, **k: calls.append(a) or chunked_linear_kl(*a, **k))
    sh, sw, th, tw = make_inputs(6, 5, 5, 11)
    ids = torch.zeros(6, dtype=torch.long)
    out, xh, xw = run(sh, sw, th, tw, seq_ids=ids, seq_weights=torch.zeros(1), backend="torch")
    assert out.item() == 0.0 and xh.abs().sum() == 0 and xw.abs().sum() == 0
    assert not calls
    none = fused_linear_kl(sh, sw, th, tw, seq_ids=ids, seq_weights=torch.zeros(1), reduction="none", backend="torch")
    assert none.shape == (6,) and torch.all(none == 0)


def test_zero_weight_tokens_never_reach_the_backend(monkeypatch):
    seen = []

    def spy(sh, *rest):
        seen.append(sh.shape[0])
        return chunked_linear_kl(sh, *rest)

    monkeypatch.setattr(linear_kl_module, "chunked_linear_kl", spy)
    sh, sw, th, tw = make_inputs(12, 5, 5, 11)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    run(sh, sw, th, tw, seq_ids=ids, seq_weights=torch.tensor([1.0, 0.0, 2.0, 0.0]), backend="torch")
    assert seen == [6]


def test_bf16_error_no_worse_than_plain_bf16_pytorch():
    """Cut Cross-Entropy's criterion: our bf16 error vs float64 <= a naive bf16 implementation's + tol."""
    n, hs, ht, v = 64, 48, 40, 500
    sh, sw, th, tw = make_inputs(n, hs, ht, v, dtype=torch.bfloat16, seed=7, scale=3.0)
    for direction in ("forward", "reverse"):
        _, total, gh, gw = float64_truth(sh, sw, th, tw, direction, 1.0)
        ours, xh, xw = run(sh, sw, th, tw, direction=direction, reduction="sum", backend="torch")
        assert xh.dtype == torch.bfloat16 and xw.dtype == torch.bfloat16
        # naive: bf16 logits, softmax in bf16
        x, y = sh.clone().requires_grad_(), sw.clone().requires_grad_()
        ls, lt = torch.log_softmax(x @ y.T, -1), torch.log_softmax(th @ tw.T, -1)
        naive = (lt.exp() * (lt - ls)).sum() if direction == "forward" else (ls.exp() * (ls - lt)).sum()
        naive.backward()
        err = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()  # noqa: E731
        assert err(ours, total) <= err(naive.detach(), total) + 1e-3
        assert err(xh, gh) <= err(x.grad, gh) + 1e-2
        assert err(xw, gw) <= err(y.grad, gw) + 1e-2


def test_module_form_matches_function():
    sh, sw, th, tw = make_inputs(10, 6, 6, 21)
    mod = FusedLinearKL(direction="reverse", temperature=0.8, reduction="sum", backend="torch")
    assert "reverse" in repr(mod)
    a = mod(sh, sw, th, tw)
    b = fused_linear_kl(sh, sw, th, tw, direction="reverse", temperature=0.8, reduction="sum", backend="torch")
    torch.testing.assert_close(a, b)


def test_auto_backend_is_torch_on_cpu(monkeypatch):
    seen = []
    monkeypatch.setattr(linear_kl_module, "chunked_linear_kl", lambda *a: seen.append(1) or chunked_linear_kl(*a))
    sh, sw, th, tw = make_inputs(4, 5, 5, 9)
    fused_linear_kl(sh, sw, th, tw)
    assert seen


def test_teacher_grad_is_refused_clearly():
    sh, sw, th, tw = make_inputs(4, 5, 5, 9)
    with pytest.raises(ValueError, match="teacher"):
        fused_linear_kl(sh, sw, th.requires_grad_(), tw)


BAD_CALLS = {
    "token count": lambda sh, sw, th, tw: dict(teacher_hidden=th[:-1]),
    "student hidden size": lambda sh, sw, th, tw: dict(student_weight=sw[:, :-1]),
    "teacher hidden size": lambda sh, sw, th, tw: dict(teacher_weight=tw[:, :-1]),
    "vocabulary mismatch": lambda sh, sw, th, tw: dict(teacher_weight=tw[:-1]),
    "NaN or inf": lambda sh, sw, th, tw: dict(student_hidden=torch.where(torch.arange(5) == 2, float("nan"), sh)),
    "teacher_hidden contains NaN": lambda sh, sw, th, tw: dict(teacher_hidden=th * float("inf")),
    "seq_ids out of range": lambda sh, sw, th, tw: dict(seq_ids=torch.tensor([0, 1, 2, 3, 4, 9, 0, 0]), seq_weights=torch.ones(5)),
    "negative": lambda sh, sw, th, tw: dict(seq_ids=torch.zeros(8, dtype=torch.long), seq_weights=torch.tensor([-1.0])),
    "seq_ids must have shape": lambda sh, sw, th, tw: dict(seq_ids=torch.zeros(3, dtype=torch.long), seq_weights=torch.ones(1)),
    "seq_ids must be int64": lambda sh, sw, th, tw: dict(seq_ids=torch.zeros(8), seq_weights=torch.ones(1)),
    "without seq_ids": lambda sh, sw, th, tw: dict(seq_weights=torch.ones(1)),
    "share a dtype": lambda sh, sw, th, tw: dict(student_weight=sw.double()),
    "dtype torch.int64": lambda sh, sw, th, tw: dict(student_hidden=sh.long()),
    "must be 2-D": lambda sh, sw, th, tw: dict(student_hidden=sh[None]),
    "direction": lambda sh, sw, th, tw: dict(direction="sideways"),
    "reduction": lambda sh, sw, th, tw: dict(reduction="avg"),
    "backend": lambda sh, sw, th, tw: dict(backend="cuda"),
    "temperature": lambda sh, sw, th, tw: dict(temperature=0.0),
    "torch.Tensor": lambda sh, sw, th, tw: dict(student_hidden=sh.tolist()),
}


@pytest.mark.parametrize("problem", sorted(BAD_CALLS))
def test_bad_inputs_raise_value_error_naming_the_problem(problem):
    sh, sw, th, tw = make_inputs(8, 5, 6, 11)
    sh[:5]  # noqa: B018
    kw = dict(student_hidden=sh, student_weight=sw, teacher_hidden=th, teacher_weight=tw)
    change = BAD_CALLS[problem](sh, sw, th, tw)
    if problem == "NaN or inf":
        change = dict(student_hidden=sh.index_fill(0, torch.tensor([2]), float("nan")))
    kw.update(change)
    args = [kw.pop(k) for k in ("student_hidden", "student_weight", "teacher_hidden", "teacher_weight")]
    with pytest.raises(ValueError, match=problem.split(" (")[0]):
        fused_linear_kl(*args, backend=kw.pop("backend", "torch"), **kw)


def test_device_mix_is_refused():
    sh, sw, th, tw = make_inputs(4, 5, 5, 9)
    with pytest.raises(ValueError, match="one device"):
        fused_linear_kl(sh.to("meta"), sw, th, tw, backend="torch")


@pytest.mark.parametrize("direction,jsd_beta", [("forward", 0.0), ("reverse", 1.0)])
def test_agrees_with_liger_fused_linear_jsd(direction, jsd_beta):
    """Liger's fused linear JSD with beta=0 / beta=1 is the token-mean forward / reverse KL."""
    liger = pytest.importorskip("liger_kernel.transformers.fused_linear_jsd")
    sh, sw, th, tw = make_inputs(32, 16, 24, 96, seed=8)
    ref, xh, xw = run(sh, sw, th, tw, direction=direction, temperature=1.5, reduction="mean", backend="torch")
    peer = liger.LigerFusedLinearJSD(jsd_beta=jsd_beta, temperature=1.5)
    y, z = sh.clone().requires_grad_(), sw.clone().requires_grad_()
    loss = peer(y, z, th, tw, None)
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-4, atol=1e-5)
    assert_near(y.grad, xh, rel=1e-4)
    assert_near(z.grad, xw, rel=1e-4)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_triton_backend_through_the_public_api(direction, reduction):
    pytest.importorskip("triton")
    sh, sw, th, tw = make_inputs(19, 24, 20, 70, seed=9, scale=2.0)
    ids = torch.arange(19) % 4
    w = torch.tensor([1.0, 0.0, 0.5, 2.0])
    per_token, total, gh, gw = float64_truth(sh, sw, th, tw, direction, 0.9, w[ids])
    out, xh, xw = run(sh, sw, th, tw, direction=direction, temperature=0.9, seq_ids=ids, seq_weights=w,
                      reduction=reduction, backend="triton")
    if reduction == "mean":
        torch.testing.assert_close(out.double(), total / 19, rtol=1e-5, atol=1e-6)
        gh, gw = gh / 19, gw / 19
    else:
        assert_near(out, per_token, rel=1e-5)
    assert_near(xh, gh, rel=1e-4)
    assert_near(xw, gw, rel=1e-4)
