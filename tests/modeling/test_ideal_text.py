"""MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT: the student's classifier and the oracle teacher read one
fixed orthonormal embedding per class of the miniature world (checked against the definition,
E Eᵀ = I, and by name); refused outside the world, for names it does not know, and with a real
teacher; a training step with the oracle reads the same vectors as the classifier."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from clipzss_d2.errors import UserInputError
from clipzss_d2.miniworld import generate_world, register_miniworld
from clipzss_d2.miniworld import world as W
from tests.helpers import miniworld_model_cfg, tiny_cfg, training_step_with_plm_inputs

IDEAL = ["MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT", True]
ORACLE = ["MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", True]
NO_TEACHER = [
    "MODEL.CLIPZSS.GLM.ENABLED", False,
    "MODEL.CLIPZSS.PLM.PSEUDO_LABELS", False,
    "MODEL.CLIPZSS.PLM.SYNTHESIZER", False,
]  # fmt: skip


world_cfg = miniworld_model_cfg


def test_the_classifier_is_orthonormal_and_found_by_name():
    model = build_model(world_cfg(*IDEAL, *NO_TEACHER))
    text = model.text_embeddings(list(W.CLASSES)).double()
    assert text.shape == (len(W.CLASSES), model_width(model))
    torch.testing.assert_close(text @ text.T, torch.eye(len(W.CLASSES), dtype=torch.float64))
    # no class sits on a feature axis (a rotated basis, not one-hot rows)
    assert text.abs().max() < 0.9
    # a vocabulary in another order gets the same class's row, in a new model too
    again = build_model(world_cfg(*IDEAL, *NO_TEACHER))
    subset = ["snow", "disc", "crescent"]
    expected = text[[W.CLASSES.index(c) for c in subset]]
    torch.testing.assert_close(again.text_embeddings(subset).double(), expected)
    assert not model.text_classifier.clip_loaded  # no CLIP text tower is ever loaded
    with pytest.raises(UserInputError, match="knows only the miniature world's classes"):
        model.text_embeddings(["disc", "sheep"])


def model_width(model):
    return model.text_classifier.embed_dim


def test_refused_outside_the_world_and_with_a_real_teacher():
    with pytest.raises(UserInputError, match="IDEAL_TEXT is a miniature-world diagnostic"):
        build_model(tiny_cfg(extra_opts=IDEAL + NO_TEACHER))
    with pytest.raises(UserInputError, match="set DIAGNOSTICS.ORACLE_TEACHER True as well"):
        build_model(world_cfg(*IDEAL))  # the full method with the trained teacher


@pytest.fixture(scope="module")
def world_records(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mw") / "miniworld")
    generate_world(root, seed=0, counts={"train": 4, "tune": 0, "test": 0}, workers=1)
    register_miniworld(root)
    yield DatasetCatalog.get("miniworld_train")
    register_miniworld()


def test_the_oracle_teaches_in_the_ideal_classifier_space(world_records):
    """Through a training step of the full config: every valid teacher token PLM reads is
    exactly the classifier's row of its patch's majority class."""
    cfg = world_cfg(*IDEAL, *ORACLE)
    batch, seen, model, losses = training_step_with_plm_inputs(cfg, world_records[:2])
    assert all(torch.isfinite(v) for v in losses.values())
    text = model.text_embeddings(list(W.CLASSES)).float()
    seen_ids = [W.CLASSES.index(c) for c in W.CLASSES if c not in W.UNSEEN]
    torch.testing.assert_close(seen["text_seen"].float(), text[seen_ids])
    tokens = seen["teacher"].patch_embed.float()
    sims = torch.einsum("bchw,kc->bkhw", tokens, text)
    valid = seen["teacher"].token_valid
    top2 = sims.topk(2, dim=1).values
    torch.testing.assert_close(top2[:, 0][valid], torch.ones_like(top2[:, 0][valid]))
    torch.testing.assert_close(
        top2[:, 1][valid], torch.zeros_like(top2[:, 1][valid]), atol=1e-5, rtol=0
    )
    hidden = batch[0]["hidden_sem_seg"].numpy()
    i, j = map(int, valid[0].nonzero()[0])
    patch = hidden[8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
    counts = np.bincount(patch[patch != 255].ravel(), minlength=len(W.CLASSES))
    assert sims[0, :, i, j].argmax().item() == counts.argmax()
