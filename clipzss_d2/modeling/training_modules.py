"""The training-only parts of CLIP-ZSS: frozen CLIP teacher, GLM, PLM and the criterion.

Imported only when a model is built for training (``CLIPZSS.from_config`` with
``MODEL.CLIPZSS.STUDENT_ONLY False``), so the deployable student (predictor, demo, export, web
demo) never loads them; tests/test_student_only.py checks it.
"""

from .criterion import CLIPZSSCriterion
from .glm import GlobalLearningModule
from .plm import PixelLearningModule
from .teacher import CLIPTeacher


def build_training_modules(cfg) -> dict:
    """Keyword arguments of CLIPZSS for training: glm, plm (None when switched off), the
    teacher's factory (None for the supervised baseline) and the criterion."""
    z = cfg.MODEL.CLIPZSS
    plm_on = z.PLM.PSEUDO_LABELS or z.PLM.SYNTHESIZER
    return {
        "glm": GlobalLearningModule(cfg) if z.GLM.ENABLED else None,
        "plm": PixelLearningModule(cfg) if plm_on else None,
        "teacher_factory": (lambda: CLIPTeacher(cfg)) if (z.GLM.ENABLED or plm_on) else None,
        "criterion": CLIPZSSCriterion(cfg),
    }
