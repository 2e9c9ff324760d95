"""Each Triton kernel of the planner against the PyTorch composition it replaces, at the rollout's shapes
(published-size model, S = 300 samples, E in {1, 16}), on a GPU; and the optimizers' updates (CEM's and
iCEM's elite update, MPPI's weighted mean).

For every op and shape: microseconds per call of the kernel and of the PyTorch/cuBLAS composition
(`lewm_fast.planning.ops`), the speedup, and the achieved rate from counted work (GB/s for the
memory-bound ops, TFLOP/s for the GEMMs). A kernel is worth keeping where it wins at the shapes the
rollout uses; `TritonOps` (lewm_fast/planning/ops.py) is where a loser is swapped back for PyTorch.

    python benchmarks/planner_kernels.py            # needs CUDA (the interpreter's timings mean nothing)
    python benchmarks/planner_kernels.py --envs 1
    python benchmarks/planner_kernels.py --static   # no GPU needed: benchmarks/triton_static.py (every
                                                    # kernel as launched, compiled for sm_80 and sm_90)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SAMPLES, print_table, write_result  # noqa: E402
from _files import OUT_HELP  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.capability import PLAN_DTYPES  # noqa: E402
from lewm_fast.planning import ops  # noqa: E402

DTYPES = PLAN_DTYPES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, nargs="+", default=[1, 16])
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    p.add_argument("--static", action="store_true", help="benchmarks/triton_static.py: compile, check resources")
    p.add_argument("--out", default=None, help=OUT_HELP)
    return p.parse_args(argv)


def bench_us(fn) -> float:
    """Median microseconds per call (CUDA events, after warm-up), via triton.testing.do_bench."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


def cases(cfg: lf.LeWMConfig, n: int, dtype: torch.dtype, dev: str):
    """(op, shape label, triton fn, torch fn, bytes, flops) at the rollout's shapes for N = E x S rows."""
    from lewm_fast.planning.ops import TritonOps

    tri = TritonOps()
    d, inner, f, heads = cfg.pred_hidden_dim, cfg.pred_heads * cfg.pred_dim_head, cfg.pred_mlp_dim, cfg.pred_heads
    esize = torch.finfo(dtype).bits // 8
    mods = torch.randn(n, 5, cfg.pred_depth, 6, d, device=dev, dtype=dtype) * 0.1
    out = []
    for n_tok in (1, 3):
        x = torch.randn(n, n_tok, d, device=dev)
        sh, sc, gate = mods[:, :n_tok, 0, 0], mods[:, :n_tok, 0, 1], mods[:, :n_tok, 0, 2]
        rows = n * n_tok
        out.append(("norm_modulate", f"{rows}x{d}",
                    lambda x=x, sh=sh, sc=sc: tri.norm_modulate(x, sh, sc, 1e-6, 1e-5, dtype),
                    lambda x=x, sh=sh, sc=sc: ops.norm_modulate(x, sh, sc, 1e-6, 1e-5, dtype),
                    rows * d * (4 + 2 * esize + esize), 0))  # fmt: skip
        for k_in, label in ((d, "fc1"), (d, "head fc1")):
            if label == "head fc1" and n_tok != 1:
                continue
            a = torch.randn(rows, k_in, device=dev, dtype=dtype)
            w = torch.randn(f, k_in, device=dev, dtype=dtype) / k_in**0.5
            b = torch.randn(f, device=dev, dtype=dtype)
            out.append((f"linear_gelu ({label})", f"{rows}x{k_in}->{f}",
                        lambda a=a, w=w, b=b: tri.linear_gelu(a, w, b), lambda a=a, w=w, b=b: ops.linear_gelu(a, w, b),
                        (rows * k_in + f * k_in + rows * f) * esize, 2 * rows * k_in * f))  # fmt: skip
        for k_in, label in ((inner, "attn out"), (f, "fc2")):
            a = torch.randn(n, n_tok, k_in, device=dev, dtype=dtype)
            w = torch.randn(d, k_in, device=dev, dtype=dtype) / k_in**0.5
            b = torch.randn(d, device=dev, dtype=dtype)
            res = torch.randn(n, n_tok, d, device=dev)
            out.append((f"linear_gate_residual ({label})", f"{rows}x{k_in}->{d}",
                        lambda a=a, w=w, b=b, g=gate, r=res: tri.linear_gate_residual(a, w, b, g, r),
                        lambda a=a, w=w, b=b, g=gate, r=res: ops.linear_gate_residual(a, w, b, g, r),
                        (rows * k_in + d * k_in) * esize + rows * d * (8 + esize), 2 * rows * k_in * d))  # fmt: skip
    for n_q, length in ((1, 2), (1, 3), (3, 3)):
        qkv = torch.randn(n, n_q, 3 * inner, device=dev, dtype=dtype)
        q = qkv[..., :inner]
        k = torch.randn(n, length, inner, device=dev, dtype=dtype)
        v = torch.randn(n, length, inner, device=dev, dtype=dtype)
        out.append(("window_attention", f"{n}x({n_q} q, {length} k)",
                    lambda q=q, k=k, v=v: tri.window_attention(q, k, v, heads),
                    lambda q=q, k=k, v=v: ops.window_attention(q, k, v, heads),
                    (2 * n_q + 2 * length) * n * inner * esize, 4 * n * n_q * length * inner))  # fmt: skip
    return out


