import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from clipzss_d2.config import get_clipzss_cfg
from clipzss_d2.modeling.training.criterion import CLIPZSSCriterion, weight_dict_from_config

UNIT = {"loss_ce": 1.0, "loss_focal": 1.0, "loss_dice": 1.0}


def criterion(norm="mean", alpha=0.25, gamma=2.0, **weights):
    return CLIPZSSCriterion(
        weight_dict={**UNIT, **weights},
        focal_alpha=alpha,
        focal_gamma=gamma,
        nel_normalization=norm,
    )


def run(crit, logits, targets, class_valid=None, image_valid=None, aux_losses=None):
    """The model's call: class_valid must be all True but for its last Q (pseudo) columns;
    returns the terms weighed by the criterion's weight_dict, as the model does."""
    outputs = {"pred_logits": logits, "aux_losses": aux_losses or {}}
    if class_valid is not None:
        seen = int(class_valid.all(0).long().cumprod(0).sum())
        assert class_valid[:, :seen].all()
        outputs["pseudo_valid"] = class_valid[:, seen:]
    terms = crit(outputs, {"sem_seg": targets, "image_valid": image_valid})
    return {name: crit.weight_dict[name] * value for name, value in terms.items()}


def example(seed=0, b=2, k=4, h=3, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, k, (b, h, w), generator=g)
    targets[torch.rand(b, h, w, generator=g) < 0.3] = 255
    return logits.float(), targets


def loop_reference(logits, targets, class_valid, alpha=0.25, gamma=2.0):
    """The "mean" normalisation: CE, focal (via torchvision) and dice with explicit loops over
    images/classes/pixels."""
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


def zegclip_reference(logits, targets, class_valid, image_valid, alpha=0.25, gamma=2.0):
    """ZegCLIP's SegPlusCriterion (models/losses/criterion.py) written from its published code,
    image by image, on the image's pixels only (padding cut away, as ZegCLIP's TODO intends):
    target masks are one-hot over non-ignored pixels (ignored pixels are all-zero rows);
    focal: per (image, class) mean over pixels, summed over every class, / num_masks;
    dice: over the classes present in the image's labels, summed, / num_masks;
    num_masks = number of present (image, class) pairs. Invalid class channels (padded pseudo
    classes) are no classes of the image and their pixels are ignored."""
    b, k = logits.shape[:2]
    focal_sum, dice_sum, num_masks = 0.0, 0.0, 0
    for i in range(b):
        keep = image_valid[i]
        classes = [j for j in range(k) if class_valid[i, j]]
        x = logits[i][:, keep][classes].double()  # K' x P
        t = targets[i][keep]
        t = torch.where(torch.isin(t, torch.tensor(classes)), t, 255)
        y = torch.stack([(t == j).double() for j in classes])
        if x.shape[1] == 0:
            continue
        fl = sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none")
        focal_sum += float(fl.mean(1).sum())
        present = [n for n, j in enumerate(classes) if bool((t == j).any())]
        num_masks += len(present)
        s = x[present].sigmoid()
        yy = y[present]
        dice = 1 - (2 * (s * yy).sum(-1) + 1) / (s.sum(-1) + yy.sum(-1) + 1)
        dice_sum += float(dice.sum())
    num_masks = max(num_masks, 1)
    return focal_sum / num_masks, dice_sum / num_masks


def padded_example(seed=0, b=3, k=5, h=6, w=7):
    logits, targets = example(seed=seed, b=b, k=k, h=h, w=w)
    image_valid = torch.ones(b, h, w, dtype=torch.bool)
    image_valid[1, 4:] = False
    image_valid[2, :, 5:] = False
    targets[~image_valid] = 255
    targets[0][targets[0] == 4] = 1  # class 4 absent from image 0
    class_valid = torch.ones(b, k, dtype=torch.bool)
    class_valid[2, 3:] = False  # e.g. pseudo classes image 2 does not have
    targets[2, 0, 0] = 4  # targets an invalid class: ignored
    return logits, targets, class_valid, image_valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zegclip_normalisation_against_their_published_definition(seed):
    logits, targets, class_valid, image_valid = padded_example(seed)
    out = run(criterion("zegclip"), logits, targets, class_valid, image_valid)
    fl, dice = zegclip_reference(logits, targets, class_valid, image_valid)
    assert out["loss_focal"].item() == pytest.approx(fl, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice, rel=1e-5)
    # padding is not image: its logits change nothing
    noisy = logits.clone()
    noisy[~image_valid.unsqueeze(1).expand_as(noisy)] = 50.0
    again = run(criterion("zegclip"), noisy, targets, class_valid, image_valid)
    for name in out:
        assert again[name].item() == pytest.approx(out[name].item(), rel=1e-6)


