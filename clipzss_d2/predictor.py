"""Open-vocabulary predictor: images and a list of class names in, per-pixel classes out.

Works like detectron2's DefaultPredictor (test-time ResizeShortestEdge, BGR arrays by default, the
model's own forward, so sliding-window / flip / multi-scale come from MODEL.CLIPZSS.INFERENCE),
with three differences users of open-vocabulary models ask for: the vocabulary is an argument
(set once or per call), the result is brought back to the input size as class ids and scores,
and weights that do not fit the config are an error instead of a warning.

No dataset is needed on disk and no CLIP image encoder is built. Text embeddings come from the
on-disk cache (MODEL.CLIPZSS.TEXT.CACHE_DIR) when present, else from the CLIP text tower, loaded
once, on the first vocabulary that misses the cache.

The same interface runs CLIP alone (MODEL.META_ARCHITECTURE CLIPAlone, or
`OpenVocabularyPredictor.clip_alone(config_file)`): CLIP's dense patch tokens x text embeddings,
the training-free baseline, with no student and no MODEL.WEIGHTS. Its results say so
(`SegmentationResult.segmenter`), so they cannot pass for a trained student's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import load_student_weights, skip_imagenet_init_for_trained_student
from .config import get_clipzss_cfg
from .dense_labels import BAND_BUDGET, CHUNK_BUDGET, labels_and_scores, resized_labels_and_scores
from .errors import UserInputError
from .modeling.clip_alone import META_ARCHITECTURE as CLIP_ALONE_ARCH
from .modeling.clip_alone import NO_WEIGHTS_NOTE, CLIPAlone
from .modeling.inference import TestTimeInference
from .modeling.open_vocabulary import STUDENT, OpenVocabularySegmenter
from .utils.config_loading import merge_config
from .vocabulary import display_name, parse_vocabulary

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("BGR", "RGB")


@dataclass
class SegmentationResult:
    """Per-pixel prediction at the input image's size.

    labels: H x W int64, index into `vocabulary`.
    scores: H x W float32, softmax probability of the predicted class over the vocabulary.
    vocabulary: the entries given to CLIP (synonyms joined by "|").
    segmenter: what predicted it: "student" (a trained CLIP-ZSS student) or
        "CLIP alone (no student)" (the training-free baseline); outputs carry it.
    """

    labels: np.ndarray
    scores: np.ndarray
    vocabulary: list[str]
    segmenter: str = STUDENT

    @property
    def class_names(self) -> list[str]:
        """Display names (first synonym of each entry)."""
        return [display_name(v) for v in self.vocabulary]

    @property
    def unlabelled_id(self) -> int:
        """Value marking unlabelled pixels in `label_map`: 255, or 65535 past 255 classes."""
        return 255 if len(self.vocabulary) <= 255 else 65535

    def label_map(self, confidence_threshold: float = 0.0) -> np.ndarray:
        """uint8 (uint16 past 255 classes) ids; pixels scoring below the threshold unlabelled."""
        dtype = np.uint8 if self.unlabelled_id == 255 else np.uint16
        out = self.labels.astype(dtype)
        if confidence_threshold > 0:
            out[self.scores < confidence_threshold] = self.unlabelled_id
        return out

    def class_fractions(self, confidence_threshold: float = 0.0) -> dict[str, float]:
        """Fraction of the image per predicted class (largest first), plus "unlabelled" if any."""
        labels = self.label_map(confidence_threshold)
        ids, counts = np.unique(labels, return_counts=True)
        total = float(labels.size)
        names = self.class_names
        fractions = {}
        for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: -t[1]):
            name = "unlabelled" if i == self.unlabelled_id else names[i]
            fractions[name] = c / total
        return fractions


class OpenVocabularyPredictor:
    """Segment images over any vocabulary with a trained CLIP-ZSS student (or CLIP alone).

    Images are uint8 arrays H x W x 3 in BGR order by default (OpenCV's, like detectron2's
    DefaultPredictor); pass ``input_format="RGB"`` for PIL/matplotlib arrays. Grayscale (H x W)
    and RGBA/BGRA (alpha dropped) arrays are accepted. The vocabulary and the inference mode
    (`test_time`, default MODEL.CLIPZSS.INFERENCE) travel with each call's inputs, never as
    model state: no call changes what another call predicts.

    Example:
        predictor = OpenVocabularyPredictor.from_folder("output/voc/model")
        # or from a config file and weights:
        predictor = OpenVocabularyPredictor.from_config_file(
            "configs/coco_stuff.yaml", ["MODEL.WEIGHTS", "model_final.pth"])
        result = predictor(cv2.imread("street.jpg"), vocabulary="car,road,tree|trees,sky")
        result.labels, result.scores, result.class_names
        # the training-free baseline, same interface, no student weights:
        baseline = OpenVocabularyPredictor.clip_alone("configs/coco_stuff.yaml")
    """

    def __init__(
        self, cfg, vocabulary: str | Sequence[str] | None = None, *, config_name: str | None = None
    ):
        self.cfg = cfg.clone()
        self.cfg.defrost()  # callers may pass a frozen config (demo.py freezes its own)
        self.cfg.MODEL.CLIPZSS.STUDENT_ONLY = True  # deployment: no training-only modules
        skip_imagenet_init_for_trained_student(self.cfg)
        self.cfg.freeze()
        self.model = build_model(self.cfg)
        if not isinstance(self.model, OpenVocabularySegmenter):
            raise UserInputError(
                f"MODEL.META_ARCHITECTURE is {self.cfg.MODEL.META_ARCHITECTURE!r}; the "
                f"open-vocabulary predictor needs 'CLIPZSS' (a student) or "
                f"'{CLIP_ALONE_ARCH}' (CLIP alone)."
            )
        self.model.eval()
        if isinstance(self.model, CLIPAlone):
            logger.warning("%s.", NO_WEIGHTS_NOTE)
        else:
            load_student_weights(self.model, self.cfg.MODEL.WEIGHTS, config_name or "the config")
        if self.cfg.MODEL.CLIPZSS.INFERENCE.CHANNELS_LAST:
            # NHWC weights as well as NHWC images: with NCHW weights PyTorch runs depthwise
            # convolutions (timm's MiT) on NCHW copies of the NHWC activations, half of
            # SegFormer-B0's backbone time on a CPU (docs/benchmarks.md)
            self.model.to(memory_format=torch.channels_last)
        min_size, max_size = self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST
        self.aug = T.ResizeShortestEdge([min_size, min_size], max_size) if min_size > 0 else None
        self.model_format = self.cfg.INPUT.FORMAT
        if self.model_format not in INPUT_FORMATS:
            raise UserInputError(f"INPUT.FORMAT must be BGR or RGB, got {self.model_format!r}.")
        self.images_per_forward = self.cfg.MODEL.CLIPZSS.INFERENCE.IMAGES_PER_FORWARD
        if self.images_per_forward < 0:
            raise UserInputError(
                f"MODEL.CLIPZSS.INFERENCE.IMAGES_PER_FORWARD must be >= 0 (0 = automatic), got "
                f"{self.images_per_forward}."
            )
        self._vocabulary = self.model.vocabulary
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    @classmethod
    def from_config_file(
        cls,
        config_file: str,
        opts: Sequence[str] = (),
        vocabulary: str | Sequence[str] | None = None,
    ) -> OpenVocabularyPredictor:
        cfg = merge_config(get_clipzss_cfg(), config_file, opts, "opts")
        return cls(cfg, vocabulary, config_name=config_file)

    @classmethod
    def clip_alone(
        cls,
        config_file: str,
        opts: Sequence[str] = (),
        vocabulary: str | Sequence[str] | None = None,
    ) -> OpenVocabularyPredictor:
        """CLIP alone with the CLIP, teacher and inference settings of `config_file` (the
        training-free baseline): MODEL.META_ARCHITECTURE CLIPAlone; MODEL.WEIGHTS is not used."""
        opts = [*opts, "MODEL.META_ARCHITECTURE", CLIP_ALONE_ARCH]
        return cls.from_config_file(config_file, opts, vocabulary)

    @property
    def segmenter(self) -> str:
        """What this predictor's results are: "student" or "CLIP alone (no student)"."""
        return self.model.segmenter

    @classmethod
    def from_folder(
        cls,
        path: str,
        vocabulary: str | Sequence[str] | None = None,
        opts: Sequence[str] = (),
    ) -> OpenVocabularyPredictor:
        """The model folder train_net.py leaves (OUTPUT_DIR/model): its config, weights and
        text cache, wherever the folder now is; no CLIP weights for its cached vocabularies.
        `opts` are config overrides (KEY VALUE), e.g. ["MODEL.DEVICE", "cpu"]."""
        from .model_folder import CONFIG_FILE, load_folder_config

        cfg = load_folder_config(path, opts)
        return cls(cfg, vocabulary, config_name=os.path.join(path, CONFIG_FILE))

    # -- vocabulary ----------------------------------------------------------------------------
    @property
    def vocabulary(self) -> list[str] | None:
        return None if self._vocabulary is None else list(self._vocabulary)

    @property
    def class_names(self) -> list[str] | None:
        return None if self._vocabulary is None else [display_name(v) for v in self._vocabulary]

    def set_vocabulary(self, vocabulary: str | Sequence[str]) -> list[str]:
        """Default classes ("a,b|c" or a list); their text embeddings are computed now."""
        entries = parse_vocabulary(vocabulary)
        self.model.text_embeddings(entries)  # fail here, not at the first image
        self._vocabulary = entries
        return list(entries)

    def _use_vocabulary(self, vocabulary) -> list[str]:
        entries = self._vocabulary if vocabulary is None else parse_vocabulary(vocabulary)
        if entries is None:
            raise UserInputError(
                "No vocabulary: pass vocabulary=['cat', 'sofa|couch', ...] or call "
                "set_vocabulary(), or set MODEL.CLIPZSS.TEST_VOCABULARY / DATASETS.TEST."
            )
        return entries

    # -- prediction ----------------------------------------------------------------------------
    def __call__(
        self,
        image: np.ndarray,
        vocabulary=None,
        input_format: str = "BGR",
        test_time: TestTimeInference | None = None,
    ) -> SegmentationResult:
        return self.predict_batch([image], vocabulary, input_format, test_time)[0]

    @torch.no_grad()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        vocabulary=None,
        input_format: str = "BGR",
        test_time: TestTimeInference | None = None,
    ) -> list[SegmentationResult]:
        """One result per image. Images of equal (resized) size share forward passes
        (INFERENCE.IMAGES_PER_FORWARD at a time); others run apart, so padding never makes an
        image's prediction depend on its batch neighbours.
        `test_time`: this call's inference mode, e.g. ``dataclasses.replace(
        predictor.model.test_time, mode="slide")``; None for the config's."""
        entries = self._use_vocabulary(vocabulary)
        inputs = [self._prepare(image, input_format) for image in images]
        for x in inputs:  # vocabulary and mode travel with the request: no shared model state
            x["vocabulary"] = entries
            if test_time is not None:
                x["test_time"] = test_time
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(tuple(x["image"].shape), []).append(i)
            # labels and scores at the input size, not K logit planes (clipzss_d2.dense_labels)
            x["sem_seg_format"] = "labels"
        results: list[SegmentationResult | None] = [None] * len(inputs)
        for group in groups.values():
            for part in self._forward_passes(len(group)):
                self._predict_group(inputs, group[part], entries, results)
        return results

    def _forward_passes(self, count: int) -> list[slice]:
        """The forward passes of `count` equal-sized images, as slices of them."""
        step = self._forward_size(count)
        return [slice(start, start + step) for start in range(0, count, step)]

    def _forward_size(self, group: int) -> int:
        """Images per forward pass: INFERENCE.IMAGES_PER_FORWARD, or with 0 one on a CPU (a
        batch of 16 512^2 images took 20 % longer in one pass than one by one on 2 cores: the
        activations of one image stay in the cache) and the whole group on a GPU."""
        if self.images_per_forward:
            return self.images_per_forward
        return 1 if self.model.device.type == "cpu" else group

    def _predict_group(self, inputs, idx, entries, results) -> None:
        outputs = self.model([inputs[i] for i in idx])
        for i, out in zip(idx, outputs):
            results[i] = SegmentationResult(
                labels=out["sem_seg_labels"].cpu().numpy(),
                scores=out["sem_seg_scores"].cpu().numpy(),
                vocabulary=list(entries),
                segmenter=self.segmenter,
            )

    def _prepare(self, image, input_format: str) -> dict:
        image = _as_uint8_image(image)
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        if input_format != self.model_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        if self.aug is not None:
            image = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        return {"image": tensor, "height": height, "width": width}


