"""OpenAI's own CLIP file (TorchScript, what OpenAI's `clip` package keeps in ~/.cache/clip) loads
through configs/voc.yaml without its code being run.

A random ViT-B/16 with QuickGELU (OpenAI's architecture and parameter names) is traced and saved
with torch.jit.save, as OpenAI's `ViT-B-16.pt` was made, under the file name the `openai` tag's
URL gives. torch.jit.load is made to fail: the weights must come from reading the archive alone.
The text classifier and the teacher must equal open_clip's model with those weights.
"""

import open_clip
import pytest
import torch

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.checkpoint import UnsafeCheckpointError, read_torchscript_state_dict
from clipzss_d2.modeling.clip_loading import resolve_pretrained
from clipzss_d2.modeling.text_classifier import build_text_classifier
from clipzss_d2.modeling.training.teacher import CLIPTeacher
from tests.helpers import VOC_CONFIG

CLASSES = ["cat", "sofa", "potted plant"]


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, quick_gelu=True).eval()
    text = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat."])
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.randn(1, 3, 224, 224), text), check_trace=False)
    folder = tmp_path_factory.mktemp("clip")
    path = folder / "ViT-B-16.pt"  # the basename of the openai tag's URL
    torch.jit.save(traced, str(path))
    return folder, path, model


@pytest.fixture
def no_torchscript_execution(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called: the archive's code would run")

    monkeypatch.setattr(torch.jit, "load", refuse)


def voc_cfg(pretrained, download_dir=""):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(VOC_CONFIG)
    cfg.merge_from_list(
        ["MODEL.CLIPZSS.CLIP.PRETRAINED", pretrained, "MODEL.CLIPZSS.CLIP.DOWNLOAD_DIR",
         download_dir, "MODEL.CLIPZSS.TEXT.TEMPLATES", "single", "MODEL.CLIPZSS.TEXT.CACHE_DIR",
         "", "MODEL.DEVICE", "cpu"]
    )  # fmt: skip
    return cfg


@pytest.mark.parametrize("route", ["openai tag", "file path"])
def test_openais_torchscript_file_builds_the_same_clip(
    openai_file, no_torchscript_execution, route
):
    folder, path, reference = openai_file
    if route == "openai tag":  # the tag finds OpenAI's file in the download folder
        assert resolve_pretrained("ViT-B-16", "openai", str(folder)) == str(path)
        cfg = voc_cfg("openai", str(folder))
    else:
        cfg = voc_cfg(str(path))

    text = build_text_classifier(cfg)(CLASSES)
    expected = open_clip.build_zero_shot_classifier(
        reference, open_clip.get_tokenizer("ViT-B-16"), CLASSES, ["a photo of a {}."],
        num_classes_per_batch=None,
    ).t()  # fmt: skip
    torch.testing.assert_close(text, expected, rtol=1e-4, atol=1e-5)

    teacher = CLIPTeacher(cfg)
    images = torch.rand(2, 3, 224, 224) * 255  # RGB, 0..255, as the VOC config feeds them
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.encode_image((images / 255 - mean) / std)
    torch.testing.assert_close(teacher(images).cls_embed, expected, rtol=1e-4, atol=1e-4)


def test_the_archive_reader_gives_the_state_dict(openai_file):
    _, path, reference = openai_file
    state = read_torchscript_state_dict(str(path))
    for key, value in reference.state_dict().items():
        assert torch.equal(state[key], value), key


def test_an_archive_naming_other_code_is_refused(tmp_path):
    """A TorchScript archive whose data.pkl asks for a Python callable is refused in one line."""
    import pickle
    import zipfile

    path = tmp_path / "hostile.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hostile/data.pkl", pickle.dumps(print, protocol=2))  # GLOBAL builtins print
        z.writestr("hostile/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"asks to load (__builtin__|builtins)\.print"):
        read_torchscript_state_dict(str(path))
