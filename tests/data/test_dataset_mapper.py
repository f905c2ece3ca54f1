"""Training mapper: seen-index labels from the original maps, unseen never output, augmentation."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from PIL import Image

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.data import (
    ColorAugSSD,
    PhotometricDistortTransform,
    ZeroShotSemSegDatasetMapper,
    get_training_vocabulary,
)
from clipzss_d2.data.dataset_mapper import DatasetConfigError
from clipzss_d2.vocabulary import prompt_names
from tests.data_samples import context_label_maps, read_png
from tests.published_classes import (
    COCO171,
    COCO171_UNSEEN,
    PC59,
    PC59_BY_459_ID,
    PC59_UNSEEN_ZS3,
    PC59_UNSEEN_ZSB,
    VOC20,
    VOC20_UNSEEN,
)


def seed_augmentations(seed: int) -> None:
    """detectron2's augmentations draw from numpy's global generator (seeded per worker)."""
    np.random.seed(seed)  # noqa: NPY002


def make_cfg(train=("voc20_zs_train",), **input_opts):
    cfg = get_clipzss_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.DATASETS.TRAIN = train
    cfg.INPUT.MIN_SIZE_TRAIN = (200, 300)
    cfg.INPUT.MAX_SIZE_TRAIN = 500
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (256, 256)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    for key, value in input_opts.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def unaugmented_mapper(cfg) -> ZeroShotSemSegDatasetMapper:
    kwargs = ZeroShotSemSegDatasetMapper.from_config(cfg, is_train=True)
    kwargs.update(augmentations=[], pad_to=None)
    return ZeroShotSemSegDatasetMapper(**kwargs)


def expected_seen_index(original, name_of_value, classes, unseen) -> np.ndarray:
    """Original dataset values -> seen index, value by value, from the published lists."""
    seen = [c for c in classes if c not in unseen]
    out = np.full(original.shape, 255, dtype=np.int64)
    for value in np.unique(original):
        name = name_of_value(int(value))
        if name is not None and name not in unseen:
            out[original == value] = seen.index(name)
    return out


def coco_names(shared_data):
    lines = (shared_data / "coco_stuff" / "labels.txt").read_text().splitlines()
    return {int(k): v.strip() for k, v in (line.split(":", 1) for line in lines)}


def originals(shared_data, benchmark):
    """{image id: (original label array, value -> class name or None)} of every sample."""
    if benchmark == "voc20":
        src = shared_data / "voc" / "VOC2012" / "SegmentationClassAug"
        return {
            p.stem: (read_png(p), lambda v: VOC20[v - 1] if 1 <= v <= 20 else None)
            for p in src.glob("*.png")
        }
    if benchmark == "coco":
        names = coco_names(shared_data)
        src = shared_data / "coco_stuff" / "stuffthingmaps_trainval2017"
        return {
            p.stem: (read_png(p), lambda v: None if v == 255 else names[v + 1])
            for p in src.rglob("*.png")
        }
    maps = context_label_maps(
        shared_data, ["2008_000008", "2008_000019", "2008_000009", "2008_000026"]
    )
    return {k: (v, PC59_BY_459_ID.get) for k, v in maps.items()}


@pytest.mark.parametrize(
    "train, benchmark, classes, unseen",
    [
        ("voc20_zs", "voc20", VOC20, VOC20_UNSEEN),
        ("coco_stuff171_zs", "coco", COCO171, COCO171_UNSEEN),
        ("pcontext59_zs", "pcontext", PC59, PC59_UNSEEN_ZS3),
        ("pcontext59_zsb", "pcontext", PC59, PC59_UNSEEN_ZSB),
    ],
)
def test_labels_are_seen_indices_of_the_original_maps(
    prepared_root, shared_data, train, benchmark, classes, unseen
):
    mapper = unaugmented_mapper(make_cfg(train=(f"{train}_train",)))
    source = originals(shared_data, benchmark)
    records = DatasetCatalog.get(f"{train}_train") + DatasetCatalog.get(f"{train}_val")
    unseen_pixels = 0
    for record in records:
        out = mapper(record)
        original, name_of = source[record["image_id"]]
        expected = expected_seen_index(original, name_of, classes, unseen)
        assert out["sem_seg"].dtype == torch.int64
        np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
        unseen_pixels += sum(
            int((original == v).sum()) for v in np.unique(original) if name_of(int(v)) in unseen
        )
        with Image.open(record["file_name"]) as img:
            rgb = np.asarray(img.convert("RGB"))
        assert out["image"].dtype == torch.uint8
        np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), rgb)
        assert (out["height"], out["width"]) == original.shape
    assert unseen_pixels > 0  # the samples do hold unseen classes, and they all became 255


def test_augmented_outputs_stay_in_the_seen_space(prepared_root):
    seed_augmentations(0)
    for train, n_seen in (("voc20_zs", 15), ("coco_stuff171_zs", 156)):
        mapper = ZeroShotSemSegDatasetMapper(make_cfg(train=(f"{train}_train",)), is_train=True)
        records = DatasetCatalog.get(f"{train}_train") + DatasetCatalog.get(f"{train}_val")
        for record in records * 2:
            out = mapper(record)
            assert out["image"].shape == (3, 256, 256) and out["image"].dtype == torch.uint8
            assert out["sem_seg"].shape == (256, 256)
            values = set(np.unique(out["sem_seg"].numpy()).tolist())
            assert values <= set(range(n_seen)) | {255}, values


def test_flip_keeps_image_and_labels_aligned(prepared_root):
    cfg = make_cfg(COLOR_AUG_SSD=False, RANDOM_FLIP="horizontal")
    cfg.INPUT.CROP.ENABLED = False
    kwargs = ZeroShotSemSegDatasetMapper.from_config(cfg, is_train=True)
    kwargs["augmentations"] = kwargs["augmentations"][-1:]  # the flip only
    mapper = ZeroShotSemSegDatasetMapper(**kwargs)
    reference = unaugmented_mapper(cfg)
    record = DatasetCatalog.get("voc20_zs_val")[0]
    plain = reference(record)
    flips = 0
    seed_augmentations(1)
    for _ in range(8):
        out = mapper(record)
        flipped = torch.equal(out["image"], plain["image"].flip(-1))
        flips += flipped
        want = plain["sem_seg"].flip(-1) if flipped else plain["sem_seg"]
        assert flipped or torch.equal(out["image"], plain["image"])
        assert torch.equal(out["sem_seg"], want)
    assert 0 < flips < 8


def test_small_images_are_padded_with_ignore_and_the_pixel_mean(prepared_root):
    cfg = make_cfg()
    kwargs = ZeroShotSemSegDatasetMapper.from_config(cfg, is_train=True)
    kwargs.update(augmentations=[], pad_to=(600, 700))
    out = ZeroShotSemSegDatasetMapper(**kwargs)(DatasetCatalog.get("voc20_zs_val")[0])
    h, w = out["height"], out["width"]
    assert out["image"].shape == (3, 600, 700)
    assert (out["sem_seg"][h:] == 255).all() and (out["sem_seg"][:, w:] == 255).all()
    mean = torch.tensor([round(v) for v in cfg.MODEL.PIXEL_MEAN], dtype=torch.uint8)
    assert (out["image"][:, h:, :] == mean[:, None, None]).all()
    # SIZE_DIVISIBILITY pads up to a multiple instead.
    kwargs.update(pad_to=None, size_divisibility=64)
    out = ZeroShotSemSegDatasetMapper(**kwargs)(DatasetCatalog.get("voc20_zs_val")[0])
    assert [s % 64 for s in out["sem_seg"].shape] == [0, 0]


def test_test_mode_keeps_full_ids(prepared_root):
    cfg = make_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 0
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=False)
    for record in DatasetCatalog.get("voc20_zs_val"):
        out = mapper(record)
        np.testing.assert_array_equal(out["sem_seg"].numpy(), read_png(record["sem_seg_file_name"]))
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 1000
    out = ZeroShotSemSegDatasetMapper(cfg, is_train=False)(record)
    assert min(out["image"].shape[1:]) == 128 and out["sem_seg"].shape == out["image"].shape[1:]
    assert (out["height"], out["width"]) == read_png(record["sem_seg_file_name"]).shape


def test_images_keep_their_stored_orientation(prepared_root, tmp_path):
    record = dict(DatasetCatalog.get("voc20_zs_val")[0])
    with Image.open(record["file_name"]) as img:
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90": detectron2's read_image would turn the image
        img.save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    record["file_name"] = str(tmp_path / "tagged.jpg")
    cfg = make_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 0
    for mapper in (ZeroShotSemSegDatasetMapper(cfg, is_train=False), unaugmented_mapper(cfg)):
        out = mapper(record)
        assert (
            out["image"].shape[1:]
            == out["sem_seg"].shape
            == read_png(record["sem_seg_file_name"]).shape
        )


def test_vocabulary_order_is_the_mapper_order(prepared_root):
    for name in ("voc20_zs_train", "coco_stuff171_zs_train", "pcontext59_zsb_train"):
        meta = MetadataCatalog.get(name)
        vocab = get_training_vocabulary([name])
        table = unaugmented_mapper(make_cfg(train=(name,))).label_map
        names = prompt_names(meta)
        for k, entry in enumerate(vocab):
            (full_ids,) = np.nonzero(table == k)
            assert [names[i] for i in full_ids] == [entry]
        unseen = [meta.stuff_classes.index(c) for c in meta.unseen_classes]
        assert (table[unseen] == 255).all() and table[255] == 255


def test_datasets_trained_together_must_share_one_split(prepared_root):
    with pytest.raises(DatasetConfigError, match="share one class list"):
        ZeroShotSemSegDatasetMapper(make_cfg(train=("voc20_zs_train", "pcontext59_zs_train")))
    with pytest.raises(DatasetConfigError, match="share one class list"):
        get_training_vocabulary(["pcontext59_zs_train", "pcontext59_zsb_train"])
    with pytest.raises(DatasetConfigError, match="not registered|no stuff_classes"):
        get_training_vocabulary(["no_such_dataset"])
    assert len(get_training_vocabulary(["pcontext59_zs_train", "pcontext59_zs_val"])) == 49


def test_label_ids_outside_the_dataset_are_an_error(prepared_root, tmp_path):
    record = dict(DatasetCatalog.get("voc20_zs_val")[0])
    label = read_png(record["sem_seg_file_name"])
    label[0, 0] = 20  # VOC has ids 0..19
    record["sem_seg_file_name"] = str(tmp_path / "bad.png")
    Image.fromarray(label).save(record["sem_seg_file_name"])
    with pytest.raises(ValueError, match=r"bad.png holds label ids \[20\]"):
        unaugmented_mapper(make_cfg())(record)


def test_the_mapper_feeds_detectron2s_train_loader(prepared_root):
    cfg = make_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    loader = build_detection_train_loader(cfg, mapper=ZeroShotSemSegDatasetMapper(cfg, True))
    batch = next(iter(loader))
    assert len(batch) == 2
    assert all(
        b["image"].shape == (3, 256, 256) and b["sem_seg"].shape == (256, 256) for b in batch
    )


# ---- photometric distortion -----------------------------------------------------------------


def test_photometric_distortion_steps():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    same = PhotometricDistortTransform("RGB")
    np.testing.assert_array_equal(same.apply_image(rgb), rgb)
    bright = PhotometricDistortTransform("RGB", brightness_delta=20).apply_image(rgb)
    np.testing.assert_array_equal(bright, np.clip(rgb.astype(int) + 20, 0, 255))
    contrast = PhotometricDistortTransform("RGB", contrast_alpha=1.5).apply_image(rgb)
    np.testing.assert_array_equal(contrast, np.clip(np.rint(rgb * 1.5), 0, 255))
    gray = PhotometricDistortTransform("RGB", saturation_alpha=0.0).apply_image(rgb)
    assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1  # no saturation: R = G = B
    for kwargs in (
        {"saturation_alpha": 1.4},
        {"hue_delta": 12},
        {"contrast_alpha": 0.7, "hue_delta": -5},
    ):
        out_rgb = PhotometricDistortTransform("RGB", **kwargs).apply_image(rgb)
        out_bgr = PhotometricDistortTransform("BGR", **kwargs).apply_image(rgb[..., ::-1].copy())
        np.testing.assert_array_equal(out_rgb, out_bgr[..., ::-1])
        assert not np.array_equal(out_rgb, rgb)
    labels = rng.integers(0, 20, size=(16, 20)).astype(np.uint8)
    np.testing.assert_array_equal(
        PhotometricDistortTransform("RGB", hue_delta=9).apply_segmentation(labels), labels
    )


def test_color_aug_ssd_sampling():
    image = np.zeros((4, 4, 3), np.uint8)
    seed_augmentations(0)
    off = [ColorAugSSD("RGB", prob=0.0).get_transform(image) for _ in range(20)]
    assert all(
        t.brightness_delta is t.contrast_alpha is t.saturation_alpha is t.hue_delta is None
        for t in off
    )
    on = [ColorAugSSD("BGR", prob=1.0).get_transform(image) for _ in range(200)]
    assert all(-32 <= t.brightness_delta <= 32 and 0.5 <= t.contrast_alpha <= 1.5 for t in on)
    assert all(0.5 <= t.saturation_alpha <= 1.5 and -18 <= t.hue_delta <= 18 for t in on)
    assert {t.contrast_first for t in on} == {True, False}
    assert len({t.hue_delta for t in on}) > 20
    with pytest.raises(ValueError, match="RGB or BGR"):
        ColorAugSSD("L")


def test_test_mode_keeps_16_bit_ids_through_the_resize(tmp_path):
    """Context-459 style maps (ids up to 458, ignore 65535) at test time: exact ids after the
    nearest-neighbour resize (the evaluator, not the mapper, checks them)."""
    label = np.zeros((20, 30), dtype=np.uint16)
    label[:, 10:] = 458
    label[:, 20:] = 65535
    label[:5] = 300
    Image.fromarray(label).save(tmp_path / "label.png")
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(tmp_path / "image.png")
    cfg = get_clipzss_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 40, 1000
    record = {
        "file_name": str(tmp_path / "image.png"),
        "sem_seg_file_name": str(tmp_path / "label.png"),
        "height": 20,
        "width": 30,
    }
    out = ZeroShotSemSegDatasetMapper(cfg, is_train=False)(record)
    expected = torch.from_numpy(label.astype(np.int64)).repeat_interleave(2, 0)
    assert torch.equal(out["sem_seg"], expected.repeat_interleave(2, 1))
