"""benchmarks/triton_static.py (GPU readiness without a GPU): the limits check flags every kind of overrun
and nothing within a target's limits, knows every kernel of lewm_fast/kernels/ by name, and says which were
never launched. The compile itself (every kernel as launched, for sm_80 and sm_90) runs in .ci/run."""

import importlib
import pkgutil

import pytest
import triton_static as ts

KB = 1024


def _row(target="sm_80", **changes) -> dict:
    row = dict(kernel="_op_fwd_kernel", target=target, dtype="fp32", registers=128, block_registers=16 * KB,
               spill_bytes=0, shared_bytes=48 * KB)  # fmt: skip
    return {**row, **changes}


def test_a_kernel_within_the_limits_passes():
    for name, limits in ts.TARGETS.items():
        assert ts.problems(_row(name), limits) == []


@pytest.mark.parametrize(
    "changes, what",
    [(dict(registers=256), "registers per thread"), (dict(block_registers=64 * KB + 256), "registers per block"),
     (dict(spill_bytes=8), "spill"), (dict(shared_bytes=163 * KB + 1), "shared memory")],
)  # fmt: skip
def test_each_overrun_is_reported(changes, what):
    found = ts.problems(_row("sm_80", **changes), ts.TARGETS["sm_80"])
    assert len(found) == 1 and what in found[0]


def test_shared_memory_is_checked_against_each_target():
    row = _row(shared_bytes=200 * KB)  # over A100's 163 KB per block, within H100's 227 KB
    assert ts.problems(dict(row, target="sm_80"), ts.TARGETS["sm_80"])
    assert not ts.problems(dict(row, target="sm_90"), ts.TARGETS["sm_90"])


def test_an_accepted_spill_passes_up_to_its_size(monkeypatch):
    monkeypatch.setattr(ts, "ACCEPTED_SPILLS", {("_op_fwd_kernel", "sm_80", "fp32"): 64})
    assert ts.problems(_row(spill_bytes=64), ts.TARGETS["sm_80"]) == []
    assert ts.problems(_row(spill_bytes=72), ts.TARGETS["sm_80"])
    assert ts.problems(_row(spill_bytes=8, dtype="bf16"), ts.TARGETS["sm_80"])  # another specialization


def test_every_kernel_of_the_package_is_known_by_name():
    pytest.importorskip("triton")
    import lewm_fast.kernels as pkg

    kinds = ("JITFunction", "InterpretedFunction", "Autotuner")
    defined = {name for info in pkgutil.iter_modules(pkg.__path__)
               for name, value in vars(importlib.import_module(f"{pkg.__name__}.{info.name}")).items()
               if type(value).__name__ in kinds and name.endswith("_kernel")}  # fmt: skip
    assert defined and ts.package_kernels() == defined


def test_a_kernel_no_workload_launched_is_reported():
    kernels = sorted(ts.package_kernels())
    rows = [dict(kernel=k, target=t) for k in kernels[1:] for t in ts.TARGETS]
    assert ts.unlaunched(rows, list(ts.TARGETS)) == [f"{kernels[0]} ({t})" for t in sorted(ts.TARGETS)]
