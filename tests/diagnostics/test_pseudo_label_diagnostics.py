"""MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS: the training mapper's hidden labels and the probe's
share / purity counts (clipzss_d2/diagnostics).

The mapper is checked on files of a small generated world against label maps read here and put
through the known geometry by hand; the probe against a case worked out by hand. The end-to-end
report (pseudo_label_diagnostics.json after training) is checked in tests/miniworld/test_run_miniworld.py.
"""

import math

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.diagnostics import PseudoLabelProbe, format_summary, observe_batch
from clipzss_d2.miniworld import generate_world, register_miniworld
from clipzss_d2.miniworld import world as W
from tests.helpers import MINIWORLD_FULL_CONFIG, miniworld_model_cfg

SEEN = [c for c in W.CLASSES if c not in W.UNSEEN]
UNSEEN_IDS = [W.CLASS_ID[c] for c in W.UNSEEN]


def seen_ids(full: np.ndarray) -> np.ndarray:
    """Training labels by hand: seen class -> its index among the seen, anything else ignore."""
    out = np.full(full.shape, 255, np.int64)
    for i, name in enumerate(SEEN):
        out[full == W.CLASS_ID[name]] = i
    return out


def padded(label: np.ndarray, multiple: int) -> np.ndarray:
    h, w = label.shape
    out = np.full((math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple), 255)
    out[:h, :w] = label
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Train records of a small world whose label maps show an unseen class (registered as
    miniworld_*; the default root is registered again afterwards)."""
    root = str(tmp_path_factory.mktemp("mw") / "miniworld")
    generate_world(root, seed=0, counts={"train": 12, "tune": 0, "test": 0}, workers=1)
    register_miniworld(root)
    dicts = DatasetCatalog.get("miniworld_train")
    with_unseen = [
        d
        for d in dicts
        if np.isin(cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED), UNSEEN_IDS).any()
    ]
    assert len(with_unseen) >= 2
    yield with_unseen
    register_miniworld()


def raw_label(record) -> np.ndarray:
    return cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED).astype(np.int64)


def mapper_for(*opts, is_train=True):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(MINIWORLD_FULL_CONFIG)
    cfg.merge_from_list(list(opts))
    return ZeroShotSemSegDatasetMapper(cfg, is_train=is_train)


def fixed_geometry(record, flip="none"):
    """No crop, resized to the image's own short side (no change), padded to multiples of 32."""
    short = min(record["height"], record["width"])
    return mapper_for(
        "MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", True,
        "INPUT.CROP.ENABLED", False,
        "INPUT.MIN_SIZE_TRAIN", (short,),
        "INPUT.MAX_SIZE_TRAIN", 10_000,
        "INPUT.RANDOM_FLIP", flip,
        "INPUT.SIZE_DIVISIBILITY", 32,
    )  # fmt: skip


def test_hidden_labels_are_the_full_labels_padded(records):
    record = records[0]
    raw = raw_label(record)
    out = fixed_geometry(record)(record)
    expected = padded(raw, 32)
    assert out["image_size"] == raw.shape and out["image"].shape[1:] == expected.shape
    assert np.isin(raw, UNSEEN_IDS).any()
    np.testing.assert_array_equal(out["hidden_sem_seg"].numpy(), expected)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), seen_ids(expected))


def test_hidden_labels_follow_the_flip(records):
    record = records[1]
    raw = raw_label(record)
    h, w = raw.shape
    plain = fixed_geometry(record)(record)["image"][:, :h, :w]
    mapper = fixed_geometry(record, "horizontal")
    seen = set()
    for seed in range(12):
        np.random.seed(seed)  # noqa: NPY002  (detectron2's augmentations draw from it)
        out = mapper(record)
        image = out["image"][:, :h, :w]
        flipped = torch.equal(image, plain.flip(-1))
        assert flipped or torch.equal(image, plain)
        expected = padded(raw[:, ::-1] if flipped else raw, 32)
        np.testing.assert_array_equal(out["hidden_sem_seg"].numpy(), expected)
        np.testing.assert_array_equal(out["sem_seg"].numpy(), seen_ids(expected))
        seen.add(flipped)
    assert seen == {True, False}


