"""VOC's void rings get no pseudo labels around seen objects (configs/voc.yaml's rule), tested
on a real VOC sample through the real mapper and PLM built from the config.

The teacher's tokens here are the best a teacher could give at patch resolution: one direction
per ground-truth value of the original VOC map (majority per 16 px patch), plus noise. With the
rule off, the ring around the seen person/chair takes the pseudo id of the region covering it;
with configs/voc.yaml it stays ignored, while the unseen sofa and the background keep theirs.
"""

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from PIL import Image

from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.modeling.training.plm import PixelLearningModule
from clipzss_d2.modeling.training.teacher import TeacherOutput
from tests.helpers import VOC_CONFIG, tiny_cfg

SAMPLE = "2011_000006"  # person and chair (seen), sofa (unseen), background, void rings
PATCH = 16


def oracle_teacher(values: torch.Tensor, dim: int) -> TeacherOutput:
    h, w = values.shape[0] // PATCH, values.shape[1] // PATCH
    crop = values[: h * PATCH, : w * PATCH]
    onehot = F.one_hot(crop.masked_fill(crop == 255, 21), 22)[..., :21]
    majority = F.avg_pool2d(onehot.permute(2, 0, 1)[None].float(), PATCH, PATCH)[0].argmax(0)
    g = torch.Generator().manual_seed(0)
    dirs = F.normalize(torch.randn(21, dim, generator=g), dim=-1)
    tokens = dirs[majority] + 0.01 * torch.randn(h, w, dim, generator=g)
    return TeacherOutput(torch.randn(1, dim, generator=g), tokens.permute(2, 0, 1)[None])


def pseudo_labelled(cfg, sample, values):
    torch.manual_seed(0)
    plm = PixelLearningModule(cfg)
    dim = cfg.MODEL.CLIPZSS.EMBED_DIM
    labels = sample["sem_seg"][None]
    h, w = labels.shape[-2:]
    dense = F.normalize(torch.randn(1, dim, h // 4, w // 4), dim=1)
    text = F.normalize(torch.randn(15, dim), dim=-1)
    out = plm(dense, labels, text, oracle_teacher(values, dim), torch.tensor(14.0))
    targets = out.targets[0]
    return (targets >= 15) & (targets != 255)


def test_void_rings_around_seen_objects_get_no_pseudo_label(prepared_root, shared_data):
    cfg = tiny_cfg(VOC_CONFIG, ["DATASETS.TRAIN", ("voc20_zs_train",)])
    assert cfg.MODEL.CLIPZSS.PLM.SEEN_HALO_RADIUS == 8
    kwargs = ZeroShotSemSegDatasetMapper.from_config(cfg, is_train=True)
    kwargs.update(augmentations=[], pad_to=None, size_divisibility=-1)  # original geometry
    (record,) = [r for r in DatasetCatalog.get("voc20_zs_train") if SAMPLE in r["file_name"]]
    sample = ZeroShotSemSegDatasetMapper(**kwargs)(record)
    png = shared_data / "voc" / "VOC2012" / "SegmentationClass" / f"{SAMPLE}.png"
    values = torch.from_numpy(np.array(Image.open(png)).astype(np.int64))
    assert sample["sem_seg"].shape == values.shape

    seen = sample["sem_seg"] != 255
    near_seen = F.max_pool2d(seen[None, None].float(), 11, stride=1, padding=5)[0, 0] > 0
    ring = (values == 255) & near_seen  # void within 5 px of a seen object
    sofa = values == 18  # unseen
    background = values == 0
    assert ring.sum() > 1000 and sofa.sum() > 1000

    with_rule = pseudo_labelled(cfg, sample, values)
    assert with_rule[ring].sum() == 0
    assert with_rule[sofa].float().mean() > 0.8
    assert with_rule[background].float().mean() > 0.8

    cfg.MODEL.CLIPZSS.PLM.SEEN_HALO_RADIUS = 0  # the method as published
    without = pseudo_labelled(cfg, sample, values)
    assert without[ring].float().mean() > 0.9
    assert without[sofa].float().mean() >= with_rule[sofa].float().mean()
