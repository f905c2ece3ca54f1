"""MiniWorld data: deterministic files, labels that match the drawn shapes, registration."""

import hashlib
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
from clipzss_d2.miniworld import captions as C
from clipzss_d2.miniworld import generate as G
from clipzss_d2.miniworld import render as R
from clipzss_d2.miniworld import shapes as S
from clipzss_d2.miniworld import world as W

SIZE = 96  # the hand-built scenes below; generated images have VOC-like sizes (WorldParams)
COUNTS = {"train": 20, "tune": 5, "test": 80}


def counts(train, tune, test):
    return {"train": train, "tune": tune, "test": test}


DEFAULT_PARAMS = W.WorldParams()


def assert_voc_like_size(height, width, p=DEFAULT_PARAMS):
    """A generated image's size lies in WorldParams' distribution: short side in
    [min_short_side, max_short_side], long side / short side in [1, max_aspect] (rounded)."""
    short, long = min(height, width), max(height, width)
    assert p.min_short_side <= short <= p.max_short_side, (height, width)
    assert long <= round(short * p.max_aspect) and long >= short, (height, width)


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
    manifest = generate_world(root, seed=7, counts=COUNTS, workers=2)
    return root, manifest


def test_same_seed_same_bytes_any_worker_count(small_world, tmp_path):
    root, _ = small_world
    other = str(tmp_path / "again")
    generate_world(other, seed=7, counts=COUNTS, workers=1)
    a, b = _files(root), _files(other)
    assert len(a) == 2 * sum(COUNTS.values()) + 1
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    third = str(tmp_path / "seed8")
    generate_world(third, seed=8, counts=counts(20, 0, 0), workers=1)
    c = _files(third)
    assert c["images/train/000000.jpg"] != a["images/train/000000.jpg"]


def test_rerun_skips_and_refuses_a_different_world(tmp_path):
    root = str(tmp_path / "w")
    generate_world(root, seed=1, counts=counts(6, 2, 3), workers=1)
    probe = G.image_path(root, "train", 0)
    os.utime(probe, (0, 0))
    generate_world(root, seed=1, counts=counts(6, 2, 3), workers=1)
    assert os.path.getmtime(probe) == 0  # nothing rewritten
    with pytest.raises(G.WorldExistsError, match="--overwrite"):
        generate_world(root, seed=2, counts=counts(6, 2, 3), workers=1)
    with pytest.raises(G.WorldExistsError, match="--overwrite"):  # another split size alone
        generate_world(root, seed=1, counts=counts(6, 3, 3), workers=1)
    manifest = generate_world(root, seed=2, counts=counts(4, 1, 3), workers=1, overwrite=True)
    assert manifest["key"]["seed"] == 2
    assert manifest["key"]["counts"] == counts(4, 1, 3)
    assert not os.path.exists(G.image_path(root, "train", 5))  # leftovers of the larger world
    assert not os.path.exists(G.image_path(root, "tune", 1))
    assert len(load_miniworld(root, "train")) == 4
    assert len(load_miniworld(root, "tune")) == 1


def test_stored_labels_are_the_rendered_labels(small_world):
    root, manifest = small_world
    params = W.WorldParams.from_dict(manifest["key"]["params"])
    for split, i in (("train", 0), ("train", 13), ("tune", 3), ("test", 42)):
        r = G.render_item(7, split, i, params)
        height, width = manifest["splits"][split]["sizes"][i]
        assert_voc_like_size(height, width)
        label = cv2.imread(G.label_path(root, split, i), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == (height, width)
        np.testing.assert_array_equal(label, r.label)
        image = cv2.imread(G.image_path(root, split, i), cv2.IMREAD_COLOR)[..., ::-1]
        assert image.shape == (height, width, 3)
        # JPEG is lossy: the stored image is the rendered one encoded at the manifest's quality
        quality = manifest["key"]["jpeg_quality"]
        ok, jpg = cv2.imencode(".jpg", r.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        np.testing.assert_array_equal(image, cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1])
        assert np.abs(image.astype(int) - r.image.astype(int)).mean() < 10


def test_generated_sizes_follow_the_voc_like_distribution(small_world):
    """Not 96 x 96 squares any more: every size in range, many distinct ones, both orientations
    (portrait_prob 0.3), and the manifest's sizes are the files' sizes."""
    root, manifest = small_world
    sizes = []
    for split in G.SPLITS:
        listed = manifest["splits"][split]["sizes"]
        assert len(listed) == COUNTS[split]
        for i, (height, width) in enumerate(listed):
            assert_voc_like_size(height, width)
            with open(G.label_path(root, split, i), "rb") as f:
                png = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_UNCHANGED)
            assert png.shape == (height, width)
        sizes += [tuple(s) for s in listed]
    portrait = sum(h > w for h, w in sizes) / len(sizes)
    assert 0.1 <= portrait <= 0.5, portrait
    assert sum(h == w for h, w in sizes) < 0.2 * len(sizes)
    assert len(set(sizes)) > 0.8 * len(sizes)
    aspects = [max(h, w) / min(h, w) for h, w in sizes]
    assert max(aspects) > 1.4 and min(aspects) < 1.1
    shorts = [min(s) for s in sizes]
    assert min(shorts) < 80 and max(shorts) > 110