def test_hidden_labels_match_the_training_labels_under_full_augmentation(records):
    """configs/miniworld's own resize (scales 0.5 ... 2), crop, flip and padding: wherever the
    hidden label is a seen class, the training label is that class; elsewhere it is ignore."""
    mapper = mapper_for("MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", True)
    np.random.seed(0)  # noqa: NPY002
    resized = 0
    for i in range(24):
        record = records[i % len(records)]
        out = mapper(record)
        hidden, sem_seg = out["hidden_sem_seg"].numpy(), out["sem_seg"].numpy()
        assert hidden.shape == sem_seg.shape == tuple(out["image"].shape[1:])
        h, w = out["image_size"]
        assert (hidden[h:] == 255).all() and (hidden[:, w:] == 255).all()
        np.testing.assert_array_equal(sem_seg, seen_ids(hidden), err_msg=f"draw {i}")
        ids = set(np.unique(hidden).tolist())
        assert ids <= set(range(len(W.CLASSES))) | {255}
        resized += min(h, w) != min(record["height"], record["width"])
    assert resized >= 12


def test_no_hidden_labels_unless_asked_for(records):
    record = records[0]
    assert get_clipzss_cfg().MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS is False
    np.random.seed(0)  # noqa: NPY002
    assert "hidden_sem_seg" not in mapper_for()(record)
    # at test time there is nothing to diagnose, even when asked for
    test_mapper = mapper_for("MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", True, is_train=False)
    assert "hidden_sem_seg" not in test_mapper(record)


# -- the probe, on a case worked out by hand ------------------------------------------------------
# Classes a, b (seen: ids 0, 1 before and after PLM) and u1, u2 (unseen: dataset ids 2, 3); 255 is
# ignore / void. Image 0 is 4 x 6 with its last column padding; image 1 is all u2, unlabelled.
CLASSES = ["a", "b", "u1", "u2"]
X = 255
HIDDEN_0 = [
    [0, 0, 2, 2, 2, X],
    [0, 0, 2, 2, 2, X],
    [1, 1, 3, 3, 2, X],
    [1, 1, 3, 3, X, X],
]
SEEN_0 = [
    [0, 0, X, X, X, X],
    [0, 0, X, X, X, X],
    [1, 1, X, X, X, X],
    [1, 1, X, X, X, X],
]
# after PLM: pseudo classes 2 and 3 of this image (ids >= num_seen = 2). Not counted: (0, 0), a
# labelled pixel; (0, 5), padding. Region "2" = six u1 pixels; region "3" = three u2 + one void.
FUSED_0 = [
    [3, 0, 2, 2, X, 3],
    [0, 0, 2, 2, 2, X],
    [1, 1, 3, 3, 2, X],
    [1, 1, 3, X, 3, X],
]
VALID_0 = [[True] * 5 + [False]] * 4
# image 1: its pseudo class 2 is another region than image 0's class 2 (24 u2 pixels)
HIDDEN_1, SEEN_1, FUSED_1, VALID_1 = [[3] * 6] * 4, [[X] * 6] * 4, [[2] * 6] * 4, [[True] * 6] * 4


def probe_batch():
    def t(a, b):
        return torch.tensor([a, b])

    return {
        "seen_targets": t(SEEN_0, SEEN_1),
        "fused_targets": t(FUSED_0, FUSED_1),
        "num_seen": 2,
        "hidden": t(HIDDEN_0, HIDDEN_1),
        "image_valid": t(VALID_0, VALID_1),
    }


