"""Per-segment sums and means over a batch: the one implementation that K-Means, the pseudo-label
partition, the synthesizer's region centroids and the text prompt ensemble share.

One ``index_add`` over the flattened batch: O(N*C) work and memory, where a one-hot matmul costs
O(N*K*C), and no Python loop over images or segments. Sums are taken in float32 (thousands of
fp16 terms would lose precision); gradients flow to ``values``.
"""

from __future__ import annotations

import torch


def segment_sums(
    values: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int,
    weight: torch.Tensor | None = None,
    with_sums: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """values: B x N x C; segment_ids: B x N long, ids outside [0, num_segments) are ignored;
    weight: B x N (default 1). Returns (sums B x K x C float32 or None, counts B x K float32),
    counts being the summed weights."""
    b, n = segment_ids.shape
    k = int(num_segments)
    inside = (segment_ids >= 0) & (segment_ids < k)
    w = inside.float() if weight is None else weight.float() * inside
    # ignored entries go to one dump slot per image, dropped at the end
    ids = torch.where(inside, segment_ids, k)
    flat = (ids + torch.arange(b, device=ids.device).unsqueeze(1) * (k + 1)).reshape(-1)
    counts = w.new_zeros(b * (k + 1)).index_add_(0, flat, w.reshape(-1)).view(b, k + 1)[:, :k]
    if not with_sums:
        return None, counts
    x = values.float().reshape(b * n, -1) * w.reshape(-1, 1)
    sums = x.new_zeros(b * (k + 1), x.shape[1]).index_add_(0, flat, x)
    return sums.view(b, k + 1, -1)[:, :k], counts


def segment_means(
    values: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(means B x K x C float32, zero for empty segments; counts B x K) of ``segment_sums``."""
    sums, counts = segment_sums(values, segment_ids, num_segments, weight)
    return sums / counts.clamp(min=1e-12).unsqueeze(-1) * (counts > 0).unsqueeze(-1), counts
