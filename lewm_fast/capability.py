"""What the processor can do, read once: every CPU choice (planning dtype, kernels, threads) follows
from here, never from what some other machine could do.

bf16 matmuls run natively only on CPUs with AMX (Intel Sapphire Rapids and later) or AVX512-BF16
(Intel Cooper Lake, AMD Zen 4 and later), and on ARM cores with the BF16 extension. Elsewhere (AVX2-only
x86, older AVX-512) PyTorch emulates them through fp32 conversions: far slower than fp32 itself. So
`dtype="auto"` means bf16 only where it is native (and on CUDA devices that support it), fp32 elsewhere.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# /proc/cpuinfo flags that give native bf16 matmuls (x86 "flags", ARM "Features").
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# The flags worth reporting (`lewm-fast info`, benchmark JSON).
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve", "bf16")
# AMD's x86 (family, models) -> core (AMD's revision guides): cloud CPUs of several generations all call
# themselves "AMD EPYC", and their figures must not be taken for one machine's.
AMD_CORES = ((23, range(0x00, 0x30), "Zen"), (23, range(0x30, 0x100), "Zen 2"), (25, range(0x00, 0x10), "Zen 3"),
             (25, range(0x10, 0x20), "Zen 4"), (25, range(0x20, 0x60), "Zen 3"), (25, range(0x60, 0x100), "Zen 4"),
             (26, range(0x00, 0x100), "Zen 5"))  # fmt: skip


@dataclass(frozen=True)
class CpuCapability:
    """model: the CPU's name; arch: `platform.machine()`; isa: PyTorch's dispatch level
    (`torch.backends.cpu.get_cpu_capability()`: "AVX2", "AVX512", "NO AVX", ...); flags: the reported
    flags present; cores: logical CPUs this process may use; core: which core design, on x86
    ("Zen 5, family 26 model 2"; "family 6 model 143" where unnamed; "" without /proc/cpuinfo)."""

    model: str
    arch: str
    isa: str
    flags: tuple[str, ...]
    cores: int
    core: str = ""

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in NATIVE_BF16_FLAGS)

    def as_dict(self) -> dict:
        return {"model": self.model, "arch": self.arch, "isa": self.isa, "flags": list(self.flags),
                "cores": self.cores, "core": self.core, "native_bf16": self.native_bf16}  # fmt: skip


def _cpuinfo() -> tuple[str, set[str], dict[str, str]]:
    """(model name, flag set, the first processor's other fields) from /proc/cpuinfo; ("", empty, empty)
    where there is none (macOS, Windows)."""
    model, flags, fields = "", set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                elif key and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    return model, flags, fields


def core_name(vendor: str, family: str, model: str) -> str:
    """The x86 core design from /proc/cpuinfo's vendor_id, cpu family and model (decimal): "Zen 4, family
    25 model 17"; "family F model M" where AMD_CORES does not name it; "" where a field is missing."""
    if not (family.isdigit() and model.isdigit()):
        return ""
    ident = f"family {family} model {model}"
    if vendor == "AuthenticAMD":
        for fam, models, name in AMD_CORES:
            if int(family) == fam and int(model) in models:
                return f"{name}, {ident}"
    return ident


def _macos_arm_flags() -> set[str]:
    """Apple silicon has no /proc/cpuinfo: NEON always, BF16 where sysctl reports FEAT_BF16 (M2 and later)."""
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5)
        return {"asimd", "bf16"} if out.stdout.strip() == "1" else {"asimd"}
    except (OSError, subprocess.SubprocessError):
        return {"asimd"}


@functools.cache
def cpu_capability() -> CpuCapability:
    """The running CPU's capability (read once per process)."""
    model, flags, fields = _cpuinfo()
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        isa = "unknown"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        flags |= _macos_arm_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    present = tuple(f for f in REPORTED_FLAGS if f in flags)
    core = core_name(fields.get("vendor_id", ""), fields.get("cpu family", ""), fields.get("model", ""))
    return CpuCapability(model or platform.processor() or "unknown CPU", platform.machine(), isa, present, cores, core)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matmuls run natively (not emulated) on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_capability().native_bf16
    return False


