"""Padding is not image: the real training mapper on a real VOC sample, through the real model.

A 500 x 375 VOC photo resized to 256 x 192 and cropped at 320 x 320 must be padded. With GLM
and PLM on, no pseudo label, K-Means token, pooling weight, centroid or loss term may come from
the padding: the losses must equal those of the same crop cut out by hand (no padding at all),
given the same student features on the image. (The student itself sees the padded tensor, as
every segmenter trained on padded crops does; its features in the padding are replaced by noise
here to prove that nothing reads them.)
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.modeling.clip_loading import create_clip_model
from clipzss_d2.modeling.training.teacher import CLIPTeacher
from tests.helpers import TINY_CLIP, VOC_CONFIG, tiny_cfg

SAMPLE = "2011_000006"  # 500 x 375, in the VOC train samples
H, W = 192, 256  # the resized image: both sides multiples of the student's 32 and CLIP's 8
CROP = 320


def voc_cfg():
    cfg = tiny_cfg(
        VOC_CONFIG,
        [
            "DATASETS.TRAIN", ("voc20_zs_train",),
            "DATASETS.TEST", ("voc20_zs_val",),
            "INPUT.MIN_SIZE_TRAIN", (H,),
            "INPUT.MAX_SIZE_TRAIN", 1000,
            "INPUT.CROP.SIZE", (CROP, CROP),
            "INPUT.SIZE_DIVISIBILITY", 32,
            "MODEL.CLIPZSS.PLM.WINDOW_SIZES", [2, 4],
            "MODEL.CLIPZSS.PLM.SYNTH_HEADS", 4,
            "MODEL.CLIPZSS.PLM.SYNTH_USE_PATCH_TOKENS", True,
            "MODEL.CLIPZSS.PLM.FUSION_THRESHOLD", 0.5,
        ],
    )  # fmt: skip
    return cfg


def mapped_sample(cfg):
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    (record,) = [r for r in DatasetCatalog.get("voc20_zs_train") if SAMPLE in r["file_name"]]
    np.random.seed(0)  # noqa: NPY002  (detectron2's augmentations draw from numpy's generator)
    return mapper(record)


def test_the_mapper_records_where_the_image_ends(prepared_root):
    out = mapped_sample(voc_cfg())
    assert out["image"].shape == (3, CROP, CROP)
    assert out["image_size"] == (H, W)
    assert (out["sem_seg"][H:] == 255).all() and (out["sem_seg"][:, W:] == 255).all()
    assert (out["sem_seg"][:H, :W] != 255).any()


class Recorder:
    """Keeps what the model's parts computed, and swaps the student's features."""

    def __init__(self, model, features=None):
        self.plm_out, self.pool_weights, self.teacher_out = None, None, None
        plm_forward, pool, run_teacher = model.plm.forward, model.glm.pooling_weights, None
        run_teacher = model.run_teacher

        def plm_hook(*args, **kwargs):
            self.plm_out = plm_forward(*args, **kwargs)
            return self.plm_out

        def pool_hook(*args, **kwargs):
            self.pool_weights = pool(*args, **kwargs)
            return self.pool_weights

        def teacher_hook(*args, **kwargs):
            self.teacher_out = run_teacher(*args, **kwargs)
            return self.teacher_out

        model.plm.forward = plm_hook
        model.glm.pooling_weights = pool_hook
        model.run_teacher = teacher_hook
        if features is not None:
            model.embed = lambda images: features


def test_no_part_of_the_method_uses_padding(prepared_root):
    cfg = voc_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    sample = mapped_sample(cfg)

    # the student's features on the padded crop, with noise in the padding
    with torch.no_grad():
        images = model.preprocess_images([sample])
        feats = model.embed(images.tensor)
    hs, ws = H // 4, W // 4  # the head's stride is 4
    noise = F.normalize(torch.randn_like(feats), dim=1)
    feats[:, :, hs:], feats[:, :, :, ws:] = noise[:, :, hs:], noise[:, :, :, ws:]
    padded = Recorder(model, feats)
    losses = model([sample])

    # nothing on the padding
    targets = padded.plm_out.targets[0]
    assert (targets[H:] == 255).all() and (targets[:, W:] == 255).all()
    assert (targets[:H, :W] >= 15).any()  # pseudo labels exist, on the image
    weights = padded.pool_weights.view(CROP // 4, CROP // 4)
    assert weights[hs:].max() == 0 and weights[:, ws:].max() == 0
    token_valid = padded.teacher_out.token_valid[0]
    assert token_valid.sum() == (H // 8) * (W // 8) and token_valid[: H // 8, : W // 8].all()

    # the same crop cut by hand: no padding anywhere, same student features on the image
    model.glm.bank_count.zero_()
    model.glm.bank_ptr.zero_()
    cut = {
        "image": sample["image"][:, :H, :W].clone(),
        "sem_seg": sample["sem_seg"][:H, :W].clone(),
        "height": sample["height"],
        "width": sample["width"],
    }
    reference = Recorder(model, feats[:, :, :hs, :ws].contiguous())
    ref_losses = model([cut])
    assert reference.teacher_out.token_valid.all()
    torch.testing.assert_close(
        padded.teacher_out.cls_embed, reference.teacher_out.cls_embed, rtol=1e-4, atol=1e-5
    )
    assert torch.equal(targets[:H, :W], reference.plm_out.targets[0])
    assert set(losses) == set(ref_losses) == {
        "loss_ce", "loss_focal", "loss_dice", "loss_glm", "loss_bce"
    }  # fmt: skip
    for name in losses:
        assert losses[name].item() == pytest.approx(ref_losses[name].item(), rel=1e-4), name


def test_teacher_sees_the_image_not_the_padding():
    """Padded batch with image_sizes == each image run alone at its own size (random tiny CLIP,
    different extents per image; pixels in the padding are noise)."""
    torch.manual_seed(0)
    clip = create_clip_model(TINY_CLIP, "none")
    teacher = CLIPTeacher(visual=clip.visual, clip_mean=(0.5,) * 3, clip_std=(0.25,) * 3)
    extents = [(48, 64), (64, 40), (64, 64)]
    batch = torch.rand(3, 3, 64, 64) * 255
    out = teacher(batch, image_sizes=torch.tensor(extents))
    for i, (h, w) in enumerate(extents):
        alone = teacher(batch[i : i + 1, :, :h, :w].contiguous())
        torch.testing.assert_close(out.cls_embed[i], alone.cls_embed[0], rtol=1e-4, atol=1e-5)
        patches = out.patch_embed[i, :, : h // 8, : w // 8]
        torch.testing.assert_close(patches, alone.patch_embed[0], rtol=1e-4, atol=1e-5)
        assert out.token_valid[i].sum() == (h // 8) * (w // 8)
    # without image_sizes the padding is seen: the CLS changes
    seen = teacher(batch)
    assert not torch.allclose(seen.cls_embed[0], out.cls_embed[0], atol=1e-3)
    assert torch.allclose(seen.cls_embed[2], out.cls_embed[2], atol=1e-5)
