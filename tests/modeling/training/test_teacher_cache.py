"""The teacher cache (MODEL.CLIPZSS.TEACHER.CACHE) through the training mapper and the model.

References that do not come from the cache's code: a coordinate-ramp image (each pixel holds its
own column and row, so a crop says where it came from), the teacher run directly on the mapper's
whole-image view, and scipy's bilinear ``map_coordinates`` on that output.
"""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from PIL import Image
from scipy.ndimage import map_coordinates

from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.errors import UserInputError
from tests.helpers import VOC_CONFIG, tiny_cfg

SAMPLE = "2011_000006"  # 500 x 375, in the VOC train samples
PATCH = 8  # the tiny CLIP's patch


def cache_cfg(*opts):
    return tiny_cfg(
        VOC_CONFIG,
        [
            "DATASETS.TRAIN", ("voc20_zs_train",),
            "DATASETS.TEST", ("voc20_zs_val",),
            "MODEL.CLIPZSS.PLM.WINDOW_SIZES", [2, 4],
            "MODEL.CLIPZSS.PLM.SYNTH_HEADS", 4,
            "MODEL.CLIPZSS.PLM.SEEN_HALO_RADIUS", 0,
            "MODEL.CLIPZSS.TEACHER.CACHE", True,
            *opts,
        ],
    )  # fmt: skip


def voc_record():
    (record,) = [r for r in DatasetCatalog.get("voc20_zs_train") if SAMPLE in r["file_name"]]
    return record


def mapped(cfg, record, seed):
    np.random.seed(seed)  # noqa: NPY002  (detectron2's augmentations draw from numpy's generator)
    return ZeroShotSemSegDatasetMapper(cfg, is_train=True)(record)


def view_coords(sample, xs, ys):
    ax, bx, ay, by = sample["teacher_view_from_crop"].tolist()
    return ax * xs + bx, ay * ys + by


def test_the_view_map_finds_every_crop_pixel_in_the_image(prepared_root, tmp_path):
    """A 240 x 200 ramp image (R = column, G = row): through random scales, crops and flips,
    each crop pixel's value is the original column / row that the map says it came from."""
    h, w = 200, 240
    ramp = np.zeros((h, w, 3), np.uint8)
    ramp[..., 0] = np.arange(w)[None, :]
    ramp[..., 1] = np.arange(h)[:, None]
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "ramp_label.png")
    record = {
        "file_name": str(tmp_path / "ramp.png"),
        "sem_seg_file_name": str(tmp_path / "ramp_label.png"),
        "height": h,
        "width": w,
    }
    cfg = cache_cfg(
        "INPUT.MIN_SIZE_TRAIN", (100, 150, 300), "INPUT.CROP.SIZE", (96, 96),
        "INPUT.SIZE_DIVISIBILITY", -1, "INPUT.COLOR_AUG_SSD", False,
    )  # fmt: skip
    flips = set()
    for seed in range(8):
        sample = mapped(cfg, record, seed)
        view = sample["teacher_view"]
        assert view.shape[1] == 96 and view.dtype == torch.uint8  # short side = the crop's
        vh, vw = view.shape[1:]
        ch, cw = sample["image_size"]
        ys, xs = np.meshgrid(np.arange(ch) + 0.5, np.arange(cw) + 0.5, indexing="ij")
        vx, vy = view_coords(sample, xs, ys)
        col, row = vx * w / vw - 0.5, vy * h / vh - 0.5  # original pixel index
        crop = sample["image"][:, :ch, :cw].numpy().astype(np.float64)  # RGB
        inner = (col > 3) & (col < w - 4) & (row > 3) & (row < h - 4)
        assert inner.sum() > 1000
        np.testing.assert_allclose(crop[0][inner], col[inner], atol=1.0)
        np.testing.assert_allclose(crop[1][inner], row[inner], atol=1.0)
        flips.add(bool(sample["teacher_view_from_crop"][0] < 0))
    assert flips == {True, False}


def teacher_on_view(model, sample):
    teacher = model.build_teacher()
    out = teacher(sample["teacher_view"][None].float(), normalized=False)
    return out.cls_embed[0], out.patch_embed[0]


