"""The capability module: dtype="auto" follows what the CPU can do, explicit choices are kept."""

import warnings

import pytest
import torch

from lewm_fast import capability
from lewm_fast.capability import CpuCapability, resolve_dtype


def _fake(monkeypatch, flags):
    cap = CpuCapability("Test CPU", "x86_64", "AVX2", tuple(flags), 2)
    monkeypatch.setattr(capability, "cpu_capability", lambda: cap)
    capability._warn_emulated_bf16.cache_clear()
    return cap


CASES = [
    (("avx2", "fma"), torch.float32),
    (("avx512f", "amx_bf16"), torch.bfloat16),
    (("avx512f", "avx512_bf16"), torch.bfloat16),
    (("asimd", "bf16"), torch.bfloat16),
    (("asimd",), torch.float32),
]


@pytest.mark.parametrize(("flags", "expected"), CASES)
def test_auto_is_bf16_only_where_native(monkeypatch, flags, expected):
    _fake(monkeypatch, flags)
    assert resolve_dtype("auto", "cpu") == expected


def test_explicit_dtypes_are_kept_and_emulated_bf16_warns_once(monkeypatch):
    _fake(monkeypatch, ("avx2",))
    assert resolve_dtype(torch.float32, "cpu") == torch.float32
    assert resolve_dtype("fp32", "cpu") == torch.float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
        assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert len([w for w in caught if "emulated" in str(w.message)]) == 1


