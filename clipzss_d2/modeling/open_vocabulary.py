"""What every open-vocabulary segmenter of the project shares at test time, written once.

The trained student (CLIPZSS) and CLIP alone (CLIPAlone, the training-free baseline) differ only
in how a normalised image batch becomes K x h x w logits (`dense_class_logits`). The vocabulary
travelling with each input, the preprocessing, the cached text embeddings, the test-time modes
(whole / slide / flip / scales) and the resize to each input's size are this one class, so an
evaluation or a demo of either runs exactly the same code around its logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from ..vocabulary import parse_vocabulary, prompt_names
from .inference import TestTimeInference

# What a segmenter is, as results, logs and outputs name it (OpenVocabularyPredictor's
# SegmentationResult.segmenter): a CLIP-alone result must never pass for the trained student's.
STUDENT = "student"
CLIP_ALONE = "CLIP alone (no student)"
# what an input may ask inference for: K x H x W logits (detectron2's sem_seg) or labels + scores
SEM_SEG_FORMATS = ("logits", "labels")


def default_test_vocabulary(cfg) -> list[str] | None:
    """MODEL.CLIPZSS.TEST_VOCABULARY, else the first DATASETS.TEST's classes, else None."""
    z = cfg.MODEL.CLIPZSS
    if z.TEST_VOCABULARY:
        return parse_vocabulary(list(z.TEST_VOCABULARY))
    if cfg.DATASETS.TEST:
        return prompt_names(MetadataCatalog.get(cfg.DATASETS.TEST[0]))
    return None


class OpenVocabularySegmenter(nn.Module):
    """Base of the meta-architectures: vocabulary, preprocessing, text embeddings, inference.

    Subclasses set `text_classifier`, `_vocabulary` (list or None), the `pixel_mean` /
    `pixel_std` buffers, `size_divisibility` and `test_time`, and define `dense_class_logits`
    (and `losses` if they train).
    """

    segmenter: str = STUDENT  # what its results are, for labels (STUDENT or CLIP_ALONE)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- vocabulary ----------------------------------------------------------------------------
    @property
    def vocabulary(self) -> list[str] | None:
        return None if self._vocabulary is None else list(self._vocabulary)

    def set_vocabulary(self, vocabulary: str | Sequence[str]) -> list[str]:
        """Classes predicted at inference; "a,b" or a list, "a|b" entries are synonyms."""
        self._vocabulary = parse_vocabulary(vocabulary)
        return list(self._vocabulary)

    def text_embeddings(self, vocabulary: Sequence[str]) -> torch.Tensor:
        """K x C on the model's device (read-only); the text classifier owns the caches."""
        return self.text_classifier.on_device(vocabulary, self.device)

    # -- forward -------------------------------------------------------------------------------
    def preprocess_images(self, batched_inputs) -> ImageList:
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs):
        images = self.preprocess_images(batched_inputs)
        if self.training:
            return self.losses(images, batched_inputs)
        return self.inference(images, batched_inputs)

    def losses(self, images: ImageList, batched_inputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} cannot be trained.")

    def dense_class_logits(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Normalised images (B x 3 x H x W) and K x C text embeddings -> B x K x h x w logits
        at the segmenter's output stride."""
        raise NotImplementedError

    @torch.no_grad()
    def inference(self, images: ImageList, batched_inputs):
        """Per-image K x height x width logits over each input's vocabulary (`sem_seg`).

        The vocabulary travels with the request: an input's "vocabulary" (a list of entries,
        "a|b" = synonyms) if given, else the model's default (set_vocabulary / config), so
        concurrent callers with different vocabularies never share mutable state. So does the
        inference mode: an input's "test_time" (a TestTimeInference: whole-image, sliding-window,
        flip, multi-scale) if given, else `self.test_time` (MODEL.CLIPZSS.INFERENCE). Images with
        the same vocabulary and mode share a forward pass; logits are resized to each input's
        "height"/"width".

        An input with ``"sem_seg_format": "labels"`` gets ``sem_seg_labels`` (H x W int64, the
        argmax of those logits) and ``sem_seg_scores`` (H x W, the top class's softmax
        probability) instead, computed without the K x H x W logits where possible
        (TestTimeInference.labels_and_scores): what the predictor asks for.
        """
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        modes: dict[int, TestTimeInference] = {}
        for i, x in enumerate(batched_inputs):
            vocabulary = x.get("vocabulary", self._vocabulary)
            if vocabulary is None:
                raise ValueError(
                    "No vocabulary to predict: pass inputs[i]['vocabulary'], set DATASETS.TEST "
                    "or MODEL.CLIPZSS.TEST_VOCABULARY, or call model.set_vocabulary([...])."
                )
            test_time = x.get("test_time") or self.test_time
            modes[id(test_time)] = test_time  # a dataclass, unhashable: grouped by identity
            output = x.get("sem_seg_format", "logits")
            if output not in SEM_SEG_FORMATS:
                raise ValueError(
                    f"inputs[{i}]['sem_seg_format'] must be one of {SEM_SEG_FORMATS}, got "
                    f"{output!r}."
                )
            groups.setdefault((tuple(vocabulary), id(test_time), output), []).append(i)
        results: list[dict | None] = [None] * len(batched_inputs)
        for (vocabulary, mode, output), idx in groups.items():
            text = self.text_embeddings(vocabulary)

            def logits_fn(x: torch.Tensor, text=text) -> torch.Tensor:
                return self.dense_class_logits(x, text)

            subset = images
            if len(idx) != len(batched_inputs):
                subset = ImageList(images.tensor[idx], [images.image_sizes[i] for i in idx])
            if output == "labels":
                out_sizes = [
                    (batched_inputs[i].get("height", h), batched_inputs[i].get("width", w))
                    for i, (h, w) in zip(idx, subset.image_sizes)
                ]
                answers = modes[mode].labels_and_scores(
                    logits_fn, subset, self.size_divisibility, out_sizes
                )
                for i, (labels, scores) in zip(idx, answers):
                    results[i] = {"sem_seg_labels": labels, "sem_seg_scores": scores}
                continue
            logits = modes[mode](logits_fn, subset, self.size_divisibility)
            for i, logit, image_size in zip(idx, logits, subset.image_sizes):
                height = batched_inputs[i].get("height", image_size[0])
                width = batched_inputs[i].get("width", image_size[1])
                if (height, width) != tuple(logit.shape[-2:]):
                    logit = sem_seg_postprocess(logit, image_size, height, width)
                results[i] = {"sem_seg": logit}
        return results
