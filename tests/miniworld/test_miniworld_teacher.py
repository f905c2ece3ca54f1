"""MiniWorld's CLIP: trained here, cached by config, loaded like any open_clip checkpoint."""

import dataclasses
import json
import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.errors import UserInputError
from clipzss_d2.miniworld import render as R
from clipzss_d2.miniworld import teacher_eval as E
from clipzss_d2.miniworld import train_teacher as T
from clipzss_d2.miniworld import world as W
from clipzss_d2.miniworld.captions import make_caption
from clipzss_d2.modeling.clip_loading import CLIPWeightsUnavailableError, create_clip_model
from tests.helpers import MINIWORLD_FULL_CONFIG

QUICK = T.TeacherConfig(steps=2, batch_size=8, warmup_steps=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads spin-wait for
    each other (measured 30x slower with 2 threads under a load of 4 on 2 cores). One thread also
    keeps weights comparable between tests (float sums differ with the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def quick_checkpoint(one_thread, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / "clip_miniworld.pt")
    T.get_miniworld_teacher(path, QUICK, evaluate=False, progress=False, workers=0)
    return path


def test_checkpoint_loads_through_create_clip_model(quick_checkpoint):
    model = create_clip_model(T.MODEL_NAME, quick_checkpoint, activation="quick_gelu")
    saved = torch.load(quick_checkpoint, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    # open_clip's own strict loader accepts the file as is
    fresh = open_clip.create_model(T.MODEL_NAME)
    incompatible = open_clip.load_checkpoint(fresh, quick_checkpoint)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    # and the model embeds miniworld images and names into one joint space
    r = R.make_sample(np.random.default_rng(0), QUICK.resolved().world)
    assert r.image.shape == (96, 96, 3)  # the teacher's images: square, its input size
    x = T.Batches(model, QUICK.resolved()).to_tensor([r.image])
    cls, patches = E.image_tokens(model, x)
    assert cls.shape == (1, 64) and patches.shape == (1, 12, 12, 64)
    text = E.encode_names(model, T.MODEL_NAME, W.CLASSES)
    assert text.shape == (len(W.CLASSES), 64)


def test_cache_is_reused_only_for_the_same_config(quick_checkpoint):
    info = T.cached_teacher_info(quick_checkpoint, QUICK)
    assert info is not None and info["fingerprint"] == QUICK.fingerprint()
    os.utime(quick_checkpoint, (0, 0))
    assert T.get_miniworld_teacher(quick_checkpoint, QUICK, progress=False) == quick_checkpoint
    assert os.path.getmtime(quick_checkpoint) == 0  # reused, not retrained
    changed = dataclasses.replace(QUICK, steps=3)
    assert changed.fingerprint() != QUICK.fingerprint()
    assert T.cached_teacher_info(quick_checkpoint, changed) is None
    world_changed = dataclasses.replace(
        QUICK, world=dataclasses.replace(QUICK.world, max_noise=1.0)
    )
    assert T.cached_teacher_info(quick_checkpoint, world_changed) is None
    with open(os.path.splitext(quick_checkpoint)[0] + ".json") as f:
        assert json.load(f)["model_name"] == T.MODEL_NAME


def test_training_is_reproducible_whatever_the_loader_workers(quick_checkpoint):
    model = create_clip_model(T.MODEL_NAME, pretrained="none")
    a, b = T.Batches(model, QUICK.resolved()), T.Batches(model, QUICK.resolved())
    ia, ta = a(5)
    ib, tb = b(5)
    assert torch.equal(ia, ib) and torch.equal(ta, tb)
    assert not torch.equal(ia, a(6)[0])
    # the fixture rendered in-process; here a spawned loader worker renders the same batches
    again, info = T.train_teacher(QUICK, progress=False, workers=1)
    assert info["loader_workers"] == 1
    saved = torch.load(quick_checkpoint, map_location="cpu", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in again.state_dict().items())


def test_patch_dropout_thins_training_steps_only(monkeypatch, tmp_path):
    """TeacherConfig.patch_dropout (FLIP): each training step's vision transformer sees that
    share of the 144 patches fewer (+ CLS); the saved file is the plain architecture's state
    dict, whose loaded model sees every patch; and the setting names another checkpoint."""
    seen_tokens = []
    create = open_clip.create_model

    def create_and_watch(*args, **kwargs):
        model = create(*args, **kwargs)
        model.visual.transformer.register_forward_pre_hook(
            lambda _, inputs: seen_tokens.append(inputs[0].shape[1])
        )
        return model

    monkeypatch.setattr(T.open_clip, "create_model", create_and_watch)
    cfg = dataclasses.replace(QUICK, patch_dropout=0.5)
    assert cfg.fingerprint() != dataclasses.replace(QUICK, patch_dropout=0.0).fingerprint()
    path = str(tmp_path / "clip_pd.pt")
    T.get_miniworld_teacher(path, cfg, evaluate=False, progress=False, workers=0)
    assert seen_tokens == [1 + 72] * cfg.steps  # half of the 12 x 12 patches, and the CLS
    monkeypatch.undo()
    model = create_clip_model(T.MODEL_NAME, path, activation="quick_gelu")
    assert isinstance(model.visual.patch_dropout, torch.nn.Identity)
    x = torch.zeros(1, 3, 96, 96)
    cls, patches = E.image_tokens(model, x)
    assert patches.shape == (1, 12, 12, 64)


def test_captions_fit_the_text_context():
    """A truncated caption would lose class names; the longest must fit ClipZSS-MiniWorld."""
    context = open_clip.get_model_config(T.MODEL_NAME)["text_cfg"]["context_length"]
    p = T.TeacherConfig().resolved().world  # the scenes the teacher is trained on
    rng = np.random.default_rng(1)
    captions = [make_caption(R.make_sample(rng, p), p, rng) for _ in range(300)]
    tokens = open_clip.tokenize(captions, context_length=77)
    assert int((tokens != 0).sum(1).max()) <= context
    assert any(name in " ".join(captions) for name in W.UNSEEN)  # the teacher sees unseen names


def test_short_training_beats_chance_on_an_easy_world():
    """Four well-separated things at 32 px: a minute-scale sanity check of the whole loop."""
    easy = W.WorldParams(
        min_objects=1,
        max_objects=1,
        empty_prob=0.0,
        min_radius=0.25,
        max_radius=0.4,
        second_stuff_prob=0.0,
        alt_colour_prob=0.0,
        pattern_prob=0.0,
        clutter_prob=0.0,
        things=("disc", "square", "triangle", "star"),
        stuff=("grass", "sand"),
    ).square(32)
    cfg = T.TeacherConfig(
        model_name="ClipZSS-Tiny-Test", steps=60, batch_size=32, warmup_steps=5, lr=2e-3, world=easy
    )
    torch.manual_seed(0)
    untrained = create_clip_model("ClipZSS-Tiny-Test", pretrained="none")
    before = T.evaluate_teacher(untrained, "ClipZSS-Tiny-Test", num_images=100, world=easy)
    model, info = T.train_teacher(cfg, progress=False)
    after = T.evaluate_teacher(model, "ClipZSS-Tiny-Test", num_images=100, world=easy)
    assert info["final_loss"] < info["first_loss"]
    assert after["thing_chance"] == 0.25
    assert after["thing_zero_shot_acc"] >= 0.8, (before, after)
    assert after["thing_zero_shot_acc"] > before["thing_zero_shot_acc"] + 0.2


def test_teacher_world_is_square_and_ring_free():
    """The teacher sees whole scenes at its input size: square, and no void rings (a caption
    names objects, not annotation bands); a non-square world is refused."""
    world = T.TeacherConfig().resolved().world
    assert (world.min_short_side, world.max_short_side, world.max_aspect) == (96, 96, 1.0)
    assert world.void_ring_width == 0 and W.WorldParams().void_ring_width == 1
    r = R.make_sample(np.random.default_rng(2), world)
    assert r.label.shape == (96, 96)
    with pytest.raises(ValueError, match="square"):
        T.train_teacher(dataclasses.replace(QUICK, world=W.WorldParams()), progress=False)


def miniworld_cfg(checkpoint, *opts):
    """configs/miniworld/full.yaml as tools/run_miniworld.py uses it: the trained file as
    MODEL.CLIPZSS.CLIP.PRETRAINED (no text cache on disk: every embedding is computed)."""
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(MINIWORLD_FULL_CONFIG)
    cfg.merge_from_list(
        ["MODEL.CLIPZSS.CLIP.PRETRAINED", checkpoint, "MODEL.CLIPZSS.TEXT.CACHE_DIR", ""]
        + list(opts)
    )
    return cfg


def test_state_dict_teacher_through_the_config_route(quick_checkpoint):
    """The trained teacher reaches training as OpenAI's weights reach users: a plain state dict
    file + ACTIVATION quick_gelu in configs/miniworld. The model train_net builds (text classifier
    and teacher) must be open_clip's own QuickGELU model with those weights; gelu is another
    network; auto is refused for a file."""
    from train_net import Trainer

    # (iv) a plain state dict: tensors only, loadable without unpickling code
    saved = torch.load(quick_checkpoint, map_location="cpu", weights_only=True)
    assert isinstance(saved, dict) and all(isinstance(v, torch.Tensor) for v in saved.values())
    assert "text_projection" in saved and not any(k.startswith("state_dict") for k in saved)

    cfg = miniworld_cfg(quick_checkpoint)
    assert cfg.MODEL.CLIPZSS.CLIP.ACTIVATION == "quick_gelu"  # the shipped config says it
    assert cfg.MODEL.CLIPZSS.TEXT.TEMPLATES == "single"
    model = Trainer.build_model(cfg)
    assert model.teacher is not None  # the full method builds its teacher at once

    reference = open_clip.create_model(T.MODEL_NAME, pretrained=quick_checkpoint, quick_gelu=True)
    reference.eval()
    names = ["star", "disc", "snow", "grass"]
    tokens = open_clip.get_tokenizer(T.MODEL_NAME)([f"a photo of a {n}." for n in names])
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(tokens), dim=-1)
    # (i) the text classifier's embeddings are the reference's
    text = model.text_embeddings(names)
    torch.testing.assert_close(text, expected, rtol=0, atol=1e-5)
    # ... and so are the teacher's image embeddings, on a scene of the teacher's world
    scene = R.make_sample(np.random.default_rng(0), QUICK.resolved().world).image
    images = torch.from_numpy(scene).permute(2, 0, 1)[None].float()  # RGB 0..255, as fed
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        cls = model.teacher(images).cls_embed
        torch.testing.assert_close(
            cls, reference.encode_image((images / 255 - mean) / std), rtol=1e-4, atol=1e-5
        )

    # (ii) the same file read as a GELU network gives other embeddings
    gelu = Trainer.build_model(
        miniworld_cfg(quick_checkpoint, "MODEL.CLIPZSS.CLIP.ACTIVATION", "gelu")
    )
    assert (gelu.text_embeddings(names) - expected).abs().max() > 1e-4
    with torch.no_grad():
        assert (gelu.teacher(images).cls_embed - cls).abs().max() > 1e-4

    # (iii) auto: a file does not say its activation, so the build refuses and names the key
    auto = miniworld_cfg(quick_checkpoint, "MODEL.CLIPZSS.CLIP.ACTIVATION", "auto")
    with pytest.raises(CLIPWeightsUnavailableError, match=r"MODEL\.CLIPZSS\.CLIP\.ACTIVATION"):
        Trainer.build_model(auto)
    assert issubclass(CLIPWeightsUnavailableError, UserInputError)


def test_a_teacher_of_another_config_is_never_written_over(quick_checkpoint, tmp_path):
    """The file at the path may be the teacher of another table or a user's own weights: a
    config that does not match it is refused, through the command line with one line and exit
    status 2, and replaced only when asked (--force)."""
    import shutil
    import subprocess
    import sys

    path = tmp_path / "clip.pt"
    shutil.copy(quick_checkpoint, path)
    shutil.copy(os.path.splitext(quick_checkpoint)[0] + ".json", tmp_path / "clip.json")
    before = path.read_bytes()
    changed = dataclasses.replace(QUICK, steps=3)
    with pytest.raises(UserInputError, match="--retrain-teacher"):
        T.get_miniworld_teacher(
            str(path), changed, progress=False, replace_flag="--retrain-teacher"
        )
    cmd = [sys.executable, "-m", "clipzss_d2.miniworld", "train-teacher", "--output", str(path),
           "--steps", "3", "--batch-size", "8", "--no-eval"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("replace that file with --force.")
    assert "Traceback" not in proc.stderr
    (tmp_path / "weights.pt").write_bytes(b"a user's own file")  # no record of this project
    with pytest.raises(UserInputError, match="another configuration"):
        T.get_miniworld_teacher(str(tmp_path / "weights.pt"), QUICK, progress=False)
    assert (
        path.read_bytes() == before
        and (tmp_path / "weights.pt").read_bytes() == b"a user's own file"
    )
    T.get_miniworld_teacher(
        str(path), changed, force=True, evaluate=False, progress=False, workers=0
    )
    assert T.cached_teacher_info(str(path), changed) is not None
