"""Each Triton kernel of the planner against the PyTorch composition it replaces, at the rollout's shapes
(published-size model, S = 300 samples, E in {1, 16}), on a GPU; and the optimizers' updates (CEM's and
iCEM's elite update, MPPI's weighted mean).

For every op and shape: microseconds per call of the kernel and of the PyTorch/cuBLAS composition
(`lewm_fast.planning.ops`), the speedup, and the achieved rate from counted work (GB/s for the
memory-bound ops, TFLOP/s for the GEMMs). A kernel is worth keeping where it wins at the shapes the
rollout uses; `TritonOps` (lewm_fast/planning/ops.py) is where a loser is swapped back for PyTorch.

    python benchmarks/planner_kernels.py            # needs CUDA (the interpreter's timings mean nothing)
    python benchmarks/planner_kernels.py --envs 1
    python benchmarks/planner_kernels.py --static   # no GPU needed: compile every kernel for sm_90 and
                                                    # report registers and spills (Triton's bundled ptxas)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402

import lewm_fast as lf  # noqa: E402
from lewm_fast.planning import ops  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, nargs="+", default=[1, 16])
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    p.add_argument("--static", action="store_true", help="compile for sm_90 and report registers/spills")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def static_report() -> list[dict]:
    """Compile each kernel as the rollout launches it for sm_90 (no device needed) and read its
    registers per thread and stack (spill) bytes from the cubin."""
    import os
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lewm_fast.kernels import elite_update, linear_epilogue, mppi_update, norm_modulate, window_attention

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("--static compiles the kernels: unset TRITON_INTERPRET")
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

    def usage(fn, sig, const, opts):
        kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                                options=opts)  # fmt: skip
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            text = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        reg, stack = re.search(r"REG:(\d+).*?STACK:(\d+)", text, re.S).groups()
        return int(reg), int(stack)

    def i32(*names):
        return dict.fromkeys(names, "i32")

    rows = []
    for dt in ("bf16", "fp32"):
        jobs = [
            ("norm_modulate", norm_modulate._norm_modulate_fwd_kernel,
             {"X": "*fp32", "SHIFT": f"*{dt}", "SCALE": f"*{dt}", "Y": f"*{dt}",
              **i32("R", "n_tok", "D", "stride_xn", "stride_xt", "stride_sn", "stride_st", "stride_cn", "stride_ct"),
              "eps1": "fp32", "eps2": "fp32"},
             {"HAS_MOD": True, "EMULATE": False, "BLOCK_R": 16, "BLOCK_D": 256}, {}),
            ("window_attention", window_attention._window_attention_fwd_kernel,
             {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "OUT": f"*{dt}",
              **i32("R", "n_q", "L", "stride_qn", "stride_qt", "stride_kn", "stride_kt", "stride_vn", "stride_vt")},
             {"H": 16, "DH": 64, "BLOCK_Q": 1, "BLOCK_H": 16, "BLOCK_DH": 64, "MAX_L": 3, "EMULATE": False}, {}),
        ]  # fmt: skip
        for cfg in linear_epilogue._CONFIGS:
            for ep in (1, 2):
                jobs.append((f"linear_epilogue ({'gelu' if ep == 1 else 'gate+residual'}) {cfg.kwargs}",
                             linear_epilogue._linear_epilogue_fwd_kernel.fn,
                             {"X": f"*{dt}", "W": f"*{dt}", "B": f"*{dt}", "GATE": f"*{dt}", "RES": "*fp32",
                              "OUT": f"*{dt}" if ep == 1 else "*fp32",
                              **i32("M", "N", "K", "n_tok", "stride_xm", "stride_gn", "stride_gt", "stride_rn",
                                    "stride_rt")},
                             {"EPILOGUE": ep, "IEEE": dt == "fp32", "EMULATE": False, **cfg.kwargs},
                             {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}))  # fmt: skip
        if dt == "fp32":
            for momentum in (False, True):  # CEM; iCEM (momentum, elite indices)
                jobs.append((f"elite_update ({'icem' if momentum else 'cem'})", elite_update._elite_update_fwd_kernel,
                             {"COST": "*fp32", "CAND": "*fp32", "PREV_MEAN": "*fp32", "PREV_STD": "*fp32",
                              "MEAN": "*fp32", "STD": "*fp32", "ELITE_COST": "*fp32", "IDX": "*i64",
                              **i32("S", "C"), "alpha": "fp32"},
                             {"K": 30, "MOMENTUM": momentum, "WRITE_IDX": momentum, "BLOCK_S": 512, "BLOCK_K": 32,
                              "BLOCK_C": 64}, {}))  # fmt: skip
            for select in (True, False):  # MPPI with top-k; over all samples
                jobs.append((f"mppi_update ({'top-k' if select else 'all'})", mppi_update._mppi_update_fwd_kernel,
                             {"COST": "*fp32", "CAND": "*fp32", "MEAN": "*fp32", "OUT_COST": "*fp32",
                              **i32("S", "C"), "inv_temperature": "fp32"},
                             {"K": 30 if select else 300, "SELECT": select, "BLOCK_S": 512,
                              "BLOCK_K": 32 if select else 512, "BLOCK_R": 32, "BLOCK_C": 64}, {}))  # fmt: skip
        for name, fn, sig, const, opts in jobs:
            for c in const:
                sig[c] = "constexpr"
            reg, stack = usage(fn, sig, const, opts)
            rows.append(dict(kernel=name, dtype=dt, registers=reg, spill_bytes=stack))
    return rows


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
        rows = static_report()
        print_table(rows, [("kernel", "kernel (sm_90)"), ("dtype", "dtype"), ("registers", "registers/thread"),
                           ("spill_bytes", "spill bytes")])  # fmt: skip
        import triton

        payload = {"args": vars(args), "target": "sm_90 (compiled, not run)", "triton": triton.__version__}
        payload["rows"] = rows
        print(f"\nwrote {write_result('planner_kernels_static', payload, torch.device('cpu'), args.out)}")
        return 0
    if not torch.cuda.is_available():
        print("planner_kernels.py times the Triton kernels on a GPU; no CUDA device here (the kernels' "
              "correctness is checked on the CPU by the tests under TRITON_INTERPRET=1; --static compiles "
              "them for sm_90 here).")  # fmt: skip
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