# The compute dtypes by the short names results and the CLI use; DTYPE_NAMES: every name `dtype=` accepts.
PLAN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DTYPE_NAMES = {"auto": "auto", **PLAN_DTYPES, "float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *PLAN_DTYPES)  # what a --dtype flag offers


def dtype_name(dtype: torch.dtype) -> str:
    """The short name results and the CLI use for a planning dtype: "fp32" or "bf16"."""
    return next(name for name, d in PLAN_DTYPES.items() if d == dtype)


@functools.cache
def _warn_emulated_bf16(device_type: str) -> None:
    cap = cpu_capability()
    warnings.warn(
        f"dtype=torch.bfloat16 on {cap.model} ({cap.isa}, no AMX or AVX512-BF16): bf16 matmuls are emulated "
        "here and run several times slower than fp32, and so does planning; "
        "dtype='auto' picks fp32 on this CPU",
        RuntimeWarning,
        stacklevel=4,
    )


def resolve_dtype(dtype: torch.dtype | str, device: torch.device | str, name: str = "dtype") -> torch.dtype:
    """The compute dtype meant by `dtype` on `device`.

    "auto": bf16 where `device` runs bf16 matmuls natively, else fp32. torch.float32 / torch.bfloat16 (or
    "fp32" / "bf16") are kept; an explicit bf16 on a CPU that only emulates it warns once per process.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"{name}: expected 'auto', 'fp32', 'bf16', torch.float32 or torch.bfloat16, got {dtype!r}")
        dtype = DTYPE_NAMES[dtype]
    device = torch.device(device)
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"{name}: expected 'auto', torch.float32 or torch.bfloat16, got {dtype}")
    if dtype == torch.bfloat16 and device.type == "cpu" and not native_bf16(device):
        _warn_emulated_bf16(device.type)
    return dtype


# ---- The planner's CPU choices (lewm_fast/planning/cpu_parallel.py, cpu_ops.py) ----


@functools.cache
def onednn_linear(dtype: torch.dtype) -> bool:
    """Whether this torch build has oneDNN's linear with prepacked weights and fused post-ops
    (mkldnn::_linear_pointwise) working for `dtype`."""
    import torch.nn.functional as F

    try:
        x, w = torch.ones(2, 8, dtype=dtype), torch.ones(4, 8, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 2)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, torch.zeros(4, dtype=dtype), "gelu", [], "none")
        return bool(torch.allclose(y.float(), F.gelu(torch.full((2, 4), 8.0))))
    except (AttributeError, RuntimeError):
        return False


def cpp_linear_kernel(dtype: torch.dtype) -> str | None:
    """The C++ extension's matmul kernel for `dtype` on this CPU (csrc/linear_cpu.cpp: the widest one it
    runs, at most the ISA level LEWM_CPU_KERNEL names), e.g. "avx512bf16"; None without the extension."""
    from lewm_fast import _ext

    ext = _ext.load()
    return None if ext is None else ext.linear_kernel(dtype_name(dtype))


# The extension's kernels the planner prefers to oneDNN, by dtype (the portable ones never: several times
# slower); in bf16 not on AMX, where oneDNN's AMX kernels are faster still.
PLANNER_CPP_KERNELS = {torch.float32: ("avx2", "avx512"), torch.bfloat16: ("avx512bf16",)}


def planner_matmul(dtype: torch.dtype) -> str:
    """The planner's CPU matmuls: "cpp" (the extension's register-tiled kernels on weights packed once,
    `PLANNER_CPP_KERNELS`, with the GELU and the modulation planes as epilogues) where a native kernel for
    `dtype` runs, in bf16 not on AMX; else "onednn" (weights reordered once into oneDNN's blocked layout, AMX
    in bf16) where the build has it; else "torch" (F.linear). docs/cpu-planner.md says how each is built.
    The A/B figures behind the choice: benchmarks/results/linear_kernels-*.json and
    cpu_planner_choices-history-amd-epyc-zen3.json."""
    kernel = cpp_linear_kernel(dtype)
    amx = "amx_bf16" in cpu_capability().flags
    if kernel in PLANNER_CPP_KERNELS[dtype] and not (dtype == torch.bfloat16 and amx):
        return "cpp"
    return "onednn" if onednn_linear(dtype) else "torch"


def planner_gelu(dtype: torch.dtype, matmul: str | None = None) -> str:
    """Where the planner's MLP GELU runs with `matmul` (default `planner_matmul(dtype)`): "epilogue" with the
    C++ matmul (on each finished tile, in fp32, erf by a fitted rational: docs/cpu-planner.md); "post-op" in bf16
    on oneDNN (on its fp32 accumulator); "after" otherwise (PyTorch's GELU after oneDNN's fp32 matmul: its erf post-op
    is slower). A separate GELU pass is a tenth of an fp32 rollout (figures:
    benchmarks/results/cpu_planner_choices-history-amd-epyc-zen3.json)."""
    matmul = matmul or planner_matmul(dtype)
    if matmul == "cpp":
        return "epilogue"
    return "post-op" if dtype == torch.bfloat16 and matmul == "onednn" else "after"


# Fewer candidates per core than this and the rollout's matmuls fall below the GEMM rate
# (benchmarks/results/cpu_planner_choices-history-amd-epyc-zen3.json).
MIN_ROWS_PER_THREAD = 128
# The largest chunk of candidates one worker rolls out at once, by the planner's matmul; more chunks than
# threads let the other workers catch up with one that a busy core slowed down. E = 16 on 2 cores of Zen 3:
# with the C++ matmul chunks of <= 160 were fastest (two workers share the L3 better), with oneDNN the cost
# per candidate was flat from 600 up (same history file).
MAX_CHUNK_ROWS = {"cpp": 160, "onednn": 1024, "torch": 1024}


def planner_chunk_rows(dtype: torch.dtype) -> int:
    """The largest chunk of candidates per worker for a planner in `dtype` (MAX_CHUNK_ROWS of its matmul)."""
    return MAX_CHUNK_ROWS[planner_matmul(dtype)]


def planner_threads(rows: int) -> int:
    """CPU threads for a solve of `rows` = E x S candidates: torch's intra-op thread count (the cores,
    or what the user set), but at most one per MIN_ROWS_PER_THREAD rows."""
    return max(1, min(torch.get_num_threads(), rows // MIN_ROWS_PER_THREAD))


def planner_chunks(rows: int, threads: int, max_rows: int) -> list[tuple[int, int]]:
    """How `threads` workers split `rows` candidates: (start, end) of equal chunks, at least one per
    thread (a quiet machine finishes them together), more when a chunk would exceed `max_rows`
    (`planner_chunk_rows`; 0: no limit), their count a multiple of the thread count."""
    threads = max(1, min(threads, rows))
    count = threads
    if max_rows > 0:
        count = max(count, -(-rows // max_rows))
        count = -(-count // threads) * threads  # a multiple of the threads
    count = min(count, rows)
    edges = [rows * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def amp_needs_probe(amp: str, device: torch.device | str) -> bool:
    """Training's `--amp auto`: whether bf16 autocast must be timed against fp32 on `device` (a CPU with
    native bf16, where which is faster depends on the model's size). Elsewhere "auto" needs no probe:
    bf16 where native (CUDA), fp32 on a CPU that only emulates bf16 (several times slower matmuls)."""
    return amp == "auto" and torch.device(device).type == "cpu" and native_bf16(device)


# Environment variables that cap the arithmetic below what the CPU runs (how tests and the results meet other CPUs'
# code paths on one machine): a record made under one of them says so.
ISA_LIMIT_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "LEWM_CPU_KERNEL", "MKL_ENABLE_INSTRUCTIONS")


def isa_limits(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The ISA limits `environ` sets, by name (empty where the CPU runs its widest code paths)."""
    return {name: environ[name] for name in ISA_LIMIT_VARS if name in environ}


