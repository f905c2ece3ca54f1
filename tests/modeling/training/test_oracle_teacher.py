"""MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER: ideal teacher outputs from hidden labels, checked on a
case worked by hand, refused outside the miniature world, and wired into a training step of the
miniature world's full config (random miniature CLIP): with the oracle, PLM's pseudo labels on a
world's crops are those a perfect teacher gives, counted by the pseudo-label probe."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.errors import UserInputError
from clipzss_d2.miniworld import generate_world, register_miniworld
from clipzss_d2.miniworld import world as W
from clipzss_d2.modeling.training.oracle_teacher import oracle_teacher_output
from clipzss_d2.modeling.training.teacher import TeacherOutput
from tests.helpers import miniworld_model_cfg, tiny_cfg, training_step_with_plm_inputs

V = 255  # void


def test_tokens_and_cls_of_a_case_worked_by_hand():
    """4 x 4 labels, 2 x 2 pixel patches: each token is its majority class's text embedding,
    an all-void patch is no token, CLS is the area-weighted mean of the classes present."""
    text = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])  # normalised by the oracle
    hidden = torch.tensor(
        [[0, 0, 1, 1], [0, V, 1, 2], [V, V, 2, 2], [V, V, 2, 2]], dtype=torch.long
    )[None]
    real = TeacherOutput(
        cls_embed=torch.randn(1, 3),
        patch_embed=torch.randn(1, 3, 2, 2),
        token_valid=torch.ones(1, 2, 2, dtype=torch.bool),
    )
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    out = oracle_teacher_output(real, hidden, valid, text, (2, 2), V)
    unit = torch.eye(3)
    assert torch.equal(out.patch_embed[0, :, 0, 0], unit[0])  # 3 px of class 0
    assert torch.equal(out.patch_embed[0, :, 0, 1], unit[1])  # 3 px of 1 beat 1 px of 2
    assert torch.equal(out.patch_embed[0, :, 1, 1], unit[2])
    assert out.token_valid.tolist() == [[[True, True], [False, True]]]
    # areas: class 0: 3, class 1: 3, class 2: 5
    expected = F.normalize(torch.tensor([3.0, 3.0, 5.0]), dim=0)
    torch.testing.assert_close(out.cls_embed[0], expected)

    # padding is not image: the same labels with the right column marked padding
    valid[..., 3] = False
    out = oracle_teacher_output(real, hidden, valid, text, (2, 2), V)
    assert torch.equal(out.patch_embed[0, :, 0, 1], unit[1])  # (0,2), (1,2): class 1 only
    torch.testing.assert_close(out.cls_embed[0], F.normalize(torch.tensor([3.0, 2.0, 2.0]), dim=0))
    # a real token that is padding stays invalid whatever its labels
    real = real._replace(token_valid=torch.tensor([[[True, False], [True, True]]]))
    out = oracle_teacher_output(
        real, hidden, torch.ones(1, 4, 4, dtype=torch.bool), text, (2, 2), V
    )
    assert out.token_valid.tolist() == [[[True, False], [False, True]]]


def test_refused_outside_the_miniature_world():
    cfg = tiny_cfg(extra_opts=["MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", True])
    with pytest.raises(UserInputError, match="miniature-world diagnostic"):
        build_model(cfg)


@pytest.fixture(scope="module")
def world_records(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mw") / "miniworld")
    generate_world(root, seed=0, counts={"train": 8, "tune": 0, "test": 0}, workers=1)
    register_miniworld(root)
    assert MetadataCatalog.get("miniworld_train").miniature_world
    yield DatasetCatalog.get("miniworld_train")
    register_miniworld()


world_cfg = miniworld_model_cfg


def test_a_training_step_with_the_oracle_gives_perfect_tokens(world_records):
    """Through the config key and the model's training step: the teacher PLM and GLM read is
    the oracle (tokens = text embeddings of the crop's classes), and the pseudo labels it
    yields cover the unseen pixels of patches an unseen class dominates, without mixing."""
    on = world_cfg(
        "MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", True,
        "MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", True,
        "MODEL.CLIPZSS.PLM.SEEN_HALO_RADIUS", 0,
        # the random miniature CLIP's text embeddings of two classes reach cosine 0.97; above
        # that, clusters merge only when their tokens are one class's embedding
        "MODEL.CLIPZSS.PLM.FUSION_THRESHOLD", 0.99,
    )  # fmt: skip
    batch, seen, model, losses = training_step_with_plm_inputs(on, world_records[:4])
    assert all(torch.isfinite(v) for v in losses.values())

    text = F.normalize(model.text_embeddings(list(W.CLASSES)).float(), dim=-1)
    tokens = seen["teacher"].patch_embed.float()  # B x C x 12 x 12
    sims = torch.einsum("bchw,kc->bkhw", tokens, text)
    valid = seen["teacher"].token_valid
    # every valid token is exactly one class's text embedding
    best = sims.max(dim=1).values
    torch.testing.assert_close(best[valid], torch.ones_like(best[valid]))
    # and it is the class of most of its 8 x 8 pixels in the hidden labels
    hidden = batch[0]["hidden_sem_seg"].numpy()
    for i in range(12):
        for j in range(12):
            if not valid[0, i, j]:
                continue
            patch = hidden[8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
            counts = np.bincount(patch[patch != V].ravel(), minlength=len(W.CLASSES))
            assert sims[0, :, i, j].argmax().item() == counts.argmax()

    # Pseudo labels as a perfect teacher gives them, by hand: one region per class present in
    # an image's valid tokens (lambda 0.99 above: no two classes share a region), covering the unlabelled
    # image pixels of its tokens. A region's purity is below 1 only by the patch grid: void and
    # other classes inside the 8 x 8 patches it dominates.
    k = len(W.CLASSES)
    unlabelled, covered = np.zeros(k + 1), np.zeros(k + 1)
    majority, pixels = np.zeros(k + 1), np.zeros(k + 1)
    for b, x in enumerate(batch):
        h, w = x["image_size"]
        truth = x["hidden_sem_seg"].numpy()[:96, :96]
        truth = np.where(truth == V, k, truth)
        free = (x["sem_seg"].numpy()[:96, :96] == V) & (np.arange(96)[:, None] < h)
        free &= np.arange(96)[None, :] < w
        unlabelled += np.bincount(truth[free], minlength=k + 1)
        token_class = sims[b].argmax(dim=0).numpy().repeat(8, 0).repeat(8, 1)
        in_token = valid[b].numpy().repeat(8, 0).repeat(8, 1) & free
        covered += np.bincount(truth[in_token], minlength=k + 1)
        for cls in np.unique(token_class[in_token]):
            counts = np.bincount(truth[in_token & (token_class == cls)], minlength=k + 1)
            majority[counts.argmax()] += counts.max()
            pixels[counts.argmax()] += counts.sum()
    per = model.pseudo_label_probe.summary()["per_class"]
    unseen = [c for c in W.UNSEEN if unlabelled[W.CLASS_ID[c]] > 0]
    assert unseen, "the crops show no unseen class: pick other records"
    for c in unseen:
        i = W.CLASS_ID[c]
        assert per[c]["share"] == round(covered[i] / unlabelled[i], 4), (c, per[c])
        assert per[c]["purity"] == round(majority[i] / pixels[i], 4), (c, per[c])
        assert per[c]["share"] > 0.8, (c, per[c])  # thin shapes lose purity on the grid


def test_the_oracle_needs_the_unresized_crop(world_records):
    cfg = world_cfg(
        "MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", True, "MODEL.CLIPZSS.TEACHER.INPUT_SIZE", 64
    )
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    model = build_model(cfg)
    model.train()
    with pytest.raises(UserInputError, match="TEACHER.INPUT_SIZE to 0"):
        model([mapper(world_records[0])])
