"""PLM (Pixel Learning Module): learn from the ignored area, where unseen objects live.

Pseudo regions on ignored pixels become extra, nameless classes ("potential classes") whose
classifier weights (prototypes) come from the synthesizer (or, with it off, from the teacher's
own region centroids). PLM returns the fused targets, the prototypes and their validity; the
model classifies over [seen text; prototypes] and the criterion trains the student over
seen + pseudo classes, so unseen objects stop being pushed towards seen classes or left
unconstrained.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ....errors import UserInputError
from ....utils.precision import at_least_float32, without_autocast
from ..criterion import mean_over_processes
from .pseudo_labels import FusedLabels, PseudoLabeler, PseudoRegions, fuse_labels
from .synthesizer import PseudoWeightSynthesizer, region_centroids


def check_pseudo_ids(num_seen: int, max_regions: int, ignore_value: int) -> None:
    """Pseudo ids are ``num_seen .. num_seen + max_regions - 1``: one equal to the ignore value
    would silently turn its region into ignored pixels (192-254 seen classes with 64 regions)."""
    if num_seen <= ignore_value < num_seen + max_regions:
        raise UserInputError(
            f"{num_seen} seen classes + MODEL.CLIPZSS.PLM.MAX_REGIONS {max_regions} pseudo ids "
            f"would reach the ignore value {ignore_value}: set MODEL.CLIPZSS.PLM.MAX_REGIONS to "
            f"at most {ignore_value - num_seen}."
        )


class PseudoTargets(NamedTuple):
    regions: PseudoRegions  # the teacher's fused regions (region_map on the token grid)
    fused: FusedLabels  # labels B x H x W: seen ids, S + pseudo id, ignore


def labels_on_grid(labels: torch.Tensor, grid) -> torch.Tensor:
    """B x H x W ids resized to ``grid`` (h, w) by pixel-centre nearest neighbour: the cell's
    id, as the synthesizer's centroids and the teacher's token means read it."""
    small = F.interpolate(labels[:, None].float(), size=tuple(grid), mode="nearest-exact")
    return small[:, 0].long()


def drop_off_grid(
    labels: torch.Tensor, num_seen: int, grid: tuple[int, int], ignore_value: int
) -> torch.Tensor:
    """Pseudo ids absent from ``labels`` resized to ``grid`` (nearest-exact, as the synthesizer's
    centroids see them) -> ignore_value: such a region has no centroid, hence no prototype."""
    b = labels.shape[0]
    is_pseudo = (labels >= num_seen) & (labels != ignore_value)
    if not bool(is_pseudo.any()):
        return labels
    small = labels_on_grid(labels, grid)
    q = int(labels[is_pseudo].max().item()) - num_seen + 1
    on_grid = (small >= num_seen) & (small != ignore_value)
    slot = torch.where(on_grid, small - num_seen, q).flatten(1)
    present = (
        torch.zeros(b, q + 1, device=labels.device).scatter_add_(
            1, slot, torch.ones_like(slot, dtype=torch.float)
        )[:, :q]
        > 0
    )
    kept = present.gather(1, (labels - num_seen).clamp(0, q - 1).flatten(1)).view_as(labels)
    return torch.where(is_pseudo & ~kept, ignore_value, labels)


class PLMOutput(NamedTuple):
    targets: torch.Tensor  # B x H x W fused labels (seen ids, S + pseudo id, ignore)
    prototypes: torch.Tensor  # B x Q x C pseudo classifier weights, L2-normalised
    pseudo_valid: torch.Tensor  # B x Q bool: pseudo class q of image b exists
    losses: dict  # {"loss_bce": unweighted L_bce} when the synthesizer is on (model weighs)


@without_autocast
def bce_prototype_loss(
    protos_seen: torch.Tensor, present: torch.Tensor, text_seen: torch.Tensor, scale
) -> torch.Tensor:
    """L_bce: each present seen prototype should match its own class's text embedding only.

    For image b and seen class s present in b: z = scale * P_bs . T^T (S logits), target =
    one-hot(s); loss_bs = mean over the S classes of sigmoid BCE(z, target). L_bce = sum of
    loss_bs over present (b, s) / number of present (b, s), averaged over processes (0 when none; still on the graph so
    every synthesizer parameter gets a gradient, which DDP needs).
    """
    b, s, _ = protos_seen.shape
    z = scale * torch.einsum("bqc,sc->bqs", protos_seen.float(), text_seen.float())
    target = torch.eye(s, device=z.device, dtype=z.dtype).expand(b, s, s)
    per = F.binary_cross_entropy_with_logits(z, target, reduction="none").mean(dim=-1)
    weight = present.to(per.dtype)
    return (per * weight).sum() / mean_over_processes(weight.sum()).clamp(min=1)


SYNTH_QUERIES = ("student", "teacher", "both")


def teacher_region_means(
    targets: torch.Tensor, teacher, num_classes: int, ignore_value: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised mean of the teacher's normalised patch tokens over each class id of ``targets``.

    targets: B x H x W ids (seen, S + pseudo, ignore), resized nearest-exact onto the teacher's
    token grid; tokens of image padding are left out. Returns B x K x C float32 unit means
    (zero where absent) and B x K bool presence, as ``region_centroids`` does for the student.
    """
    tokens = F.normalize(teacher.patch_embed.detach().float(), dim=1)
    small = labels_on_grid(targets, tokens.shape[-2:])
    token_valid = getattr(teacher, "token_valid", None)
    if token_valid is not None:
        small = torch.where(token_valid.bool(), small, ignore_value)
    means, present = region_centroids(tokens, small, num_classes)
    return F.normalize(means, dim=-1), present


