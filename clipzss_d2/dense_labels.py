"""Per-pixel labels and scores from K x H x W logits already at the output size, in row bands.

What ``predictor._to_result`` computes when no resize is left to do (the model's logits are at
the image's size): labels = argmax over the classes (ties to the first class), scores = softmax
probability of that class = 1 / sum_j exp(l_j - l_max). The chunked route for logits that need a
resize (``predictor.resized_labels_and_scores``) bounds memory by taking the classes a few at a
time, with a running max and a running, rescaled softmax denominator; here the pixels are taken a band of rows at a time, with every class at once:

- labels are identical: each pixel's max runs over all K classes in one reduction, whatever the
  band, so ties resolve as ``argmax`` does;
- one max, one subtraction, one in-place exp and one sum per band, no rescaling pass and no
  K x H x W temporaries (a band's temporary is at most `budget` floats);
- with channels-last logits (MODEL.CLIPZSS.INFERENCE.CHANNELS_LAST) a band is one contiguous
  block holding all classes of its pixels.

Scores agree with the chunked route's to float rounding (the denominator is summed in another
order). The predictor's route since 2026-12-06 whenever no resize is left (tools/benchmark.py's
floor section times both routes).
"""

from __future__ import annotations

import torch

# at most this many floats in a band's temporary (64 MB), as predictor.UPSAMPLE_BUDGET
BAND_BUDGET = 1 << 24


def labels_and_scores(
    logits: torch.Tensor, budget: int = BAND_BUDGET
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H x W int64 labels, H x W float32 top-class softmax probability) of K x H x W logits."""
    if logits.dim() != 3:
        raise ValueError(f"expected K x H x W logits, got shape {tuple(logits.shape)}")
    logits = logits.float()
    classes, height, width = logits.shape
    rows = max(1, budget // max(1, classes * width))
    labels = torch.empty(height, width, dtype=torch.long, device=logits.device)
    scores = torch.empty(height, width, dtype=torch.float32, device=logits.device)
    for start in range(0, height, rows):
        band = logits[:, start : start + rows]
        top, band_labels = band.max(dim=0)
        total = (band - top).exp_().sum(dim=0)  # exp(0) = 1 for the top class
        labels[start : start + rows] = band_labels
        scores[start : start + rows] = total.reciprocal_()
    return labels, scores
