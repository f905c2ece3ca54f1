"""The one CLIP-ZSS criterion: every loss term, each weight in one place (``weight_dict``).

Terms (logged under these names by the trainer):
  loss_ce     softmax cross-entropy over seen + pseudo classes on the fused labels;
  loss_focal  sigmoid focal part of ZegCLIP's non-mutually-exclusive loss (NEL);
  loss_dice   dice part of NEL;
  loss_glm    GLM's InfoNCE (computed by GlobalLearningModule, passed in as an aux term);
  loss_bce    the synthesizer's L_bce (computed by PixelLearningModule, passed in as an aux term).
The criterion returns them unweighted; the model applies ``weight_dict`` in one loop.

NEL normalisation ("zegclip", the default and the paper setting, as ZegCLIP's
``SegPlusCriterion``): with y = one-hot(target) (all zero on ignored pixels) and M = the number
of (image, class) pairs whose class is present in the image's labels (averaged over processes, as every count that normalises a term here),
    focal = sum over (b, k) of [ mean over the image's pixels p of FL(x_bkp, y_bkp) ] / M
    dice  = sum over present (b, k) of [ 1 - (2 sum_p s y + 1) / (sum_p s + sum_p y + 1) ] / M
so focal sums over every class of the image (absent ones too) and averages over pixels, and dice
only scores present classes. Ignored pixels of the image count as negatives of every class, as
in ZegCLIP; padding is not image and never enters (ZegCLIP left that as a TODO).
"mean" is this project's earlier normalisation: both terms averaged over every valid (image,
class) pair, absent classes included, over labelled pixels only (focal is 10-20x weaker on
VOC/COCO with it, and absent-class dice terms dominate).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from torch import nn

NEL_NORMALIZATIONS = ("zegclip", "mean")
LOSS_RESOLUTIONS = ("feature", "input")
_MASKED_LOGIT = -1e4  # finite so CE stays finite; sigmoid/softmax give it ~0 probability


def mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    """Mean of a count over the training processes (no gradient). Normalising each process's
    sum by it makes DDP's gradient average equal the single-process loss over the global batch."""
    x = x.detach()
    if comm.get_world_size() > 1 and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / comm.get_world_size()
    return x


def weight_dict_from_config(cfg) -> dict[str, float]:
    """The loss balance: one weight per logged term (NEL's weight folded into focal and dice)."""
    z = cfg.MODEL.CLIPZSS
    weights = {
        "loss_ce": z.LOSS.CE_WEIGHT,
        "loss_focal": z.LOSS.NEL_WEIGHT * z.LOSS.FOCAL_WEIGHT,
        "loss_dice": z.LOSS.NEL_WEIGHT * z.LOSS.DICE_WEIGHT,
    }
    if z.GLM.ENABLED:
        weights["loss_glm"] = z.GLM.LOSS_WEIGHT
    if z.PLM.SYNTHESIZER:
        weights["loss_bce"] = z.PLM.BCE_WEIGHT
    return {k: float(v) for k, v in weights.items()}