class PixelLearningModule(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        embed_dim: int,
        pseudo_labels: bool = True,
        synthesizer: bool = True,
        window_sizes=(2, 4, 8),
        kmeans_iters: int = 10,
        kmeans_metric: str = "cosine",
        fusion_threshold: float = 0.9,
        fusion_mode: str = "agglomerative",
        min_region_patches: int = 1,
        max_regions: int = 64,
        max_seen_fraction: float = 1.0,
        seen_halo_radius: int = 0,
        pseudo_logit_scale: float = 0.0,
        synth_layers: int = 2,
        synth_heads: int = 8,
        synth_use_patch_tokens: bool = False,
        synth_query: str = "student",
        teacher_prototype_mix: float = 0.0,
        ignore_value: int = 255,
    ):
        super().__init__()
        self.use_pseudo_labels = bool(pseudo_labels)
        self.labeler = (
            PseudoLabeler(
                window_sizes=window_sizes,
                iters=kmeans_iters,
                metric=kmeans_metric,
                threshold=fusion_threshold,
                fusion_mode=fusion_mode,
                min_region_patches=min_region_patches,
                max_regions=max_regions,
            )
            if self.use_pseudo_labels
            else None
        )
        self.synthesizer = (
            PseudoWeightSynthesizer(
                embed_dim, synth_layers, synth_heads, use_patch_tokens=synth_use_patch_tokens
            )
            if synthesizer
            else None
        )
        if synth_query not in SYNTH_QUERIES:
            raise UserInputError(
                f"MODEL.CLIPZSS.PLM.SYNTH_QUERY {synth_query!r} is not one of "
                f"{', '.join(SYNTH_QUERIES)}: pick one of them."
            )
        self.synth_query = synth_query
        if not 0.0 <= teacher_prototype_mix <= 1.0:
            raise UserInputError(
                f"MODEL.CLIPZSS.PLM.TEACHER_PROTOTYPE_MIX {teacher_prototype_mix} is outside "
                "[0, 1]: 0 = the synthesized prototype (the paper), 1 = the teacher's centroid."
            )
        self.teacher_prototype_mix = float(teacher_prototype_mix)
        synth_only = {
            "SYNTH_QUERY": synth_query != "student",
            "TEACHER_PROTOTYPE_MIX": self.teacher_prototype_mix > 0,
            "SYNTH_USE_PATCH_TOKENS": bool(synth_use_patch_tokens),
        }
        if self.synthesizer is None and any(synth_only.values()):
            keys = ", ".join(f"MODEL.CLIPZSS.PLM.{k}" for k, on in synth_only.items() if on)
            raise UserInputError(
                f"{keys} set the synthesizer, but MODEL.CLIPZSS.PLM.SYNTHESIZER is False: "
                "set SYNTHESIZER True, or leave them at their defaults."
            )
        self.max_seen_fraction = float(max_seen_fraction)
        self.seen_halo_radius = int(seen_halo_radius)
        self.pseudo_logit_scale = float(pseudo_logit_scale)
        self.ignore_value = int(ignore_value)

    @classmethod
    def from_config(cls, cfg):
        p = cfg.MODEL.CLIPZSS.PLM
        return {
            "embed_dim": cfg.MODEL.CLIPZSS.EMBED_DIM,
            "pseudo_labels": p.PSEUDO_LABELS,
            "synthesizer": p.SYNTHESIZER,
            "window_sizes": tuple(p.WINDOW_SIZES),
            "kmeans_iters": p.KMEANS_ITERS,
            "kmeans_metric": p.KMEANS_METRIC,
            "fusion_threshold": p.FUSION_THRESHOLD,
            "fusion_mode": p.FUSION_MODE,
            "min_region_patches": p.MIN_REGION_PATCHES,
            "max_regions": p.MAX_REGIONS,
            "max_seen_fraction": p.REGION_MAX_SEEN_FRACTION,
            "seen_halo_radius": p.SEEN_HALO_RADIUS,
            "pseudo_logit_scale": p.PSEUDO_LOGIT_SCALE,
            "synth_layers": p.SYNTH_LAYERS,
            "synth_heads": p.SYNTH_HEADS,
            "synth_use_patch_tokens": p.SYNTH_USE_PATCH_TOKENS,
            "synth_query": p.SYNTH_QUERY,
            "teacher_prototype_mix": p.TEACHER_PROTOTYPE_MIX,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    @torch.no_grad()
    def teacher_clusters(self, teacher, window_sizes=None) -> list:
        """K-Means on the teacher's patch tokens, one result per window size (default the
        config's): what ``pseudo_targets`` fuses."""
        tokens = teacher.patch_embed.detach().float()
        token_valid = getattr(teacher, "token_valid", None)
        return self.labeler.cluster_scales(tokens, token_valid, window_sizes)

    @torch.no_grad()
    def pseudo_targets(
        self,
        targets: torch.Tensor,
        teacher,
        valid: torch.Tensor,
        num_seen: int,
        grid: tuple[int, int] | None = None,
        *,
        clusters=None,
        threshold: float | None = None,
    ) -> PseudoTargets:
        """The pseudo labels PLM trains with: teacher regions fused into the seen targets.

        ``forward`` and tools/check_teacher.py both call this, so a calibration measures
        exactly what training uses. targets: B x H x W seen ids / ignore (ignore on padding);
        valid: B x H x W real pixels; grid: the student's embedding grid (h, w) when the
        synthesizer is on: a pseudo id that no grid cell holds has no centroid, so its pixels
        become ignore here rather than after the synthesizer. ``clusters`` (the K-Means results
        of ``labeler.cluster_scales``, one per window size) and ``threshold`` (lambda) let a
        sweep cluster once and re-fuse; by default both come from the config.
        """
        check_pseudo_ids(num_seen, self.labeler.max_regions, self.ignore_value)
        tokens = teacher.patch_embed.detach().float()
        token_valid = getattr(teacher, "token_valid", None)
        if clusters is None:
            clusters = self.teacher_clusters(teacher)
        regions = self.labeler.regions_from_clusters(clusters, tokens, token_valid, threshold)
        fused = fuse_labels(
            targets,
            regions.region_map,
            num_seen,
            valid,
            num_regions=self.labeler.max_regions,
            max_seen_fraction=self.max_seen_fraction,
            ignore_value=self.ignore_value,
            seen_halo_radius=self.seen_halo_radius,
        )
        if grid is not None:
            fused = fused._replace(
                labels=drop_off_grid(fused.labels, num_seen, grid, self.ignore_value)
            )
        return PseudoTargets(regions, fused)

    def _teacher_queries(self, cents, present, targets, teacher, num_classes):
        """The synthesizer's queries under SYNTH_QUERY "teacher" or "both".

        "teacher": a class of the image needs a cell on both grids (the student's for its
        pixels' logits, the teacher's for its query), else it has no prototype. "both": the
        normalised sum; a class absent on the teacher's grid keeps the student's centroid alone.
        """
        t_cents, t_present = teacher_region_means(targets, teacher, num_classes, self.ignore_value)
        if self.synth_query == "teacher":
            return t_cents, present & t_present
        s_cents = F.normalize(at_least_float32(cents), dim=-1)
        return s_cents + t_cents.to(s_cents.dtype), present  # absent: zero rows

    def forward(
        self,
        dense: torch.Tensor,
        labels: torch.Tensor,
        text_seen: torch.Tensor,
        teacher,
        logit_scale,
        valid_mask: torch.Tensor | None = None,
    ) -> PLMOutput:
        """
        Args:
            dense: B x C x h x w student embeddings R, L2-normalised per pixel.
            labels: B x H x W seen ids 0..S-1 / ignore_value, at input resolution.
            text_seen: S x C normalised text embeddings of the seen classes (constants).
            teacher: TeacherOutput (cls_embed B x C, patch_embed B x C x h' x w', token_valid
                B x h' x w' or None); may be None only when both switches are off. Tokens
                that are not valid (padding) are never clustered nor attended to.
            logit_scale: alpha, the multiplier itself (not its log); float or tensor. Only
                L_bce uses it, detached, so only the segmentation losses tune it.
            valid_mask: B x H x W bool, False on padding.

        Returns PLMOutput(targets B x H x W, prototypes B x Q x C in ``dense``'s dtype,
        pseudo_valid B x Q, losses). Q = the largest number of pseudo classes of an image in the
        batch (one host sync); pseudo class q of an image is invalid when q >= its number of
        pseudo classes or it has no prototype, and pixels targeting it are set to ignore_value.
        Pseudo class q has target id S + q; the model classifies it with ``prototypes[:, q]``
        scaled by beta (``pseudo_logit_scale``, alpha when 0), and the criterion masks the
        invalid ones.
        """
        b, c, h, w = dense.shape
        s = text_seen.shape[0]
        device = dense.device
        valid = (
            torch.ones_like(labels, dtype=torch.bool) if valid_mask is None else valid_mask.bool()
        )
        ignore = self.ignore_value
        targets = torch.where(valid, labels.long(), ignore)
        token_valid = getattr(teacher, "token_valid", None) if teacher is not None else None
        losses = {}

        q = 0
        num_pseudo = torch.zeros(b, dtype=torch.long, device=device)
        if self.labeler is not None:
            grid = (h, w) if self.synthesizer is not None else None
            regions, fused = self.pseudo_targets(targets, teacher, valid, s, grid)
            targets = fused.labels
            num_pseudo = fused.num_pseudo
            q = int(num_pseudo.max().item()) if b > 0 else 0
        pseudo_valid = torch.arange(q, device=device)[None] < num_pseudo[:, None]

        teacher_protos = None
        if q > 0 and (self.synthesizer is None or self.teacher_prototype_mix > 0):
            region = fused.pseudo_region[:, :q].clamp(min=0)
            gathered = regions.centroids.gather(
                1, region[..., None].expand(b, q, regions.centroids.shape[-1])
            )
            teacher_protos = F.normalize(gathered, dim=-1)

        protos_pseudo = teacher_protos
        if self.synthesizer is not None:
            cents, present = region_centroids(dense, labels_on_grid(targets, (h, w)), s + q)
            if self.synth_query != "student":
                cents, present = self._teacher_queries(cents, present, targets, teacher, s + q)
            protos = self.synthesizer(
                cents, present, teacher.cls_embed, teacher.patch_embed, token_valid
            )
            scale = logit_scale.detach() if torch.is_tensor(logit_scale) else logit_scale
            losses["loss_bce"] = bce_prototype_loss(protos[:, :s], present[:, :s], text_seen, scale)
            protos_pseudo = protos[:, s:]
            if teacher_protos is not None:
                mix = self.teacher_prototype_mix
                protos_pseudo = (1 - mix) * protos_pseudo + mix * teacher_protos
            # a pseudo region too small to survive R's coarser grid has no centroid
            pseudo_valid = pseudo_valid & present[:, s:]

        prototypes = dense.new_zeros(b, 0, c)
        if q > 0:
            prototypes = F.normalize(protos_pseudo, dim=-1).to(dense.dtype)
            pid = (targets - s).clamp(0, q - 1)
            is_pseudo = (targets >= s) & (targets != ignore)
            ok = pseudo_valid.gather(1, pid.flatten(1)).view_as(targets)
            targets = torch.where(is_pseudo & ~ok, ignore, targets)
        return PLMOutput(
            targets=targets, prototypes=prototypes, pseudo_valid=pseudo_valid, losses=losses
        )
