"""MiniWorld data: deterministic files, labels that match the drawn shapes, registration."""

import math
import os
import re

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from clipzss_d2 import vocabulary
from clipzss_d2.miniworld import (
    MiniWorldNotGeneratedError,
    generate_world,
    load_miniworld,
    register_miniworld,
)
from clipzss_d2.miniworld import generate as G
from clipzss_d2.miniworld import world as W

SIZE = 96


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mw") / "miniworld")
    manifest = generate_world(root, seed=7, num_train=20, num_val=80, workers=2)
    return root, manifest


def test_same_seed_same_bytes_any_worker_count(small_world, tmp_path):
    root, _ = small_world
    other = str(tmp_path / "again")
    generate_world(other, seed=7, num_train=20, num_val=80, workers=1)
    a, b = _files(root), _files(other)
    assert len(a) == 2 * (20 + 80) + 1
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    third = str(tmp_path / "seed8")
    generate_world(third, seed=8, num_train=20, num_val=0, workers=1)
    c = _files(third)
    assert c["images/train/000000.jpg"] != a["images/train/000000.jpg"]


def test_rerun_skips_and_refuses_a_different_world(tmp_path):
    root = str(tmp_path / "w")
    generate_world(root, seed=1, num_train=6, num_val=3, workers=1)
    probe = G.image_path(root, "train", 0)
    os.utime(probe, (0, 0))
    generate_world(root, seed=1, num_train=6, num_val=3, workers=1)
    assert os.path.getmtime(probe) == 0  # nothing rewritten
    with pytest.raises(G.WorldExistsError, match="--overwrite"):
        generate_world(root, seed=2, num_train=6, num_val=3, workers=1)
    manifest = generate_world(root, seed=2, num_train=4, num_val=3, workers=1, overwrite=True)
    assert manifest["key"]["seed"] == 2
    assert not os.path.exists(G.image_path(root, "train", 5))  # leftovers of the larger world
    assert len(load_miniworld(root, "train")) == 4


def test_stored_labels_are_the_rendered_labels(small_world):
    root, manifest = small_world
    params = W.WorldParams.from_dict(manifest["key"]["params"])
    for split, i in (("train", 0), ("train", 13), ("val", 42)):
        r = G.render_item(7, split, i, params)
        label = cv2.imread(G.label_path(root, split, i), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(label, r.label)
        image = cv2.imread(G.image_path(root, split, i), cv2.IMREAD_COLOR)[..., ::-1]
        assert image.shape == (SIZE, SIZE, 3)
        # JPEG is lossy; the stored image is the rendered one up to compression noise
        assert np.abs(image.astype(int) - r.image.astype(int)).mean() < 6


def test_label_ids_in_range_and_unseen_classes_in_val(small_world):
    root, manifest = small_world
    present = set()
    for d in load_miniworld(root, "val"):
        label = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        ids = set(np.unique(label).tolist())
        assert ids <= set(range(len(W.CLASSES))) | {255}
        present |= ids
    for name in W.UNSEEN:
        assert W.CLASS_ID[name] in present, name
    pixels = manifest["splits"]["val"]["class_pixels"]
    assert all(pixels[c] > 0 for c in W.UNSEEN)


def _plain_thing(name, cx, cy, radius, angle=0.0, rgb=(1.0, 0.0, 0.0)):
    return W.ThingSpec(name=name, cx=cx, cy=cy, radius=radius, angle=angle, rgb=rgb)


def test_label_matches_drawn_shapes_at_computed_points():
    """A scene with known geometry: each label is checked where the geometry says what lies."""
    rng = np.random.default_rng(0)
    water = W.StuffRegion("water", "halfplane", (0.0, 20.0, 0.0, 50.0, 0.0))  # x - 47.5 > 20
    clutter = W.ThingSpec(
        name="",
        cx=85,
        cy=12,
        radius=6,
        angle=0.0,
        rgb=(0.5, 0.5, 0.5),
        polygon=np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]),
    )
    things = [
        _plain_thing("disc", 30, 40, 15, rgb=(0.9, 0.1, 0.1)),
        _plain_thing("square", 40, 40, 8, rgb=(0.1, 0.2, 0.9)),  # on top of the disc
        _plain_thing("ring", 72, 72, 14, rgb=(0.9, 0.5, 0.1)),
        _plain_thing("star", 20, 78, 14, angle=0.0, rgb=(1.0, 0.8, 0.1)),
        _plain_thing("arrow", 60, 20, 12, angle=math.pi / 2, rgb=(0.1, 0.6, 0.3)),
        clutter,
    ]
    scene = W.Scene(size=SIZE, stuff=[W.StuffRegion("grass"), water], things=things)
    r = W.render_scene(scene, rng)
    L = r.label
    g, w = W.CLASS_ID["grass"], W.CLASS_ID["water"]
    # stuff: left of x = 67.5 grass, right of it water (where no object lies)
    assert L[5, 5] == g and L[50, 60] == g and L[50, 90] == w and L[5, 70] == w
    # the square occludes the disc; the disc's far side is still disc
    assert L[40, 40] == W.CLASS_ID["square"] and L[40, 45] == W.CLASS_ID["square"]
    assert L[40, 20] == W.CLASS_ID["disc"] and L[40 + 12, 30] == W.CLASS_ID["disc"]
    assert L[40, 30 - 16] == g  # just outside the disc (radius 0.9 * 15)
    # ring: hole in the middle shows the background, the band is ring
    assert L[72, 72] == w and L[72, 72 - 12] == W.CLASS_ID["ring"]
    assert L[72 - 12, 72] == W.CLASS_ID["ring"]
    # star pointing up: a tip is star, the notch between two tips at the same radius is not
    assert L[78 - 12, 20] == W.CLASS_ID["star"] and L[78, 20] == W.CLASS_ID["star"]
    notch = (78 - round(11 * math.cos(math.pi / 5)), 20 + round(11 * math.sin(math.pi / 5)))
    assert L[notch] == g
    # arrow rotated by 90 degrees points down (+y): tip below the centre, not to the right
    assert L[20 + 10, 60] == W.CLASS_ID["arrow"] and L[20, 60 + 6] == g
    # clutter is ignore
    assert L[12, 85] == 255
    # the whole map equals the painter's order of the same masks
    expected = np.full((SIZE, SIZE), g, np.uint8)
    expected[W.region_mask(water, SIZE)] = w
    for t in things:
        if t.name:
            expected[W.shape_mask(t.name, t.cx, t.cy, t.radius, t.angle, SIZE)] = W.CLASS_ID[t.name]
        else:
            expected[W._thing_mask(t, SIZE)] = 255
    np.testing.assert_array_equal(L, expected)
    # with no photometric nuisance, the pixels of a label are that object's colour, all alike
    disc_px = r.image[L == W.CLASS_ID["disc"]].astype(int)
    assert (disc_px == disc_px[0]).all()
    assert np.abs(disc_px[0] - 255 * np.array(things[0].rgb)).max() <= 1


