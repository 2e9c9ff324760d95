"""Fits the rational erf of the matmul's GELU epilogue (csrc/linear_kernels.h: kGeluP, kGeluQ, kGeluClamp).

    python csrc/check/fit_gelu_erf.py            # prints the coefficients as C++ and their error

GELU(x) = x/2 (1 + erf(x / sqrt 2)), and erf(x / sqrt 2) ~ x P(x^2) / Q(x^2) for |x| <= C (P of degree 6, Q of
degree 5, Q(0) = 1), x clamped to [-C, C]. C = 5.5: beyond it erf(x / sqrt 2) is within 2e-8 of +-1 (the kernels'
fp32 value at the clamp is 1 - 6e-8, one fp32 step below 1: past the clamp a GELU is within 3e-8 |x| of 0 or x, inside
the tests' bound; exact tails would cost a compare and a blend per vector). Why a rational:
11 FMAs and a division per 16 lanes, against ~30 operations for the exp of Abramowitz & Stegun 7.1.26 that the
kernels used before; the epilogue runs at the FMA units' rate (docs/cpu-planner.md).

The fit: minimax of |x P / Q - erf| on [0, C] (the function is odd) by Lawson's iteratively reweighted least
squares on the linearised residual x P(s) - erf Q(s), s = x^2 / C^2 (scaled for conditioning), in float64. The
error reported is that of the fp32-rounded coefficients (the ones the kernels use), evaluated in float64 on a fine
grid: the fit's own part of the GELU error bound (the tests add the fp32 evaluation's roundings).
"""

import torch

CLAMP, P_DEGREE, Q_DEGREE = 5.5, 6, 5


def horner(coef: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(s, float(coef[-1]))
    for c in reversed(coef[:-1].tolist()):
        out = out * s + c
    return out


def fit(clamp: float = CLAMP, iterations: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, Q) coefficients in float64, lowest degree first, of x P(x^2) / Q(x^2) ~ erf(x / sqrt 2) on [0, clamp]:
    of Lawson's iterates, the one whose fp32-rounded coefficients err least (`fp32_error`)."""
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    x = torch.unique(torch.cat([clamp * torch.sin(torch.pi / 2 * t), clamp * t]))  # denser near the clamp
    s, g = (x / clamp) ** 2, torch.erf(x / 2**0.5)
    powers_p = s[:, None] ** torch.arange(P_DEGREE + 1)
    powers_q = s[:, None] ** torch.arange(1, Q_DEGREE + 1)
    unscale_p, unscale_q = (clamp ** (-2.0 * torch.arange(n + 1)) for n in (P_DEGREE, Q_DEGREE))  # s -> x^2
    weight, q_old, best = torch.ones_like(x), torch.ones_like(x), None
    for it in range(iterations):
        design = torch.cat([x[:, None] * powers_p, -g[:, None] * powers_q], 1) / q_old[:, None]
        root = weight.sqrt()[:, None]
        coef = torch.linalg.lstsq(design * root, (g / q_old)[:, None] * root).solution[:, 0]
        p, q = coef[: P_DEGREE + 1], torch.cat([torch.ones(1, dtype=torch.float64), coef[P_DEGREE + 1 :]])
        err = x * horner(p, s) / horner(q, s) - g
        candidate = (p * unscale_p, q * unscale_q)
        error = fp32_error(*candidate, clamp, points=20001)
        if best is None or error < best[0]:
            best = (error, *candidate)
        if it % 3 == 2:
            q_old = horner(q, s)
        weight = weight * err.abs() + 1e-300
        weight = weight / weight.sum()
    return best[1], best[2]


def fp32_error(p: torch.Tensor, q: torch.Tensor, clamp: float = CLAMP, points: int = 2_000_001) -> float:
    """The largest |x P / Q - erf(x / sqrt 2)| on [0, clamp] with the coefficients rounded to fp32 (float64 maths),
    and 1 - erf(clamp / sqrt 2) (the error past the clamp), whichever is larger."""
    p32, q32 = p.float().double(), q.float().double()
    x = torch.linspace(0, clamp, points, dtype=torch.float64)
    inside = (x * horner(p32, x * x) / horner(q32, x * x) - torch.erf(x / 2**0.5)).abs().max()
    return max(float(inside), float(torch.erfc(torch.tensor(clamp / 2**0.5, dtype=torch.float64))))


def main() -> None:
    p, q = fit()
    as_cpp = lambda c: ", ".join(f"{float(v):#.9g}f" for v in c.float())  # noqa: E731
    print(f"constexpr float kGeluClamp = {CLAMP}f;")
    print(f"constexpr float kGeluP[{P_DEGREE + 1}] = {{{as_cpp(p)}}};")
    print(f"constexpr float kGeluQ[{Q_DEGREE + 1}] = {{{as_cpp(q)}}};")
    print(f"// |x P / Q - erf(x / sqrt 2)| <= {fp32_error(p, q):.3g} with fp32 coefficients (float64 evaluation)")


if __name__ == "__main__":
    main()