def test_zegclip_focal_is_stronger_than_the_mean_one_with_many_classes():
    """The issue's case: many classes, few present per image. The mean normalisation divides the
    focal sum by every (image, class) pair; ZegCLIP's by the present ones only."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 150, 16, 16, generator=g) * 2
    targets = torch.randint(0, 4, (2, 16, 16), generator=g)
    zeg = run(criterion("zegclip"), logits, targets)["loss_focal"].item()
    mean = run(criterion("mean"), logits, targets)["loss_focal"].item()
    assert zeg / mean > 20


def test_weights_come_from_the_config_in_one_place():
    cfg = get_clipzss_cfg()
    cfg.MODEL.CLIPZSS.LOSS.CE_WEIGHT = 2.0
    cfg.MODEL.CLIPZSS.LOSS.NEL_WEIGHT = 0.5
    cfg.MODEL.CLIPZSS.LOSS.FOCAL_WEIGHT = 100.0
    cfg.MODEL.CLIPZSS.LOSS.DICE_WEIGHT = 3.0
    cfg.MODEL.CLIPZSS.GLM.LOSS_WEIGHT = 0.1
    cfg.MODEL.CLIPZSS.PLM.BCE_WEIGHT = 0.7
    assert weight_dict_from_config(cfg) == {
        "loss_ce": 2.0,
        "loss_focal": 50.0,
        "loss_dice": 1.5,
        "loss_glm": 0.1,
        "loss_bce": 0.7,
    }
    crit = CLIPZSSCriterion(cfg)
    assert crit.nel_normalization == "zegclip" and crit.ignore_value == 255
    logits, targets = example(seed=1)
    base = run(criterion("zegclip"), logits, targets)
    raw = {"loss_glm": torch.tensor(2.0), "loss_bce": torch.tensor(1.0)}
    out = run(crit, logits, targets, aux_losses=raw)
    assert list(out) == ["loss_ce", "loss_focal", "loss_dice", "loss_glm", "loss_bce"]
    assert out["loss_ce"].item() == pytest.approx(2 * base["loss_ce"].item(), rel=1e-6)
    assert out["loss_focal"].item() == pytest.approx(50 * base["loss_focal"].item(), rel=1e-6)
    assert out["loss_dice"].item() == pytest.approx(1.5 * base["loss_dice"].item(), rel=1e-6)
    assert out["loss_glm"].item() == pytest.approx(0.2) and out["loss_bce"].item() == pytest.approx(
        0.7
    )
    cfg.MODEL.CLIPZSS.GLM.ENABLED = False
    with pytest.raises(KeyError, match="loss_glm"):
        run(CLIPZSSCriterion(cfg), logits, targets, aux_losses={"loss_glm": torch.tensor(1.0)})


def test_ignore_value_comes_from_the_config():
    cfg = get_clipzss_cfg()
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 7
    logits, targets = example(seed=4, k=4)
    ref = run(criterion("zegclip"), logits, targets)
    out = run(CLIPZSSCriterion(cfg), logits, targets.masked_fill(targets == 255, 7))
    for name in ("loss_ce", "loss_dice"):
        assert out[name].item() == pytest.approx(ref[name].item(), rel=1e-6)
    assert out["loss_focal"].item() == pytest.approx(100 * ref["loss_focal"].item(), rel=1e-6)


def test_mean_normalisation_against_independent_computation():
    logits, targets = example()
    out = run(criterion("mean"), logits, targets)
    ce, fl, dice = loop_reference(logits, targets, torch.ones(2, 4, dtype=torch.bool))
    assert out["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["loss_focal"].item() == pytest.approx(fl, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


def test_class_valid_and_empty_image():
    logits, targets = example(seed=2, b=3)
    targets[2] = 255  # an image without labelled pixels contributes no masks
    class_valid = torch.tensor([[True, True, True, False], [True, True, False, False], [True] * 4])
    targets[0, 0, 0] = 3  # targets an invalid class
    out = run(criterion("mean", 0.4, 1.5), logits, targets, class_valid)
    ce, fl, dice = loop_reference(logits, targets, class_valid, alpha=0.4, gamma=1.5)
    full = run(criterion("mean", 0.4, 1.5), logits, targets)
    assert full["loss_ce"].item() != pytest.approx(ce, rel=1e-3)  # the mask matters
    assert out["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["loss_focal"].item() == pytest.approx(fl, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


@pytest.mark.parametrize("norm", ["zegclip", "mean"])
def test_all_ignored_is_finite_and_differentiable(norm):
    logits, targets = example()
    logits.requires_grad_(True)
    targets[:] = 255
    out = run(criterion(norm), logits, targets)
    total = sum(out.values())
    assert out["loss_ce"].item() == 0.0 and out["loss_dice"].item() == 0.0
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("norm", ["zegclip", "mean"])
def test_gradients_finite_with_masked_channels_half_precision_logits(norm):
    logits, targets = example(seed=3)
    logits = logits.half().requires_grad_(True)
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 3] = False
    out = run(criterion(norm), logits, targets, valid)
    sum(out.values()).backward()
    assert torch.isfinite(logits.grad.float()).all()
    assert logits.grad[1, 3].abs().max() == 0  # masked channel gets no gradient


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="NEL_NORMALIZATION"):
        criterion("sum")
