"""CLIP alone: the teacher's dense patch tokens classified by the text embeddings; no student.

The training-free baseline every CLIP-ZSS student is measured against, and the computation of
the benchmark's CLIP-in-the-loop competitor (tools/benchmarking/baseline.py): CLIP's image tower
runs on every test image and each patch token, mapped into the joint space as the teacher maps
it (ln_post, proj; TEACHER.DENSE_MODE plain or maskclip), is classified by CLIP's own trained
logit scale x cosine to the vocabulary's text embeddings. Select it with
MODEL.META_ARCHITECTURE CLIPAlone; everything around the logits (vocabulary per input,
MODEL.CLIPZSS.INFERENCE modes, resize to each input) is OpenVocabularySegmenter's, shared with
the student. It has no weights of its own: MODEL.WEIGHTS is not read, it cannot be trained,
exported or packaged as a model folder, and its results are labelled CLIP_ALONE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ..errors import UserInputError
from .inference import TestTimeInference
from .open_vocabulary import CLIP_ALONE, OpenVocabularySegmenter, default_test_vocabulary
from .student import class_logits
from .text_classifier import TextClassifier, build_text_classifier

if TYPE_CHECKING:  # imported in from_config only: `import clipzss_d2` loads no training module
    from .training.teacher import CLIPTeacher

logger = logging.getLogger(__name__)

META_ARCHITECTURE = "CLIPAlone"
DESCRIPTION = "CLIP alone (teacher's dense patch tokens x text embeddings; no student)"
NO_WEIGHTS_NOTE = f"{DESCRIPTION}: MODEL.WEIGHTS is not used"


def is_clip_alone(cfg) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == META_ARCHITECTURE


def refuse_clip_alone(cfg, what: str) -> None:
    """One-line UserInputError when `cfg` selects CLIP alone: nothing trained to `what`."""
    if is_clip_alone(cfg):
        raise UserInputError(
            f"MODEL.META_ARCHITECTURE is {META_ARCHITECTURE}: CLIP alone is no trained student, "
            f"{what}"
        )


@META_ARCH_REGISTRY.register()
class CLIPAlone(OpenVocabularySegmenter):
    """Dense CLIP as a segmenter, behind the same interface (inputs, outputs) as CLIPZSS."""

    segmenter = CLIP_ALONE

    @configurable
    def __init__(
        self,
        *,
        teacher: CLIPTeacher,
        text_classifier: TextClassifier,
        test_vocabulary: Sequence[str] | None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        logit_scale: float,
        test_time: TestTimeInference | None = None,
    ):
        """
        Args:
            teacher: the frozen CLIP image tower giving patch tokens in the joint space; a
                submodule, so that moving the model moves it (it is never checkpointed: CLIP
                alone loads and saves no weights).
            logit_scale: multiplies the cosine similarities: CLIP's own trained scale
                (``CLIPTeacher.logit_scale``, 100 for OpenAI's weights).
        """
        super().__init__()
        self.teacher = teacher
        self.text_classifier = text_classifier
        self._vocabulary = list(test_vocabulary) if test_vocabulary else None
        self.logit_scale = float(logit_scale)
        # Whole patches: every pixel is in a token and the token grid upsamples onto the
        # padded image exactly (padding, the mean colour, is at most a patch minus one pixel).
        self.size_divisibility = max(teacher.patch_size)
        self.test_time = test_time or TestTimeInference()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        from .training.teacher import CLIPTeacher  # lazily: see TYPE_CHECKING above

        teacher = CLIPTeacher(cfg)
        logger.info(
            "%s: %s's patch tokens (MODEL.CLIPZSS.TEACHER.DENSE_MODE %s) x text embeddings, "
            "CLIP's logit scale %.2f.",
            DESCRIPTION,
            cfg.MODEL.CLIPZSS.CLIP.MODEL_NAME,
            teacher.dense_mode,
            teacher.logit_scale,
        )
        return {
            "teacher": teacher,
            "text_classifier": build_text_classifier(cfg),
            "test_vocabulary": default_test_vocabulary(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "logit_scale": teacher.logit_scale,
            "test_time": TestTimeInference.from_config(cfg),
        }

    def build_teacher(self) -> CLIPTeacher:
        """Built with the model; here so that code preparing either segmenter treats both alike
        (train_net's build_model)."""
        return self.teacher

    def losses(self, images, batched_inputs):
        raise UserInputError(
            f"{DESCRIPTION} has nothing to train: evaluate it with train_net.py --eval-only."
        )

    def dense_class_logits(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """B x K x h x w: logit scale x cosine of the L2-normalised patch tokens (the teacher's
        grid) to the text embeddings; the teacher sees the images unnormalised, in its own
        precision."""
        patches = self.teacher(images, normalized=True).patch_embed
        return class_logits(F.normalize(patches.float(), dim=1), text, self.logit_scale)
