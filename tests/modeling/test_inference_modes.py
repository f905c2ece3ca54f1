"""Whole / sliding-window / flip / multi-scale inference (clipzss_d2.modeling.inference)."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from clipzss_d2.modeling.inference import TestTimeInference, slide_logits, window_starts
from tests.helpers import tiny_cfg


def test_window_starts_cover_the_axis_and_end_at_the_border():
    assert window_starts(100, 128, 64) == [0]  # smaller than the crop: one window
    assert window_starts(128, 128, 64) == [0]
    assert window_starts(200, 128, 64) == [0, 64, 72]  # last one shifted back to end at 200
    assert window_starts(10, 4, 3) == [0, 3, 6]
    for size, crop, stride in [(97, 32, 20), (513, 512, 341), (1000, 512, 512), (33, 8, 1)]:
        starts = window_starts(size, crop, stride)
        covered = torch.zeros(size, dtype=torch.int)
        for s in starts:
            covered[s : s + crop] += 1
        assert covered.min() >= 1 and starts[-1] + crop == size
        assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


class WindowIndexFake:
    """Logits = the running index of each window in the stream of windows it was given."""

    def __init__(self):
        self.seen = 0

    def __call__(self, x):
        ids = torch.arange(self.seen, self.seen + len(x), dtype=x.dtype)
        self.seen += len(x)
        return ids.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:]).clone()


@pytest.mark.parametrize("batch_size", [0, 1, 2])
def test_slide_averages_overlaps_by_window_count(batch_size):
    # 4 x 6 image, 4 x 4 windows, stride 2: windows at x = 0 (id 0) and x = 2 (id 1).
    image = torch.zeros(1, 3, 4, 6)
    out = slide_logits(WindowIndexFake(), image, (4, 4), (2, 2), batch_size=batch_size)
    expected_row = torch.tensor([0, 0, 0.5, 0.5, 1, 1])
    torch.testing.assert_close(out[0, 0], expected_row.expand(4, 6))


def test_slide_averages_three_way_overlaps_in_two_dimensions():
    # 5 x 5 image, 3 x 3 windows, stride 2 -> starts [0, 2] on both axes: ids 0..3 row-major.
    out = slide_logits(WindowIndexFake(), torch.zeros(1, 3, 5, 5), (3, 3), (2, 2))[0, 0]
    expected = torch.tensor(
        [
            [0, 0, 0.5, 1, 1],
            [0, 0, 0.5, 1, 1],
            [1, 1, 1.5, 2, 2],
            [2, 2, 2.5, 3, 3],
            [2, 2, 2.5, 3, 3],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_slide_places_every_window_where_it_came_from():
    """With logits = the input (identity), averaging the windows must give the image back,
    also with padding to a size divisibility and windows of two images in one stream."""
    images = torch.randn(2, 3, 37, 53)
    out = slide_logits(lambda x: x, images, (16, 24), (10, 13), size_divisibility=8, batch_size=3)
    torch.testing.assert_close(out, images)


def test_slide_equals_whole_for_a_translation_equivariant_model():
    conv = torch.nn.Conv2d(3, 5, 1)
    images = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        whole = conv(images)
        slide = slide_logits(conv, images, (32, 32), (20, 12), size_divisibility=16)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)


def test_bad_inference_config_is_refused_with_its_key():
    with pytest.raises(ValueError, match="SLIDE_STRIDE .* larger than SLIDE_CROP"):
        TestTimeInference(mode="slide", crop=256, stride=300)
    with pytest.raises(ValueError, match="MODEL.CLIPZSS.INFERENCE.MODE"):
        TestTimeInference(mode="tiles")
    with pytest.raises(ValueError, match="SCALES"):
        TestTimeInference(scales=(1.0, 0.0))


# -- through the model (the path evaluation and the predictor take) ------------------------------
def build(**inference):
    opts = []
    for key, value in inference.items():
        opts += [f"MODEL.CLIPZSS.INFERENCE.{key.upper()}", value]
    torch.manual_seed(0)
    model = build_model(tiny_cfg(extra_opts=opts))
    model.eval()
    return model


@pytest.fixture(scope="module")
def model():
    return build()


def run(model, image, **test_time):
    """Logits of one image (3 x H x W, 0..255) through model.forward with the given strategy."""
    default = model.test_time
    model.test_time = TestTimeInference(**test_time)
    try:
        return model([{"image": image}])[0]["sem_seg"]
    finally:
        model.test_time = default


def random_image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g).float()


def test_config_keys_reach_the_model():
    model = build(mode="slide", slide_crop=96, slide_stride=64, flip=True, scales=[0.5, 1.0])
    tt = model.test_time
    assert (tt.mode, tt.crop, tt.stride, tt.flip, tt.scales) == (
        "slide",
        (96, 96),
        (64, 64),
        True,
        (0.5, 1.0),
    )
    with pytest.raises(ValueError, match="SLIDE_STRIDE"):
        build(mode="slide", slide_crop=64, slide_stride=65)


@pytest.mark.parametrize("crop", [64, 512])
def test_model_slide_equals_whole_when_one_tile_covers_the_image(model, crop):
    image = random_image(48, 64)
    slide = run(model, image, mode="slide", crop=crop, stride=crop // 2)
    torch.testing.assert_close(slide, run(model, image))


def test_model_slide_with_overlap_is_the_average_of_window_predictions(model):
    """Reference: run every window through the plain model and average by hand."""
    image = random_image(45, 70, seed=1)
    got = run(model, image, mode="slide", crop=32, stride=20, slide_batch_size=2)
    assert got.shape == (4, 45, 70) and torch.isfinite(got).all()

    total, count = torch.zeros_like(got), torch.zeros(45, 70)
    for y in (0, 13):  # window_starts(45, 32, 20)
        for x in (0, 20, 38):  # window_starts(70, 32, 20)
            total[:, y : y + 32, x : x + 32] += run(model, image[:, y : y + 32, x : x + 32])
            count[y : y + 32, x : x + 32] += 1
    torch.testing.assert_close(got, total / count, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, run(model, image), atol=1e-3)  # windows do change things


def test_model_flip_averages_the_mirrored_prediction(model):
    image = random_image(40, 56, seed=2)
    expected = (run(model, image) + run(model, image.flip(-1)).flip(-1)) / 2
    got = run(model, image, flip=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, run(model, image), atol=1e-3)


def test_model_multi_scale_averages_rescaled_predictions(model):
    image = random_image(40, 56, seed=3)
    small = F.interpolate(image[None], size=(20, 28), mode="bilinear", antialias=True)[0]
    small_logits = F.interpolate(run(model, small)[None], size=(40, 56), mode="bilinear")[0]
    expected = (run(model, image) + small_logits) / 2
    torch.testing.assert_close(run(model, image, scales=(0.5, 1.0)), expected, atol=1e-5, rtol=1e-5)


def test_every_mode_returns_the_requested_size_for_odd_images(model):
    model.test_time = TestTimeInference("slide", 32, 21, flip=True, scales=(0.75, 1.25))
    batch = [
        {"image": random_image(37, 53)},
        {"image": random_image(29, 31, seed=1), "height": 61, "width": 47},
    ]
    try:
        out = model(batch)
    finally:
        model.test_time = TestTimeInference()
    assert out[0]["sem_seg"].shape == (4, 37, 53)
    assert out[1]["sem_seg"].shape == (4, 61, 47)
    assert all(torch.isfinite(o["sem_seg"]).all() for o in out)


def test_each_input_may_carry_its_own_mode(model):
    """inputs[i]["test_time"] overrides the model's mode for that input only, in one call."""
    image = random_image(45, 70, seed=1)
    slide = TestTimeInference("slide", 32, 20)
    default = model.test_time
    out = model([{"image": image}, {"image": image, "test_time": slide}, {"image": image}])
    assert model.test_time is default
    close = {"atol": 1e-4, "rtol": 1e-4}  # inputs 0 and 2 ran as a batch of two
    torch.testing.assert_close(out[0]["sem_seg"], run(model, image), **close)
    torch.testing.assert_close(out[2]["sem_seg"], run(model, image), **close)
    slide_alone = run(model, image, mode="slide", crop=32, stride=20)
    torch.testing.assert_close(out[1]["sem_seg"], slide_alone, **close)
    assert not torch.allclose(out[0]["sem_seg"], out[1]["sem_seg"], atol=1e-3)


def test_plain_path_matches_the_augmented_machinery_on_a_padded_batch(model):
    """The whole-image fast path and the per-image path agree on images padded together."""
    images = [random_image(37, 53), random_image(64, 40, seed=1)]
    batch = ImageList.from_tensors([(x - model.pixel_mean) / model.pixel_std for x in images], 32)
    text = model.text_embeddings(model.vocabulary)

    def logits_fn(x):
        return model.classify(model.embed(x), text)

    with torch.no_grad():
        fast = TestTimeInference()(logits_fn, batch, 32)
        slow = TestTimeInference().run(
            logits_fn, [t[:, :h, :w] for t, (h, w) in zip(batch.tensor, batch.image_sizes)], 32
        )
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
