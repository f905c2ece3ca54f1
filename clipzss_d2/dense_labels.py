"""Per-pixel labels and scores from K-class logits without holding K planes at full size.

Labels = argmax over the classes (ties to the first class), scores = softmax probability of that
class = 1 / sum_j exp(l_j - l_max), of the logits the model would give at the output size. Three
routes, one per kind of input, each giving the labels of the K full-size planes exactly:

- `labels_and_scores`: logits already at the output size, a band of rows at a time with every
  class at once (one max, one subtraction, one in-place exp and one sum per band; with
  channels-last logits a band is one contiguous block holding all classes of its pixels);
- `upsampled_labels_and_scores`: logits at the model's output stride, which the model would
  upsample bilinearly to the padded size and crop. With channels-last logits and a whole-number
  factor each band of source rows (with one row of margin either side) is upsampled on its own and
  labelled at once, so the K x H x W planes never exist; the bands' values are the full resize's
  bit for bit (tests/test_dense_labels.py), so the labels are the same and the scores differ by
  float rounding at most (the sum over classes may be vectorised differently for another band);
- `resized_labels_and_scores`: logits that need a resize to a size of no whole-number relation
  (the predictor's image back to its original size), resized over chunks of classes with a
  running max and a running, rescaled softmax denominator.

OpenVocabularySegmenter.inference answers with these when an input asks for labels
(``"sem_seg_format": "labels"``), as the predictor does. Each takes an optional ``stage``: a
callable giving a context manager per step ("upsampling", "argmax", "post-processing"), through
which tools/benchmark.py's floor section times these very routes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

# At most this many floats in a temporary, so memory does not grow with classes x pixels (171
# classes at 4096^2 would be 11 GB): a row band's (8 MB: it stays in the cache, which more than
# halves the time of the row-band routes on the 2-core CPU against 64 MB bands) and a class
# chunk's (64 MB: fewer passes over the full-size planes).
BAND_BUDGET = 1 << 21
CHUNK_BUDGET = 1 << 24

Stage = Callable[[str], AbstractContextManager]


def _no_stage(_name: str) -> AbstractContextManager:
    return contextlib.nullcontext()


def labels_and_scores(
    logits: torch.Tensor, budget: int = BAND_BUDGET, stage: Stage = _no_stage
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
        labels[start : start + rows], scores[start : start + rows] = _band(
            logits[:, start : start + rows], stage
        )
    return labels, scores


def _band(band: torch.Tensor, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
    with stage("argmax"):
        top, labels = band.max(dim=0)
    with stage("post-processing"):
        total = (band - top).exp_().sum(dim=0)  # exp(0) = 1 for the top class
        return labels, total.reciprocal_()


def upsampled_labels_and_scores(
    logits: torch.Tensor,
    upsampled_size: tuple[int, int],
    size: tuple[int, int],
    budget: int = BAND_BUDGET,
    stage: Stage = _no_stage,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and scores of ``F.interpolate(logits, upsampled_size, bilinear)[:, :h, :w]`` for
    K x h' x w' logits (`size` = (h, w)), without the K x `upsampled_size` tensor when the
    logits are channels-last and `upsampled_size` a whole multiple of their size."""
    if logits.dim() != 3:
        raise ValueError(f"expected K x h x w logits, got shape {tuple(logits.shape)}")
    logits = logits.float()
    classes, low_h, low_w = logits.shape
    (up_h, up_w), (height, width) = upsampled_size, size
    factor = up_h // low_h
    channels_last = logits[None].is_contiguous(memory_format=torch.channels_last)
    # 1 x K x h' x w' with the batch stride of an NHWC tensor: `logits[None]` has another one,
    # and a resize then answers in NCHW, several times slower to resize and reduce over classes
    batch = logits.permute(1, 2, 0)[None].permute(0, 3, 1, 2) if channels_last else logits[None]
    if not (channels_last and up_h == factor * low_h and up_w % low_w == 0):
        with stage("upsampling"):
            full = F.interpolate(batch, size=upsampled_size, mode="bilinear", align_corners=False)
        return labels_and_scores(full[0, :, :height, :width], budget, stage)  # then row bands
    # A source row r feeds output rows factor*r ... factor*(r+1)-1 together with rows r-1 and
    # r+1, so a band of source rows plus one row either side, resized by the same factor, gives
    # those output rows exactly as the full resize does.
    rows = max(1, budget // max(1, classes * up_w * factor))
    labels = torch.empty(height, width, dtype=torch.long, device=logits.device)
    scores = torch.empty(height, width, dtype=torch.float32, device=logits.device)
    for first in range(0, -(-height // factor), rows):
        last = min(low_h, first + rows)
        lo, hi = max(0, first - 1), min(low_h, last + 1)
        with stage("upsampling"):
            part = F.interpolate(
                batch[:, :, lo:hi], size=((hi - lo) * factor, up_w), mode="bilinear",
                align_corners=False,
            )[0]  # fmt: skip
        start, stop = first * factor, min(height, last * factor)
        offset = (first - lo) * factor
        labels[start:stop], scores[start:stop] = _band(
            part[:, offset : offset + stop - start, :width], stage
        )
    return labels, scores


def resized_labels_and_scores(
    logits: torch.Tensor,
    size: tuple[int, int],
    budget: int = CHUNK_BUDGET,
    stage: Stage = _no_stage,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, top-class softmax probability) at `size` of K x h x w logits, resized over chunks
    of classes with a running max and a running softmax denominator, so no K x `size` tensor is
    ever held."""
    height, width = size
    logits = logits.float()
    step = max(1, budget // max(1, height * width))
    top = labels = total = None
    for start in range(0, logits.shape[0], step):
        planes = logits[start : start + step]
        if tuple(planes.shape[-2:]) != (height, width):
            with stage("upsampling"):
                planes = F.interpolate(
                    planes[None], size=(height, width), mode="bilinear", align_corners=False
                )[0]
        with stage("argmax"):
            chunk_top, chunk_labels = planes.max(dim=0)
        if top is None:
            top, labels = chunk_top, chunk_labels
            with stage("post-processing"):
                total = torch.exp(planes - top).sum(dim=0)
            continue
        with stage("argmax"):
            better = chunk_top > top  # strict: ties keep the earlier class, as argmax does
            new_top = torch.maximum(top, chunk_top)
            labels = torch.where(better, chunk_labels + start, labels)
        with stage("post-processing"):
            total = total * torch.exp(top - new_top) + torch.exp(planes - new_top).sum(dim=0)
        top = new_top
    with stage("post-processing"):
        return labels, total.reciprocal()  # softmax of the top class: exp(0) / total
