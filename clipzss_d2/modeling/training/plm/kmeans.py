"""Batched K-Means over many images at once, seeded deterministically from window means.

PLM clusters the teacher's patch tokens of every training image every iteration, so this runs
as one batched matrix product per iteration for the assignment (one image per batch row) and
one index_add over the flattened batch for the centroid update (modeling/segments.py), with no Python loop over
images, clusters or tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ....utils.precision import without_autocast
from ...segments import segment_sums

METRICS = ("cosine", "euclidean")


class KMeansResult(NamedTuple):
    assignments: torch.Tensor  # B x N long; -1 for invalid tokens (or images without seeds)
    centroids: torch.Tensor  # B x K x C; unit norm for "cosine"
    counts: torch.Tensor  # B x K float, valid tokens assigned by the final assignment step
    valid: torch.Tensor  # B x K bool: seed valid and cluster non-empty at the end


def _scores(x: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """B x N x K, larger = closer (cosine similarity, or 2 x.c - |c|^2 = |x|^2 - |x - c|^2)."""
    if metric == "cosine":
        return torch.bmm(x, c.transpose(1, 2))
    sq = (c * c).sum(-1).unsqueeze(1)  # B x 1 x K
    return torch.baddbmm(sq, x, c.transpose(1, 2), beta=-1.0, alpha=2.0)


@without_autocast
def kmeans(
    tokens: torch.Tensor,
    seeds: torch.Tensor,
    seed_valid: torch.Tensor | None = None,
    token_valid: torch.Tensor | None = None,
    iters: int = 10,
    metric: str = "cosine",
) -> KMeansResult:
    """Lloyd's K-Means for every image of a batch, from given seeds.

    Args:
        tokens: B x N x C points.
        seeds: B x K x C initial centroids.
        seed_valid: B x K bool; invalid seeds never receive points (padding of seed lists).
        token_valid: B x N bool; invalid tokens are neither clustered nor counted.
        iters: at most this many (update, assign) steps after the first assignment, so the
            returned assignments are consistent with the returned centroids (as in
            scikit-learn); stops early, exactly, once no assignment changes in the batch.
        metric: "cosine" = spherical K-Means (points and centroids L2-normalised, assignment by
            cosine similarity, centroid = normalised mean); "euclidean" = classic K-Means.

    A cluster that becomes empty keeps its previous centroid and may win points back later
    (no relocation, unlike scikit-learn, so results are deterministic and seed-bound); a cluster
    still empty after the final assignment is reported with ``valid=False``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got '{metric}'")
    b, n, _ = tokens.shape
    k = seeds.shape[1]
    x = tokens.float().contiguous()  # transposed views make every per-iteration pass slow
    c = seeds.float()
    if metric == "cosine":
        x = F.normalize(x, dim=-1)
        c = F.normalize(c, dim=-1)
    if seed_valid is None:
        seed_valid = torch.ones(b, k, dtype=torch.bool, device=x.device)
    if token_valid is None:
        token_valid = torch.ones(b, n, dtype=torch.bool, device=x.device)
    weight = token_valid.to(x.dtype)  # B x N
    blocked = (~seed_valid).unsqueeze(1)  # B x 1 x K

    def assign(cent):
        return _scores(x, cent, metric).masked_fill(blocked, float("-inf")).argmax(dim=-1)

    labels = assign(c)
    for _ in range(iters):
        sums, counts = segment_sums(x, labels, k, weight)
        new = sums / counts.clamp(min=1).unsqueeze(-1)
        if metric == "cosine":
            new = F.normalize(new, dim=-1)
        c = torch.where((counts > 0).unsqueeze(-1), new, c)
        new_labels = assign(c)
        # unchanged assignments for every image = fixed point: the remaining iterations would
        # reproduce the same centroids, so stopping is exact (one host sync per iteration)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels

    _, counts = segment_sums(x, labels, k, weight, with_sums=False)
    has_seed = seed_valid.any(dim=1, keepdim=True)
    labels = labels.masked_fill(~token_valid | ~has_seed, -1)
    valid = seed_valid & (counts > 0)
    return KMeansResult(assignments=labels, centroids=c, counts=counts, valid=valid)


@without_autocast
def window_seeds(
    tokens: torch.Tensor, window: int, token_valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeds = means of non-overlapping window x window blocks of a B x C x h x w token grid.

    Grids not divisible by the window get partial windows on the bottom/right edges (ceil
    mode); every window mean is taken over the tokens that exist and are valid, so a partial
    window is not diluted by zeros. Windows without a valid token give invalid seeds.
    Returns seeds B x K x C (K = ceil(h/window) * ceil(w/window), row-major) and seed_valid B x K.
    """
    b, c, h, w = tokens.shape
    kh, kw = min(window, h), min(window, w)
    if token_valid is None:
        m = tokens.new_ones(b, 1, h, w, dtype=torch.float32)
        x = tokens.float()
    else:
        m = token_valid.to(torch.float32).reshape(b, 1, h, w)
        x = tokens.float() * m
    # both poolings divide by the same (clipped) window area, which cancels in the ratio
    s = F.avg_pool2d(x, (kh, kw), stride=(kh, kw), ceil_mode=True)
    cnt = F.avg_pool2d(m, (kh, kw), stride=(kh, kw), ceil_mode=True)
    seeds = s / cnt.clamp(min=1e-12)
    seeds = seeds.flatten(2).transpose(1, 2)  # B x K x C
    seed_valid = cnt.flatten(1) > 0
    return seeds, seed_valid
