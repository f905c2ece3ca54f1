"""The student's forward, written once: backbone, embedding head, scaled cosine to text embeddings.

Both the model (CLIPZSS: training, evaluation, predictor) and its exported form
(clipzss_d2.export.FixedVocabularySegmenter) inherit it, so an artefact cannot drift from the
network it was exported from. Plain tensor code: traceable, and exportable to ONNX.
"""

import torch
import torch.nn.functional as F


class StudentForward:
    """Mixin for an nn.Module with `backbone`, `embedding_head` and a `logit_scale` tensor."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised per-pixel embeddings (B x C x h x w) at the head's output stride."""
        return F.normalize(self.embedding_head(self.backbone(images)), dim=1)

    def classify(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """B x K x h x w logits: logit scale x cosine similarity to the K x C text embeddings."""
        return class_logits(embeddings, text, self.logit_scale)

    def student_logits(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Normalised images (B x 3 x H x W) -> B x K x h x w logits at the output stride."""
        return self.classify(self.embed(images), text)


def class_logits(embeddings: torch.Tensor, classifier: torch.Tensor, scale) -> torch.Tensor:
    """``scale`` x cosine similarity of L2-normalised B x C x h x w embeddings to a classifier:
    K x C rows shared by the batch (text embeddings) or B x K x C, one set per image (PLM's
    pseudo-class prototypes). Returns B x K x h x w."""
    equation = "bchw,kc->bkhw" if classifier.dim() == 2 else "bchw,bkc->bkhw"
    return scale * torch.einsum(equation, embeddings, classifier.to(embeddings.dtype))
