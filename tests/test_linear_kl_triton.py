"""Triton fused linear KL (chunk GEMMs + row kernel) vs a float64 PyTorch reference.

On CPU the row kernel runs under TRITON_INTERPRET=1 at small shapes; tests that need a real card
are marked ``gpu`` and skipped without CUDA. The reference below is deliberately written from the
definitions (log_softmax, autograd), not from the kernel's online formulation. A subprocess
compiles the row kernel for sm_90 with the specialisation the runtime gives the real arguments.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must happen before triton is imported (the kernels are built at import time).
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from paced_kernels.linear_kl_triton import triton_available, triton_linear_kl  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs CUDA or TRITON_INTERPRET=1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DIRECTIONS = ("forward", "reverse")


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------


def _kl_from_logits(s, t, direction):
    log_p_s = torch.log_softmax(s, dim=-1)
    log_p_t = torch.log_softmax(t, dim=-1)
    if direction == "forward":
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)


def reference_fp64(hs, ws, ht, wt, scale, direction, tau):
    """Exact-as-possible ground truth: float64 logits, log_softmax, autograd."""
    h = hs.detach().double().requires_grad_(True)
    w = ws.detach().double().requires_grad_(True)
    s = h @ w.T / tau
    t = ht.detach().double() @ wt.detach().double().T / tau
    kl = _kl_from_logits(s, t, direction)
    if scale is None:
        return kl.detach(), None, None
    (kl * scale.double()).sum().backward()
    return kl.detach(), h.grad, w.grad


def plain_low_precision(hs, ws, ht, wt, scale, direction, tau):
    """What a naive bf16/fp16 PyTorch implementation computes: logits and softmax in that dtype."""
    h = hs.detach().clone().requires_grad_(True)
    w = ws.detach().clone().requires_grad_(True)
    s = (h @ w.T) / tau
    t = (ht @ wt.T) / tau
    kl = _kl_from_logits(s, t, direction)
    (kl * scale.to(kl.dtype)).sum().backward()
    return kl.detach(), h.grad, w.grad


def make_inputs(n, hs, ht, v, dtype=torch.float32, seed=0, weight_scale=0.3):
    g = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(n, hs, generator=g)
    student_weight = torch.randn(v, hs, generator=g) * weight_scale
    teacher_hidden = torch.randn(n, ht, generator=g)
    teacher_weight = torch.randn(v, ht, generator=g) * weight_scale
    scale = torch.rand(n, generator=g) + 0.25
    tensors = (student_hidden, student_weight, teacher_hidden, teacher_weight)
    out = [x.to(device=DEVICE, dtype=dtype) for x in tensors]
    return (*out, scale.to(DEVICE))


def assert_close(actual, expected, atol, rtol, what):
    actual = actual.double()
    expected = expected.double()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs()
    bound = atol + rtol * expected.abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (
        f"{what}: max abs err {err.max().item():.3e} (at {worst.item()}: got "
        f"{actual.flatten()[worst].item():.6e}, want {expected.flatten()[worst].item():.6e})"
    )


def check_fp32(inputs, direction, tau, **blocks):
    hs, ws, ht, wt, scale = inputs
    kl, gh, gw = triton_linear_kl(hs, ws, ht, wt, scale, direction, tau, **blocks)
    ref_kl, ref_gh, ref_gw = reference_fp64(hs, ws, ht, wt, scale, direction, tau)
    plain = plain_low_precision(hs, ws, ht, wt, scale, direction, tau)  # fp32 PyTorch
    assert kl.dtype == torch.float32 and kl.shape == (hs.shape[0],)
    assert gh.dtype == hs.dtype and gh.shape == hs.shape
    assert gw.dtype == ws.dtype and gw.shape == ws.shape
    # fp32 tolerance relative to each output's scale: the gradients are sums of V terms that
    # largely cancel (sum_v dKL/ds_v = 0), so elementwise rtol alone would demand more than
    # fp32 PyTorch itself achieves. 1e-5 of the largest entry is ~5x fp32 PyTorch's error at
    # ordinary logits; for ill-conditioned inputs (logits ~100, where ulp(|x|) ~ 1e-5) allow
    # twice fp32 PyTorch's own max error instead.
    for name, ours, exact, naive in (("kl", kl, ref_kl, plain[0]),
                                     ("grad_student_hidden", gh, ref_gh, plain[1]),
                                     ("grad_student_weight", gw, ref_gw, plain[2])):
        naive_err = (naive.double() - exact).abs().max().item()
        atol = max(1e-5 * exact.abs().max().item(), 2 * naive_err)
        assert_close(ours, exact, atol=atol, rtol=1e-4, what=name)
    return kl, gh, gw


# ----------------------------------------------------------------------------------------------
# fp32 correctness
# ----------------------------------------------------------------------------------------------

# (N, Hs, Ht, V): sizes that are multiples of no block; Hs != Ht both ways.
ODD_SHAPES = [(37, 40, 24, 300), (19, 20, 48, 131)]
# Default blocks (one chunk, one vocabulary block under the interpreter), and small ones forcing
# several token chunks with a short tail and several vocabulary blocks with a masked tail.
BLOCKINGS = [{}, {"chunk_size": 16, "block_v": 64}]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("blocks", BLOCKINGS, ids=["one_chunk", "chunks_and_blocks"])
def test_fp32_matches_fp64_reference(direction, shape, blocks):
    check_fp32(make_inputs(*shape, seed=sum(shape)), direction, 1.0, **blocks)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("tau", [0.5, 2.5])
def test_temperature(direction, tau):
    check_fp32(make_inputs(23, 32, 40, 200, seed=3, weight_scale=0.6), direction, tau, block_v=64)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_single_token(direction):
    check_fp32(make_inputs(1, 24, 17, 90, seed=5), direction, 1.3)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_token_scale_zeros_negative_and_extreme_values(direction):
    hs, ws, ht, wt, _ = make_inputs(21, 24, 32, 150, seed=7)
    scale = torch.tensor(
        [0.0, 0.5, -1.3, 2.0, 0.0, 1e-3, 7.5, 1.0, 0.0, 0.25, 3.0,
         -0.5, 0.0, 1.0, 4.0, 0.1, 0.0, 2.5, 1.5, 0.75, 0.0], device=DEVICE)
    _, gh, _ = check_fp32((hs, ws, ht, wt, scale), direction, 1.0, chunk_size=8, block_v=64)
    assert (gh[scale == 0] == 0).all()  # tokens with scale 0 get exactly zero gradient
    kl0, gh0, gw0 = triton_linear_kl(hs, ws, ht, wt, torch.zeros_like(scale), direction, 1.0)
    assert (gh0 == 0).all() and (gw0 == 0).all()  # all-zero scales: exactly zero gradients
    assert_close(kl0, reference_fp64(hs, ws, ht, wt, None, direction, 1.0)[0], 2e-5, 1e-4, "kl")
    # the power-of-two loss scale keeps 1e-30 and 1e+30 upstream scales exact (fp32 range ends)
    for magnitude in (1e-30, 1e30):
        check_fp32((hs, ws, ht, wt, scale * magnitude), direction, 1.0)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_token_scale_none_returns_loss_only(direction):
    hs, ws, ht, wt, scale = make_inputs(13, 24, 20, 111, seed=11)
    kl, gh, gw = triton_linear_kl(hs, ws, ht, wt, None, direction, 1.0)
    assert gh is None and gw is None
    ref_kl, _, _ = reference_fp64(hs, ws, ht, wt, None, direction, 1.0)
    assert_close(kl, ref_kl, 2e-5, 1e-4, "kl")
    kl_with_grads, _, _ = triton_linear_kl(hs, ws, ht, wt, scale, direction, 1.0)
    assert torch.equal(kl, kl_with_grads)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_masked_vocab_tail_large_logits_no_nan(direction):
    # V = 17 with BLOCK_V = 16: the second vocabulary block has 1 live and 15 masked columns.
    # Logits reach |x| ~ 100, so any unguarded exp overflows and any 0 * inf shows up as NaN.
    hs, ws, ht, wt, scale = make_inputs(9, 16, 24, 17, seed=13, weight_scale=8.0)
    kl, gh, gw = check_fp32((hs, ws, ht, wt, scale), direction, 1.0, block_v=16)
    assert torch.isfinite(kl).all() and torch.isfinite(gh).all() and torch.isfinite(gw).all()
    assert (kl >= -1e-4).all()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_online_rescaling_monotone_logits(direction):
    # Student logits proportional to v (or -v, depending on the token): the running maximum
    # grows at every vocabulary block for some tokens and never for others.
    n, hs_dim, ht_dim, v = 12, 16, 16, 100
    g = torch.Generator().manual_seed(17)
    base = torch.randn(hs_dim, generator=g)
    ramp = torch.linspace(-1.0, 1.0, v)
    ws = (ramp[:, None] * base[None, :] * 4.0)
    hs = torch.randn(n, hs_dim, generator=g) + base * torch.linspace(-2, 2, n)[:, None]
    wt = (ramp.flip(0)[:, None] * base[None, :] * 3.0) + 0.1 * torch.randn(v, ht_dim, generator=g)
    ht = torch.randn(n, ht_dim, generator=g) + base
    scale = torch.rand(n, generator=g)
    inputs = tuple(x.to(DEVICE) for x in (hs, ws, ht, wt, scale))
    check_fp32(inputs, direction, 1.0, chunk_size=5, block_v=16)


def test_chunking_does_not_change_the_result():
    inputs = make_inputs(37, 40, 24, 300, seed=41)
    one = triton_linear_kl(*inputs, "reverse", 1.0)
    many = triton_linear_kl(*inputs, "reverse", 1.0, chunk_size=7, block_v=32)
    for a, b, what in zip(one, many, ("kl", "grad_h", "grad_w")):
        assert_close(a, b.double(), atol=2e-6 * b.abs().max().item(), rtol=1e-5, what=what)


def test_non_contiguous_inputs():
    hs, ws, ht, wt, scale = make_inputs(10, 24, 16, 70, seed=19)
    ws_view = ws.T.contiguous().T  # same values, column-major storage
    assert not ws_view.is_contiguous()
    check_fp32((hs, ws_view, ht, wt, scale), "forward", 1.0)


# ----------------------------------------------------------------------------------------------
# Low precision: judged like Cut Cross-Entropy -- no worse than a plain PyTorch implementation
# in that dtype (logits rounded, softmax in that dtype), measured against float64.
# ----------------------------------------------------------------------------------------------


def _errors(ours, exact):
    """(max abs error / max |exact|, ||error|| / ||exact||) against float64."""
    err = ours.double() - exact
    return err.abs().max().item() / exact.abs().max().item(), err.norm().item() / exact.norm().item()


def check_low_precision(n, hs_dim, ht_dim, v, dtype, direction, tau, seed, scale_mult=1.0, **blocks):
    hs, ws, ht, wt, scale = make_inputs(n, hs_dim, ht_dim, v, dtype=dtype, seed=seed, weight_scale=0.5)
    scale = scale * scale_mult
    kl, gh, gw = triton_linear_kl(hs, ws, ht, wt, scale, direction, tau, **blocks)
    assert kl.dtype == torch.float32 and gh.dtype == dtype and gw.dtype == dtype
    ref = reference_fp64(hs, ws, ht, wt, scale, direction, tau)
    plain = plain_low_precision(hs, ws, ht, wt, scale, direction, tau)
    ulp = torch.finfo(dtype).eps
    for name, ours, exact, naive in zip(("kl", "grad_h", "grad_w"), (kl, gh, gw), ref, plain):
        assert torch.isfinite(ours).all(), f"{name}: non-finite"
        our_err = (ours.double() - exact).abs().max().item()
        naive_err = (naive.double() - exact).abs().max().item()
        slack = ulp * exact.abs().max().item()  # one ulp of the largest entry
        assert our_err <= naive_err + slack, (
            f"{name} ({dtype}, {direction}): our max err {our_err:.3e} > plain {dtype} "
            f"PyTorch's {naive_err:.3e} + {slack:.3e}"
        )
        # And in absolute terms: within a few ulps of float64 on top of the unavoidable error of
        # rounding the exact result to the output dtype (large for fp16 subnormals).
        norm = max(exact.norm().item(), 1e-300)
        rel = (ours.double() - exact).norm().item() / norm
        rounding = (exact.to(dtype).double() - exact).norm().item() / norm
        assert rel < rounding + 4 * ulp, (
            f"{name} ({dtype}, {direction}): relative error {rel:.3e} (output rounding alone "
            f"{rounding:.3e})"
        )


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_bf16_no_worse_than_plain_bf16(direction, tau):
    check_low_precision(29, 48, 40, 257, torch.bfloat16, direction, tau, seed=23, chunk_size=16, block_v=128)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("scale_mult", [1.0, 1e-6], ids=["unit_scale", "tiny_scale"])
def test_fp16_no_worse_than_plain_fp16(direction, scale_mult):
    # tiny_scale: c_j ~ 1e-6 (a large-N mean) puts G below fp16's range; the power-of-two loss
    # scale must keep the gradients (plain fp16 autograd flushes them to 0).
    check_low_precision(17, 32, 24, 160, torch.float16, direction, 1.0, seed=29, scale_mult=scale_mult)


def test_bf16_grad_w_accumulator_bf16_vs_fp32():
    """grad_W over many chunks: the bf16 accumulator (rounded once per chunk, the default) stays
    under plain bf16 PyTorch's error in norm; the fp32 accumulator also in the max."""
    n, hidden, v, chunk = 384, 32, 256, 12  # 32 chunks, as N=16384 with C=512
    hs, ws, ht, wt, _ = make_inputs(n, hidden, hidden, v, dtype=torch.bfloat16, seed=43, weight_scale=0.7)
    scale = torch.full((n,), 1.0 / n, device=DEVICE)
    exact = reference_fp64(hs, ws, ht, wt, scale, "forward", 1.0)[2]
    plain = plain_low_precision(hs, ws, ht, wt, scale, "forward", 1.0)[2]
    acc16 = triton_linear_kl(hs, ws, ht, wt, scale, "forward", 1.0, chunk_size=chunk, grad_w_fp32=False)[2]
    acc32 = triton_linear_kl(hs, ws, ht, wt, scale, "forward", 1.0, chunk_size=chunk, grad_w_fp32=True)[2]
    (plain_max, plain_norm), (max16, norm16), (max32, norm32) = (
        _errors(x, exact) for x in (plain, acc16, acc32))
    assert norm32 <= norm16 and max32 <= plain_max and norm32 < plain_norm
    assert norm16 <= plain_norm, f"bf16 accumulator norm error {norm16:.3e} > plain bf16 {plain_norm:.3e}"


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_direction_raises():
    hs, ws, ht, wt, scale = make_inputs(4, 16, 16, 32)
    for bad in ("akl", "sideways", None):
        with pytest.raises(ValueError, match="direction"):
            triton_linear_kl(hs, ws, ht, wt, scale, bad, 1.0)


