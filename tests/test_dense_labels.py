"""clipzss_d2.dense_labels, the predictor's route for logits at the output size: labels equal
torch's argmax over all classes and the chunked route's (ties included), scores torch's softmax to
rounding, for NCHW and channels-last logits."""

import numpy as np
import pytest
import torch

from clipzss_d2.dense_labels import labels_and_scores
from clipzss_d2.predictor import _to_result, resized_labels_and_scores


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
