"""clipzss_d2.dense_labels, the predictor's route for logits at the output size: labels equal
torch's argmax over all classes and the chunked route's (ties included), scores torch's softmax to
rounding, for NCHW and channels-last logits."""

import numpy as np
import pytest
import torch

from clipzss_d2.dense_labels import (
    labels_and_scores,
    resized_labels_and_scores,
    upsampled_labels_and_scores,
)
from clipzss_d2.predictor import _to_result


def logits(classes, height, width, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(1, classes, height, width, generator=g) * 4).round()  # ties at the top
    x[0, 2, :3] = x[0, 5, :3] = 20.0  # and certain ones: the earlier class wins
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x[0]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("budget", [1 << 24, 7 * 13 * 2, 1])  # one band, bands of 2 rows, of 1
def test_labels_equal_argmax_and_the_chunked_route(channels_last, budget):
    x = logits(13, 11, 7, channels_last=channels_last)
    chunked = resized_labels_and_scores(x, (11, 7), budget=3 * 11 * 7)
    labels, scores = labels_and_scores(x, budget=budget)
    # torch.argmax returns the first maximal index, as the predictor promises for ties
    np.testing.assert_array_equal(labels.numpy(), x.argmax(0).numpy())
    np.testing.assert_array_equal(labels.numpy(), chunked[0].numpy())
    np.testing.assert_allclose(scores.numpy(), x.softmax(0).max(0).values.numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores.numpy(), chunked[1].numpy(), rtol=1e-6)
    assert labels.dtype == torch.int64 and scores.dtype == torch.float32
    top2 = torch.topk(x, 2, dim=0).values
    assert (top2[0] == top2[1]).any()  # the case covers ties


def test_171_classes_at_full_size_match():
    x = logits(171, 64, 96, seed=1, channels_last=True)
    labels, scores = labels_and_scores(x, budget=171 * 96 * 5)
    np.testing.assert_array_equal(labels.numpy(), x.argmax(0).numpy())
    np.testing.assert_allclose(scores.numpy(), x.softmax(0).max(0).values.numpy(), rtol=1e-5)


def test_the_predictor_takes_the_bands_when_no_resize_is_left(monkeypatch):
    """_to_result at the logits' own size answers with the row bands (and the right values);
    at another size with the chunked resize."""
    import clipzss_d2.predictor as P

    x = logits(17, 9, 12, seed=2)
    calls = []
    for name in ("labels_and_scores", "resized_labels_and_scores"):
        original = getattr(P, name)
        monkeypatch.setattr(
            P, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k)
        )
    result = _to_result(x, [str(i) for i in range(17)], (9, 12))
    assert calls == ["labels_and_scores"]
    np.testing.assert_array_equal(result.labels, x.argmax(0).numpy())
    np.testing.assert_allclose(result.scores, x.softmax(0).max(0).values.numpy(), rtol=1e-6)
    _to_result(x, [str(i) for i in range(17)], (18, 24))
    assert calls == ["labels_and_scores", "resized_labels_and_scores"]


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="K x H x W"):
        labels_and_scores(torch.zeros(1, 2, 3, 4))


@pytest.mark.parametrize(
    "low, factor, crop",
    [((128, 128), 4, (512, 512)), ((17, 23), 4, (65, 90)), ((33, 47), 8, (260, 376)),
     ((5, 7), 2, (9, 14))],
)  # fmt: skip
@pytest.mark.parametrize("budget", [1 << 24, 1])  # one band or one source row per band
def test_upsampled_route_equals_the_full_resize(low, factor, crop, budget):
    """What the model's dense_logits does (bilinear to the padded size, crop), then torch.argmax
    and torch.softmax: equal labels (ties included: integer logits and 1/8 weights tie exactly),
    scores to float rounding, for channels-last logits at the model's output stride."""
    x = logits(21, *low, seed=3, channels_last=True)
    padded = (low[0] * factor, low[1] * factor)
    full = torch.nn.functional.interpolate(x[None], size=padded, mode="bilinear")[0]
    full = full[:, : crop[0], : crop[1]]
    labels, scores = upsampled_labels_and_scores(x, padded, crop, budget)
    np.testing.assert_array_equal(labels.numpy(), full.argmax(0).numpy())
    np.testing.assert_allclose(scores.numpy(), full.softmax(0).max(0).values.numpy(), rtol=1e-6)
    reference = labels_and_scores(full, budget)  # the route on the full-size planes
    assert torch.equal(labels, reference[0])
    np.testing.assert_allclose(scores.numpy(), reference[1].numpy(), rtol=1e-6)
    top2 = torch.topk(full, 2, dim=0).values
    assert (top2[0] == top2[1]).any()


def test_upsampled_route_never_holds_the_full_size_planes(monkeypatch):
    """Every resize the route runs covers a band of rows (at most the budget's), channels-last,
    never the K x H x W planes; NCHW logits or a size of no whole-number factor take the full resize."""
    import clipzss_d2.dense_labels as D

    sizes, layouts = [], []

    def interpolate(x, size, _f=D.F.interpolate, **k):
        sizes.append(size)
        out = _f(x, size, **k)
        layouts.append(out.is_contiguous(memory_format=torch.channels_last))
        return out

    monkeypatch.setattr(D.F, "interpolate", interpolate)
    x = logits(50, 32, 32, channels_last=True)
    upsampled_labels_and_scores(x, (128, 128), (120, 128), budget=50 * 128 * 4 * 4)
    # 120 rows = 30 source rows, 4 a band (the budget), each with a margin row either side
    assert len(sizes) == 8 and all(rows <= (4 + 2) * 4 for rows, _ in sizes)
    # each band is resized NHWC, like the whole (an NCHW band is several times slower)
    assert all(layouts)
    sizes.clear()
    upsampled_labels_and_scores(x.contiguous(), (128, 128), (120, 128))
    upsampled_labels_and_scores(x, (100, 100), (100, 100))
    assert sizes == [(128, 128), (100, 100)]
