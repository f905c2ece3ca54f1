"""Ideal class embeddings: a diagnostic of the miniature world (MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT).

The student's classifier is CLIP's text embedding of each class name. The miniature world's
teacher puts every unseen thing next to a seen look-alike (crescent-ring 0.97 cosine), so a
student that learns the seen classifier well has little room to tell them apart, whatever GLM
and PLM teach. This switch replaces every class's embedding with one of a fixed orthonormal set
(no two classes alike), for the classifier and for the oracle teacher, so the ladder can tell a
limit of the text geometry from one of the method's path (docs/notes/2026-12-07-ideal-text.md).
It is never a training option: the embeddings carry no language, so nothing transfers without
the oracle teacher, and it is refused outside the miniature world.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.data import MetadataCatalog

from ..diagnostics.miniature_world import check_miniature_world
from ..errors import UserInputError
from ..vocabulary import prompt_names
from .text_classifier import TextClassifier

SWITCH = "MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT"
BASIS_SEED = 0  # the same classifier in every run and seed


def orthonormal_embeddings(num_classes: int, dim: int, seed: int = BASIS_SEED) -> torch.Tensor:
    """num_classes x dim rows, orthonormal: a seeded random rotation of the first axes (no
    class is aligned with a feature axis the student's last layer could favour)."""
    if num_classes > dim:
        raise UserInputError(
            f"{SWITCH}: {num_classes} classes need at least {num_classes} embedding dimensions, "
            f"MODEL.CLIPZSS.EMBED_DIM is {dim}."
        )
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, num_classes, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # the unique QR: a fixed basis on every platform
    return q.T.contiguous().float()


class IdealTextClassifier(TextClassifier):
    """A TextClassifier whose embeddings are ``orthonormal_embeddings`` of the world's classes
    (by name, in id order); no CLIP text tower, no disk cache."""

    def __init__(self, class_names: Sequence[str], embed_dim: int):
        super().__init__(model_name="ideal-text", pretrained="", cache_dir="", embed_dim=embed_dim)
        self.class_names = list(class_names)
        self._basis = orthonormal_embeddings(len(self.class_names), embed_dim)

    def _encode(self, entries: Sequence[str]) -> torch.Tensor:
        unknown = [e for e in entries if e not in self.class_names]
        if unknown:
            raise UserInputError(
                f"{SWITCH} knows only the miniature world's classes "
                f"({', '.join(self.class_names)}), not {', '.join(unknown)}: use those names "
                f"or set it to False."
            )
        return self._basis[[self.class_names.index(e) for e in entries]]


def build_ideal_text_classifier(cfg) -> IdealTextClassifier:
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    check_miniature_world(SWITCH, names, MetadataCatalog.get)
    return IdealTextClassifier(
        prompt_names(MetadataCatalog.get(names[0])), cfg.MODEL.CLIPZSS.EMBED_DIM
    )
