"""Code that must compute in its own precision whatever autocast the caller runs under.

GPUs train with AMP: detectron2's AMPTrainer runs the whole training forward under fp16 (or
bf16) autocast, which casts every ``bmm``/``matmul``/``einsum`` to half precision even on inputs
that were explicitly made ``.float()``, and ``no_grad`` does not stop it. The teacher, GLM, the
pseudo-labeller and the text encoder are not learned through autocast's loss scaling and must
not depend on it (PLM's size-weighted Gram matrix overflows fp16 at 256 tokens, its K-Means
assignments flip in bf16): they run under ``autocast_disabled``.
"""

from __future__ import annotations

import contextlib
import functools

import torch

# autocast device types this project runs on; CPU autocast casts matmuls like CUDA's does, so
# the CPU tests see what a GPU run computes
_DEVICE_TYPES = ("cpu", "cuda")


@contextlib.contextmanager
def autocast_disabled():
    """No autocast on any device inside (tensors keep the dtypes they are given)."""
    with contextlib.ExitStack() as stack:
        for device_type in _DEVICE_TYPES:
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


def without_autocast(fn):
    """Decorator: ``fn`` runs under ``autocast_disabled``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with autocast_disabled():
            return fn(*args, **kwargs)

    return wrapper


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is in a half precision, else unchanged (float64 stays)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