def _as_uint8_image(image) -> np.ndarray:
    """H x W x 3 uint8 view of what users pass (gray and 4-channel arrays converted)."""
    if isinstance(image, torch.Tensor):
        raise TypeError("Pass the image as a numpy array (H x W x 3 uint8), not a torch tensor.")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(
            f"Expected a uint8 image (0..255), got dtype {image.dtype}. Convert it first, e.g. "
            f"np.clip(img * 255, 0, 255).astype(np.uint8) for a 0..1 float image."
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"Expected an image of shape H x W, H x W x 3 or H x W x 4, got {image.shape}."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"The image is empty (shape {image.shape}).")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _to_result(
    logits: torch.Tensor,
    entries: list[str],
    size: tuple[int, int],
    budget: int | None = None,
    *,
    segmenter: str = STUDENT,
) -> SegmentationResult:
    """Labels and scores at `size` from K x h x w logits: what argmax / softmax-max of
    detectron2's `sem_seg_postprocess` (bilinear resize of all K planes) give. Logits already at
    `size` are taken a band of rows at a time with every class at once (clipzss_d2.dense_labels,
    the faster route); others go through `resized_labels_and_scores`."""
    if tuple(logits.shape[-2:]) == tuple(size):
        labels, scores = labels_and_scores(logits, budget or BAND_BUDGET)
    else:
        labels, scores = resized_labels_and_scores(logits, size, budget or CHUNK_BUDGET)
    return SegmentationResult(
        labels=labels.cpu().numpy(),
        scores=scores.cpu().numpy(),
        vocabulary=list(entries),
        segmenter=segmenter,
    )
