"""Why torch sees no GPU, in one sentence a user can act on.

The usual cause on a cluster is a torch build for a newer CUDA than the machine's NVIDIA driver
can run (pip's default torch is built for a recent CUDA); torch then reports 0 devices and, at
best, a warning nobody reads. Minimum Linux drivers per CUDA major version: NVIDIA's CUDA
compatibility tables (minor-version compatibility within a major version).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import torch

MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}
INSTALL_HINT = "CLIPZSS_TORCH=cu118 (or cu121, cu124, ...) bash scripts/install.sh"


def driver_version() -> tuple[int, ...] | None:
    """The NVIDIA kernel driver's version, or None when there is no driver."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            found = re.search(r"Kernel Module\s+(?:for \w+\s+)?([\d.]+)", f.read())
        if found:
            return tuple(int(p) for p in found.group(1).split("."))
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        found = re.search(r"([\d.]+)", out)
        if found:
            return tuple(int(p) for p in found.group(1).split("."))
    return None


def _torch_cuda_warning() -> str:
    """The warning torch gives when it initialises CUDA and fails (e.g. 'driver too old')."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.is_available()
    text = " ".join(str(w.message) for w in caught if "CUDA" in str(w.message))
    return text.split(". ")[0].strip()


def why_no_gpu(driver: tuple[int, ...] | None = None, probe_driver: bool = True) -> str:
    """A sentence saying why torch finds no CUDA device and what to do about it."""
    built_for = torch.version.cuda
    if not built_for:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build: reinstall torch for your CUDA "
            f"with {INSTALL_HINT}"
        )
    if driver is None and probe_driver:
        driver = driver_version()
    if driver is None:
        return "no NVIDIA driver was found on this machine"
    major = int(built_for.split(".")[0])
    needed = MIN_DRIVER.get(major)
    shown = ".".join(str(p) for p in driver)
    if needed is not None and tuple(driver) < needed:
        need = ".".join(str(p) for p in needed)
        return (
            f"torch {torch.__version__} was built for CUDA {built_for}, which needs an NVIDIA "
            f"driver >= {need}, but this machine's driver is {shown}: install a torch build for "
            f"an older CUDA ({INSTALL_HINT}) or update the driver"
        )
    detail = _torch_cuda_warning()
    return (
        f"torch {torch.__version__} (CUDA {built_for}) cannot use the GPUs of driver {shown}"
        + (f" ({detail})" if detail else "")
        + "; check CUDA_VISIBLE_DEVICES"
    )