def test_bad_shapes_and_arguments_raise():
    hs, ws, ht, wt, scale = make_inputs(4, 16, 12, 32)
    with pytest.raises(ValueError, match="student_weight"):
        triton_linear_kl(hs, ws[:, :8], ht, wt, scale, "forward", 1.0)
    with pytest.raises(ValueError, match="tokens"):
        triton_linear_kl(hs, ws, ht[:3], wt, scale, "forward", 1.0)
    with pytest.raises(ValueError, match="vocabulary"):
        triton_linear_kl(hs, ws, ht, wt[:31], scale, "forward", 1.0)
    with pytest.raises(ValueError, match="token_scale"):
        triton_linear_kl(hs, ws, ht, wt, scale[:3], "forward", 1.0)
    with pytest.raises(ValueError, match="temperature"):
        triton_linear_kl(hs, ws, ht, wt, scale, "forward", 0.0)
    with pytest.raises(ValueError, match="share a dtype"):
        triton_linear_kl(hs, ws.bfloat16(), ht, wt, scale, "forward", 1.0)
    with pytest.raises(ValueError, match="block_v"):
        triton_linear_kl(hs, ws, ht, wt, scale, "forward", 1.0, block_v=48)
    with pytest.raises(ValueError, match="chunk_size"):
        triton_linear_kl(hs, ws, ht, wt, scale, "forward", 1.0, chunk_size=0)


