"""pytest-benchmark variant of benchmarks/sigreg_speed.py for the CPU paths (training size, forward +
backward). It records timings only; nothing here asserts on time.

    python -m pytest tests/test_sigreg_bench.py --benchmark-only
    python -m pytest tests/test_sigreg_bench.py --benchmark-only --benchmark-compare   # against a saved run
"""

import pytest
import torch

import lewm_fast as lf
from lewm_fast.sigreg import available_backends

pytest.importorskip("pytest_benchmark")

T, B, D, M, K = 4, 128, 192, 1024, 17  # LeWM training size


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_sigreg_forward_backward_cpu(benchmark, backend):
    if backend not in available_backends("cpu"):
        pytest.skip(f"backend {backend!r} unavailable")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, D, generator=g).requires_grad_(True)
    a = lf.draw_directions(D, M, generator=g)

    def step():
        x.grad = None
        lf.sigreg(x, a, knots=K, backend=backend, distributed=False).backward()

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    assert x.grad is not None and torch.isfinite(x.grad).all()