def test_label_ids_in_range_and_unseen_classes_in_test(small_world):
    root, manifest = small_world
    present = set()
    for d in load_miniworld(root, "test"):
        label = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        ids = set(np.unique(label).tolist())
        assert ids <= set(range(len(W.CLASSES))) | {255}
        present |= ids
    for name in W.UNSEEN:
        assert W.CLASS_ID[name] in present, name
    pixels = manifest["splits"]["test"]["class_pixels"]
    assert all(pixels[c] > 0 for c in W.UNSEEN)
    assert manifest["splits"]["test"]["ignore_pixels"] > 0  # void rings at least


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
    scene = W.Scene(SIZE, SIZE, stuff=[W.StuffRegion("grass"), water], things=things)
    assert scene.void_ring_width == 0  # a hand-built scene has no rings unless asked for
    r = R.render_scene(scene, rng)
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
    expected[R.region_mask(water, (SIZE, SIZE))] = w
    for t in things:
        if t.name:
            mask = S.shape_mask(t.name, t.cx, t.cy, t.radius, t.angle, (SIZE, SIZE))
            expected[mask] = W.CLASS_ID[t.name]
        else:
            expected[R.thing_mask(t, (SIZE, SIZE))] = 255
    np.testing.assert_array_equal(L, expected)
    # with no photometric nuisance, the pixels of a label are that object's colour, all alike
    disc_px = r.image[L == W.CLASS_ID["disc"]].astype(int)
    assert (disc_px == disc_px[0]).all()
    assert np.abs(disc_px[0] - 255 * np.array(things[0].rgb)).max() <= 1


@pytest.mark.parametrize("name", W.THINGS)
def test_every_shape_is_centred_and_sized(name):
    # a landscape canvas (H 80, W 120) and an off-centre shape: x is the column, y the row
    cx, cy = 50, 30  # the canvas centre is (59.5, 39.5); the shape fits in 80 x 80
    mask = S.shape_mask(name, cx, cy, 20, 0.3, (80, 120))
    assert mask.shape == (80, 120)
    ys, xs = np.nonzero(mask)
    assert 0.15 * math.pi * 20**2 < mask.sum() < math.pi * 20**2
    assert abs(xs.mean() - cx) < 10 and abs(ys.mean() - cy) < 10
    assert xs.min() >= cx - 23 and xs.max() <= cx + 23
    assert ys.min() >= cy - 23 and ys.max() <= cy + 23
    # the same shape on a portrait canvas is the same pixels, and none beyond the overlap
    portrait = S.shape_mask(name, cx, cy, 20, 0.3, (120, 80))
    np.testing.assert_array_equal(portrait[:80, :80], mask[:, :80])
    assert not portrait[80:].any() and not mask[:, 80:].any()


def test_captions_name_exactly_the_visible_classes():
    p = W.WorldParams()
    rng = np.random.default_rng(3)
    for _ in range(200):
        r = R.make_sample(rng, p)
        caption = C.make_caption(r, p, rng)
        words = set(re.findall(r"[a-z]+", caption))
        things, _ = C.visible_classes(r, p)
        named = {c for c in W.THINGS if c in words or C._plural(c) in words}
        assert named == set(things), caption
        on_map = {W.CLASSES[i] for i in np.unique(r.label) if i != 255}
        assert {c for c in W.STUFF if c in words} <= on_map, caption


def test_registered_on_import_with_metadata():
    for split in ("train", "tune", "test"):
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
    assert "miniworld_val" not in DatasetCatalog.list()  # version 1's split is gone
    assert 12 <= len(W.CLASSES) <= 20


