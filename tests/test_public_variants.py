"""benchmarks/public_variants.py: "x public" and "x best public" come from the public rows of the same group
(failed ones ignored), bf16 configurations are timed only where bf16 is native, and a compile that fails or
overruns its time limit is a reason, not a crash."""

import time

import public_variants as pv
import torch


def test_ratios_against_the_shipped_and_the_fastest_public_configuration():
    rows = [dict(solver="cem", envs=1, impl="fast", ms=20.0),
            dict(solver="cem", envs=1, public_variant="shipped", ms=100.0),
            dict(solver="cem", envs=1, public_variant="bf16", ms=60.0),
            dict(solver="cem", envs=1, public_variant="compile", error="failed"),
            dict(solver="cem", envs=4, public_variant="shipped", ms=10.0)]  # fmt: skip
    pv.add_ratios(rows, ("solver", "envs"), "ms")
    fast = rows[0]
    assert fast["x_public"] == 5.0 and fast["x_best_public"] == 3.0
    assert fast["best_public"] == pv.LABELS["bf16"]
    assert rows[2]["x_best_public"] == 1.0 and "x_public" not in rows[3]


def test_bf16_configurations_only_where_bf16_is_native(monkeypatch):
    import lewm_fast.capability as capability

    monkeypatch.setattr(capability, "native_bf16", lambda device="cpu": False)
    keep, skipped = pv.usable_variants(pv.VARIANTS, torch.device("cpu"))
    assert keep == ["shipped", "compile"] and len(skipped) == 2 and all("emulated" in s for s in skipped)
    monkeypatch.setattr(capability, "native_bf16", lambda device="cpu": True)
    assert pv.usable_variants(pv.VARIANTS, torch.device("cpu")) == (list(pv.VARIANTS), [])


def test_a_failing_or_overrunning_first_call_is_a_reason():
    def fails():
        raise RuntimeError("inductor: no C++ compiler\nmore")

    assert pv.first_call(fails, "compile")[1] == "RuntimeError: inductor: no C++ compiler"
    seconds, why = pv.first_call(lambda: time.sleep(5), "compile", limit_s=0.2)
    assert seconds < 4 and "did not finish in 0.2 s" in why
    assert pv.first_call(lambda: None, "shipped")[1] is None
