"""How tools/benchmark.py measures: wall time of callables timed round-robin (one call of each in
turn, so a load change on a shared machine hits all of them alike) and peak memory (CUDA
max_memory_allocated; on CPU the peak RSS, VmHWM, reset through /proc/self/clear_refs)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    def spread(self, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        if not self.times:
            return "n/a"
        lo, hi = min(self.times) * scale, max(self.times) * scale
        return f"{fmt.format(lo)}–{fmt.format(hi)}"


def round_robin(fns: dict, device: str, warmup: int, iters: int) -> dict[str, Timing]:
    """Warm each up, then time one call of each in turn, `iters` rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    out = {k: Timing() for k in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            out[name].times.append(time.perf_counter() - start)
    return out


def reset_peak(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        with contextlib.suppress(OSError, AttributeError):  # glibc: return freed memory to the OS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return vm_gib("VmHWM")


def vm_gib(key: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    return math.nan


def measure_peak(fn, device: str) -> float:
    """Peak memory of one call beyond what was resident before it (models, inputs)."""
    reset_peak(device)
    before = torch.cuda.memory_allocated() / 2**30 if device.startswith("cuda") else vm_gib("VmRSS")
    fn()
    sync(device)
    return peak_gib(device) - before


def supports(device: str, precision: str) -> bool:
    if precision == "fp32":
        return True
    if device.startswith("cuda"):
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if precision == "bf16":  # CPUs with AVX512-BF16 / AMX run bf16 natively
        with contextlib.suppress(Exception):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False
