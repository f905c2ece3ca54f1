"""How the student is run at test time: whole image, sliding window, flip and multi-scale.

This lives in the model rather than in a predictor so that evaluation (train_net), the demo, the
benchmark and the exported model all predict the same way. Everything is batched tensor work: the
windows of an image (and of its flipped copy) are stacked into one batch, overlaps are averaged
with a per-pixel window count, and the only Python loops run over windows, scales and images.

All strategies average *logits* (scale x cosine similarity), so ``sem_seg`` keeps the same units
whatever the mode and a softmax of it stays comparable between modes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList

from ..dense_labels import labels_and_scores, resized_labels_and_scores, upsampled_labels_and_scores

# normalised N x 3 x h x w batch (h, w divisible by the model's size divisibility)
#   -> N x K x h' x w' logits at the model's output stride
LogitsFn = Callable[[torch.Tensor], torch.Tensor]

INFERENCE_MODES = ("whole", "slide")


def pad_to_divisible(images: torch.Tensor, divisibility: int) -> torch.Tensor:
    """Zero-pad bottom/right like ImageList.from_tensors (zero = the mean colour once normalised)."""
    if divisibility <= 1:
        return images
    h, w = images.shape[-2:]
    pad_h = (divisibility - h % divisibility) % divisibility
    pad_w = (divisibility - w % divisibility) % divisibility
    return F.pad(images, (0, pad_w, 0, pad_h))


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast context for `precision` ("fp32" = none) on `device` (CPU or GPU)."""
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def dense_logits(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    size_divisibility: int = 0,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
) -> torch.Tensor:
    """N x K x H x W float logits at the size of `images` (N x 3 x H x W, already normalised).

    Upsamples to the padded size, then crops, exactly as detectron2 semantic segmentors do, so
    a padded batch and a single unpadded image give the same logits on the image area. The
    model runs under `precision` autocast; the logits are upsampled in fp32, once. With
    `channels_last` the images enter NHWC (convolutions follow) and the logits stay NHWC, so a
    per-pixel max/argmax over classes reads contiguous memory (4x faster on CPU at 512^2).
    """
    h, w = images.shape[-2:]
    logits, padded_size = stride_logits(
        logits_fn, images, size_divisibility, precision=precision, channels_last=channels_last
    )
    logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
    return logits[..., :h, :w]


