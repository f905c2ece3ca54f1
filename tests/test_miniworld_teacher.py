"""MiniWorld's CLIP: trained here, cached by config, loaded like any open_clip checkpoint."""

import dataclasses
import json
import os

import numpy as np
import open_clip
import pytest
import torch

from clipzss_d2.miniworld import train_teacher as T
from clipzss_d2.miniworld import world as W
from clipzss_d2.modeling.clip_loading import create_clip_model

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
    model = create_clip_model(T.MODEL_NAME, quick_checkpoint, activation="gelu")
    saved = torch.load(quick_checkpoint, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    # open_clip's own strict loader accepts the file as is
    fresh = open_clip.create_model(T.MODEL_NAME)
    incompatible = open_clip.load_checkpoint(fresh, quick_checkpoint)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    # and the model embeds miniworld images and names into one joint space
    r = W.make_sample(np.random.default_rng(0), W.WorldParams())
    x = T.Batches(model, QUICK.resolved()).to_tensor([r.image])
    cls, patches = T.image_tokens(model, x)
    assert cls.shape == (1, 64) and patches.shape == (1, 12, 12, 64)
    text = T.encode_names(model, T.MODEL_NAME, W.CLASSES)
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


def test_captions_fit_the_text_context():
    """A truncated caption would lose class names; the longest must fit ClipZSS-MiniWorld."""
    context = open_clip.get_model_config(T.MODEL_NAME)["text_cfg"]["context_length"]
    p = W.WorldParams()
    rng = np.random.default_rng(1)
    captions = [W.make_caption(W.make_sample(rng, p), p, rng) for _ in range(300)]
    tokens = open_clip.tokenize(captions, context_length=77)
    assert int((tokens != 0).sum(1).max()) <= context
    assert any(name in " ".join(captions) for name in W.UNSEEN)  # the teacher sees unseen names


def test_short_training_beats_chance_on_an_easy_world():
    """Four well-separated things at 32 px: a minute-scale sanity check of the whole loop."""
    easy = W.WorldParams(
        image_size=32,
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
    )
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
