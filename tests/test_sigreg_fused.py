"""The fused SIGReg backends (`cpp`, `triton`) against the reference: value and gradient on fresh random
inputs over awkward shapes, fp32 and bf16, bad input, NaN, determinism.

Tolerance rule (errors are `rel_err`: max |a - b| / max |b|):
- fp32: value and gradient within 1e-5 of the reference (the project's fp32 target; both compute Z in fp32,
  the fused paths then carry sums in double (cpp) or fp32 partials summed in double (triton)).
- bf16 input: the reference upcasts to fp32, so does `cpp`: same value (1e-5); its bf16 gradient is the
  fp32 gradient rounded once, so it may differ from the reference's by one bf16 rounding: <= 2^-8.
  `triton` runs the dot in bf16 with A rounded to bf16 (as torch autocast does) and writes dZ in bf16:
  it must match the reference on those rounded directions within 1e-4 (value) and 2 x 2^-8 (gradient:
  two bf16 roundings, dZ and the output), and the unrounded reference within 2e-2 (value).
Triton runs under TRITON_INTERPRET=1 on the CPU (conftest.py): sizes stay small.
"""

import math

import pytest
import torch
from helpers import rel_err

import lewm_fast as lf
from lewm_fast.sigreg import _BACKENDS, knot_tables, resolve_backend

BF16_ULP = 2.0**-8


def has_cpp() -> bool:
    from lewm_fast import _ext

    return _ext.load() is not None


FUSED = [
    pytest.param("cpp", marks=pytest.mark.skipif(not has_cpp(), reason="C++ extension unavailable")),
    pytest.param("triton", marks=pytest.mark.skipif("triton" not in _BACKENDS, reason="Triton not installed")),
]


