"""OpenAI's CLIP weights from a local file run QuickGELU, through the config route users take.

A random ViT-B/16 built with QuickGELU (OpenAI's architecture) is saved as a plain state-dict
file, as users receive open_clip checkpoints, and loaded through configs/voc.yaml with
MODEL.CLIPZSS.CLIP.PRETRAINED set to that file. The text classifier and the teacher must equal
open_clip's own QuickGELU model with those weights, and differ from the GELU one.
"""

import logging

import open_clip
import pytest
import torch

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.modeling.clip_loading import (
    CLIPWeightsUnavailableError,
    create_clip_model,
    resolve_activation,
)
from clipzss_d2.modeling.text_classifier import build_text_classifier
from clipzss_d2.modeling.training.teacher import CLIPTeacher
from tests.helpers import VOC_CONFIG

CLASSES = ["cat", "sofa", "potted plant"]


@pytest.fixture(scope="module")
def openai_like_file(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, quick_gelu=True)
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return str(path), model.eval()


def voc_cfg(path):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(VOC_CONFIG)
    cfg.merge_from_list(
        ["MODEL.CLIPZSS.CLIP.PRETRAINED", path, "MODEL.CLIPZSS.TEXT.TEMPLATES", "single"]
    )
    cfg.merge_from_list(["MODEL.CLIPZSS.TEXT.CACHE_DIR", "", "MODEL.DEVICE", "cpu"])
    return cfg


def test_weights_from_a_file_build_openais_network(openai_like_file, caplog):
    path, reference = openai_like_file
    gelu = open_clip.create_model("ViT-B-16", pretrained=None, quick_gelu=False).eval()
    gelu.load_state_dict(reference.state_dict())
    cfg = voc_cfg(path)
    assert cfg.MODEL.CLIPZSS.CLIP.ACTIVATION == "quick_gelu"  # the shipped config says it

    with caplog.at_level(logging.INFO, logger="clipzss_d2"):
        text = build_text_classifier(cfg)(CLASSES)
    assert "QuickGELU activation (MODEL.CLIPZSS.CLIP.ACTIVATION = quick_gelu)" in caplog.text
    tokenizer = open_clip.get_tokenizer("ViT-B-16")

    def zero_shot(model):
        return open_clip.build_zero_shot_classifier(
            model, tokenizer, CLASSES, ["a photo of a {}."], num_classes_per_batch=None
        ).t()

    torch.testing.assert_close(text, zero_shot(reference), rtol=1e-4, atol=1e-5)
    assert (text - zero_shot(gelu)).abs().max() > 1e-3

    teacher = CLIPTeacher(cfg)
    images = torch.rand(2, 3, 224, 224) * 255  # RGB, 0..255, as the VOC config feeds them
    cls = teacher(images).cls_embed
    x = (
        images / 255 - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    ) / torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(cls, reference.encode_image(x), rtol=1e-4, atol=1e-4)
        assert (cls - gelu.encode_image(x)).abs().max() > 1e-3


def test_a_file_needs_the_activation_said():
    cfg = get_clipzss_cfg()
    assert cfg.MODEL.CLIPZSS.CLIP.ACTIVATION == "auto"
    with pytest.raises(CLIPWeightsUnavailableError, match="MODEL.CLIPZSS.CLIP.ACTIVATION"):
        resolve_activation("ViT-B-16", __file__, "auto")


def test_tags_decide_and_contradictions_are_refused():
    assert resolve_activation("ViT-B-16", "openai", "auto")[0] is True
    assert resolve_activation("ViT-B-16", "laion2b_s34b_b88k", "auto")[0] is False
    assert resolve_activation("ViT-B-16", "openai", "quick_gelu")[0] is True
    with pytest.raises(CLIPWeightsUnavailableError, match="trained with quick_gelu"):
        resolve_activation("ViT-B-16", "openai", "gelu")
    with pytest.raises(CLIPWeightsUnavailableError, match="trained with gelu"):
        resolve_activation("ViT-B-16", "laion2b_s34b_b88k", "quick_gelu")
    with pytest.raises(CLIPWeightsUnavailableError, match="must be one of"):
        resolve_activation("ViT-B-16", "none", "relu")
    # random weights: the architecture's own choice unless the key says otherwise
    assert resolve_activation("ViT-B-16", "none", "auto")[0] is False
    assert resolve_activation("ViT-B-16-quickgelu", "none", "auto")[0] is True
    model = create_clip_model("ViT-B-16-quickgelu", "none", activation="gelu")
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