@pytest.fixture(scope="module")
def model_and_cfg(prepared_root):
    cfg = cache_cfg(
        "INPUT.MIN_SIZE_TRAIN", (192,), "INPUT.MAX_SIZE_TRAIN", 1000,
        "MODEL.CLIPZSS.TEACHER.CACHE_SIZE", 192,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    return model, cfg


def cached_output(model, samples):
    images = model.preprocess_images(samples)
    extents = model.image_extents(images, samples)
    return model.run_teacher(images, extents, samples)


def test_a_whole_image_crop_gets_the_teachers_own_tokens(model_and_cfg):
    """Crop = the whole view (same resize, padded to 512): the tokens are the teacher's on the
    view, mirrored when the crop was flipped; CLS is the view's."""
    model, cfg = model_and_cfg
    record = voc_record()
    flips = set()
    for seed in range(4):
        sample = mapped(cfg, record, seed)
        assert tuple(sample["teacher_view"].shape[1:]) == sample["image_size"] == (192, 256)
        flipped = bool(sample["teacher_view_from_crop"][0] < 0)
        flips.add(flipped)
        cls_ref, tokens_ref = teacher_on_view(model, sample)
        if flipped:
            tokens_ref = tokens_ref.flip(-1)
        out = cached_output(model, [sample])
        rows, cols = 192 // PATCH, 256 // PATCH
        assert out.token_valid[0].sum() == rows * cols and out.token_valid[0, :rows, :cols].all()
        torch.testing.assert_close(out.cls_embed[0], cls_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            out.patch_embed[0, :, :rows, :cols], tokens_ref, rtol=1e-5, atol=1e-5
        )
    assert flips == {True, False}


def test_scaled_crops_are_bilinear_samples_of_the_view(prepared_root):
    """Random scales, crops and flips, two images per batch: every valid crop token equals
    scipy's bilinear interpolation of the teacher's view tokens at the mapped token centre."""
    cfg = cache_cfg(
        "INPUT.MIN_SIZE_TRAIN", (96, 160, 320), "INPUT.CROP.SIZE", (128, 128),
        "INPUT.SIZE_DIVISIBILITY", -1, "MODEL.CLIPZSS.TEACHER.CACHE_SIZE", 160,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    records = [r for r in DatasetCatalog.get("voc20_zs_train")][:2]
    for seed in range(3):
        samples = [mapped(cfg, r, seed * 10 + i) for i, r in enumerate(records)]
        out = cached_output(model, samples)
        for cls_embed, tokens in model.teacher_cache._entries.values():  # not views of a batch
            for t in (cls_embed, tokens):
                assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
        for i, sample in enumerate(samples):
            _, view_tokens = teacher_on_view(model, sample)
            ch, cw = sample["image_size"]
            rows, cols = ch // PATCH, cw // PATCH
            assert out.token_valid[i].sum() == rows * cols
            ys, xs = np.meshgrid(
                (np.arange(rows) + 0.5) * PATCH, (np.arange(cols) + 0.5) * PATCH, indexing="ij"
            )
            vx, vy = view_coords(sample, xs, ys)
            gh, gw = view_tokens.shape[1:]
            u = np.clip(vx / PATCH - 0.5, 0, gw - 1)  # token index, edge tokens extend
            v = np.clip(vy / PATCH - 0.5, 0, gh - 1)
            ref = np.stack(
                [
                    map_coordinates(c.numpy().astype(np.float64), [v, u], order=1)
                    for c in view_tokens
                ]
            )
            np.testing.assert_allclose(
                out.patch_embed[i, :, :rows, :cols].numpy(), ref, rtol=1e-4, atol=1e-4
            )


def test_the_teacher_runs_once_per_image(model_and_cfg):
    model, cfg = model_and_cfg
    cache = model.teacher_cache
    record = voc_record()
    sample = mapped(cfg, record, 0)
    first = cached_output(model, [sample])
    teacher = model.build_teacher()
    calls = []
    forward = teacher.forward
    saved = cache.max_bytes, dict(cache._entries)
    teacher.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    try:
        hits = cache.hits
        again = cached_output(model, [mapped(cfg, record, 0)])
        assert calls == [] and cache.hits == hits + 1
        torch.testing.assert_close(again.patch_embed, first.patch_embed, rtol=0, atol=0)
        # a full cache stores nothing and still answers the same
        cache.max_bytes = 0
        cache._entries.clear()
        full = cached_output(model, [sample])
        assert len(cache) == 0 and calls == [1]
        torch.testing.assert_close(full.patch_embed, first.patch_embed, rtol=0, atol=0)
    finally:
        del teacher.forward
        cache.max_bytes, cache._entries = saved


def test_training_with_the_cache_runs_and_autocast_leaves_its_tokens_alone(model_and_cfg):
    model, cfg = model_and_cfg
    sample = mapped(cfg, voc_record(), 1)
    reference = cached_output(model, [sample])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = cached_output(model, [sample])
    assert under_autocast.patch_embed.dtype == reference.patch_embed.dtype == torch.float32
    torch.testing.assert_close(under_autocast.patch_embed, reference.patch_embed, rtol=0, atol=0)
    losses = model([sample])
    assert {"loss_glm", "loss_bce"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_batch_without_views_and_a_resized_teacher_are_refused(model_and_cfg, prepared_root):
    model, cfg = model_and_cfg
    sample = mapped(cfg, voc_record(), 0)
    for key in ("teacher_view", "teacher_view_from_crop", "teacher_cache_key"):
        sample.pop(key)
    with pytest.raises(UserInputError, match="training mapper"):
        model([sample])
    with pytest.raises(UserInputError, match="TEACHER.INPUT_SIZE"):
        build_model(cache_cfg("MODEL.CLIPZSS.TEACHER.INPUT_SIZE", 64))


def test_a_cache_directory_serves_other_processes_and_survives_bad_files(model_and_cfg, tmp_path):
    """Entries written by one cache are read by another (another GPU's process, a later run)
    without running the teacher; a broken file or another image's file is recomputed, and no
    file is ever replaced."""
    from clipzss_d2.modeling.training.teacher_cache import TeacherCache

    model, cfg = model_and_cfg
    own = model.teacher_cache
    identity = dict(own.identity)
    sample = mapped(cfg, voc_record(), 2)
    teacher = model.build_teacher()
    calls = []
    forward = teacher.forward
    try:
        model.teacher_cache = TeacherCache(2**30, str(tmp_path), identity)
        first = cached_output(model, [sample])
        (written,) = list(tmp_path.rglob("*.safetensors"))
        teacher.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
        other = TeacherCache(2**30, str(tmp_path), identity)
        model.teacher_cache = other
        again = cached_output(model, [sample])
        assert calls == [] and (other.disk_hits, other.misses) == (1, 0)
        torch.testing.assert_close(again.patch_embed, first.patch_embed, rtol=0, atol=0)
        torch.testing.assert_close(again.cls_embed, first.cls_embed, rtol=0, atol=0)

        # another teacher's identity: another file name, the teacher runs
        model.teacher_cache = TeacherCache(2**30, str(tmp_path), {**identity, "weights": "x"})
        cached_output(model, [sample])
        assert calls == [1] and len(list(tmp_path.rglob("*.safetensors"))) == 2

        # a broken file: recomputed, left as it is
        written.write_bytes(b"not a safetensors file")
        broken = TeacherCache(2**30, str(tmp_path), identity)
        model.teacher_cache = broken
        fixed = cached_output(model, [sample])
        assert calls == [1, 1] and broken.misses == 1
        assert written.read_bytes() == b"not a safetensors file"
        torch.testing.assert_close(fixed.patch_embed, first.patch_embed, rtol=0, atol=0)
    finally:
        del teacher.forward
        model.teacher_cache = own


def test_a_random_teacher_is_not_kept_on_disk(prepared_root, tmp_path):
    cfg = cache_cfg("MODEL.CLIPZSS.TEACHER.CACHE_DIR", str(tmp_path))
    assert cfg.MODEL.CLIPZSS.CLIP.PRETRAINED == "none"
    with pytest.raises(UserInputError, match="random teacher"):
        build_model(cfg)