def device_for(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")


def reference_and_fused(backend, shape, M, knots=17, t_max=3.0, dtype=torch.float32, seed=0, directions=None):
    """(value, grad) of the reference and of `backend` on the same fresh inputs and directions."""
    g = torch.Generator().manual_seed(seed)
    device = device_for(backend)
    x = torch.randn(*shape, generator=g).mul_(1.5).to(device, dtype)
    a = lf.draw_directions(shape[-1], M, generator=g).to(device) if directions is None else directions
    out = []
    for b in ("reference", backend):
        xx = x.clone().requires_grad_(True)
        value = lf.sigreg(xx, a, knots=knots, t_max=t_max, backend=b)
        value.backward()
        out.append((value.detach(), xx.grad))
    return out


# T in {1, 4}, B in {1, 3, 127}, D in {1, 17, 192}, M in {1, 100, 256}, K in {5, 17}, t_max 3 and 2:
# every value of every axis appears, sizes 1 and odd sizes meet each other.
SHAPES = [  # (shape, M, K, t_max)
    ((1, 1, 1), 1, 5, 3.0),
    ((4, 3, 17), 100, 17, 3.0),
    ((1, 127, 192), 256, 17, 3.0),
    ((4, 127, 17), 1, 5, 2.0),
    ((1, 3, 192), 100, 5, 3.0),
    ((4, 1, 192), 256, 17, 2.0),
    ((3, 17), 100, 17, 3.0),  # (B, D): one time step
    ((4, 127, 1), 256, 5, 3.0),
]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape,M,K,t_max", SHAPES)
def test_fp32_matches_reference(backend, shape, M, K, t_max):
    (v_ref, g_ref), (v, g) = reference_and_fused(backend, shape, M, K, t_max)
    assert v.dtype == torch.float32 and v.shape == ()
    assert rel_err(v, v_ref) <= 1e-5
    assert g.shape == g_ref.shape and g.dtype == torch.float32
    assert rel_err(g, g_ref) <= 1e-5


@pytest.mark.parametrize(
    "shape,M,K", [((4, 128, 192), 1024, 17), ((1, 1000, 64), 512, 17), ((2, 257, 33), 1000, 2), ((1, 4096, 8), 64, 5)]
)
def test_cpp_larger_sizes(shape, M, K):
    if not has_cpp():
        pytest.skip("C++ extension unavailable")
    (v_ref, g_ref), (v, g) = reference_and_fused("cpp", shape, M, K)
    assert rel_err(v, v_ref) <= 1e-5
    assert rel_err(g, g_ref) <= 1e-5


@pytest.mark.parametrize("shape,M", [((4, 127, 192), 256), ((1, 3, 17), 100), ((2, 1, 5), 1)])
def test_bf16_cpp(shape, M):
    if not has_cpp():
        pytest.skip("C++ extension unavailable")
    (v_ref, g_ref), (v, g) = reference_and_fused("cpp", shape, M, dtype=torch.bfloat16)
    assert g.dtype == torch.bfloat16
    assert rel_err(v, v_ref) <= 1e-5
    assert rel_err(g, g_ref) <= BF16_ULP


@pytest.mark.skipif("triton" not in _BACKENDS, reason="Triton not installed")
@pytest.mark.parametrize("shape,M", [((4, 127, 192), 256), ((1, 3, 17), 100), ((2, 1, 5), 1)])
def test_bf16_triton(shape, M):
    device = device_for("triton")
    g = torch.Generator().manual_seed(1)
    a = lf.draw_directions(shape[-1], M, generator=g).to(device)
    rounded = a.bfloat16().float()  # what the bf16 dot multiplies by
    (v_ref, g_ref), (v, grad) = reference_and_fused("triton", shape, M, dtype=torch.bfloat16, directions=rounded)
    assert grad.dtype == torch.bfloat16
    assert rel_err(v, v_ref) <= 1e-4
    assert rel_err(grad, g_ref) <= 2 * BF16_ULP
    (v_exact, _), _ = reference_and_fused("triton", shape, M, dtype=torch.bfloat16, directions=a)
    assert rel_err(v, v_exact) <= 2e-2


def first_order_error(x, a, knots, t_max):
    """How much SIGReg's value and gradient move per unit of error in each cos/sin (and so in C, S), to
    first order, in float64. fp32 rounds those O(1) quantities, not the result: with few samples the
    statistic (C - phi)^2 + S^2 and the gradient's S cos - (C - phi) sin can be far smaller than their
    parts (at B = 1 the statistic is 1 - 2 phi cos + phi^2), so a tolerance relative to the result alone
    fails on rounding. x (T, B, D), a (D, M). Returns (value, largest gradient element) sensitivities."""
    t, phi, w = (u.double() for u in knot_tables(knots, t_max))
    z = x.detach().double().cpu() @ a.double().cpu()  # (T, B, M)
    tz = z.unsqueeze(-1) * t  # (T, B, M, K)
    c, s = tz.cos().mean(1), tz.sin().mean(1)  # (T, M, K)
    value = (x.shape[1] * 2 * (w * ((c - phi).abs() + s.abs())).sum(-1)).mean()
    parts = tz.cos().abs() + tz.sin().abs() + s.unsqueeze(1).abs() + (c - phi).unsqueeze(1).abs()
    per_z = 2 * (w * t * parts).sum(-1)  # (T, B, M)
    grad = (per_z / (x.shape[0] * a.shape[1])) @ a.double().cpu().abs().T  # (T, B, D)
    return value.item(), grad.max().item()


def check_random_case(backend, T, B, D, M, K, t_max, scale, seed):
    g = torch.Generator().manual_seed(seed)
    device = device_for(backend)
    x = (torch.randn(T, B, D, generator=g) * scale).to(device)
    a = lf.draw_directions(D, M, generator=g).to(device)
    grads, values = [], []
    for b in ("reference", backend):
        xx = x.clone().requires_grad_(True)
        values.append(lf.sigreg(xx, a, knots=K, t_max=t_max, backend=b))
        values[-1].backward()
        grads.append(xx.grad)
    # 1e-5 of the result, plus the first-order effect of 5e-7 (~4 fp32 ulp) in each cos/sin and mean
    dv, dg = first_order_error(x, a, K, t_max)
    assert abs(values[1].item() - values[0].item()) <= 1e-5 * abs(values[0].item()) + 5e-7 * dv
    # Large scales wrap the angle many times; the fp32 Z (shared by both) dominates the difference.
    g_ref = grads[0].double()
    tol = max(1.0, scale) * (1e-5 * g_ref.abs().max().item() + 5e-7 * dg)
    assert (grads[1].double() - g_ref).abs().max().item() <= tol


@pytest.mark.parametrize("backend", FUSED)
def test_module_auto_and_seed(backend):
    """The module with a fused backend draws the same directions as the reference under a seed."""
    device = device_for(backend)
    x = torch.randn(2, 24, 16, device=device)
    torch.manual_seed(7)
    expected = lf.SIGReg(num_proj=64, backend="reference")(x)
    torch.manual_seed(7)
    got = lf.SIGReg(num_proj=64, backend=backend)(x)
    assert rel_err(got, expected) <= 1e-5
    if device.type == "cpu" and has_cpp():
        assert resolve_backend("auto", device) == "cpp"


@pytest.mark.parametrize("backend", FUSED)
def test_non_contiguous_input_and_direction_gradient(backend):
    device = device_for(backend)
    base = torch.randn(20, 3, 12, device=device)  # (B, T, D) as the model makes it; SIGReg takes (T, B, D)
    a = lf.draw_directions(12, 40).to(device)
    results = []
    for b in ("reference", backend):
        x = base.clone().requires_grad_(True)
        aa = a.clone().requires_grad_(True)
        value = lf.sigreg(x.transpose(0, 1), aa, backend=b)
        value.backward()
        results.append((value.detach(), x.grad, aa.grad))
    (v0, gx0, ga0), (v1, gx1, ga1) = results
    assert rel_err(v1, v0) <= 1e-5
    assert rel_err(gx1, gx0) <= 1e-5
    assert rel_err(ga1, ga0) <= 1e-5


@pytest.mark.parametrize("backend", FUSED)
def test_deterministic(backend):
    device = device_for(backend)
    x = torch.randn(2, 70, 24, device=device, requires_grad=True)
    a = lf.draw_directions(24, 130).to(device)
    runs = []
    threads = torch.get_num_threads()
    for n in (1, max(2, threads)):
        torch.set_num_threads(n)
        try:
            x.grad = None
            value = lf.sigreg(x, a, backend=backend)
            value.backward()
            runs.append((value.detach().clone(), x.grad.clone()))
        finally:
            torch.set_num_threads(threads)
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("backend", ["reference", *FUSED])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_are_refused_on_cpu_and_give_nan_below_the_check(backend, bad):
    device = device_for(backend)
    x = torch.randn(2, 8, 4, device=device)
    x[1, 3, 2] = bad
    x.requires_grad_(True)
    if device.type == "cpu":
        with pytest.raises(ValueError, match="proj: expected finite values, got NaN or Inf"):
            lf.SIGReg(num_proj=16, backend=backend)(x)
    # Below the check (what CUDA and multi-process runs get, where it is not made): NaN, never a number.
    t, phi, w = knot_tables(17, 3.0, device)
    value = _BACKENDS[backend](x, lf.draw_directions(4, 16, device), t, phi, w, dt=3.0 / 16)
    assert math.isnan(value.item())
    value.backward()
    assert torch.isnan(x.grad).any()


@pytest.mark.parametrize("backend", ["reference", *FUSED])
def test_bad_input(backend):
    device = device_for(backend)
    reg = lf.SIGReg(num_proj=8, backend=backend)
    with pytest.raises(ValueError, match=r"proj: expected shape \(T, B, D\) or \(B, D\), got \(5,\)"):
        reg(torch.randn(5, device=device))
    with pytest.raises(ValueError, match=r"proj: expected shape \(T, B, D\) or \(B, D\), got \(1, 2, 3, 4\)"):
        reg(torch.randn(1, 2, 3, 4, device=device))
    with pytest.raises(TypeError, match="proj: expected a floating dtype"):
        reg(torch.ones(2, 3, 4, dtype=torch.int64, device=device))
    with pytest.raises(ValueError, match=r"directions: expected shape \(D=4, M\)"):
        lf.sigreg(torch.randn(2, 3, 4, device=device), torch.randn(5, 8, device=device), backend=backend)
    with pytest.raises(TypeError, match="directions: expected a floating dtype"):
        lf.sigreg(torch.randn(2, 3, 4, device=device), torch.ones(4, 8, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="distributed: True needs torch.distributed"):
        lf.sigreg(torch.randn(2, 3, 4, device=device), torch.randn(4, 8, device=device), distributed=True)


def test_cpp_refuses_cuda_tensors_clearly():
    with pytest.raises(ValueError, match="backend: 'cpp' runs on CPU tensors, got cuda"):
        resolve_backend("cpp", torch.device("cuda"))


def test_knot_zero_and_tables():
    """The fused sums' knot 0 is the batch size (cos 0 = 1), which the value formula relies on."""
    if not has_cpp():
        pytest.skip("C++ extension unavailable")
    from lewm_fast.sigreg import _CppOps

    t, _, _ = knot_tables(5, 3.0)
    x = torch.randn(2, 9, 6)
    cos_sum, sin_sum, z = _CppOps.sums(x, lf.draw_directions(6, 11), t, 0.75)
    assert cos_sum.shape == sin_sum.shape == (2, 5, 11) and cos_sum.dtype == torch.float64
    assert torch.equal(cos_sum[:, 0], torch.full((2, 11), 9.0, dtype=torch.float64))
    arg = z.double().unsqueeze(-1) * t.double()
    torch.testing.assert_close(cos_sum, arg.cos().sum(1).transpose(1, 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin_sum, arg.sin().sum(1).transpose(1, 2), rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_gpu_triton_matches_reference_without_host_sync():
    """On a GPU: compiled kernels (fp32 and bf16 tensor-core dots) at the training size, no host syncs."""
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-4)):
        x = torch.randn(4, 128, 192, device="cuda", dtype=dtype, requires_grad=True)
        a = lf.draw_directions(192, 1024, device="cuda")
        ref_a = a.bfloat16().float() if dtype == torch.bfloat16 else a
        xr = x.detach().clone().requires_grad_(True)
        expected = lf.sigreg(xr, ref_a, backend="reference")
        expected.backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            value = lf.sigreg(x, a, backend="triton")
            value.backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert rel_err(value.detach(), expected.detach()) <= tol
        assert rel_err(x.grad.float(), xr.grad.float()) <= (1e-5 if dtype == torch.float32 else 2 * BF16_ULP)


def test_available_backends():
    from lewm_fast.sigreg import available_backends

    names = available_backends("cpu")
    assert names[0] == "reference"
    assert ("cpp" in names) == has_cpp()
    assert "cpp" not in available_backends("cuda")


def test_cpp_backend_under_bf16_autocast():
    """Inside a bf16 autocast region (the trainer's), the fused backend still runs its GEMMs in fp32 on
    the bf16 activations it receives, and its gradient flows back through the autocast graph."""
    if not has_cpp():
        pytest.skip("C++ extension unavailable")
    x = torch.randn(4, 32, 16, requires_grad=True)
    w = torch.randn(16, 16)
    A = lf.draw_directions(16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proj = x @ w
        assert proj.dtype == torch.bfloat16
        value = lf.sigreg(proj, A, backend="cpp")
    value.backward()
    exact = lf.sigreg(proj.detach().float(), A, backend="reference")
    assert value.dtype == torch.float32 and abs(value.item() - exact.item()) <= 1e-5 * abs(exact.item())
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
