"""Dataset mapper of the inductive zero-shot protocol, and the training vocabulary it implies.

Training labels are mapped to the *seen-index* space: full id -> position in
`seen_class_ids(meta)`, unseen ids -> ignore. The model's training vocabulary is
`get_training_vocabulary(DATASETS.TRAIN)`, in the same order, so the two agree by construction and
unseen pixels and names never reach training.
"""

import copy
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..utils.io import file_fingerprint
from ..vocabulary import (
    DatasetConfigError,
    get_training_vocabulary,
    seen_class_ids,
    shared_metadata,
    unseen_class_ids,
)
from .label_io import read_label_map
from .transforms import ColorAugSSD

# the metadata helpers live in clipzss_d2.vocabulary (the model uses them without registering
# datasets); re-exported here for existing imports
__all__ = [
    "DatasetConfigError",
    "ZeroShotSemSegDatasetMapper",
    "get_training_vocabulary",
    "shared_metadata",
]

logger = logging.getLogger(__name__)


def seen_label_map(meta) -> np.ndarray:
    """256-entry table: full id -> seen index, unseen ids and ignore -> ignore, others -> -1."""
    ignore = meta.get("ignore_label", 255)
    num_classes = len(meta.stuff_classes)
    if num_classes >= 255 or ignore != 255:
        raise DatasetConfigError(
            f"Dataset {meta.name}: the mapper supports at most 254 classes with ignore_label 255 "
            f"(got {num_classes} classes, ignore_label {ignore})."
        )
    table = np.full(256, -1, dtype=np.int16)
    table[: len(meta.stuff_classes)] = ignore
    for seen_index, full_id in enumerate(seen_class_ids(meta)):
        table[full_id] = seen_index
    table[ignore] = ignore
    return table


def image_identity(path: str) -> str:
    """The path with the file's size and modification time, so an image replaced under the same
    name is not answered from a teacher cache entry of the old one."""
    fingerprint = file_fingerprint(path)  # None for another PathManager handler: the path alone
    return path if fingerprint is None else f"{path}|{fingerprint}"