class CLIPZSSCriterion(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        weight_dict: dict[str, float],
        ignore_value: int = 255,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        nel_normalization: str = "zegclip",
        resolution: str = "feature",
    ):
        """
        Args:
            weight_dict: term name -> weight, the only loss weights (the model applies them).
            ignore_value: label of pixels without a target (MODEL.SEM_SEG_HEAD.IGNORE_VALUE).
            nel_normalization: "zegclip" or "mean" (module docstring).
            resolution: "feature" (labels downsampled to the logits, nearest) or "input"
                (logits upsampled to the labels, bilinear, as ZegCLIP does).
        """
        super().__init__()
        if nel_normalization not in NEL_NORMALIZATIONS:
            raise ValueError(
                f"MODEL.CLIPZSS.LOSS.NEL_NORMALIZATION must be one of {NEL_NORMALIZATIONS}, "
                f"got {nel_normalization!r}"
            )
        if resolution not in LOSS_RESOLUTIONS:
            raise ValueError(
                f"MODEL.CLIPZSS.LOSS.RESOLUTION must be 'feature' or 'input', got {resolution!r}"
            )
        self.weight_dict = dict(weight_dict)
        self.ignore_value = int(ignore_value)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.nel_normalization = nel_normalization
        self.resolution = resolution

    @classmethod
    def from_config(cls, cfg):
        loss = cfg.MODEL.CLIPZSS.LOSS
        return {
            "weight_dict": weight_dict_from_config(cfg),
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "focal_alpha": loss.FOCAL_ALPHA,
            "focal_gamma": loss.FOCAL_GAMMA,
            "nel_normalization": loss.NEL_NORMALIZATION,
            "resolution": loss.RESOLUTION,
        }

    def forward(self, outputs: dict, targets: dict) -> dict[str, torch.Tensor]:
        """Unweighted loss terms, each named in ``weight_dict`` (the model weighs them, as
        Mask2Former's ``MaskFormer.forward`` does).

        Args:
            outputs: "pred_logits": B x K x h x w, any resolution (resized per ``resolution``);
                "pseudo_valid" (optional): B x Q bool, the last Q of the K channels are PLM's
                pseudo classes, and a False one is no class of that image (large negative
                logit; pixels targeting it are ignored); "aux_losses" (optional): raw terms
                computed by other modules ({"loss_glm": ..., "loss_bce": ...}).
            targets: "sem_seg": B x H x W class ids, ``ignore_value`` = no target;
                "image_valid" (optional): B x H x W bool, False on padding (default: all image).

        Returns {"loss_ce", "loss_focal", "loss_dice", then the aux terms in their order}.
        """
        logits = outputs["pred_logits"]
        class_valid = self.class_valid(logits, outputs.get("pseudo_valid"))
        image_valid = targets.get("image_valid")
        targets = targets["sem_seg"]
        if image_valid is None:
            image_valid = torch.ones_like(targets, dtype=torch.bool)
        if self.resolution == "input":
            logits = F.interpolate(
                logits, size=targets.shape[-2:], mode="bilinear", align_corners=False
            )
        else:
            size = logits.shape[-2:]
            both = torch.stack([targets.long(), image_valid.long()], dim=1).float()
            both = F.interpolate(both, size=size, mode="nearest-exact").long()
            targets, image_valid = both[:, 0], both[:, 1].bool()
        terms = self.segmentation_terms(logits, targets, image_valid, class_valid)
        for name, value in outputs.get("aux_losses", {}).items():
            if name not in self.weight_dict:
                raise KeyError(f"loss term {name!r} has no weight in the criterion's weight_dict")
            terms[name] = value
        return terms

    @staticmethod
    def class_valid(logits: torch.Tensor, pseudo_valid: torch.Tensor | None):
        """B x K bool: the K - Q classifier classes, then PLM's Q pseudo classes as valid as
        ``pseudo_valid`` (B x Q) says; None without pseudo classes."""
        if pseudo_valid is None:
            return None
        b, q = pseudo_valid.shape
        seen = pseudo_valid.new_ones(b, logits.shape[1] - q)
        return torch.cat([seen, pseudo_valid], dim=1)

    def segmentation_terms(self, logits, targets, image_valid, class_valid=None):
        """Unweighted {"loss_ce", "loss_focal", "loss_dice"} at the resolution of ``logits``.

        A term whose weight is 0 is not computed (0 on the graph), nor is one with nothing to
        average.
        """
        b, k, h, w = logits.shape
        if targets.shape != (b, h, w):
            raise ValueError(f"targets {tuple(targets.shape)} must be {(b, h, w)}")
        ignore = self.ignore_value
        x = logits.float()
        t = targets.long()
        t = torch.where(image_valid, t, ignore)
        if class_valid is None:
            class_valid = torch.ones(b, k, dtype=torch.bool, device=x.device)
        else:
            class_valid = class_valid.bool()
            x = torch.where(class_valid[:, :, None, None], x, torch.full_like(x, _MASKED_LOGIT))
            ok = class_valid.gather(1, t.clamp(0, k - 1).flatten(1)).view_as(t)
            t = torch.where(ok | (t == ignore), t, ignore)
        labelled = t != ignore  # B x H x W
        zero = x.sum() * 0.0
        out = {}

        if self.weight_dict.get("loss_ce", 0.0):
            ce = F.cross_entropy(
                x, t.masked_fill(~labelled, -100), ignore_index=-100, reduction="sum"
            )
            out["loss_ce"] = ce / mean_over_processes(labelled.sum().to(x.dtype)).clamp(min=1)
        else:
            out["loss_ce"] = zero

        want_focal = bool(self.weight_dict.get("loss_focal", 0.0))
        want_dice = bool(self.weight_dict.get("loss_dice", 0.0))
        if not (want_focal or want_dice):
            out["loss_focal"], out["loss_dice"] = zero, zero
            return out

        # pixels that take part: the image's pixels ("zegclip") or its labelled ones ("mean")
        pix = image_valid if self.nel_normalization == "zegclip" else labelled
        pixf = pix.unsqueeze(1).to(x.dtype)  # B x 1 x H x W
        y = F.one_hot(t.clamp(0, k - 1), k).permute(0, 3, 1, 2).to(x.dtype)
        y = y * labelled.unsqueeze(1).to(x.dtype)
        n_pix = pixf.flatten(1).sum(1)  # B
        present = class_valid & (y.flatten(2).sum(-1) > 0)  # B x K
        if self.nel_normalization == "zegclip":
            focal_pairs, dice_pairs = class_valid & (n_pix > 0).unsqueeze(1), present
            n_masks = mean_over_processes(present.sum().to(x.dtype)).clamp(min=1)
            focal_norm = dice_norm = n_masks
        else:
            focal_pairs = dice_pairs = class_valid & (n_pix > 0).unsqueeze(1)
            focal_norm = dice_norm = mean_over_processes(focal_pairs.sum().to(x.dtype)).clamp(min=1)
        prob = torch.sigmoid(x)

        if want_focal:
            is_pos = y.bool()
            bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            fl = bce * torch.where(is_pos, 1 - prob, prob).pow(self.focal_gamma)
            if self.focal_alpha >= 0:
                fl = fl * torch.where(is_pos, self.focal_alpha, 1 - self.focal_alpha)
            per_mask = (fl * pixf).flatten(2).sum(-1) / n_pix.clamp(min=1).unsqueeze(1)
            out["loss_focal"] = (per_mask * focal_pairs).sum() / focal_norm
        else:
            out["loss_focal"] = zero

        if want_dice:
            s = prob * pixf
            inter = (s * y).flatten(2).sum(-1)
            denom = s.flatten(2).sum(-1) + y.flatten(2).sum(-1)
            dice = 1 - (2 * inter + 1) / (denom + 1)
            out["loss_dice"] = (dice * dice_pairs).sum() / dice_norm
        else:
            out["loss_dice"] = zero
        return out
