"""Batched K-Means over many images at once, seeded deterministically from window means.

PLM clusters the teacher's patch tokens of every training image every iteration, so this runs
as a handful of batched matrix products per iteration (one image per batch row, one-hot
matmuls for the centroid update) with no Python loop over images, clusters or tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

METRICS = ("cosine", "euclidean")


class KMeansResult(NamedTuple):
    assignments: torch.Tensor  # B x N long; -1 for invalid tokens (or images without seeds)
    centroids: torch.Tensor  # B x K x C; unit norm for "cosine"
    counts: torch.Tensor  # B x K float, valid tokens assigned by the final assignment step
    valid: torch.Tensor  # B x K bool: seed valid and cluster non-empty at the end


def _scores(x: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """B x N x K, larger = closer (cosine similarity, or negated squared distance minus |x|^2)."""
    dots = torch.bmm(x, c.transpose(1, 2))
    if metric == "cosine":
        return dots
    return 2 * dots - (c * c).sum(-1).unsqueeze(1)


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
        iters: number of (assign, update) steps; a final assign step follows so that the
            returned assignments are consistent with the returned centroids (as scikit-learn).
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
    x = tokens.float()
    c = seeds.float()
    if metric == "cosine":
        x = F.normalize(x, dim=-1)
        c = F.normalize(c, dim=-1)
    if seed_valid is None:
        seed_valid = torch.ones(b, k, dtype=torch.bool, device=x.device)
    if token_valid is None:
        token_valid = torch.ones(b, n, dtype=torch.bool, device=x.device)
    weight = token_valid.to(x.dtype).unsqueeze(-1)  # B x N x 1
    blocked = (~seed_valid).unsqueeze(1)  # B x 1 x K

    def assign(cent):
        return _scores(x, cent, metric).masked_fill(blocked, float("-inf")).argmax(dim=-1)

    for _ in range(iters):
        onehot = F.one_hot(assign(c), k).to(x.dtype) * weight  # B x N x K
        counts = onehot.sum(dim=1)  # B x K
        sums = torch.bmm(onehot.transpose(1, 2), x)  # B x K x C
        new = sums / counts.clamp(min=1).unsqueeze(-1)
        if metric == "cosine":
            new = F.normalize(new, dim=-1)
        c = torch.where((counts > 0).unsqueeze(-1), new, c)

    labels = assign(c)
    onehot = F.one_hot(labels, k).to(x.dtype) * weight
    counts = onehot.sum(dim=1)
    has_seed = seed_valid.any(dim=1, keepdim=True)
    labels = labels.masked_fill(~token_valid | ~has_seed, -1)
    valid = seed_valid & (counts > 0)
    return KMeansResult(assignments=labels, centroids=c, counts=counts, valid=valid)


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