# ----------------------------------------------------------------------------------------------
# GPU lowering without a GPU: the interpreter never runs Triton's compiler, so a subprocess
# without TRITON_INTERPRET compiles the row kernel for Hopper (sm_90) with the specialisation the
# runtime derives from the real arguments at the qwen3 shape (Triton's own binder: 16-divisible
# vocabulary and strides, 16-byte aligned pointers), and reads registers and spills off the cubin.
# ----------------------------------------------------------------------------------------------

_AOT_SCRIPT = r"""
import json, re, torch
from paced_kernels.linear_kl_rows import _kl_rows_kernel
from paced_kernels.linear_kl_compile import compile_like_runtime, resource_usage, row_kernel_args

rows = []
for vocab in (151936, 32001):  # qwen3's vocabulary, and a ragged one
    for dtype in (torch.bfloat16, torch.float32):
        for reverse in (False, True):
            for want_grad in (False, True):
                if vocab != 151936 and (dtype != torch.bfloat16 or reverse):
                    continue
                args, kwargs = row_kernel_args(vocab, 512, dtype, reverse, want_grad)
                k = compile_like_runtime(_kl_rows_kernel, args, kwargs, arch=90)
                ptx = k.asm["ptx"]
                sig = k.asm["ttir"].split("tt.func public @_kl_rows_kernel(")[1].split("{\n")[0]
                rows.append(dict(vocab=vocab, dtype=str(dtype), reverse=reverse, want_grad=want_grad,
                                 vocab_divisible=bool(re.search(r"%V: i32 \{tt.divisibility = 16", sig)),
                                 vector_loads="ld.global.v4.b32" in ptx, barriers=ptx.count("bar.sync"),
                                 **resource_usage(k)))
print(json.dumps(rows))
"""


