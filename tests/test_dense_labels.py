"""clipzss_d2.dense_labels: the row-band labels and scores equal predictor._to_result's (labels
exactly, ties included; scores to rounding) for NCHW and channels-last logits."""

import numpy as np
import pytest
import torch

from clipzss_d2.dense_labels import labels_and_scores
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
def test_labels_equal_to_result_and_scores_agree(channels_last, budget):
    x = logits(13, 11, 7, channels_last=channels_last)
    expected = _to_result(x, [str(i) for i in range(13)], (11, 7), budget=3 * 11 * 7)
    labels, scores = labels_and_scores(x, budget=budget)
    np.testing.assert_array_equal(labels.numpy(), expected.labels)
    np.testing.assert_allclose(scores.numpy(), expected.scores, rtol=1e-6)
    assert labels.dtype == torch.int64 and scores.dtype == torch.float32
    top2 = torch.topk(x, 2, dim=0).values
    assert (top2[0] == top2[1]).any()  # the case covers ties


def test_171_classes_at_full_size_match():
    x = logits(171, 64, 96, seed=1, channels_last=True)
    expected = _to_result(x, [str(i) for i in range(171)], (64, 96))
    labels, scores = labels_and_scores(x, budget=171 * 96 * 5)
    np.testing.assert_array_equal(labels.numpy(), expected.labels)
    np.testing.assert_allclose(scores.numpy(), expected.scores, rtol=1e-5)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="K x H x W"):
        labels_and_scores(torch.zeros(1, 2, 3, 4))