def teacher_view_size(cfg) -> tuple[int, int] | None:
    """(short side, long side cap) of the teacher cache's whole-image view, None when off."""
    t = cfg.MODEL.CLIPZSS.TEACHER
    if not t.CACHE:
        return None
    short = t.CACHE_SIZE
    if short <= 0:
        if not (cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute"):
            raise DatasetConfigError(
                "MODEL.CLIPZSS.TEACHER.CACHE_SIZE 0 means the crop's shorter side, but "
                "INPUT.CROP is not an absolute crop: set TEACHER.CACHE_SIZE to a side in pixels."
            )
        short = min(cfg.INPUT.CROP.SIZE)
    return int(short), int(max(cfg.INPUT.MAX_SIZE_TRAIN, short))


def read_image_as_stored(path: str, image_format: str) -> np.ndarray:
    """The image in its stored pixel orientation (EXIF rotation is NOT applied).

    Label maps are drawn on the stored pixels and the prepare scripts check sizes against them;
    detectron2's read_image would rotate the few photos that carry an EXIF orientation tag away
    from their labels.
    """
    try:
        with PathManager.open(path, "rb") as f, Image.open(f) as img:
            return utils.convert_PIL_to_numpy(img, image_format)
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for broken files
        # a worker's traceback would not say which of a million files is broken
        raise OSError(f"{path} cannot be decoded as an image ({type(e).__name__}: {e})") from e


class ZeroShotSemSegDatasetMapper:
    """Reads an image and its label map, augments both, and maps labels for the protocol.

    Training: labels -> seen-index space (before any augmentation, so the crop's category-area
    check never sees unseen labels), resize, crop, photometric jitter, flip, then padding to the
    crop size / size divisibility (image with the pixel mean, labels with ignore).
    Test: the image is resized as for inference; the label map keeps its full ids.
    Output: image (CHW uint8 tensor in `image_format`), sem_seg (HW int64), height and width of
    the original image, file_name, and image_size: (height, width) of the image inside the
    (possibly padded) tensor, so the model can tell padding from image.
    With `hidden_labels` (MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS or ORACLE_TEACHER), training
    outputs also carry `hidden_sem_seg`: the full ids, unseen classes included, augmented and
    padded like sem_seg, for diagnostics only (clipzss_d2/diagnostics, the miniature world's
    oracle teacher); no loss of the method reads them.
    With `teacher_view_size` (MODEL.CLIPZSS.TEACHER.CACHE), training outputs also carry what the
    teacher cache needs: `teacher_view`, the whole image resized (short side, long side cap)
    without colour jitter, `teacher_view_from_crop`, the affine map (ax, bx, ay, by) from crop
    pixel coordinates to view coordinates (view_x = ax * crop_x + bx), and `teacher_cache_key`.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        label_map: np.ndarray | None = None,
        num_classes: int | None = None,
        ignore_label: int = 255,
        pad_to: tuple[int, int] | None = None,
        size_divisibility: int = -1,
        pad_value: Sequence[int] | int = 0,
        vocabulary: Sequence[str] | None = None,
        hidden_labels: bool = False,
        teacher_view_size: tuple[int, int] | None = None,
    ):
        """
        Args:
            label_map: 256-entry table full id -> output id (-1 = must not occur); None keeps
                the full ids.
            num_classes: number of full classes; values >= it (other than ignore) are errors.
            pad_to: minimum (height, width) after augmentation (training crop size).
            size_divisibility: pad height and width up to a multiple of this (<= 0: off).
            pad_value: image value of padded pixels (per channel or one value).
            vocabulary: test time: the entries each output's "vocabulary" carries to the model
                (the dataset's prompt names), so the batch names its own class list.
            hidden_labels: training: also output the full labels as `hidden_sem_seg`.
            teacher_view_size: training: (short side, long side cap) of the teacher cache's
                view of the whole image; None = no view.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.label_map = None if label_map is None else np.asarray(label_map, dtype=np.int16)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.pad_to = tuple(pad_to) if pad_to else None
        self.size_divisibility = size_divisibility
        self.pad_value = pad_value
        self.hidden_labels = hidden_labels and is_train
        self.vocabulary = list(vocabulary) if vocabulary else None
        self.teacher_view_size = (
            tuple(teacher_view_size) if teacher_view_size and is_train else None
        )
        if self.label_map is not None:
            out = self.label_map[(self.label_map >= 0) & (self.label_map != ignore_label)]
            self.num_output_classes = int(out.max()) + 1 if out.size else 0
        else:
            self.num_output_classes = num_classes
        mode = "training" if is_train else "inference"
        logger.info(f"[ZeroShotSemSegDatasetMapper] {mode} augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, vocabulary=None):
        if is_train:
            meta = shared_metadata(cfg.DATASETS.TRAIN)
            ignore = meta.get("ignore_label", 255)
            if ignore != cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE:
                raise DatasetConfigError(
                    f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE is {cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE} but "
                    f"{list(cfg.DATASETS.TRAIN)} mark unlabelled pixels with {ignore}: set the key "
                    f"to {ignore}."
                )
            augs = [
                T.ResizeShortestEdge(
                    cfg.INPUT.MIN_SIZE_TRAIN,
                    cfg.INPUT.MAX_SIZE_TRAIN,
                    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
                )
            ]
            pad_to = None
            if cfg.INPUT.CROP.ENABLED:
                augs.append(
                    T.RandomCrop_CategoryAreaConstraint(
                        cfg.INPUT.CROP.TYPE,
                        cfg.INPUT.CROP.SIZE,
                        cfg.INPUT.CROP.get("SINGLE_CATEGORY_MAX_AREA", 1.0),
                        ignored_category=ignore,
                    )
                )
                if cfg.INPUT.CROP.TYPE == "absolute":
                    pad_to = tuple(cfg.INPUT.CROP.SIZE)
            if cfg.INPUT.get("COLOR_AUG_SSD", False):
                augs.append(ColorAugSSD(cfg.INPUT.FORMAT))
            if cfg.INPUT.RANDOM_FLIP != "none":
                augs.append(
                    T.RandomFlip(
                        horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                        vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
                    )
                )
            n_seen, n_unseen = len(seen_class_ids(meta)), len(unseen_class_ids(meta))
            logger.info(
                f"Training labels of {list(cfg.DATASETS.TRAIN)}: {n_seen} seen classes -> ids "
                f"0..{n_seen - 1}; {n_unseen} unseen classes -> ignore ({ignore})."
            )
            mean = cfg.MODEL.PIXEL_MEAN
            return {
                "is_train": True,
                "augmentations": augs,
                "image_format": cfg.INPUT.FORMAT,
                "label_map": seen_label_map(meta),
                "num_classes": len(meta.stuff_classes),
                "ignore_label": ignore,
                "pad_to": pad_to,
                "size_divisibility": cfg.INPUT.get("SIZE_DIVISIBILITY", -1),
                "pad_value": [int(round(v)) for v in mean] if len(mean) > 1 else int(mean[0]),
                "hidden_labels": cfg.MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS
                or cfg.MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER,
                "teacher_view_size": teacher_view_size(cfg),
            }
        augs = []
        if cfg.INPUT.MIN_SIZE_TEST > 0:
            augs.append(
                T.ResizeShortestEdge(
                    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, sample_style="choice"
                )
            )
        return {
            "is_train": False,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "vocabulary": vocabulary,
        }

    # ------------------------------------------------------------------------------------------

    def _load_labels(self, path: str) -> np.ndarray:
        sem_seg = read_label_map(path)
        if sem_seg.ndim != 2:
            raise ValueError(f"{path}: label map has shape {sem_seg.shape}, expected H x W")
        present = np.flatnonzero(np.bincount(sem_seg.ravel().astype(np.int64)))
        if self.label_map is not None:
            bad = [int(v) for v in present if v >= len(self.label_map) or self.label_map[v] < 0]
        elif self.num_classes is not None:
            bad = [int(v) for v in present if v >= self.num_classes and v != self.ignore_label]
        else:  # test mode: the evaluator checks ids against its class list (16-bit past 255)
            bad = []
        if bad:
            raise ValueError(
                f"{path} holds label ids {bad[:10]} outside 0..{self.num_classes - 1 if self.num_classes else 254} "
                f"and {self.ignore_label}: was it prepared with datasets/prepare_*.py for this dataset?"
            )
        if self.label_map is not None:
            return self.label_map[sem_seg].astype(np.uint8)
        if self.num_classes is None and present.size and present[-1] > 255:
            # 16-bit ids (e.g. Context-459): float32 holds them exactly and, unlike integer
            # arrays, goes through detectron2's nearest-neighbour resize
            return sem_seg.astype(np.float32)
        return sem_seg.astype(np.uint8)

    def _pad(self, image: np.ndarray, sem_seg: np.ndarray | None):
        h, w = image.shape[:2]
        th, tw = h, w
        if self.pad_to is not None:
            th, tw = max(th, self.pad_to[0]), max(tw, self.pad_to[1])
        if self.size_divisibility > 0:
            d = self.size_divisibility
            th, tw = math.ceil(th / d) * d, math.ceil(tw / d) * d
        if (th, tw) == (h, w):
            return image, sem_seg
        fill = np.asarray(self.pad_value, dtype=np.float64)
        if image.ndim == 2 or fill.size not in (1, image.shape[2]):
            fill = fill.mean()  # e.g. a grayscale INPUT.FORMAT with a 3-channel PIXEL_MEAN
        padded = np.empty((th, tw) + image.shape[2:], dtype=image.dtype)
        padded[...] = np.rint(fill).astype(image.dtype)
        padded[:h, :w] = image
        if sem_seg is not None:
            seg = np.full((th, tw), self.ignore_label, dtype=sem_seg.dtype)
            seg[:h, :w] = sem_seg
            sem_seg = seg
        return padded, sem_seg

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image_as_stored(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        height, width = image.shape[:2]

        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg = self._load_labels(dataset_dict["sem_seg_file_name"])
            if sem_seg.shape != (height, width):
                raise ValueError(
                    f"{dataset_dict['sem_seg_file_name']} is {sem_seg.shape[1]}x{sem_seg.shape[0]} "
                    f"but its image {dataset_dict['file_name']} is {width}x{height}"
                )
        elif self.is_train:
            raise ValueError(f"Training record of {dataset_dict['file_name']} has no label map")

        original = image
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_size = tuple(int(v) for v in image.shape[:2])
        hidden = None
        if self.hidden_labels:  # the same geometry, full ids
            # uint8 like sem_seg (_load_labels has checked every id is < 256): detectron2 resizes
            # uint8 maps with PIL's nearest and float ones with torch's, which picks other source
            # pixels at non-integer scales, so a float32 copy would be shifted against sem_seg
            full = read_label_map(dataset_dict["sem_seg_file_name"]).astype(np.uint8)
            hidden = transforms.apply_segmentation(full)
        if self.is_train:
            padded_image, sem_seg = self._pad(image, sem_seg)
            if hidden is not None:
                hidden = self._pad(image, hidden)[1]
            image = padded_image

        if self.is_train and self.num_output_classes is not None:
            bad = (sem_seg != self.ignore_label) & (sem_seg >= self.num_output_classes)
            if bad.any():  # an explicit check, not `assert`: it must survive python -O
                raise RuntimeError(
                    f"Mapper produced label ids outside the {self.num_output_classes} seen classes "
                    f"for {dataset_dict['file_name']}: {np.unique(sem_seg[bad]).tolist()}"
                )

        if image.ndim == 2:
            image = image[:, :, None]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype(np.int64))
        if hidden is not None:
            dataset_dict["hidden_sem_seg"] = torch.as_tensor(hidden.astype(np.int64))
        dataset_dict["height"], dataset_dict["width"] = height, width
        dataset_dict["image_size"] = image_size
        if self.vocabulary is not None:
            dataset_dict["vocabulary"] = self.vocabulary
        if self.teacher_view_size is not None:
            dataset_dict.update(self._teacher_view(original, transforms, dataset_dict["file_name"]))
        return dataset_dict

    def _teacher_view(self, original: np.ndarray, transforms, key: str) -> dict:
        """The whole image as the teacher cache sees it, and where the crop lies in it.

        The crop's geometry is read from the transforms the augmentations applied
        (``apply_coords``), so any axis-aligned resize / crop / flip is mapped, and anything
        else (rotation, shear) is refused.
        """
        h, w = original.shape[:2]
        short, cap = self.teacher_view_size
        vh, vw = T.ResizeShortestEdge.get_output_shape(h, w, short, cap)
        view = T.ResizeTransform(h, w, vh, vw).apply_image(original)
        corners = transforms.apply_coords(np.array([[0.0, 0.0], [w, h], [w, 0.0]]))
        (x0, y0), (x1, y1), (x2, y2) = corners.tolist()
        if not (math.isclose(x2, x1, abs_tol=1e-6) and math.isclose(y2, y0, abs_tol=1e-6)):
            raise ValueError(
                "MODEL.CLIPZSS.TEACHER.CACHE maps crops onto the whole image by scale, shift and "
                "flip only; an augmentation of this config rotates or shears: turn the cache off."
            )
        # crop_x = sx * x + x0 (sx < 0 when flipped) and view_x = x * vw / w
        sx, sy = (x1 - x0) / w, (y1 - y0) / h
        ax, ay = vw / w / sx, vh / h / sy
        if view.ndim == 2:
            view = view[:, :, None]
        return {
            "teacher_view": torch.as_tensor(np.ascontiguousarray(view.transpose(2, 0, 1))),
            "teacher_view_from_crop": torch.tensor(
                [ax, -x0 * ax, ay, -y0 * ay], dtype=torch.float64
            ),
            "teacher_cache_key": image_identity(key),
        }