def test_registered_loader_reads_dicts_and_names_the_command_when_missing(small_world, tmp_path):
    root, manifest = small_world
    names = register_miniworld(root, prefix="miniworld_testroot")
    try:
        assert names == [f"miniworld_testroot_{s}" for s in ("train", "tune", "test")]
        dicts = DatasetCatalog.get("miniworld_testroot_test")
        assert len(dicts) == 80
        assert len(DatasetCatalog.get("miniworld_testroot_tune")) == 5
        d = dicts[5]
        assert set(d) >= {"file_name", "sem_seg_file_name", "height", "width", "image_id"}
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
        assert d["image_id"] == "000005"
        assert [d["height"], d["width"]] == manifest["splits"]["test"]["sizes"][5]
        assert cv2.imread(d["file_name"]).shape[:2] == (d["height"], d["width"])
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    with pytest.raises(MiniWorldNotGeneratedError, match="clipzss_d2.miniworld generate"):
        load_miniworld(str(tmp_path / "nowhere"), "train")


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _decoded_digest(path):
    """Hash of the decoded pixels (a re-encoded copy of the same image would hash alike)."""
    pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode())


def test_splits_are_separate_and_their_sizes_true(tmp_path):
    """train / tune / test: disjoint files, no tune or test image (nor label map) equal to a
    train one, dataset dicts whose height / width are the files' own, sizes that vary."""
    root = str(tmp_path / "w")
    generate_world(root, seed=0, counts=counts(30, 10, 10), workers=1)
    names = register_miniworld(root, prefix="miniworld_splits")
    try:
        dicts = {s: DatasetCatalog.get(f"miniworld_splits_{s}") for s in G.SPLITS}
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    assert {s: len(d) for s, d in dicts.items()} == counts(30, 10, 10)
    files = {
        s: {d["file_name"] for d in ds} | {d["sem_seg_file_name"] for d in ds}
        for s, ds in dicts.items()
    }
    assert all(len(f) == 2 * len(dicts[s]) for s, f in files.items())
    assert not files["train"] & files["tune"]
    assert not files["train"] & files["test"]
    assert not files["tune"] & files["test"]

    def hashes(split, key):
        raw = {_digest(d[key]) for d in dicts[split]}
        decoded = {_decoded_digest(d[key]).hexdigest() for d in dicts[split]}
        return raw, decoded

    for key in ("file_name", "sem_seg_file_name"):
        train_raw, train_decoded = hashes("train", key)
        assert len(train_raw) == 30  # no two train images alike either
        for split in ("tune", "test"):
            raw, decoded = hashes(split, key)
            assert not raw & train_raw, (split, key)
            assert not decoded & train_decoded, (split, key)
        assert not hashes("tune", key)[0] & hashes("test", key)[0]

    sizes = []
    for ds in dicts.values():
        for d in ds:
            image = cv2.imread(d["file_name"], cv2.IMREAD_COLOR)
            label = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
            assert image.shape[:2] == label.shape == (d["height"], d["width"]), d
            sizes.append((d["height"], d["width"]))
    aspects = {round(max(h, w) / min(h, w), 1) for h, w in sizes}
    assert len(aspects) >= 4, aspects
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)
    for split, ds in dicts.items():  # each split has sizes of its own, not one fixed size
        assert len({(d["height"], d["width"]) for d in ds}) >= 0.7 * len(ds), split


def test_module_command_dispatches_and_rejects_unknown_commands(tmp_path, capsys):
    from clipzss_d2.miniworld.__main__ import main

    assert main(["bogus"]) == 2
    assert "generate" in capsys.readouterr().err
    root = tmp_path / "w"
    args = ["generate", "--root", str(root), "--workers", "1"]
    args += ["--num-train", "2", "--num-tune", "1", "--num-test", "1"]
    assert main(args) == 0
    manifest = G.read_manifest(str(root))
    assert {s: manifest["splits"][s]["count"] for s in G.SPLITS} == counts(2, 1, 1)
    with pytest.raises(SystemExit):  # version 1's flag is gone
        main(["generate", "--root", str(root), "--num-val", "1"])


