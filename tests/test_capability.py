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


def test_the_running_cpu_is_described():
    cap = capability.cpu_capability()
    assert cap.cores >= 1 and cap.arch and cap.isa
    assert set(cap.as_dict()) >= {"model", "isa", "flags", "native_bf16"}