@pytest.mark.parametrize("name", W.THINGS)
def test_every_shape_is_centred_and_sized(name):
    mask = W.shape_mask(name, 48, 48, 20, 0.3, SIZE)
    ys, xs = np.nonzero(mask)
    assert 0.15 * math.pi * 20**2 < mask.sum() < math.pi * 20**2
    assert abs(xs.mean() - 48) < 10 and abs(ys.mean() - 48) < 10
    assert xs.min() >= 48 - 23 and xs.max() <= 48 + 23


def test_captions_name_exactly_the_visible_classes():
    p = W.WorldParams()
    rng = np.random.default_rng(3)
    for _ in range(200):
        r = W.make_sample(rng, p)
        caption = W.make_caption(r, p, rng)
        words = set(re.findall(r"[a-z]+", caption))
        things, _ = W.visible_classes(r, p)
        named = {c for c in W.THINGS if c in words or W._plural(c) in words}
        assert named == set(things), caption
        on_map = {W.CLASSES[i] for i in np.unique(r.label) if i != 255}
        assert {c for c in W.STUFF if c in words} <= on_map, caption


def test_registered_on_import_with_metadata():
    for split in ("train", "val"):
        name = f"miniworld_{split}"
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == list(W.CLASSES)
        assert meta.unseen_classes == list(W.UNSEEN)
        assert len(meta.stuff_colors) == len(W.CLASSES)
        assert meta.ignore_label == 255 and meta.evaluator_type == "gzss_sem_seg"
        assert meta.image_root.endswith(os.path.join("miniworld", "images", split))
        assert meta.sem_seg_root.endswith(
            os.path.join("miniworld", "annotations_detectron2", split)
        )
        assert [W.CLASSES[i] for i in vocabulary.unseen_class_ids(meta)] == sorted(
            W.UNSEEN, key=W.CLASS_ID.get
        )
        assert len(vocabulary.seen_class_ids(meta)) == len(W.CLASSES) - len(W.UNSEEN)
    assert 12 <= len(W.CLASSES) <= 20


def test_registered_loader_reads_dicts_and_names_the_command_when_missing(small_world, tmp_path):
    root, _ = small_world
    names = register_miniworld(root, prefix="miniworld_testroot")
    try:
        dicts = DatasetCatalog.get("miniworld_testroot_val")
        assert len(dicts) == 80
        d = dicts[5]
        assert set(d) >= {"file_name", "sem_seg_file_name", "height", "width", "image_id"}
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
        assert (d["height"], d["width"]) == (SIZE, SIZE) and d["image_id"] == "000005"
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    with pytest.raises(MiniWorldNotGeneratedError, match="clipzss_d2.miniworld generate"):
        load_miniworld(str(tmp_path / "nowhere"), "train")


def test_module_command_dispatches_and_rejects_unknown_commands(tmp_path, capsys):
    from clipzss_d2.miniworld.__main__ import main

    assert main(["bogus"]) == 2
    assert "generate" in capsys.readouterr().err
    root = tmp_path / "w"
    args = ["generate", "--root", str(root), "--num-train", "2", "--num-val", "1", "--workers", "1"]
    assert main(args) == 0
    assert G.read_manifest(str(root))["splits"]["train"]["count"] == 2