# -- the command deletes only what its own manifest lists ------------------------------------------
def _plant(root, files):
    """User files (relative path -> bytes) under root; returns them for _unchanged."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _unchanged(root, files):
    return {rel: (root / rel).read_bytes() if (root / rel).is_file() else None for rel in files}


USER_FILES = {
    "000000581929.jpg": b"a COCO image",
    "images/train/000000581929.jpg": b"another COCO image",
    "images/train/000005.jpg": b"numbered like a world image",
    "annotations_detectron2/tune/0001.png": b"a user's label",
    "annotations_detectron2/test/000009.png": b"numbered like a world label",
    "images/tune/.tmp-notes": b"notes",
    ".tmp-dir/keep.txt": b"keep me",
    "notes.txt": b"top-level notes",
}


@pytest.mark.parametrize("overwrite", [False, True])
def test_command_refuses_a_foreign_folder_and_leaves_it_byte_identical(tmp_path, capsys, overwrite):
    """A non-empty folder without a manifest of this command (a COCO download, say) is refused
    with one line and exit status 2, --overwrite or not; not a byte in it changes."""
    from clipzss_d2.miniworld.__main__ import main

    root = tmp_path / "coco"
    planted = _plant(root, USER_FILES)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    args = ["generate", "--root", str(root), "--workers", "1"]
    args += ["--num-train", "2", "--num-tune", "1", "--num-test", "1"]
    assert main(args + ["--overwrite"] * overwrite) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {root} is not empty and holds no miniature world written by this command; "
        f"choose an empty or new folder\n"
    )
    assert _unchanged(root, planted) == planted
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


@pytest.mark.parametrize("tmp_dir", ["images/train/.tmp-dir", ".tmp-dir"])
def test_regenerating_deletes_only_files_its_manifest_lists(tmp_path, tmp_dir):
    """--overwrite with fewer images drops the world's own surplus files and a killed run's
    temporary file of a listed image; files the user put among them survive byte for byte
    (a ".tmp-dir/" folder in a split folder, too: no crash)."""
    root = tmp_path / "w"
    generate_world(str(root), seed=1, counts=counts(6, 2, 3), workers=1)
    planted = _plant(
        root,
        {
            "images/train/000000581929.jpg": b"a COCO image",
            "annotations_detectron2/tune/0001.png": b"a user's label",
            "annotations_detectron2/test/0003.png": b"another user's label",
            "images/tune/.tmp-notes": b"notes",
            f"{tmp_dir}/keep.txt": b"keep me",
            "images/train/.tmp-000012.jpg-abcd1234.jpg": b"not a listed image's temp file",
            "notes.txt": b"top-level notes",
        },
    )
    leftover = root / "images" / "train" / ".tmp-000005.jpg-abcd1234.jpg"
    leftover.write_bytes(b"half an image")  # a killed run's temporary file of a listed image
    fresh = tmp_path / "fresh"
    manifest = generate_world(str(root), seed=2, counts=counts(4, 1, 2), workers=1, overwrite=True)
    assert manifest["key"]["counts"] == counts(4, 1, 2)
    assert _unchanged(root, planted) == planted
    assert not leftover.exists()
    generate_world(str(fresh), seed=2, counts=counts(4, 1, 2), workers=1)
    ours = {k: v for k, v in _files(root).items() if k not in planted}
    assert ours == _files(fresh)  # exactly the new world beside the user's files
    assert len(load_miniworld(str(root), "train")) == 4


def test_an_interrupted_generation_is_resumed_not_refused(tmp_path, monkeypatch):
    """A run stopped before its manifest leaves generating.json: the next run continues there
    (even with fewer images, whose surplus it removes) instead of calling the folder foreign."""
    root = tmp_path / "w"
    write_range = G._write_range

    def stop_after_train(job):
        if job[2] != "train":
            raise KeyboardInterrupt
        return write_range(job)

    monkeypatch.setattr(G, "_write_range", stop_after_train)
    with pytest.raises(KeyboardInterrupt):
        generate_world(str(root), seed=3, counts=counts(6, 2, 3), workers=1)
    assert os.path.isfile(G.image_path(str(root), "train", 5))
    assert G.read_manifest(str(root)) is None
    assert not [p for p in root.rglob(".tmp-*")]  # an interrupted write removes its own
    monkeypatch.setattr(G, "_write_range", write_range)
    generate_world(str(root), seed=3, counts=counts(4, 1, 2), workers=1)
    fresh = tmp_path / "fresh"
    generate_world(str(fresh), seed=3, counts=counts(4, 1, 2), workers=1)
    assert _files(root) == _files(fresh)  # no generating.json, no image 4 or 5 left
