"""The training-only parts of CLIP-ZSS: frozen CLIP teacher, GLM, PLM and the criterion.

Imported only when a model is built for training (``CLIPZSS.from_config`` with
``MODEL.CLIPZSS.STUDENT_ONLY False``), so the deployable student (predictor, demo, export, web
demo) never loads them; tests/modeling/test_student_only.py checks it.
"""

from ...errors import UserInputError
from ...vocabulary import get_training_vocabulary, prompt_names, shared_metadata
from .criterion import CLIPZSSCriterion
from .glm import GlobalLearningModule
from .plm import PixelLearningModule
from .plm.module import check_pseudo_ids
from .teacher import CLIPTeacher
from .teacher_cache import TeacherCache


def build_training_modules(cfg) -> dict:
    """Keyword arguments of CLIPZSS for training: glm, plm (None when switched off), the
    teacher's factory (None for the supervised baseline) and the criterion."""
    z = cfg.MODEL.CLIPZSS
    plm_on = z.PLM.PSEUDO_LABELS or z.PLM.SYNTHESIZER
    if z.PLM.PSEUDO_LABELS and cfg.DATASETS.TRAIN:  # refused now, not at the first iteration
        num_seen = len(get_training_vocabulary(cfg.DATASETS.TRAIN))
        check_pseudo_ids(num_seen, z.PLM.MAX_REGIONS, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    teacher_on = z.GLM.ENABLED or plm_on
    probe = None
    if z.DIAGNOSTICS.PSEUDO_LABELS and z.PLM.PSEUDO_LABELS:
        from ...diagnostics import PseudoLabelProbe

        meta = shared_metadata(cfg.DATASETS.TRAIN)
        probe = PseudoLabelProbe(
            meta.stuff_classes, meta.get("unseen_classes", []), cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        )
    if z.DIAGNOSTICS.IDEAL_TEXT and teacher_on and not z.DIAGNOSTICS.ORACLE_TEACHER:
        raise UserInputError(
            "MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT replaces the text embeddings the teacher's "
            "image features are aligned with, so GLM and PLM would learn noise: set "
            "DIAGNOSTICS.ORACLE_TEACHER True as well, or switch GLM and PLM off."
        )
    oracle = None
    if z.DIAGNOSTICS.ORACLE_TEACHER:
        from detectron2.data import MetadataCatalog

        from .oracle_teacher import OracleTeacher, check_oracle_datasets

        check_oracle_datasets(list(cfg.DATASETS.TRAIN), MetadataCatalog.get)
        oracle = OracleTeacher(prompt_names(shared_metadata(cfg.DATASETS.TRAIN)))
    return {
        "pseudo_label_probe": probe,
        "oracle_teacher": oracle,
        "glm": GlobalLearningModule(cfg) if z.GLM.ENABLED else None,
        "plm": PixelLearningModule(cfg) if plm_on else None,
        "teacher_factory": (lambda: CLIPTeacher(cfg)) if teacher_on else None,
        "teacher_cache": TeacherCache.from_config(cfg) if teacher_on else None,
        "criterion": CLIPZSSCriterion(cfg),
    }
