"""Segmentation losses on (fused) labels: softmax CE + ZegCLIP's non-mutually-exclusive loss.

CE makes classes compete per pixel; the NEL part (per-class sigmoid focal + dice on one-hot
masks) scores every class independently, which ZegCLIP found to transfer better to unseen
classes. Pseudo classes vary per image, hence the per-image ``class_valid`` mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255
_MASKED_LOGIT = -1e4  # finite so CE stays finite; sigmoid/softmax give it ~0 probability


def segmentation_losses(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_valid: torch.Tensor | None = None,
    ce_weight: float = 1.0,
    nel_weight: float = 1.0,
    focal_weight: float = 100.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    dice_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Weighted losses {"loss_ce", "loss_focal", "loss_dice"} (sum them for the total).

    Args:
        logits: B x K x H x W, already at the resolution of ``targets``.
        targets: B x H x W class ids, 255 = ignore.
        class_valid: B x K bool; False channels (e.g. padded pseudo classes) get a large
            negative logit and are left out of focal/dice; pixels targeting them are ignored.

    Reductions, with P_b = the non-ignored pixels of image b and M = the valid (b, k) pairs
    whose image has at least one non-ignored pixel:
        loss_ce    = ce_weight * sum over all non-ignored pixels of -log softmax / their count
        loss_focal = nel_weight * focal_weight * mean over (b,k) in M of
                     [ mean over p in P_b of sigmoid_focal(x_bkp, y_bkp; alpha, gamma) ]
        loss_dice  = nel_weight * dice_weight * mean over (b,k) in M of
                     1 - (2 sum_p s*y + 1) / (sum_p s + sum_p y + 1),  s = sigmoid(x), p in P_b
    with y = one-hot(target) (ZegCLIP's per-mask mean, smoothing 1; classes absent from an image
    keep their all-zero mask, so dice pushes their probabilities down). Each term is 0 (on the
    graph) when nothing is left to average.
    """
    b, k, h, w = logits.shape
    if targets.shape != (b, h, w):
        raise ValueError(f"targets {tuple(targets.shape)} must be {(b, h, w)} (resize logits)")
    x = logits.float()
    t = targets.long()
    if class_valid is None:
        class_valid = torch.ones(b, k, dtype=torch.bool, device=x.device)
    else:
        class_valid = class_valid.bool()
        x = torch.where(class_valid[:, :, None, None], x, torch.full_like(x, _MASKED_LOGIT))
        valid_t = class_valid.gather(1, t.clamp(0, k - 1).flatten(1)).view_as(t)
        t = torch.where(valid_t | (t == IGNORE), t, IGNORE)
    pix = t != IGNORE  # B x H x W
    zero = x.sum() * 0.0
    out = {}

    n_pix = pix.sum()
    if ce_weight:
        ce = F.cross_entropy(x, t, ignore_index=IGNORE, reduction="sum")
        out["loss_ce"] = ce_weight * ce / n_pix.clamp(min=1)
    else:
        out["loss_ce"] = zero

    if not (nel_weight and (focal_weight or dice_weight)):
        out["loss_focal"] = zero
        out["loss_dice"] = zero
        return out

    pixf = pix.unsqueeze(1).to(x.dtype)  # B x 1 x H x W
    y = F.one_hot(t.clamp(0, k - 1), k).permute(0, 3, 1, 2).to(x.dtype) * pixf
    per_image_pix = pixf.flatten(1).sum(1)  # B
    masks = class_valid & (per_image_pix > 0).unsqueeze(1)  # B x K
    n_masks = masks.sum().clamp(min=1)
    prob = torch.sigmoid(x)

    if focal_weight:
        # one-hot targets: p_t and alpha_t are selections, not arithmetic (memory-bound op count)
        is_pos = y.bool()
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        fl = bce * torch.where(is_pos, 1 - prob, prob).pow(focal_gamma)
        if focal_alpha >= 0:
            fl = fl * torch.where(is_pos, focal_alpha, 1 - focal_alpha)
        per_mask = (fl * pixf).flatten(2).sum(-1) / per_image_pix.clamp(min=1).unsqueeze(1)
        out["loss_focal"] = nel_weight * focal_weight * (per_mask * masks).sum() / n_masks
    else:
        out["loss_focal"] = zero

    if dice_weight:
        s = prob * pixf
        inter = (s * y).flatten(2).sum(-1)
        denom = s.flatten(2).sum(-1) + y.flatten(2).sum(-1)
        dice = 1 - (2 * inter + 1) / (denom + 1)
        out["loss_dice"] = nel_weight * dice_weight * (dice * masks).sum() / n_masks
    else:
        out["loss_dice"] = zero
    return out
