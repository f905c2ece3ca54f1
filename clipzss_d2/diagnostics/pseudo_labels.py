"""Pseudo-label diagnostics: how much of the unlabelled area PLM labels, and how pure it is.

This code reads ground truth that training never sees: the training mapper writes the labels of
*every* class (`hidden_sem_seg`) only when MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS is on, and
nothing here feeds a loss or the model; it counts, without gradients. Use it to calibrate PLM
(λ, K-Means windows, the void rules) on a split with full labels, never to pick figures to report.

Per class c of the dataset (unseen classes are the interesting ones):
- share[c]: of the unlabelled image pixels whose true class is c, the fraction given a pseudo label;
- purity[c]: over the pseudo regions whose majority true class is c, the fraction of their pixels
  that are c (a region = one pseudo class of one image; void pixels count against purity);
- with ``halo_radius`` > 0, halo_share: of the unlabelled image pixels within that many pixels of a
  seen-labelled one (a seen object's rim: VOC's void ring, blurred edges), the fraction given a
  pseudo label.

tools/check_teacher.py counts with this same probe, so its figures and training's agree.
"""

from __future__ import annotations

import json
import logging
import os

import torch
import torch.nn.functional as F
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

logger = logging.getLogger(__name__)

REPORT_FILE = "pseudo_label_diagnostics.json"


class PseudoLabelProbe:
    """Accumulates coverage and purity counts of the pseudo labels PLM trains with."""

    def __init__(
        self,
        class_names: list[str],
        unseen_names: list[str],
        ignore_value: int,
        halo_radius: int = 0,
    ):
        self.class_names = list(class_names)
        self.unseen_names = [c for c in class_names if c in set(unseen_names)]
        self.ignore_value = ignore_value
        self.halo_radius = int(halo_radius)
        self.reset()

    def reset(self) -> None:
        bins = len(self.class_names) + 1  # last bin: void (ignore in the full labels)
        self.counts = {
            k: torch.zeros(bins, dtype=torch.float64)
            for k in ("unlabelled", "covered", "region_pixels", "region_majority", "regions")
        }
        # images; and unlabelled / covered pixels of the seen halo (halo_radius > 0)
        self.counts["images"] = torch.zeros(1, dtype=torch.float64)
        self.counts["halo"] = torch.zeros(2, dtype=torch.float64)

    @torch.no_grad()
    def update(
        self,
        seen_targets: torch.Tensor,
        fused_targets: torch.Tensor,
        num_seen: int,
        hidden: torch.Tensor,
        image_valid: torch.Tensor,
    ) -> dict[str, float]:
        """Count one batch; returns this batch's figures for the event storage.

        seen_targets: B x H x W seen ids / ignore, before PLM (ignore = unlabelled).
        fused_targets: B x H x W after PLM: ids >= num_seen are pseudo classes of that image.
        hidden: B x H x W dataset class ids of every class / ignore (void).
        image_valid: B x H x W bool, False on padding.
        """
        k = len(self.class_names)
        ignore = self.ignore_value
        truth = hidden.long().clone()
        truth[(truth == ignore) | (truth < 0) | (truth >= k)] = k
        unlabelled = (seen_targets == ignore) & image_valid
        pseudo = (fused_targets >= num_seen) & (fused_targets != ignore) & unlabelled
        c = self.counts
        batch_unlabelled = torch.bincount(truth[unlabelled], minlength=k + 1).double().cpu()
        batch_covered = torch.bincount(truth[pseudo], minlength=k + 1).double().cpu()
        c["unlabelled"] += batch_unlabelled
        c["covered"] += batch_covered
        c["images"] += len(truth)
        if self.halo_radius > 0:
            r = self.halo_radius
            seen = (image_valid & (seen_targets != ignore)).unsqueeze(1).float()
            halo = (F.max_pool2d(seen, 2 * r + 1, stride=1, padding=r)[:, 0] > 0) & unlabelled
            c["halo"] += torch.tensor([halo.sum().item(), (halo & pseudo).sum().item()])
        if pseudo.any():
            q = int(fused_targets[pseudo].max().item()) - num_seen + 1
            b = torch.arange(len(truth), device=truth.device)[:, None, None].expand_as(truth)
            region = b[pseudo] * q + (fused_targets[pseudo] - num_seen)
            table = torch.bincount(
                region * (k + 1) + truth[pseudo], minlength=len(truth) * q * (k + 1)
            )
            table = table.view(-1, k + 1).double()
            size = table.sum(1)
            keep = size > 0
            top, major = table[keep].max(1)
            c["region_pixels"] += torch.bincount(major, weights=size[keep], minlength=k + 1).cpu()
            c["region_majority"] += torch.bincount(major, weights=top, minlength=k + 1).cpu()
            c["regions"] += torch.bincount(major, minlength=k + 1).double().cpu()
        unseen = [self.class_names.index(n) for n in self.unseen_names]
        total = batch_unlabelled[unseen].sum()
        return {
            "pseudo/unseen_share": float(batch_covered[unseen].sum() / total) if total else 0.0,
            "pseudo/void_share": float(batch_covered[k] / batch_unlabelled[k])
            if batch_unlabelled[k]
            else 0.0,
        }

    def summary(self) -> dict:
        """Totals over every process: per class share and purity, and over the unseen classes."""
        every = comm.all_gather(self.counts) if comm.get_world_size() > 1 else [self.counts]
        counts = {key: sum(c[key] for c in every) for key in self.counts}
        names = self.class_names + ["(void)"]

        def ratio(a, b):
            return round(float(a / b), 4) if b > 0 else None

        per_class = {
            name: {
                "unlabelled_pixels": int(counts["unlabelled"][i]),
                "share": ratio(counts["covered"][i], counts["unlabelled"][i]),
                "regions": int(counts["regions"][i]),
                "purity": ratio(counts["region_majority"][i], counts["region_pixels"][i]),
            }
            for i, name in enumerate(names)
        }
        idx = [self.class_names.index(n) for n in self.unseen_names]
        images = float(counts["images"][0])
        return {
            "unseen": self.unseen_names,
            "unseen_share": ratio(counts["covered"][idx].sum(), counts["unlabelled"][idx].sum()),
            # over the regions whose majority is an unseen class
            "unseen_purity": ratio(
                counts["region_majority"][idx].sum(), counts["region_pixels"][idx].sum()
            ),
            "all_purity": ratio(counts["region_majority"].sum(), counts["region_pixels"].sum()),
            "void_share": per_class["(void)"]["share"],
            "halo_share": ratio(counts["halo"][1], counts["halo"][0]) if self.halo_radius else None,
            "halo_radius": self.halo_radius,
            "images": int(images),
            "regions_per_image": round(float(counts["regions"].sum()) / images, 2)
            if images
            else None,
            "per_class": per_class,
        }


