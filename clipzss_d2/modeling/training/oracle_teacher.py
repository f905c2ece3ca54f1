"""The oracle teacher: what a perfect CLIP would tell GLM and PLM, built from hidden labels.

A diagnostics switch of the miniature world (MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER), never a
training option: it reads the full labels of the training crops (``hidden_sem_seg``, unseen
classes included), which the method never has. It bounds what GLM + PLM can transfer through a
student and its text classifier when the teacher is not the limit, so a weak result can be put
on the teacher or on the implementation (docs/notes/2026-12-06-oracle-teacher.md).

Definition (the real teacher's geometry is kept: same token grid, same ``token_valid``):
- patch token (i, j) = the text embedding of the class that covers most of the patch's labelled
  pixels (void and padding excluded); a patch with no labelled pixel is not a valid token, so
  PLM neither clusters it nor gives its pixels a region;
- CLS = the text embeddings of the crop's classes, averaged with their pixel areas as weights
  (then L2-normalised), which is what CLIP's image embedding of the crop would ideally be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...diagnostics.miniature_world import check_miniature_world
from ...errors import UserInputError
from .teacher import TeacherOutput


def check_oracle_datasets(dataset_names, metadata_of) -> None:
    """The oracle reads hidden labels: refuse it on anything but the miniature world."""
    check_miniature_world("MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", dataset_names, metadata_of)


@torch.no_grad()
def oracle_teacher_output(
    real: TeacherOutput,
    hidden: torch.Tensor,
    image_valid: torch.Tensor,
    class_text: torch.Tensor,
    patch_pixels: tuple[int, int],
    ignore_value: int,
) -> TeacherOutput:
    """Ideal teacher outputs on ``real``'s token grid.

    real: the frozen teacher's output on the batch (its grid and token_valid are kept).
    hidden: B x H x W full class ids (ignore_value = void), padded like the batch.
    image_valid: B x H x W bool, False on padding.
    class_text: K x C text embeddings of every class of the dataset, in id order.
    patch_pixels: (rows, cols) of label pixels per token, at the teacher's input scale.
    """
    b, _, gh, gw = real.patch_embed.shape
    k, c = class_text.shape
    labels = hidden.long().clone()
    void = (labels == ignore_value) | (labels < 0) | (labels >= k) | ~image_valid
    labels[void] = k
    ph, pw = patch_pixels
    labels = labels[:, : gh * ph, : gw * pw]
    if labels.shape[-2:] != (gh * ph, gw * pw):  # a grid past the canvas: pad with void
        labels = F.pad(
            labels, (0, gw * pw - labels.shape[-1], 0, gh * ph - labels.shape[-2]), value=k
        )
    # pixels of each class under each token, one batched bincount
    rows = torch.arange(gh * ph, device=labels.device) // ph
    cols = torch.arange(gw * pw, device=labels.device) // pw
    token = (rows[:, None] * gw + cols[None, :]).expand_as(labels[0])
    index = (torch.arange(b, device=labels.device)[:, None, None] * (gh * gw) + token) * (k + 1)
    counts = torch.bincount((index + labels).flatten(), minlength=b * gh * gw * (k + 1))
    counts = counts.view(b, gh * gw, k + 1)[..., :k].float()
    covered, majority = counts.max(dim=-1)
    text = F.normalize(class_text.float(), dim=-1)
    patches = text[majority].view(b, gh, gw, c).permute(0, 3, 1, 2)
    token_valid = covered.view(b, gh, gw) > 0
    if real.token_valid is not None:
        token_valid = token_valid & real.token_valid.to(token_valid.device)
    area = counts.sum(dim=1)  # B x K labelled pixels per class in the crop
    cls = F.normalize(area @ text, dim=-1)
    dtype = real.patch_embed.dtype
    return TeacherOutput(
        cls_embed=cls.to(dtype), patch_embed=patches.to(dtype), token_valid=token_valid
    )


class OracleTeacher:
    """Replaces the frozen teacher's outputs in ``CLIPZSS.losses`` (a plain object: no
    parameters, no state)."""

    def __init__(self, vocabulary: list[str]):
        self.vocabulary = list(vocabulary)  # every class of the dataset, in id order

    def __call__(self, model, real: TeacherOutput, batched_inputs, image_valid) -> TeacherOutput:
        if "hidden_sem_seg" not in batched_inputs[0]:
            raise ValueError(
                "MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER is on but the batch has no "
                "hidden_sem_seg: build the training loader with ZeroShotSemSegDatasetMapper "
                "from the same config."
            )
        teacher = model.teacher
        h, w = image_valid.shape[-2:]
        if teacher.input_size not in (0, h) or teacher.input_size not in (0, w):
            raise UserInputError(
                f"The oracle teacher needs the teacher to see the {h}x{w} crops unresized: set "
                f"MODEL.CLIPZSS.TEACHER.INPUT_SIZE to 0 (it is {teacher.input_size})."
            )
        hidden = torch.full((len(batched_inputs), h, w), model.ignore_value, dtype=torch.long)
        hidden = hidden.to(image_valid.device)
        for i, x in enumerate(batched_inputs):
            full = x["hidden_sem_seg"].to(hidden.device)
            hidden[i, : full.shape[0], : full.shape[1]] = full[:h, :w]
        return oracle_teacher_output(
            real,
            hidden,
            image_valid,
            model.text_embeddings(self.vocabulary),
            teacher.patch_size,
            model.ignore_value,
        )