def test_native_bf16_does_not_warn(monkeypatch):
    _fake(monkeypatch, ("amx_bf16",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16


@pytest.mark.parametrize("bad", ["float16", torch.float16, 3])
def test_bad_dtype_names_the_argument(bad):
    with pytest.raises(ValueError, match="^dtype: expected"):
        resolve_dtype(bad, "cpu")


@pytest.mark.parametrize(
    ("vendor", "family", "model", "core"),
    [("AuthenticAMD", "25", "1", "Zen 3, family 25 model 1"), ("AuthenticAMD", "25", "17", "Zen 4, family 25 model 17"),
     ("AuthenticAMD", "26", "2", "Zen 5, family 26 model 2"), ("GenuineIntel", "6", "143", "family 6 model 143"),
     ("AuthenticAMD", "", "2", "")],
)  # fmt: skip
def test_core_names_tell_apart_cpus_of_one_model_name(vendor, family, model, core):
    assert capability.core_name(vendor, family, model) == core


def test_the_running_cpu_is_described():
    cap = capability.cpu_capability()
    assert cap.cores >= 1 and cap.arch and cap.isa
    assert set(cap.as_dict()) >= {"model", "isa", "flags", "native_bf16"}


def test_training_amp_auto_probes_only_where_bf16_is_native(monkeypatch):
    from lewm_fast.training.trainer import choose_amp

    def never(_):
        raise AssertionError("probed a CPU that only emulates bf16")

    _fake(monkeypatch, ("avx2", "fma"))
    assert not capability.amp_needs_probe("auto", "cpu")
    assert choose_amp("auto", torch.device("cpu"), never) is False
    assert choose_amp("bf16", torch.device("cpu"), never) is True  # an explicit choice is kept
    _fake(monkeypatch, ("amx_bf16",))
    assert capability.amp_needs_probe("auto", "cpu") and not capability.amp_needs_probe("off", "cpu")
    calls = []
    assert choose_amp("auto", torch.device("cpu"), lambda use: calls.append(use)) in (True, False)
    assert sorted(set(calls)) == [False, True]  # both timed


@pytest.mark.parametrize("command", ["eval", "demo"])
def test_eval_and_demo_plan_with_dtype_auto_by_default(command):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"lewm_fast.commands.{command}").add_arguments(parser)
    required = {"eval": ["--env", "tworoom", "--data", "x.h5"], "demo": ["--out", "x"]}[command]
    assert parser.parse_args(required).dtype == "auto"
    assert parser.parse_args([*required, "--dtype", "fp32"]).dtype == "fp32"


def test_planner_threads_follow_torch_and_the_rows(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert capability.planner_threads(300) == 2  # ~128 rows per thread at least
    assert capability.planner_threads(4800) == 8
    assert capability.planner_threads(5) == 1


def test_info_prints_the_capability_and_the_choices(capsys):
    import json

    from lewm_fast.cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cap = capability.cpu_capability()
    assert info["cpu"] == cap.model and info["cpu_isa"] == cap.isa and info["cpu_native_bf16"] == cap.native_bf16
    assert info["cpu_dtype_auto"] == ("bfloat16" if cap.native_bf16 else "float32")
    assert info["cpu_isa_limits"] == capability.isa_limits()
    assert set(info["cpu_matmul"]) == {"float32", "bfloat16"} and info["cpu_planner_threads"] >= 1
    assert info["cpu_gelu"]["float32"] == ("epilogue" if info["cpu_matmul"]["float32"] == "cpp" else "after")
    for dtype in ("float32", "bfloat16"):  # the kernel's name with the C++ matmul, e.g. "avx512bf16"
        assert (info["cpu_matmul_kernel"][dtype] is not None) == (info["cpu_matmul"][dtype] == "cpp")
    if info["cpp_extension"]:
        assert info["cpu_kernels"]  # the clone the loader picked, e.g. "x86-64-v3 (AVX2, FMA)"


def test_isa_limits_are_the_limiting_variables_set_and_only_those():
    # A mapping, not the process's environment: the extension and oneDNN read theirs once, so setting one here
    # would limit every later test of the session.
    environ = {"LEWM_CPU_KERNEL": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2"}
    assert capability.isa_limits(environ) == {"LEWM_CPU_KERNEL": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert capability.isa_limits({}) == {}


def test_planner_matmul_is_the_cpp_kernel_where_a_native_one_runs():
    """The extension's matmul where its kernel for the dtype is a native one (AVX2 or AVX-512 in fp32,
    AVX512-BF16 in bf16) and, in bf16, the CPU has no AMX; oneDNN (or F.linear) elsewhere."""
    amx = "amx_bf16" in capability.cpu_capability().flags
    for dtype in (torch.float32, torch.bfloat16):
        kernel = capability.cpp_linear_kernel(dtype)
        cpp = kernel in capability.PLANNER_CPP_KERNELS[dtype] and not (dtype == torch.bfloat16 and amx)
        assert (capability.planner_matmul(dtype) == "cpp") == cpp
        assert capability.planner_matmul(dtype) in ("cpp", "onednn", "torch")


def test_planner_gelu_follows_the_matmul():
    """A oneDNN post-op only in bf16; the C++ kernel's epilogue with the C++ matmul; else after the matmul."""
    for dtype in (torch.float32, torch.bfloat16):
        matmul, gelu = capability.planner_matmul(dtype), capability.planner_gelu(dtype)
        want = {"cpp": "epilogue", "onednn": "post-op" if dtype == torch.bfloat16 else "after"}.get(matmul, "after")
        assert gelu == want


def test_cpu_ops_fp32_linear_gelu_is_the_reference_gelu():
    """The fp32 CPU op set's linear + GELU on its prepacked weights: within the derived error of the exact
    (float64) gelu(x @ w.T + b); with oneDNN the GELU is PyTorch's own after the op set's matmul, bit for
    bit; with the C++ kernel's epilogue within the epilogue's derived error (tests/test_planner_cpu_matmul.py)."""
    import torch.nn.functional as F

    from lewm_fast.planning.cpu_ops import CpuOps

    g = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(*s, generator=g) for s in ((37, 3, 24), (53, 24), (53,)))
    ops = CpuOps(torch.float32, rows_hint=37)
    got = ops.linear_gelu(x, ops.pack_weight(w), b).double()
    exact = F.gelu(F.linear(x.double(), w.double(), b.double()))
    magnitude = x.double().abs() @ w.double().abs().T + b.double().abs()
    # a 24-term fp32 sum (24 roundings of the magnitude at most; GELU's slope <= 1.13), then the GELU's own error
    # (its fit and 13 roundings of |pre| + |GELU|, pre within the magnitude)
    tol = 1.13 * 24 * 2**-24 * magnitude + 3.8e-8 * magnitude / 2 + 13 * 2**-24 * (exact.abs() + magnitude)
    assert ((got - exact).abs() <= tol).all()
    if capability.planner_gelu(torch.float32) != "epilogue":
        assert torch.equal(got.float(), F.gelu(ops.linear(x, ops.pack_weight(w), b)))