def test_probe_counts_a_case_worked_by_hand():
    probe = PseudoLabelProbe(CLASSES, ["u2", "u1"], ignore_value=255)
    assert probe.unseen_names == ["u1", "u2"]  # in class order
    figures = probe.update(**probe_batch())
    # unlabelled image pixels: u1 7, u2 4 + 24, void 1; given a pseudo label: u1 6, u2 3 + 24,
    # void 1 (the (3, 4) pixel of image 0)
    assert figures["pseudo/unseen_share"] == pytest.approx(33 / 35)
    assert figures["pseudo/void_share"] == pytest.approx(1.0)
    s = probe.summary()
    assert s["unseen"] == ["u1", "u2"]
    per = s["per_class"]
    assert per["u1"] == {
        "unlabelled_pixels": 7,
        "share": round(6 / 7, 4),
        "regions": 1,
        "purity": 1.0,
    }
    # regions whose majority is u2: image 0's "3" (3 of 4 pixels u2) and image 1's "2" (24 of 24);
    # image 0's "2" stays a u1 region of its own (regions are per image)
    assert per["u2"] == {
        "unlabelled_pixels": 28, "share": round(27 / 28, 4), "regions": 2,
        "purity": round(27 / 28, 4),
    }  # fmt: skip
    assert per["(void)"] == {"unlabelled_pixels": 1, "share": 1.0, "regions": 0, "purity": None}
    for seen in ("a", "b"):  # labelled pixels are never "unlabelled", pseudo or not
        assert per[seen] == {"unlabelled_pixels": 0, "share": None, "regions": 0, "purity": None}
    assert s["unseen_share"] == round(33 / 35, 4)
    assert s["all_purity"] == round(33 / 34, 4)
    table = format_summary(s)
    assert "u1 | 7 | 85.7 % | 1 | 100.0 %" in table and "(void) | 1 | 100.0 % | 0 | -" in table

    # counts add up over batches (the figures stay), and reset clears them
    probe.update(**probe_batch())
    again = probe.summary()
    assert (
        again["per_class"]["u2"]["unlabelled_pixels"] == 56
        and again["per_class"]["u2"]["regions"] == 4
    )
    assert again["unseen_share"] == s["unseen_share"] and again["all_purity"] == s["all_purity"]
    probe.reset()
    assert probe.summary()["unseen_share"] is None


def test_observe_batch_reads_each_inputs_hidden_labels():
    """The model's call: hidden_sem_seg of each input (possibly smaller than the batch's padded
    targets) at the targets' size; without them it names the switch."""
    b = probe_batch()
    direct = PseudoLabelProbe(CLASSES, ["u1", "u2"], 255)
    direct.update(**b)
    via_model = PseudoLabelProbe(CLASSES, ["u1", "u2"], 255)
    inputs = [{"hidden_sem_seg": b["hidden"][0, :, :5]}, {"hidden_sem_seg": b["hidden"][1]}]
    observe_batch(via_model, inputs, b["seen_targets"], b["fused_targets"], 2, b["image_valid"])
    assert via_model.summary() == direct.summary()
    with pytest.raises(ValueError, match="DIAGNOSTICS.PSEUDO_LABELS"):
        observe_batch(
            via_model, [{}, {}], b["seen_targets"], b["fused_targets"], 2, b["image_valid"]
        )


# -- the model's wiring ---------------------------------------------------------------------------
model_cfg = miniworld_model_cfg


def test_the_model_counts_hidden_labels_and_changes_nothing(records):
    """Switch off (the default): no probe. On: the training step counts every unlabelled image
    pixel by its hidden class, and the losses are those of the model without the probe."""
    from detectron2.modeling import build_model

    assert build_model(model_cfg()).pseudo_label_probe is None
    on = model_cfg("MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", True)
    mapper = ZeroShotSemSegDatasetMapper(on, is_train=True)
    np.random.seed(0)  # noqa: NPY002
    batch = [mapper(records[0]), mapper(records[1])]

    losses = {}
    for switch in (False, True):
        torch.manual_seed(0)
        model = build_model(model_cfg("MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", switch))
        model.train()
        torch.manual_seed(1)
        losses[switch] = {k: v.item() for k, v in model(batch).items()}
    probe = model.pseudo_label_probe
    assert probe.class_names == list(W.CLASSES) and probe.unseen_names == list(W.UNSEEN)
    assert losses[True] == losses[False]

    # by hand: the batch's unlabelled image pixels (training label ignore, inside image_size)
    expected = np.zeros(len(W.CLASSES) + 1, np.int64)
    for x in batch:
        h, w = x["image_size"]
        hidden = x["hidden_sem_seg"][:h, :w].numpy()
        unlabelled = x["sem_seg"][:h, :w].numpy() == 255
        ids = np.where(hidden == 255, len(W.CLASSES), hidden)[unlabelled]
        expected += np.bincount(ids, minlength=len(W.CLASSES) + 1)
    per = probe.summary()["per_class"]
    got = [per[c]["unlabelled_pixels"] for c in list(W.CLASSES) + ["(void)"]]
    assert got == expected.tolist()
    assert sum(expected[UNSEEN_IDS]) > 0 and all(per[c]["unlabelled_pixels"] == 0 for c in SEEN)
