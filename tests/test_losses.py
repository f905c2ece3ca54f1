import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from clipzss_d2.modeling.losses import segmentation_losses


def example(seed=0, b=2, k=4, h=3, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, k, (b, h, w), generator=g)
    targets[torch.rand(b, h, w, generator=g) < 0.3] = 255
    return logits.float(), targets


def loop_reference(logits, targets, class_valid, alpha=0.25, gamma=2.0):
    """CE, focal (via torchvision) and dice with explicit loops over images/classes/pixels."""
    b, k, h, w = logits.shape
    ce_sum, ce_n = 0.0, 0
    masks_focal, masks_dice = [], []
    for i in range(b):
        ok = [j for j in range(k) if class_valid[i, j]]
        # pixels whose target class is invalid count as ignored (documented rule)
        pix = [(r, c) for r in range(h) for c in range(w) if int(targets[i, r, c]) in ok]
        for r, c in pix:
            t = int(targets[i, r, c])
            zs = [float(logits[i, j, r, c]) for j in ok]
            m = max(zs)
            lse = m + math.log(sum(math.exp(z - m) for z in zs))
            ce_sum += lse - float(logits[i, t, r, c])
            ce_n += 1
        if not pix:
            continue
        for j in ok:
            xs = torch.stack([logits[i, j, r, c] for r, c in pix])
            ys = torch.tensor([1.0 if targets[i, r, c] == j else 0.0 for r, c in pix])
            fl = sigmoid_focal_loss(xs, ys, alpha=alpha, gamma=gamma, reduction="none")
            masks_focal.append(float(fl.mean()))
            s = [1 / (1 + math.exp(-float(v))) for v in xs]
            inter = sum(a * bb for a, bb in zip(s, ys.tolist()))
            masks_dice.append(1 - (2 * inter + 1) / (sum(s) + float(ys.sum()) + 1))
    return (
        ce_sum / max(ce_n, 1),
        sum(masks_focal) / max(len(masks_focal), 1),
        sum(masks_dice) / max(len(masks_dice), 1),
    )


def test_against_independent_computation():
    logits, targets = example()
    out = segmentation_losses(logits, targets, None, 1.0, 1.0, 1.0, 0.25, 2.0, 1.0)
    ce, fl, dice = loop_reference(logits, targets, torch.ones(2, 4, dtype=torch.bool))
    assert out["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["loss_focal"].item() == pytest.approx(fl, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


def test_weights_applied():
    logits, targets = example(seed=1)
    base = segmentation_losses(logits, targets, None, 1.0, 1.0, 1.0, 0.25, 2.0, 1.0)
    out = segmentation_losses(logits, targets, None, 2.0, 0.5, 100.0, 0.25, 2.0, 3.0)
    assert out["loss_ce"].item() == pytest.approx(2 * base["loss_ce"].item(), rel=1e-6)
    assert out["loss_focal"].item() == pytest.approx(50 * base["loss_focal"].item(), rel=1e-6)
    assert out["loss_dice"].item() == pytest.approx(1.5 * base["loss_dice"].item(), rel=1e-6)


def test_class_valid_and_empty_image():
    logits, targets = example(seed=2, b=3)
    targets[2] = 255  # an image without labelled pixels contributes no masks
    class_valid = torch.tensor([[True, True, True, False], [True, True, False, False], [True] * 4])
    targets[0, 0, 0] = 3  # targets an invalid class
    out = segmentation_losses(logits, targets, class_valid, 1.0, 1.0, 1.0, 0.4, 1.5, 1.0)
    ce, fl, dice = loop_reference(logits, targets, class_valid, alpha=0.4, gamma=1.5)
    full = segmentation_losses(logits, targets, None, 1.0, 1.0, 1.0, 0.4, 1.5, 1.0)
    assert full["loss_ce"].item() != pytest.approx(ce, rel=1e-3)  # the mask matters
    assert out["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["loss_focal"].item() == pytest.approx(fl, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


def test_all_ignored_is_finite_and_differentiable():
    logits, targets = example()
    logits.requires_grad_(True)
    targets[:] = 255
    out = segmentation_losses(logits, targets)
    total = sum(out.values())
    assert all(v.item() == 0.0 for v in out.values())
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_gradients_finite_with_masked_channels_half_precision_logits():
    logits, targets = example(seed=3)
    logits = logits.half().requires_grad_(True)
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 3] = False
    out = segmentation_losses(logits, targets, valid)
    sum(out.values()).backward()
    assert torch.isfinite(logits.grad.float()).all()
    assert logits.grad[1, 3].abs().max() == 0  # masked channel gets no gradient
