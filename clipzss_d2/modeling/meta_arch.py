"""The CLIP-ZSS meta-architecture: a closed-set segmenter classified by CLIP text embeddings.

This module only wires parts together; what it shares with CLIP alone (vocabulary,
preprocessing, test-time inference) is open_vocabulary.py. In training a frozen CLIP image
encoder (the teacher) feeds GLM and PLM; it is built on demand, kept off the module tree and
never checkpointed. At inference nothing but the student runs (backbone, embedding head, a
matrix product with cached text embeddings): no CLIP image encoder. With
MODEL.CLIPZSS.STUDENT_ONLY (what the predictor, demo and export set) the training-only modules
are neither built nor imported.
"""

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList
from torch import nn

from ..vocabulary import get_training_vocabulary
from .embedding_head import build_embedding_head
from .inference import TestTimeInference
from .open_vocabulary import OpenVocabularySegmenter, default_test_vocabulary
from .student import StudentForward, class_logits
from .text_classifier import TextClassifier, build_text_classifier

if TYPE_CHECKING:  # training-only: imported by training/training_modules.py for training
    from .training.criterion import CLIPZSSCriterion
    from .training.glm import GlobalLearningModule
    from .training.plm import PixelLearningModule
    from .training.teacher import CLIPTeacher, TeacherOutput

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class CLIPZSS(StudentForward, OpenVocabularySegmenter):
    """Student segmenter whose classifier is the CLIP text embeddings of the active vocabulary."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        embedding_head: nn.Module,
        text_classifier: TextClassifier,
        train_vocabulary: Sequence[str],
        test_vocabulary: Sequence[str] | None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        size_divisibility: int = 32,
        ignore_value: int = 255,
        glm: "GlobalLearningModule | None" = None,
        plm: "PixelLearningModule | None" = None,
        teacher_factory=None,
        criterion: "CLIPZSSCriterion | None" = None,
        test_time: TestTimeInference | None = None,
        pseudo_label_probe=None,
        oracle_teacher=None,
        teacher_cache=None,
        train_channels_last: bool = False,
    ):
        """
        Args:
            glm, plm: training-only modules (None = switched off); with both off, training is
                the supervised baseline on the seen classes.
            teacher_factory: callable building the frozen CLIP teacher; called by
                `build_teacher()` and only when GLM or PLM needs it.
            criterion: every loss term (CE + ZegCLIP's NEL on the seen + pseudo classes) and its
                ``weight_dict``, which ``losses`` applies.
            test_time: how inference computes logits (whole / sliding window, flip, scales);
                default one whole-image pass.
            pseudo_label_probe: diagnostics.PseudoLabelProbe counting PLM's pseudo labels
                against hidden ground truth (MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS), or None.
            oracle_teacher: training.oracle_teacher.OracleTeacher replacing the teacher's
                outputs with ideal ones from hidden labels (MODEL.CLIPZSS.DIAGNOSTICS.
                ORACLE_TEACHER, miniature world only), or None.
            teacher_cache: training.teacher_cache.TeacherCache (MODEL.CLIPZSS.TEACHER.CACHE): the
                teacher runs once per image and crops are resampled from it, or None.
            train_channels_last: training crops enter the student NHWC
                (MODEL.CLIPZSS.TRAINING.CHANNELS_LAST); inference has its own switch.
        """
        super().__init__()
        self.backbone = backbone
        self.embedding_head = embedding_head
        # Kept off the module tree: CLIP weights are never part of the student or its checkpoint.
        self.text_classifier = text_classifier
        self.train_vocabulary = list(train_vocabulary)
        self._vocabulary = list(test_vocabulary) if test_vocabulary else None

        log_scale = torch.tensor(math.log(logit_scale), dtype=torch.float32)
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale, persistent=False)
        self.max_logit_scale = max_logit_scale
        self.size_divisibility = max(size_divisibility, getattr(backbone, "size_divisibility", 0))
        self.ignore_value = ignore_value
        self.glm = glm
        self.plm = plm
        self.criterion = criterion
        self.pseudo_label_probe = pseudo_label_probe
        self.oracle_teacher = oracle_teacher
        self.teacher_cache = teacher_cache
        self.train_channels_last = train_channels_last
        self._teacher_factory = teacher_factory
        # Plain attribute, not a submodule: no state_dict entry, no DDP parameters, and
        # model.train() never flips it out of eval mode.
        self.__dict__["_teacher"] = None
        self.test_time = test_time or TestTimeInference()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        z = cfg.MODEL.CLIPZSS
        training = {}
        if not z.STUDENT_ONLY:
            from .training.training_modules import build_training_modules

            training = build_training_modules(cfg)
        if z.DIAGNOSTICS.IDEAL_TEXT:  # a miniature-world diagnostic, never a training option
            from .ideal_text import build_ideal_text_classifier

            text_classifier = build_ideal_text_classifier(cfg)
        else:
            text_classifier = build_text_classifier(cfg)
        return {
            "backbone": backbone,
            "embedding_head": build_embedding_head(cfg, backbone.output_shape()),
            "text_classifier": text_classifier,
            "train_vocabulary": (
                get_training_vocabulary(cfg.DATASETS.TRAIN) if cfg.DATASETS.TRAIN else []
            ),
            "test_vocabulary": default_test_vocabulary(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "logit_scale": z.LOGIT_SCALE,
            "learn_logit_scale": z.LEARN_LOGIT_SCALE,
            "max_logit_scale": z.MAX_LOGIT_SCALE,
            "size_divisibility": z.SIZE_DIVISIBILITY,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "test_time": TestTimeInference.from_config(cfg),
            "train_channels_last": z.TRAINING.CHANNELS_LAST,
            **training,
        }

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def dense_class_logits(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.student_logits(images, text)

    # -- training-only teacher -----------------------------------------------------------------
    @property
    def needs_teacher(self) -> bool:
        return self._teacher_factory is not None

    @property
    def teacher(self) -> "CLIPTeacher | None":
        return self._teacher

    def build_teacher(self) -> "CLIPTeacher | None":
        """Load the frozen CLIP image encoder for training (no-op for the baseline)."""
        if self.needs_teacher and self._teacher is None:
            self.__dict__["_teacher"] = self._teacher_factory().to(self.device)
        return self._teacher

    def run_teacher(
        self, images: ImageList, image_sizes: torch.Tensor | None = None, batched_inputs=None
    ) -> "TeacherOutput | None":
        """The teacher on the batch; with ``image_sizes`` it sees the images, not the padding.
        With the teacher cache, the crops' outputs come from it (``batched_inputs`` carry the
        mapper's whole-image views)."""
        teacher = self.build_teacher()
        if teacher is None:
            return None
        if next(teacher.parameters()).device != self.device:
            teacher.to(self.device)
        if self.teacher_cache is not None:
            if image_sizes is None:
                image_sizes = torch.tensor(images.image_sizes, dtype=torch.long)
            canvas = tuple(images.tensor.shape[-2:])
            return self.teacher_cache(teacher, batched_inputs, canvas, image_sizes)
        return teacher(images.tensor, normalized=True, image_sizes=image_sizes)

    @staticmethod
    def image_extents(images: ImageList, batched_inputs) -> torch.Tensor:
        """B x 2 (height, width) of the image inside each tensor of the batch.

        The training mapper pads crops and records the true extent as "image_size";
        ImageList's own ``image_sizes`` include that padding, so they are only the fallback.
        """
        sizes = []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            eh, ew = x.get("image_size", (h, w))
            if not (0 < eh <= h and 0 < ew <= w):
                raise ValueError(
                    f"image_size {(eh, ew)} of {x.get('file_name', 'an input')} does not fit its "
                    f"{h}x{w} image tensor"
                )
            sizes.append((int(eh), int(ew)))
        return torch.tensor(sizes, dtype=torch.long)

    @staticmethod
    def extent_mask(extents: torch.Tensor, height: int, width: int, device) -> torch.Tensor:
        """B x height x width bool, True inside each image (padding is at the bottom/right)."""
        extents = extents.to(device)
        rows = torch.arange(height, device=device)[None] < extents[:, :1]
        cols = torch.arange(width, device=device)[None] < extents[:, 1:]
        return rows[:, :, None] & cols[:, None, :]

    def training_targets(self, images: ImageList, batched_inputs):
        """The batch's seen-id targets padded like ``images`` (padding = ignore), each image's
        extent (B x 2) and the B x H x W mask of real pixels: what every training module and
        tools/check_teacher.py read, built one way."""
        targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
        targets = ImageList.from_tensors(
            targets, self.size_divisibility, pad_value=self.ignore_value
        ).tensor.long()
        extents = self.image_extents(images, batched_inputs)
        image_valid = self.extent_mask(extents, *targets.shape[-2:], self.device)
        return targets.masked_fill(~image_valid, self.ignore_value), extents, image_valid

    def losses(self, images: ImageList, batched_inputs) -> dict[str, torch.Tensor]:
        """Weighted loss terms; padding is not image: no term, pseudo label, K-Means token,
        pooling weight or centroid comes from it.

        As Mask2Former's ``MaskFormer.forward``: the modules' outputs (GLM's and PLM's raw
        terms, PLM's pseudo targets and prototypes) -> one classification over [seen text;
        prototypes] -> ``self.criterion(outputs, targets)`` -> one ``weight_dict`` loop."""
        if not self.train_vocabulary:
            raise ValueError("No training vocabulary: set DATASETS.TRAIN to a registered dataset.")
        if self.criterion is None:
            raise ValueError(
                "This CLIPZSS was built for inference only (MODEL.CLIPZSS.STUDENT_ONLY): it has "
                "no criterion; build it from a config with STUDENT_ONLY False to train."
            )
        targets, extents, image_valid = self.training_targets(images, batched_inputs)

        crops = images.tensor
        if self.train_channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        embeddings = self.embed(crops)
        text_seen = self.text_embeddings(self.train_vocabulary)
        teacher_out = self.run_teacher(images, extents, batched_inputs)
        if self.oracle_teacher is not None:  # a diagnostic: reads hidden labels
            teacher_out = self.oracle_teacher(self, teacher_out, batched_inputs, image_valid)
        outputs = {"aux_losses": {}}
        if self.glm is not None:
            outputs["aux_losses"]["loss_glm"] = self.glm(
                embeddings, teacher_out.cls_embed, image_valid
            )
        # [seen text; prototypes]: the seen block is classified before PLM runs, the pseudo
        # block after it. Autograd sums the gradients reaching the embeddings in an order set
        # by when each use was recorded: moving either product changes the low bits of training.
        scale = self.logit_scale
        logits = class_logits(embeddings, text_seen, scale)
        if self.plm is not None:
            out = self.plm(embeddings, targets, text_seen, teacher_out, scale, image_valid)
            if self.pseudo_label_probe is not None:  # reads hidden labels; changes nothing
                from ..diagnostics import observe_batch

                probe = self.pseudo_label_probe
                observe_batch(
                    probe, batched_inputs, targets, out.targets, len(text_seen), image_valid
                )
            if out.prototypes.shape[1] > 0:
                beta = self.plm.pseudo_logit_scale
                beta = beta if beta > 0 else scale
                logits = torch.cat([logits, class_logits(embeddings, out.prototypes, beta)], 1)
            targets = out.targets
            outputs["pseudo_valid"] = out.pseudo_valid
            outputs["aux_losses"].update(out.losses)
        outputs["pred_logits"] = logits
        losses = self.criterion(outputs, {"sem_seg": targets, "image_valid": image_valid})
        return {name: self.criterion.weight_dict[name] * value for name, value in losses.items()}