@torch.no_grad()
def observe_batch(
    probe: PseudoLabelProbe,
    batched_inputs: list[dict],
    seen_targets: torch.Tensor,
    fused_targets: torch.Tensor,
    num_seen: int,
    image_valid: torch.Tensor,
) -> None:
    """The model's one call: the batch's hidden labels at the targets' size, counted and logged."""
    if "hidden_sem_seg" not in batched_inputs[0]:
        raise ValueError(
            "MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS is on but the batch has no hidden_sem_seg: "
            "build the training loader with ZeroShotSemSegDatasetMapper from the same config."
        )
    h, w = seen_targets.shape[-2:]
    hidden = seen_targets.new_full((len(batched_inputs), h, w), probe.ignore_value)
    for i, x in enumerate(batched_inputs):
        full = x["hidden_sem_seg"].to(hidden.device)
        hidden[i, : full.shape[0], : full.shape[1]] = full[:h, :w]
    log_batch(probe.update(seen_targets, fused_targets, num_seen, hidden, image_valid))


def format_summary(summary: dict) -> str:
    lines = ["class | unlabelled px | share with a pseudo label | regions | purity"]
    for name in summary["unseen"] + ["(void)"]:
        row = summary["per_class"][name]
        share = "-" if row["share"] is None else f"{100 * row['share']:.1f} %"
        purity = "-" if row["purity"] is None else f"{100 * row['purity']:.1f} %"
        lines.append(f"{name} | {row['unlabelled_pixels']} | {share} | {row['regions']} | {purity}")
    return "\n".join(lines)


class PseudoLabelReport(HookBase):
    """Logs each iteration's figures (TensorBoard) and writes the totals at the end of training."""

    def __init__(self, probe: PseudoLabelProbe, output_dir: str):
        self.probe = probe
        self.output_dir = output_dir

    def after_train(self):
        summary = self.probe.summary()
        if not comm.is_main_process():
            return
        path = os.path.join(self.output_dir, REPORT_FILE)
        os.makedirs(self.output_dir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(path + ".tmp", path)
        logger.info(
            "Pseudo-label diagnostics (hidden ground truth; %s):\n%s", path, format_summary(summary)
        )


def log_batch(figures: dict[str, float]) -> None:
    """Put one batch's figures in the event storage (TensorBoard / metrics.json), if any."""
    try:
        storage = get_event_storage()
    except AssertionError:  # outside a trainer (tests, notebooks)
        return
    storage.put_scalars(**figures)