def test_row_kernel_compiles_for_hopper_as_the_runtime_specialises_it():
    import json
    import pathlib
    import subprocess
    import sys

    import triton

    ptxas = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("triton wheel ships no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    root = pathlib.Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 10
    for r in rows:
        print(r)
        assert r.get("spill_bytes", 1) == 0 and r.get("stack_bytes", 1) == 0, r  # no local memory
        assert 0 < r["registers"] <= 128, r  # leaves room for several programs per SM
        if r["vocab"] == 151936:
            # the runtime specialisation: V and strides divisible by 16 -> 16-byte loads
            assert r["vocab_divisible"] and r["vector_loads"], r
        else:
            assert not r["vocab_divisible"], r
    # the in-place 16-bit G adds exactly one barrier (per vocabulary block) to the gradient pass
    key = lambda r: (r["vocab"], r["dtype"], r["reverse"])  # noqa: E731
    loss_only = {key(r): r["barriers"] for r in rows if not r["want_grad"]}
    for r in rows:
        if r["want_grad"]:
            extra = 1 if r["dtype"] == "torch.bfloat16" else 0
            assert r["barriers"] == loss_only[key(r)] + extra, r


# ----------------------------------------------------------------------------------------------
# Real GPU
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gpu_medium_bf16(direction):
    """cuBLAS chunk GEMMs + row kernel at a medium shape: bf16 operands, fp32 logits."""
    n, hidden, v = 1024, 512, 32000
    g = torch.Generator(device="cuda").manual_seed(31)
    hs = torch.randn(n, hidden, device="cuda", generator=g).bfloat16()
    ws = (torch.randn(v, hidden, device="cuda", generator=g) * 0.05).bfloat16()
    ht = torch.randn(n, hidden + 64, device="cuda", generator=g).bfloat16()
    wt = (torch.randn(v, hidden + 64, device="cuda", generator=g) * 0.05).bfloat16()
    scale = torch.rand(n, device="cuda", generator=g) / n
    kl, gh, gw = triton_linear_kl(hs, ws, ht, wt, scale, direction, 1.0, chunk_size=512)
    ref = reference_fp64(hs, ws, ht, wt, scale, direction, 1.0)
    plain = plain_low_precision(hs, ws, ht, wt, scale, direction, 1.0)
    ulp = torch.finfo(torch.bfloat16).eps
    for name, ours, exact, naive in zip(("kl", "grad_h", "grad_w"), (kl, gh, gw), ref, plain):
        assert torch.isfinite(ours).all(), name
        our_err = (ours.double() - exact).abs().max().item()
        naive_err = (naive.double() - exact).abs().max().item()
        assert our_err <= naive_err + ulp * exact.abs().max().item(), (name, our_err, naive_err)
    kl_only, none_h, none_w = triton_linear_kl(hs, ws, ht, wt, None, direction, 1.0, chunk_size=512)
    assert none_h is None and none_w is None
    torch.testing.assert_close(kl_only, kl, rtol=0, atol=0)
