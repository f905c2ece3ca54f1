"""Swin and ViT students build from config and train/infer through CLIPZSS (tiny widths)."""

import pytest
import torch
from detectron2.modeling import build_model

from tests.helpers import TOY_CLASSES, tiny_cfg, toy_batch

BASELINE = ["MODEL.CLIPZSS.GLM.ENABLED", False, "MODEL.CLIPZSS.PLM.PSEUDO_LABELS", False,
            "MODEL.CLIPZSS.PLM.SYNTHESIZER", False]  # fmt: skip

SWIN = ["MODEL.BACKBONE.NAME", "build_clipzss_swin_backbone", "MODEL.SWIN.EMBED_DIM", 16,
        "MODEL.SWIN.DEPTHS", [1, 1, 1, 1], "MODEL.SWIN.NUM_HEADS", [1, 2, 2, 4],
        "MODEL.SWIN.WINDOW_SIZE", 4, "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p0", "p3"]]  # fmt: skip
VIT = ["MODEL.BACKBONE.NAME", "build_clipzss_vit_backbone", "MODEL.VIT.EMBED_DIM", 32,
       "MODEL.VIT.DEPTH", 2, "MODEL.VIT.NUM_HEADS", 2, "MODEL.VIT.WINDOW_SIZE", 2,
       "MODEL.VIT.WINDOW_BLOCK_INDEXES", [0], "MODEL.VIT.OUT_CHANNELS", 16,
       "MODEL.VIT.IMG_SIZE", 64, "MODEL.VIT.PRETRAIN_IMG_SIZE", 64,
       "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p2", "p4"]]  # fmt: skip


@pytest.mark.parametrize("opts,features", [(SWIN, {"p0": 4, "p3": 32}), (VIT, {"p2": 4, "p4": 16})])
def test_transformer_students_train_and_infer(opts, features):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(extra_opts=BASELINE + opts))
    shapes = model.backbone.output_shape()
    assert {k: shapes[k].stride for k in features} == features
    model.train()
    losses = model(toy_batch(batch_size=2, size=64))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    out = model(toy_batch(batch_size=1, size=64))
    assert out[0]["sem_seg"].shape == (len(TOY_CLASSES), 64, 64)