def elite_cases(e: int, s: int, dev: str):
    from lewm_fast.planning.ops import TritonOps

    tri = TritonOps()
    cost = torch.rand(e, s, device=dev)
    cand = torch.randn(e, s, 5, 10, device=dev)
    prev_mean, prev_std = torch.randn(e, 5, 10, device=dev), torch.rand(e, 5, 10, device=dev)
    icem = dict(alpha=0.1, prev_mean=prev_mean, prev_std=prev_std, return_indices=True)
    nbytes = e * s * 4 + e * 30 * 50 * 4
    return [("elite_update (cem)", f"{e}x{s}, k=30", lambda: tri.elite_update(cost, cand, 30),
             lambda: ops.elite_update(cost, cand, 30), nbytes, 0),
            ("elite_update (icem)", f"{e}x{s}, k=30", lambda: tri.elite_update(cost, cand, 30, **icem),
             lambda: ops.elite_update(cost, cand, 30, **icem), nbytes + e * 50 * 16, 0),
            ("mppi_update (top-k)", f"{e}x{s}, k=30", lambda: tri.mppi_update(cost, cand, 30, 0.5),
             lambda: ops.mppi_update(cost, cand, 30, 0.5), nbytes, 0),
            ("mppi_update (all)", f"{e}x{s}", lambda: tri.mppi_update(cost, cand, None, 0.5),
             lambda: ops.mppi_update(cost, cand, None, 0.5), e * s * 4 * 51, 0)]  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.static:
        import triton_static

        return triton_static.main(["--out", args.out] if args.out else [])
    if not torch.cuda.is_available():
        print("planner_kernels.py times the Triton kernels on a GPU; no CUDA device here (the kernels' "
              "correctness is checked on the CPU by the tests under TRITON_INTERPRET=1; --static compiles "
              "them for sm_80 and sm_90 here).")  # fmt: skip
        return 0
    cfg, dev = lf.LeWMConfig(), "cuda"
    rows = []
    for e in args.envs:
        n = e * args.samples
        for dname in args.dtypes:
            for op, shape, fn_triton, fn_torch, nbytes, flops in cases(cfg, n, DTYPES[dname], dev):
                t_tri, t_torch = bench_us(fn_triton), bench_us(fn_torch)
                rows.append(dict(op=op, dtype=dname, envs=e, shape=shape, triton_us=t_tri, torch_us=t_torch,
                                 speedup=t_torch / t_tri, triton_gbs=nbytes / t_tri / 1e3,
                                 triton_tflops=flops / t_tri / 1e6 if flops else None))  # fmt: skip
        for op, shape, fn_triton, fn_torch, nbytes, _ in elite_cases(e, args.samples, dev):
            t_tri, t_torch = bench_us(fn_triton), bench_us(fn_torch)
            rows.append(dict(op=op, dtype="fp32", envs=e, shape=shape, triton_us=t_tri, torch_us=t_torch,
                             speedup=t_torch / t_tri, triton_gbs=nbytes / t_tri / 1e3, triton_tflops=None))  # fmt: skip
    print_table(rows, [("op", "op"), ("dtype", "dtype"), ("envs", "E"), ("shape", "shape"),
                       ("triton_us", "triton us"), ("torch_us", "torch us"), ("speedup", "x torch"),
                       ("triton_gbs", "GB/s"), ("triton_tflops", "TFLOP/s")])  # fmt: skip
    path = write_result("planner_kernels", {"args": vars(args), "rows": rows}, torch.device(dev), args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
