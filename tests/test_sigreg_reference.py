"""The reference SIGReg: the public formula, its draw of directions, the analytic gradient of
the formula in lewm_fast/sigreg.py, input layouts and bad input."""

import math

import pytest
import torch
from helpers import rel_err

import lewm_fast as lf
from lewm_fast.sigreg import knot_tables


def public_sigreg(proj, knots=17, num_proj=1024):
    """The public stable_worldmodel SIGReg.forward, transcribed (directions from the global RNG)."""
    t = torch.linspace(0, 3, knots, dtype=torch.float32)
    dt = 3 / (knots - 1)
    weights = torch.full((knots,), 2 * dt, dtype=torch.float32)
    weights[[0, -1]] = dt
    phi = torch.exp(-t.square() / 2.0)
    A = torch.randn(proj.size(-1), num_proj, device=proj.device)
    A = A.div_(A.norm(p=2, dim=0))
    x_t = (proj @ A).unsqueeze(-1) * t
    err = (x_t.cos().mean(-3) - phi).square() + x_t.sin().mean(-3).square()
    return ((err @ (weights * phi)) * proj.size(-2)).mean()


@pytest.mark.parametrize("shape", [(4, 32, 24), (1, 5, 3), (7, 3), (2, 1, 9)])
def test_equals_public_formula_under_seed(shape):
    x = torch.randn(*shape)
    torch.manual_seed(5)
    expected = public_sigreg(x, num_proj=64)
    torch.manual_seed(5)
    got = lf.SIGReg(num_proj=64, backend="reference")(x)
    assert got.item() == expected.item()


def test_knot_tables_match_public_buffers():
    t, phi, w = knot_tables(17, 3.0)
    torch.testing.assert_close(t, torch.linspace(0, 3, 17))
    assert w[0].item() == pytest.approx(3 / 16 * phi[0].item())
    assert w[5].item() == pytest.approx(2 * 3 / 16 * phi[5].item())
    module = lf.SIGReg()
    assert set(dict(module.named_buffers())) == {"t", "phi", "weights"}


def analytic_grad(x, A, knots=17, t_max=3.0):
    """dSIGReg/dx from the formula in lewm_fast/sigreg.py: only Z and the (M, K) cos/sin tables are needed."""
    t, phi, w = knot_tables(knots, t_max)
    x3 = x if x.ndim == 3 else x.unsqueeze(0)
    T, N = x3.shape[:2]
    M = A.shape[1]
    z = x3 @ A  # (T, N, M)
    arg = z.unsqueeze(-1) * t  # (T, N, M, K)
    C, S = arg.cos().mean(1, keepdim=True), arg.sin().mean(1, keepdim=True)
    dz = 2 * (w * t * (S * arg.cos() - (C - phi) * arg.sin())).sum(-1) / (T * M)
    return (dz @ A.T).view_as(x)


@pytest.mark.parametrize("shape", [(4, 16, 12), (3, 8), (1, 1, 5)])
def test_gradient_formula_matches_autograd(shape):
    x = torch.randn(*shape, dtype=torch.float32, requires_grad=True)
    A = lf.draw_directions(shape[-1], 40)
    lf.sigreg(x, A, backend="reference").backward()
    assert rel_err(analytic_grad(x.detach(), A), x.grad) <= 1e-4


def test_two_dim_input_is_one_time_step():
    x = torch.randn(10, 6)
    A = lf.draw_directions(6, 32)
    torch.testing.assert_close(lf.sigreg(x, A), lf.sigreg(x.unsqueeze(0), A))


def test_generator_and_explicit_directions():
    x = torch.randn(2, 16, 8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = lf.SIGReg(num_proj=32, generator=g1)(x)
    A = lf.draw_directions(8, 32, generator=g2)
    assert a.item() == lf.sigreg(x, A).item()
    assert a.item() == lf.SIGReg(num_proj=32)(x, directions=A).item()
    assert torch.allclose(A.norm(dim=0), torch.ones(32))


def test_gaussian_input_scores_lower_than_collapsed():
    torch.manual_seed(1)
    gaussian = torch.randn(4, 256, 16)
    collapsed = gaussian * 0.05 + 1.0
    reg = lf.SIGReg(num_proj=128)
    assert reg(gaussian).item() < 0.1 * reg(collapsed).item()


def test_bad_input():
    reg = lf.SIGReg(num_proj=8)
    with pytest.raises(ValueError, match=r"proj: expected shape \(T, B, D\) or \(B, D\), got \(5,\)"):
        reg(torch.randn(5))
    with pytest.raises(TypeError, match="proj: expected a floating dtype"):
        reg(torch.ones(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"directions: expected shape \(D=4, M\)"):
        lf.sigreg(torch.randn(2, 3, 4), torch.randn(5, 8))
    with pytest.raises(ValueError, match="backend"):
        lf.SIGReg(backend="fast")
    with pytest.raises(ValueError, match="knots"):
        lf.SIGReg(knots=1)


def test_nan_is_refused_and_propagates_below_the_check():
    x = torch.randn(2, 8, 4)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="proj: expected finite values"):
        lf.SIGReg(num_proj=8)(x)
    t, phi, w = knot_tables()
    assert math.isnan(lf.sigreg_reference(x, lf.draw_directions(4, 8), t, phi, w).item())
