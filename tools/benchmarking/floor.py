"""The floor of inference on this machine: the student's arithmetic over the machine's sustained
throughput, measured in the same process.

- FLOPs: fvcore's FlopCountAnalysis of the student's network (backbone, embedding head, text
  classifier: ``CLIPZSS.student_logits``) on the benchmark's batch. fvcore counts one fused
  multiply-add as one "flop"; here **one multiply-add is 2 FLOPs** (``FLOPS_PER_MAC``), the
  convention of the throughput probe below (an n x n x n matmul is 2 n^3 FLOPs). Only the
  multiply-add operators are counted (convolution, linear / matmul / einsum, attention); norms,
  activations, upsampling and the argmax are memory-bound work that the floor leaves out, so it
  stays a lower bound.
- Throughput: fp32 ``torch.mm`` of two n x n matrices and a representative ``F.conv2d`` (3 x 3,
  64 -> 64 channels, NHWC, as the predictor runs it), each timed several times at torch's
  current thread count; GFLOP/s of the best and of the median repetition.
- Floor: FLOPs / the best GFLOP/s of either probe (the optimistic throughput, hence the honest
  lower bound on time).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

FLOPS_PER_MAC = 2

# the multiply-add operators, counted with fvcore's handles (MACs); attention has its own
# handle (sdpa_macs). fvcore's handles for other work (norms, upsampling) are not used.
MAC_OPS = ("aten::_convolution", "aten::addmm", "aten::bmm", "aten::einsum", "aten::linear",
           "aten::matmul", "aten::mm")  # fmt: skip


def sdpa_macs(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention: Q K^T (L x S x D) and A V (L x S x Dv) per head."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    length, dim = q[-2], q[-1]
    keys, dim_v = k[-2], v[-1]
    return batch * length * keys * (dim + dim_v)


@dataclass
class FlopCount:
    flops: float  # FLOPS_PER_MAC x multiply-adds
    by_operator: dict[str, float] = field(default_factory=dict)  # FLOPs per fvcore name
    uncounted: dict[str, int] = field(default_factory=dict)  # operators seen but not counted


class _StudentLogits(nn.Module):
    """What fvcore traces: normalised images -> logits at the output stride (student_logits)."""

    def __init__(self, model, text: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("text", text)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.student_logits(images, self.text)


def count_flops(module: nn.Module, inputs: tuple) -> FlopCount:
    """FLOPs (2 per multiply-add) of one call of `module` on `inputs`, by operator."""
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    analysis = FlopCountAnalysis(module, inputs).clear_op_handles()
    analysis.set_op_handle(**{k: _DEFAULT_SUPPORTED_OPS[k] for k in MAC_OPS})
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes
        by_op = analysis.by_operator()
        uncounted = dict(analysis.unsupported_ops())
    by_op = {k: float(v) * FLOPS_PER_MAC for k, v in by_op.items() if v}
    return FlopCount(sum(by_op.values()), by_op, uncounted)


def student_flops(model, images: torch.Tensor, text: torch.Tensor) -> FlopCount:
    """FLOPs of the student's network (backbone + head + text classifier) on a normalised,
    padded batch `images` (N x 3 x H x W) against K x C `text`."""
    return count_flops(_StudentLogits(model, text).eval(), (images,))


# -- throughput --------------------------------------------------------------------------------
@dataclass
class Throughput:
    """A fixed fp32 workload (`fn`, `flops` per call) and the wall times of its calls."""

    name: str
    flops: float
    fn: Callable[[], object]
    times: list[float] = field(default_factory=list)

    def measure(self, repeats: int, warmup: int = 1) -> Throughput:
        """Time `repeats` more calls (after `warmup` untimed ones) at torch's thread count."""
        with torch.inference_mode():
            for _ in range(warmup):
                self.fn()
            for _ in range(repeats):
                start = time.perf_counter()
                self.fn()
                self.times.append(time.perf_counter() - start)
        return self

    @property
    def best_gflops(self) -> float:
        return self.flops / min(self.times) / 1e9

    @property
    def median_gflops(self) -> float:
        return self.flops / statistics.median(self.times) / 1e9


def matmul_probe(n: int = 1024) -> Throughput:
    """fp32 torch.mm of two n x n matrices: 2 n^3 FLOPs."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    return Throughput(
        f"torch.mm {n}x{n} @ {n}x{n}", FLOPS_PER_MAC * n**3, lambda: torch.mm(a, b, out=out)
    )


def conv_probe(size: int = 128, channels: int = 64, kernel: int = 3) -> Throughput:
    """fp32 F.conv2d, 1 x channels x size x size NHWC, channels -> channels, stride 1, 'same'
    (SegFormer-B0's first stage runs at 128² for a 512² image)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, size, size, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, kernel, kernel, generator=g)
    w = w.contiguous(memory_format=torch.channels_last)
    macs = channels * channels * kernel * kernel * size * size
    name = f"F.conv2d {kernel}x{kernel} {channels}->{channels} at {size}² NHWC"
    return Throughput(name, FLOPS_PER_MAC * macs, lambda: F.conv2d(x, w, padding=kernel // 2))


def probe_throughput(repeats: int = 10) -> list[Throughput]:
    """The machine's sustained fp32 throughput at torch's current thread count (the probes can
    be timed again later, e.g. round-robin with the predictor: their times accumulate)."""
    return [matmul_probe().measure(repeats), conv_probe().measure(repeats)]


def floor_seconds(flops: float, probes: list[Throughput]) -> float:
    """The lower bound: FLOPs at the best throughput any probe reached."""
    return flops / (max(p.best_gflops for p in probes) * 1e9)


def operator_summary(count: FlopCount) -> str:
    """'conv 3.1, linear 1.2, ...' GFLOPs, largest first."""
    short = {"scaled_dot_product_attention": "attention"}
    names = Counter({short.get(k, k): v for k, v in count.by_operator.items()})
    return ", ".join(f"{k} {v / 1e9:.2f}" for k, v in names.most_common())