def cpu_choices() -> dict:
    """What lewm_fast does on this CPU, and why: the capability and every choice that follows from it
    (`lewm-fast info` prints this; the benchmarks record it)."""
    from lewm_fast import _ext

    cap = cpu_capability()
    auto = resolve_dtype("auto", "cpu")
    ext = _ext.load()
    return {
        "cpu": cap.model, "core": cap.core, "arch": cap.arch, "isa": cap.isa, "flags": list(cap.flags),
        "cores": cap.cores, "native_bf16": cap.native_bf16,
        "isa_limits": isa_limits(),
        "dtype_auto": str(auto).removeprefix("torch."),
        "matmul": {str(d).removeprefix("torch."): planner_matmul(d) for d in (torch.float32, torch.bfloat16)},
        "matmul_kernel": {str(d).removeprefix("torch."): cpp_linear_kernel(d) if planner_matmul(d) == "cpp" else None
                          for d in (torch.float32, torch.bfloat16)},
        "gelu": {str(d).removeprefix("torch."): planner_gelu(d) for d in (torch.float32, torch.bfloat16)},
        "kernels": ext.kernel_isa() if ext is not None and hasattr(ext, "kernel_isa") else None,
        "planner_threads": torch.get_num_threads(),
        "planner_chunks": f"one per thread (>= {MIN_ROWS_PER_THREAD} candidates each), "
        f"<= {planner_chunk_rows(torch.float32)} (fp32) / {planner_chunk_rows(torch.bfloat16)} (bf16) candidates",
        "train_amp_auto": "probe bf16 against fp32" if amp_needs_probe("auto", "cpu") else "fp32 (bf16 is emulated)",
    }  # fmt: skip
