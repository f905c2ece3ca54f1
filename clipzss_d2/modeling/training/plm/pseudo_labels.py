"""Class-agnostic pseudo regions from the teacher's patch tokens, and their fusion with labels.

Pipeline (all batched over images, under no_grad):

1. Multi-scale K-Means. For each window size w, seeds are the means of non-overlapping w x w
   windows of the token grid (``window_seeds``); K-Means runs from them (``kmeans``). Every
   non-empty cluster is a mask with a centroid and a size (number of tokens).
2. Mask fusion by centroid cosine similarity > lambda (``fusion.py``, which explains its two
   modes).
3. Partition: every valid token takes the fused group whose centroid is nearest (same metric
   as K-Means), which makes the regions non-overlapping. Regions with fewer than
   ``min_region_patches`` tokens are dropped (their tokens get no region, -1), and at most
   ``max_regions`` regions are kept, largest first; region ids are 0..R-1 by decreasing size.
4. ``fuse_labels`` writes pseudo ids after the seen ids on pixels whose label is ignore.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ....utils.precision import without_autocast
from ...segments import segment_means
from .fusion import FUSION_MODES, fuse_masks
from .kmeans import METRICS, kmeans, window_seeds


class PseudoRegions(NamedTuple):
    region_map: torch.Tensor  # B x h x w long, region id or -1 (no region)
    centroids: torch.Tensor  # B x R x C, mean teacher token per region (unit norm for cosine)
    sizes: torch.Tensor  # B x R float, tokens per region
    valid: torch.Tensor  # B x R bool


class FusedLabels(NamedTuple):
    labels: torch.Tensor  # B x H x W long: seen ids, num_seen + pseudo id, or the ignore value
    num_pseudo: torch.Tensor  # B long
    pseudo_region: torch.Tensor  # B x R long: region id behind pseudo id q (-1 beyond num_pseudo)


class PseudoLabeler:
    """Multi-scale K-Means + mask fusion + partition on teacher patch tokens (no parameters)."""

    def __init__(
        self,
        window_sizes=(2, 4, 8),
        iters: int = 10,
        metric: str = "cosine",
        threshold: float = 0.9,
        fusion_mode: str = "agglomerative",
        min_region_patches: int = 1,
        max_regions: int = 64,
    ):
        if metric not in METRICS:
            raise ValueError(f"K-Means metric must be one of {METRICS}, got '{metric}'")
        if fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got '{fusion_mode}'")
        if not window_sizes or min(window_sizes) < 1:
            raise ValueError(f"window sizes must be positive integers, got {window_sizes}")
        self.window_sizes = tuple(int(w) for w in window_sizes)
        self.iters = int(iters)
        self.metric = metric
        self.threshold = float(threshold)
        self.fusion_mode = fusion_mode
        self.min_region_patches = int(min_region_patches)
        self.max_regions = int(max_regions)

    @torch.no_grad()
    @without_autocast
    def cluster_scales(
        self, tokens: torch.Tensor, token_valid: torch.Tensor | None = None, window_sizes=None
    ):
        """K-Means per window size on B x C x h x w tokens -> list of KMeansResult, one per
        window size (default ``self.window_sizes``). Each scale depends on its window size
        alone, so a sweep clusters every size once and re-fuses subsets of the results."""
        b, c, h, w = tokens.shape
        x = tokens.float()
        if self.metric == "cosine":
            x = F.normalize(x, dim=1)
        flat = x.flatten(2).transpose(1, 2).contiguous()  # once for all scales
        tv = None if token_valid is None else token_valid.reshape(b, h * w)
        results = []
        for win in self.window_sizes if window_sizes is None else window_sizes:
            seeds, seed_valid = window_seeds(x, win, token_valid)
            results.append(kmeans(flat, seeds, seed_valid, tv, self.iters, self.metric))
        return results

    @torch.no_grad()
    @without_autocast
    def __call__(
        self, tokens: torch.Tensor, token_valid: torch.Tensor | None = None
    ) -> PseudoRegions:
        """tokens: B x C x h x w teacher patch tokens; token_valid: B x h x w bool (padding)."""
        return self.regions_from_clusters(
            self.cluster_scales(tokens, token_valid), tokens, token_valid
        )

    @torch.no_grad()
    @without_autocast
    def regions_from_clusters(
        self,
        results,
        tokens: torch.Tensor,
        token_valid: torch.Tensor | None = None,
        threshold: float | None = None,
    ) -> PseudoRegions:
        """Mask fusion at lambda = ``threshold`` (default ``self.threshold``) and the partition,
        on the K-Means ``results`` of ``cluster_scales``: a sweep over lambda clusters once."""
        b, c, h, w = tokens.shape
        fused = fuse_masks(
            [(r.centroids, r.counts, r.valid) for r in results],
            self.threshold if threshold is None else float(threshold),
            self.fusion_mode,
            self.metric,
        )
        x = tokens.float().flatten(2).transpose(1, 2)
        if self.metric == "cosine":
            x = F.normalize(x, dim=-1)
        tv = (
            torch.ones(b, h * w, dtype=torch.bool, device=x.device)
            if token_valid is None
            else token_valid.reshape(b, h * w)
        )
        # partition: nearest fused centroid per token, over the valid groups only (compacted
        # to the front: fusion usually leaves a few dozen of the hundreds of input masks)
        keep_first = torch.sort(fused.valid.float(), dim=1, descending=True, stable=True)
        n_groups = max(int(fused.valid.sum(1).max().item()), 1)
        pick = keep_first.indices[:, :n_groups]
        groups = fused.centroids.gather(1, pick.unsqueeze(-1).expand(b, n_groups, c))
        group_valid = fused.valid.gather(1, pick)
        if self.metric == "cosine":
            groups = F.normalize(groups, dim=-1)
            scores = torch.bmm(x, groups.transpose(1, 2))
        else:
            scores = 2 * torch.bmm(x, groups.transpose(1, 2)) - (groups * groups).sum(-1)[:, None]
        scores = scores.masked_fill(~group_valid.unsqueeze(1), float("-inf"))
        group_of = scores.argmax(dim=-1)
        usable = tv & group_valid.any(dim=1, keepdim=True)
        group_of = group_of.masked_fill(~usable, -1)
        g = groups.shape[1]
        _, sizes = segment_means(x, group_of, g)
        # keep regions >= min size, largest first, at most max_regions
        keep = sizes >= max(self.min_region_patches, 1)
        order = torch.sort(sizes.masked_fill(~keep, -1.0), dim=1, descending=True, stable=True)[1]
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(g, device=x.device).expand(b, g)
        )
        region_of_group = torch.where(keep & (rank < self.max_regions), rank, -1)
        region_of_group = torch.cat([region_of_group, region_of_group.new_full((b, 1), -1)], 1)
        region = region_of_group.gather(1, group_of.masked_fill(group_of < 0, g))  # B x N
        r = self.max_regions
        centroids, counts = segment_means(x, region, r)
        if self.metric == "cosine":
            centroids = F.normalize(centroids, dim=-1)
        return PseudoRegions(
            region_map=region.reshape(b, h, w),
            centroids=centroids,
            sizes=counts,
            valid=counts > 0,
        )


@torch.no_grad()
@without_autocast
def fuse_labels(
    labels: torch.Tensor,
    region_map: torch.Tensor,
    num_seen: int,
    valid_mask: torch.Tensor | None = None,
    num_regions: int | None = None,
    max_seen_fraction: float = 1.0,
    ignore_value: int = 255,
    seen_halo_radius: int = 0,
) -> FusedLabels:
    """Ground truth where labelled, ``num_seen + pseudo id`` on ignored pixels inside a region.

    Args:
        labels: B x H x W long, seen ids 0..num_seen-1 and ``ignore_value`` (incl. unseen
            classes).
        region_map: B x h' x w' long region ids (-1 = none); resized to H x W by nearest
            neighbour (pixel-centre aligned: 'nearest-exact').
        valid_mask: B x H x W bool, False on padding: those pixels become ignore_value.
        num_regions: size of the region id space (default: max id + 1, a host sync).
        max_seen_fraction: a region whose valid pixels carry a seen label for MORE than this
            fraction is taken to be (the halo of) a seen object and gives no pseudo id; 1.0
            (default) disables the check, as in the method.

    Only regions that cover at least one ignored valid pixel get a pseudo id; ids are compact
    per image (0..num_pseudo-1, in region id order, i.e. by decreasing region size).
    """
    b, hh, ww = labels.shape
    if num_regions is None:
        num_regions = int(region_map.max().item()) + 1 if region_map.numel() else 0
    num_regions = max(int(num_regions), 0)
    up = F.interpolate(region_map[:, None].float(), size=(hh, ww), mode="nearest-exact")
    up = up[:, 0].long()
    valid = torch.ones_like(labels, dtype=torch.bool) if valid_mask is None else valid_mask.bool()
    ignored = (labels == ignore_value) & valid & (up >= 0)
    if seen_halo_radius > 0:
        r = int(seen_halo_radius)
        seen = (valid & (labels != ignore_value)).unsqueeze(1).float()
        halo = F.max_pool2d(seen, 2 * r + 1, stride=1, padding=r)[:, 0] > 0
        ignored = ignored & ~halo
    idx = (up + 1).clamp(0, num_regions).flatten(1)  # 0 = no region
    zeros = torch.zeros(b, num_regions + 1, device=labels.device)
    cover = zeros.scatter_add(1, idx, ignored.flatten(1).float())[:, 1:]
    present = cover > 0
    if max_seen_fraction < 1.0:
        seen_px = valid & (labels != ignore_value)
        n_valid = zeros.scatter_add(1, idx, valid.flatten(1).float())[:, 1:]
        n_seen = zeros.scatter_add(1, idx, seen_px.flatten(1).float())[:, 1:]
        present &= n_seen <= max_seen_fraction * n_valid
    pseudo_of_region = torch.where(present, present.long().cumsum(1) - 1, -1)
    num_pseudo = present.long().sum(1)
    lookup = torch.cat([pseudo_of_region.new_full((b, 1), -1), pseudo_of_region], dim=1)
    pid = lookup.gather(1, idx).view(b, hh, ww)
    fused = torch.where(ignored & (pid >= 0), num_seen + pid, labels)
    fused = torch.where(valid, fused, ignore_value)
    # inverse map pseudo id -> region id (padding -1)
    pseudo_region = torch.full((b, num_regions + 1), -1, dtype=torch.long, device=labels.device)
    region_ids = torch.arange(num_regions, device=labels.device).expand(b, num_regions)
    dest = torch.where(present, pseudo_of_region, num_regions)  # absent -> dump slot
    pseudo_region.scatter_(1, dest, region_ids)
    pseudo_region = pseudo_region[:, :num_regions]
    pseudo_region = torch.where(
        torch.arange(num_regions, device=labels.device)[None] < num_pseudo[:, None],
        pseudo_region,
        -1,
    )
    return FusedLabels(labels=fused, num_pseudo=num_pseudo, pseudo_region=pseudo_region)