def stride_logits(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    size_divisibility: int = 0,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """`dense_logits` before its upsampling: (N x K x h' x w' fp32 logits at the model's output
    stride, the padded size they are upsampled to). For callers that want labels, not K planes
    at full size (dense_labels.upsampled_labels_and_scores)."""
    padded = pad_to_divisible(images, size_divisibility)
    if channels_last:
        padded = padded.contiguous(memory_format=torch.channels_last)
    with autocast(padded.device, precision):
        logits = logits_fn(padded)
    logits = logits.float()
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    return logits, tuple(padded.shape[-2:])


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis; the last window is shifted back to end at the border.

    Every pixel is covered at least once when stride <= crop; an axis no longer than the crop
    gets one window of the axis' size.
    """
    if size <= crop:
        return [0]
    num = math.ceil((size - crop) / stride) + 1
    return sorted({min(i * stride, size - crop) for i in range(num)})


def slide_logits(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
    size_divisibility: int = 0,
    batch_size: int = 0,
    **dense_kwargs,
) -> torch.Tensor:
    """Sliding-window logits (N x K x H x W) for same-sized images (N x 3 x H x W).

    Windows of all N images are stacked and run `batch_size` at a time (0 = all at once);
    overlapping predictions are averaged by the number of windows covering each pixel.
    """
    n, _, height, width = images.shape
    ch, cw = min(crop[0], height), min(crop[1], width)
    boxes = [
        (y, x)
        for y in window_starts(height, ch, stride[0])
        for x in window_starts(width, cw, stride[1])
    ]
    # (windows x N) x 3 x ch x cw, window-major so that one box's N crops are contiguous
    crops = torch.stack([images[:, :, y : y + ch, x : x + cw] for y, x in boxes]).flatten(0, 1)
    count = images.new_zeros(1, 1, height, width)
    for y, x in boxes:
        count[..., y : y + ch, x : x + cw] += 1

    chunk = len(crops) if batch_size <= 0 else max(batch_size, 1)
    out = None
    for start in range(0, len(crops), chunk):
        logits = dense_logits(
            logits_fn, crops[start : start + chunk], size_divisibility, **dense_kwargs
        )
        if out is None:
            out = logits.new_zeros(n, logits.shape[1], height, width)
        for j in range(len(logits)):
            box, image = divmod(start + j, n)
            y, x = boxes[box]
            out[image, :, y : y + ch, x : x + cw] += logits[j]
    return out / count.to(out.dtype)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0]


@dataclass
class TestTimeInference:
    """MODEL.CLIPZSS.INFERENCE: how logits are computed from a preprocessed ImageList.

    mode: "whole" (the padded batch in one pass) or "slide" (crop x crop windows every stride
        pixels, for images much larger than the training crop).
    flip: also run the horizontally flipped image and average (detectron2's TTA idea, inside
        the model so the evaluator benefits).
    scales: resize factors applied to the (already test-resized) image; logits are brought
        back to its size and averaged.
    slide_batch_size: windows per forward pass in slide mode (0 = all windows of an image).
    precision: autocast of the model ("fp32", "bf16", "fp16"); logits are upsampled in fp32.
    channels_last: NHWC images and logits (see `dense_logits`).
    """

    __test__ = False  # not a pytest test class despite the name

    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    slide_batch_size: int = 0
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self):
        self.crop = _pair(self.crop)
        self.stride = _pair(self.stride)
        self.scales = tuple(float(s) for s in self.scales)
        key = "MODEL.CLIPZSS.INFERENCE"
        if self.mode not in INFERENCE_MODES:
            raise ValueError(f"{key}.MODE must be one of {INFERENCE_MODES}, got {self.mode!r}.")
        if min(self.crop) <= 0 or min(self.stride) <= 0:
            raise ValueError(
                f"{key}.SLIDE_CROP and SLIDE_STRIDE must be positive, got {self.crop} and "
                f"{self.stride}."
            )
        if any(s > c for s, c in zip(self.stride, self.crop)):
            raise ValueError(
                f"{key}.SLIDE_STRIDE {self.stride} is larger than SLIDE_CROP {self.crop}: "
                f"windows would leave pixels without a prediction."
            )
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"{key}.SCALES must be positive factors, got {list(self.scales)}.")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"{key}.PRECISION must be one of {list(PRECISIONS)}, got {self.precision!r}."
            )

    @classmethod
    def from_config(cls, cfg) -> TestTimeInference:
        inf = cfg.MODEL.CLIPZSS.INFERENCE
        return cls(
            mode=inf.MODE,
            crop=inf.SLIDE_CROP,
            stride=inf.SLIDE_STRIDE,
            flip=inf.FLIP,
            scales=tuple(inf.SCALES),
            slide_batch_size=inf.SLIDE_BATCH_SIZE,
            precision=inf.PRECISION,
            channels_last=inf.CHANNELS_LAST,
        )

    @property
    def dense_kwargs(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last}

    @property
    def is_plain(self) -> bool:
        """One whole-image pass, no augmentation: the cheapest path (and the exportable one)."""
        return self.mode == "whole" and not self.flip and self.scales == (1.0,)

    def __call__(
        self, logits_fn: LogitsFn, images: ImageList, size_divisibility: int = 0
    ) -> list[torch.Tensor]:
        """K x h x w logits for each image of the batch, at its unpadded size in `images`."""
        sizes = [tuple(s) for s in images.image_sizes]
        if self.is_plain:
            logits = dense_logits(logits_fn, images.tensor, size_divisibility, **self.dense_kwargs)
            return [logit[:, :h, :w] for logit, (h, w) in zip(logits, sizes)]
        unpadded = [img[:, :h, :w] for img, (h, w) in zip(images.tensor, sizes)]
        return self.augmented(logits_fn, unpadded, size_divisibility)

    def labels_and_scores(
        self,
        logits_fn: LogitsFn,
        images: ImageList,
        size_divisibility: int = 0,
        out_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(labels, top-class softmax probability) per image at `out_sizes` (default: each
        image's unpadded size): the argmax and softmax of the logits `__call__` gives, resized
        to the out size as sem_seg_postprocess would, never holding K planes at full size where
        clipzss_d2.dense_labels can avoid it."""
        sizes = [tuple(s) for s in images.image_sizes]
        out_sizes = sizes if out_sizes is None else [tuple(o) for o in out_sizes]
        if not self.is_plain:  # flip / scales / sliding window: logits at each image's size
            logits = self(logits_fn, images, size_divisibility)
            return [
                labels_and_scores(logit) if out == size else resized_labels_and_scores(logit, out)
                for logit, size, out in zip(logits, sizes, out_sizes)
            ]
        logits, padded_size = stride_logits(
            logits_fn, images.tensor, size_divisibility, **self.dense_kwargs
        )
        answers = []
        for i, (size, out) in enumerate(zip(sizes, out_sizes)):
            if out == size:  # upsampled band by band: the K full-size planes never exist
                answers.append(upsampled_labels_and_scores(logits[i], padded_size, size))
                continue
            # dense_logits for this image alone (a 4-d slice keeps NHWC), then another size
            logit = F.interpolate(
                logits[i : i + 1], size=padded_size, mode="bilinear", align_corners=False
            )[0, :, : size[0], : size[1]]
            answers.append(resized_labels_and_scores(logit, out))
        return answers

    def augmented(
        self, logits_fn: LogitsFn, images: Sequence[torch.Tensor], size_divisibility: int = 0
    ) -> list[torch.Tensor]:
        """Average over scales and flips of `run` on each (3 x h x w) image."""
        sums: list[torch.Tensor | None] = [None] * len(images)
        for scale in self.scales:
            sizes = [_scaled_size(img.shape[-2:], scale) for img in images]
            batch = [_resize(img, size) for img, size in zip(images, sizes)]
            if self.flip:
                batch += [img.flip(-1) for img in batch]
            outs = self.run(logits_fn, batch, size_divisibility)
            if self.flip:
                outs = [a + b.flip(-1) for a, b in zip(outs[: len(images)], outs[len(images) :])]
            for i, (out, img) in enumerate(zip(outs, images)):
                out = _resize(out, tuple(img.shape[-2:]))
                sums[i] = out if sums[i] is None else sums[i] + out
        views = len(self.scales) * (2 if self.flip else 1)
        return [s / views for s in sums]

    def run(
        self, logits_fn: LogitsFn, images: Sequence[torch.Tensor], size_divisibility: int = 0
    ) -> list[torch.Tensor]:
        """One view: whole-image (padded batch) or sliding-window logits per image."""
        if self.mode == "whole":
            batch = ImageList.from_tensors(list(images), size_divisibility)
            logits = dense_logits(logits_fn, batch.tensor, size_divisibility, **self.dense_kwargs)
            return [logit[:, :h, :w] for logit, (h, w) in zip(logits, batch.image_sizes)]
        # slide: images of one size (e.g. an image and its flip) share their window batches
        out: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(img.shape[-2:]), []).append(i)
        for idx in groups.values():
            stacked = torch.stack([images[i] for i in idx])
            logits = slide_logits(
                logits_fn,
                stacked,
                self.crop,
                self.stride,
                size_divisibility,
                self.slide_batch_size,
                **self.dense_kwargs,
            )
            for i, logit in zip(idx, logits):
                out[i] = logit
        return out


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    return value if len(value) == 2 else (value[0], value[0])


def _scaled_size(size, scale: float) -> tuple[int, int]:
    return tuple(max(1, int(round(s * scale))) for s in size)
