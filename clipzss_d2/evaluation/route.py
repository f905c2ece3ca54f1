"""The one evaluation route: the student alone, loaded through the safe checkpointer, each input
carrying its dataset's vocabulary, scored by the generalized zero-shot evaluator.

`train_net.py --eval-only`, the trainer's periodic evaluation and `tools/eval_open_vocab.py` all
build their pieces here, so a number printed by any of them means the same thing.
"""

from __future__ import annotations

import logging
import os

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.modeling import build_model

from ..checkpoint import SafeCheckpointer, skip_imagenet_init_for_trained_student
from ..data.dataset_mapper import ZeroShotSemSegDatasetMapper
from ..errors import UserInputError
from ..modeling.clip_alone import NO_WEIGHTS_NOTE, is_clip_alone
from ..modeling.open_vocabulary import CLIP_ALONE
from ..utils.weights import resolve_model_weights
from ..vocabulary import prompt_names
from .gzss_evaluation import GZSSSemSegEvaluator

__all__ = ["build_eval_student", "build_gzss_evaluator", "build_gzss_test_loader"]

logger = logging.getLogger(__name__)


def build_eval_student(cfg, resume: bool = False, build=build_model):
    """The deployable student (no teacher, GLM or PLM) with MODEL.WEIGHTS (or, with `resume`,
    the last checkpoint in OUTPUT_DIR) read through the safe checkpointer. `build` lets the
    trainer add its own steps (e.g. SyncBN conversion) to building. CLIP alone
    (MODEL.META_ARCHITECTURE CLIPAlone, the training-free baseline) has no weights to read: it
    is built and said to be what it is."""
    student = cfg.clone()
    student.defrost()
    student.MODEL.CLIPZSS.STUDENT_ONLY = True
    skip_imagenet_init_for_trained_student(student)
    model = build(student)
    model.eval()
    if is_clip_alone(cfg):
        logger.warning("%s.", NO_WEIGHTS_NOTE)
        return model
    SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
        resolve_model_weights(cfg.MODEL.WEIGHTS), resume=resume
    )
    return model


def build_gzss_test_loader(cfg, dataset_name: str):
    """Images read as stored (no EXIF rotation), exactly like their label maps; each input names
    its dataset's class list, unless MODEL.CLIPZSS.TEST_VOCABULARY forces one."""
    vocabulary = None
    if not cfg.MODEL.CLIPZSS.TEST_VOCABULARY:
        vocabulary = prompt_names(MetadataCatalog.get(dataset_name))
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=False, vocabulary=vocabulary)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)


def build_gzss_evaluator(cfg, dataset_name: str, output_folder: str | None = None,
                         distributed: bool = True) -> GZSSSemSegEvaluator:  # fmt: skip
    """The evaluator of a dataset registered through clipzss_d2.data; per-class IoU and the
    confusion matrix go to `output_folder` (default OUTPUT_DIR/inference/<dataset>); CLIP
    alone's results are labelled as such there and in the log."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type != "gzss_sem_seg":
        raise UserInputError(
            f"{dataset_name} is not a clipzss_d2 semantic segmentation dataset (evaluator_type "
            f"{evaluator_type!r}): register it through clipzss_d2.data or a DATASETS.CUSTOM file."
        )
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return GZSSSemSegEvaluator(
        dataset_name,
        distributed=distributed,
        output_dir=output_folder,
        report_both_conventions=cfg.TEST.REPORT_BOTH_CONVENTIONS,
        segmenter=CLIP_ALONE if is_clip_alone(cfg) else None,
    )
