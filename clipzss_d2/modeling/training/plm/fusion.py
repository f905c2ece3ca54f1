"""Mask fusion of PLM: merge K-Means masks of all scales whose centroids agree.

Masks merge when their centroids' cosine similarity exceeds lambda, each mask used once per
merge step (``fuse_masks``), in one of two modes:

* ``"agglomerative"`` (default): the masks of all scales are pooled into groups and merged
  in rounds. Each round every group finds its most similar other group (cosine of
  centroids). Groups without a neighbour above lambda, and the lower-index member of each
  MUTUAL nearest pair above lambda, are roots and stay; every other group whose nearest
  neighbour is above lambda AND is a root moves into it (the rest wait for a later round).
  A root absorbs all its movers at once; its centroid becomes the size-weighted mean of
  all member centroids (renormalised for cosine K-Means) and sizes add. A mask thus takes
  part in at most one merge per round and ends in exactly one group. Rounds repeat until
  nothing moves, so on return no two groups have centroid similarity > lambda (the most
  similar remaining pair would be mutual and merge). Near-duplicate clusters of the same
  scale merge too (over-segmented stuff collapses into one region), and a mask only ever
  joins a group whose current centroid it is similar to (one hop per round, similarities
  re-evaluated against merged centroids), so a chain of pairwise-similar but mutually
  dissimilar masks is not glued together at once as single linkage would do.
* ``"cross_scale"``: scales are taken in order, keeping a fused set that starts as the first
  scale's masks; the next scale's masks are matched one-to-one to the fused set by mutual
  nearest neighbour with similarity > lambda, matched pairs merge as above, unmatched masks
  join the set as new entries. Masks of the same scale never merge with each other.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ....utils.precision import without_autocast

FUSION_MODES = ("agglomerative", "cross_scale")


class FusionResult(NamedTuple):
    centroids: torch.Tensor  # B x G x C
    sizes: torch.Tensor  # B x G float (sum of member mask sizes)
    valid: torch.Tensor  # B x G bool
    membership: torch.Tensor  # B x M long: group of each input mask (-1: input mask invalid)


def _centroid(acc, sizes, metric):
    """Groups carry size-weighted sums, so a merged centroid is exactly the size-weighted mean
    of all member centroids whatever the merge order."""
    if metric == "cosine":
        return F.normalize(acc, dim=-1)
    return acc / sizes.clamp(min=1e-12).unsqueeze(-1)


def _agglomerative(centroids, sizes, valid, threshold, metric):
    b, m, _ = centroids.shape
    ar = torch.arange(m, device=centroids.device).expand(b, m)
    membership = torch.where(valid, ar, torch.full_like(ar, -1))
    eye = torch.eye(m, dtype=torch.bool, device=centroids.device)
    acc = centroids * sizes.unsqueeze(-1)
    # Gram matrix of the groups' weighted sums; merges (acc_i += acc_j) are row and column
    # additions on it, so a round costs O(M^2) instead of an O(M^2 C) re-multiplication.
    gram = torch.bmm(acc, acc.transpose(1, 2))
    # every round with an edge above the threshold moves at least the larger-index member of
    # the most similar (hence mutual) pair, so m - 1 rounds bound the loop
    for _ in range(max(m - 1, 0)):
        norm = gram.diagonal(dim1=1, dim2=2).clamp(min=1e-12).sqrt()
        sim = gram / (norm.unsqueeze(2) * norm.unsqueeze(1))
        blocked = eye | ~valid.unsqueeze(1) | ~valid.unsqueeze(2)
        sim = sim.masked_fill(blocked, float("-inf"))
        best, nn_idx = sim.max(dim=-1)  # B x M
        edge = valid & (best > threshold)
        mutual = edge & (nn_idx.gather(1, nn_idx) == ar)
        root = valid & (~edge | (mutual & (ar < nn_idx)))
        mover = edge & ~root & root.gather(1, nn_idx)
        if not bool(mover.any()):
            break
        # add every mover's row, then column, into its root's (rows/cols of others add zero)
        mv = mover.to(gram.dtype)
        gram = gram.scatter_add(1, nn_idx.unsqueeze(2).expand(b, m, m), gram * mv.unsqueeze(2))
        gram = gram.scatter_add(2, nn_idx.unsqueeze(1).expand(b, m, m), gram * mv.unsqueeze(1))
        acc = acc.scatter_add(1, nn_idx.unsqueeze(2).expand_as(acc), acc * mv.unsqueeze(2))
        sizes = sizes.scatter_add(1, nn_idx, sizes * mv)
        valid = valid & ~mover
        redirect = torch.where(mover, nn_idx, ar)  # where each group's members go now
        membership = torch.where(
            membership >= 0, redirect.gather(1, membership.clamp(min=0)), membership
        )
    return FusionResult(_centroid(acc, sizes, metric), sizes, valid, membership)


def _cross_scale(scales, threshold, metric):
    fc, fs, fv = scales[0]
    b = fc.shape[0]
    facc = fc * fs.unsqueeze(-1)
    ar0 = torch.arange(fc.shape[1], device=fc.device).expand(b, -1)
    memberships = [torch.where(fv, ar0, torch.full_like(ar0, -1))]
    for nc, ns, nv in scales[1:]:
        m, k = facc.shape[1], nc.shape[1]
        sim = torch.bmm(F.normalize(facc, dim=-1), F.normalize(nc, dim=-1).transpose(1, 2))
        sim = sim.masked_fill(~fv.unsqueeze(2) | ~nv.unsqueeze(1), float("-inf"))
        best_f, nn_f = sim.max(dim=2)  # fused -> new, B x M
        best_n, nn_n = sim.max(dim=1)  # new -> fused, B x K
        ar_k = torch.arange(k, device=fc.device).expand(b, k)
        matched_n = (nn_f.gather(1, nn_n) == ar_k) & (best_n > threshold) & nv
        ar_m = torch.arange(m, device=fc.device).expand(b, m)
        matched_f = (nn_n.gather(1, nn_f) == ar_m) & (best_f > threshold) & fv
        nacc = nc * ns.unsqueeze(-1)
        partner = nacc.gather(1, nn_f.unsqueeze(-1).expand(b, m, nc.shape[2]))
        facc = torch.where(matched_f.unsqueeze(-1), facc + partner, facc)
        fs = torch.where(matched_f, fs + ns.gather(1, nn_f), fs)
        memberships.append(
            torch.where(matched_n, nn_n, torch.where(nv, ar_k + m, torch.full_like(ar_k, -1)))
        )
        facc = torch.cat([facc, nacc], dim=1)
        fs = torch.cat([fs, ns], dim=1)
        fv = torch.cat([fv, nv & ~matched_n], dim=1)
    return FusionResult(_centroid(facc, fs, metric), fs, fv, torch.cat(memberships, dim=1))


@without_autocast
def fuse_masks(
    scales: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    threshold: float,
    mode: str = "agglomerative",
    metric: str = "cosine",
) -> FusionResult:
    """Fuse per-scale masks given as (centroids B x K_s x C, sizes B x K_s, valid B x K_s).

    See the module docstring for both modes. ``membership`` indexes masks in the order of
    ``scales`` concatenated, and gives the fused group (column of ``centroids``) of each.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got '{mode}'")
    scales = [(c.float(), s.float(), v.bool()) for c, s, v in scales]
    if mode == "cross_scale":
        return _cross_scale(scales, threshold, metric)
    cents, sizes, valid = (torch.cat(parts, dim=1) for parts in zip(*scales))
    return _agglomerative(cents, sizes, valid, threshold, metric)
