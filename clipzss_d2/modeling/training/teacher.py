"""Frozen CLIP image encoder that supervises the student during training (never at test time).

The student learns CLIP's joint space, so the teacher must give exactly CLIP's image embedding
for the CLS token, and patch tokens mapped the same way (``ln_post`` then ``proj``) so that both
live in the space of the text embeddings. It re-runs open_clip's ``VisionTransformer`` forward
step by step instead of calling it, because that forward cannot change the input size (we
interpolate positional embeddings) and does not return projected patch tokens; the steps that
differ from it (padding masked out of attention, MaskCLIP's dense tokens) are in vit_blocks.py.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from ...utils.precision import autocast_disabled
from .vit_blocks import check_supported, maskclip_tokens, masked_block

logger = logging.getLogger(__name__)

_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DENSE_MODES = ("plain", "maskclip")


class TeacherOutput(NamedTuple):
    """CLIP joint-space embeddings, not normalised (callers normalise where the method says)."""

    cls_embed: torch.Tensor  # B x C, equals open_clip's encode_image at the native size
    patch_embed: torch.Tensor  # B x C x h' x w'
    token_valid: torch.Tensor | None = None  # B x h' x w' bool: patch wholly inside the image


class CLIPTeacher(nn.Module):
    """Frozen open_clip ViT image tower giving CLS and patch tokens in CLIP's joint space.

    Keep it out of the student's module tree (no optimizer, no DDP, no checkpoint entries);
    move it with ``.to(device)``, which also applies the GPU precision (fp32 on CPU).
    """

    @configurable
    def __init__(
        self,
        *,
        visual: nn.Module,
        clip_mean: tuple[float, float, float],
        clip_std: tuple[float, float, float],
        input_format: str = "BGR",
        pixel_mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
        pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
        input_size: int = 0,
        dense_mode: str = "plain",
        precision: str = "fp16",
        logit_scale: float = 100.0,
    ):
        """
        Args:
            visual: an open_clip ``VisionTransformer`` (``clip_model.visual``).
            clip_mean, clip_std: CLIP's RGB normalisation for 0..1 images.
            input_format: channel order of the batches given to forward ("BGR" or "RGB").
            pixel_mean, pixel_std: the student's normalisation (0..255 scale, in input_format
                order); only used by ``forward(..., normalized=True)``.
            input_size: resize inputs to this square side first; 0 keeps the input size.
            dense_mode: "plain" or "maskclip" (see ``vit_blocks.maskclip_tokens``).
            precision: weights/activations dtype on GPU ("fp16", "bf16", "fp32").
            logit_scale: CLIP's own trained temperature (exp of open_clip's logit_scale), read
                while the model is loaded anyway; only CLIP alone (clip_alone.py) uses it.
        """
        super().__init__()
        check_supported(visual)
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got '{input_format}'")
        if dense_mode not in DENSE_MODES:
            raise ValueError(f"dense_mode must be one of {DENSE_MODES}, got '{dense_mode}'")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(_PRECISIONS)}, got '{precision}'")
        if dense_mode == "maskclip" and not isinstance(
            visual.transformer.resblocks[-1], ResidualAttentionBlock
        ):
            raise NotImplementedError(
                "TEACHER.DENSE_MODE 'maskclip' needs open_clip's default ResidualAttentionBlock "
                "(nn.MultiheadAttention) in the last layer; this tower uses custom blocks."
            )
        self.visual = visual
        self.input_format = input_format
        self.input_size = int(input_size)
        self.dense_mode = dense_mode
        self.gpu_dtype = _PRECISIONS[precision]
        self.logit_scale = float(logit_scale)
        self.register_buffer("clip_mean", torch.tensor(clip_mean).view(1, 3, 1, 1), False)
        self.register_buffer("clip_std", torch.tensor(clip_std).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)
        self.requires_grad_(False)
        # Interpolated positional embeddings per token grid; plain dict so that they are not
        # buffers (no state_dict, no DDP broadcast); cleared whenever device or dtype changes.
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        super().train(False)
        self._sync_dtype()

    @classmethod
    def from_config(cls, cfg):
        from ..clip_loading import create_clip_model

        z = cfg.MODEL.CLIPZSS
        model = create_clip_model(
            z.CLIP.MODEL_NAME,
            z.CLIP.PRETRAINED,
            activation=z.CLIP.ACTIVATION,
            cache_dir=z.CLIP.DOWNLOAD_DIR or None,
        )
        pp = open_clip.get_model_preprocess_cfg(model)
        logit_scale = float(model.logit_scale.exp())
        visual = model.visual
        del model  # the text tower is not needed; drop our reference to it
        return {
            "visual": visual,
            "clip_mean": tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            "clip_std": tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
            "input_format": cfg.INPUT.FORMAT,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "input_size": z.TEACHER.INPUT_SIZE,
            "dense_mode": z.TEACHER.DENSE_MODE,
            "precision": z.TEACHER.PRECISION,
            "logit_scale": logit_scale,
        }

    # ----------------------------------------------------------------------------------------
    # Frozen for good: train() cannot switch dropout / patch dropout back on, and every device
    # move re-applies the precision rule.
    def train(self, mode: bool = True):
        return super().train(False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._sync_dtype()
        return self

    def _sync_dtype(self) -> None:
        p = self.visual.conv1.weight
        want = self.gpu_dtype if p.device.type == "cuda" else torch.float32
        if p.dtype != want:
            self.visual.to(dtype=want)
        self._pos_cache.clear()

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_size)

    @property
    def embed_dim(self) -> int:
        return int(self.visual.proj.shape[1])

    # ----------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Raw detectron2 batch (0..255, input_format order) -> CLIP input (RGB, CLIP mean/std)."""
        x = images.float()
        if normalized:
            x = x * self.pixel_std + self.pixel_mean
        if self.input_format == "BGR":
            x = x.flip(1)
        x = (x / 255.0 - self.clip_mean) / self.clip_std
        if self.input_size > 0 and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            # antialias matters when shrinking large crops to CLIP's native resolution
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1 + grid_h*grid_w) x width positional embedding, bicubic-resized once per grid."""
        key = (grid_h, grid_w)
        cached = self._pos_cache.get(key)
        if cached is not None:
            return cached
        pos = self.visual.positional_embedding
        gh0, gw0 = self.visual.grid_size
        if key == (gh0, gw0):
            out = pos
        else:
            cls_pos, grid_pos = pos[:1], pos[1:]
            width = pos.shape[1]
            grid_pos = grid_pos.float().reshape(1, gh0, gw0, width).permute(0, 3, 1, 2)
            grid_pos = F.interpolate(grid_pos, size=key, mode="bicubic", align_corners=False)
            grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(grid_h * grid_w, width)
            out = torch.cat([cls_pos, grid_pos.to(pos.dtype)], dim=0)
        self._pos_cache[key] = out
        return out

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        normalized: bool = False,
        image_sizes: torch.Tensor | None = None,
    ) -> TeacherOutput:
        """images: B x 3 x H x W raw batch (0..255, INPUT.FORMAT order) as detectron2 gives it.

        Pass ``normalized=True`` for a batch already normalised with the student's
        PIXEL_MEAN/STD (e.g. the padded ImageList tensor).

        image_sizes: B x 2 (height, width) of the image inside each padded tensor (padding at
        the bottom/right, as detectron2 pads). The teacher then sees only the image: patches not
        wholly inside it are masked out of every attention layer as keys, and each image gets
        positional embeddings interpolated to its own patch grid, so the CLS and the valid patch
        tokens equal those of the unpadded image run alone (exactly when its sides are
        multiples of the patch size and TEACHER.INPUT_SIZE is 0). ``token_valid`` marks them.
        """
        # the teacher's precision is its own (TEACHER.PRECISION), whatever autocast is active
        with autocast_disabled():
            return self._forward(images, normalized, image_sizes)

    def token_grids(self, image_sizes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """B x 2 whole-patch grid (rows, cols) of each image, after the INPUT_SIZE resize."""
        sizes = image_sizes.to(torch.float64)
        if self.input_size > 0:
            sizes = sizes * torch.tensor([self.input_size / height, self.input_size / width])
        ph, pw = self.patch_size
        return torch.floor(sizes / torch.tensor([ph, pw], dtype=torch.float64) + 1e-6).long()

    def _image_positional_embeddings(self, grids: torch.Tensor, gh: int, gw: int):
        """B x (1 + gh*gw) x width: each image's grid embedding top-left on the canvas."""
        width = self.visual.positional_embedding.shape[1]
        pos = self.visual.positional_embedding.new_zeros(len(grids), 1 + gh * gw, width)
        canvas = pos[:, 1:].view(len(grids), gh, gw, width)
        # one interpolation per distinct grid (a few per batch), cached across iterations
        for grid in torch.unique(grids, dim=0).tolist():
            rows, cols = grid
            if rows < 1 or cols < 1:
                continue
            same = (grids == torch.tensor(grid)).all(dim=1).to(pos.device)
            emb = self.positional_embedding(rows, cols)
            pos[same, 0] = emb[0]
            canvas[same, :rows, :cols] = emb[1:].view(rows, cols, width)
        return pos

    def _forward(self, images, normalized, image_sizes) -> TeacherOutput:
        x = self.preprocess(images, normalized).to(self.dtype)
        return self.encode(x, image_sizes, tuple(images.shape[-2:]))

    def encode(
        self,
        x: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> TeacherOutput:
        """The tower on CLIP-normalised RGB input (``preprocess``'s output): CLS and patch
        tokens in the joint space. ``input_size`` is the (height, width) ``image_sizes`` refer
        to, before any TEACHER.INPUT_SIZE resize (default: x's own size)."""
        vis = self.visual
        height, width_px = input_size or tuple(x.shape[-2:])
        x = vis.conv1(x)  # B x width x gh x gw (trailing pixels beyond a whole patch dropped)
        b, width, gh, gw = x.shape
        token_valid, pad = None, None
        if image_sizes is not None:
            grids = self.token_grids(image_sizes.cpu(), height, width_px).clamp(
                max=torch.tensor([gh, gw])
            )
            if bool((grids < torch.tensor([gh, gw])).any()):
                rows = torch.arange(gh)[None, :, None] < grids[:, 0, None, None]
                cols = torch.arange(gw)[None, None, :] < grids[:, 1, None, None]
                token_valid = (rows & cols).to(x.device)
                pad = torch.cat(
                    [token_valid.new_zeros(b, 1), ~token_valid.flatten(1)], dim=1
                )  # CLS is never padding
        x = x.flatten(2).transpose(1, 2)
        cls_tok = vis.class_embedding.to(x.dtype).view(1, 1, width).expand(b, 1, width)
        x = torch.cat([cls_tok, x], dim=1)
        if pad is None:
            x = x + self.positional_embedding(gh, gw).to(x.dtype)
        else:
            x = x + self._image_positional_embeddings(grids, gh, gw).to(x.dtype)
        x = vis.ln_pre(x)  # patch dropout skipped: identity in eval mode anyway

        tr = vis.transformer
        if not tr.batch_first:
            x = x.transpose(0, 1)
        blocks = tr.resblocks
        for blk in blocks[:-1]:
            x = blk(x) if pad is None else masked_block(blk, x, pad)
        last = blocks[-1]
        out = last(x) if pad is None else masked_block(last, x, pad)
        # maskclip's value path is per token: padding cannot reach a valid token through it
        dense = maskclip_tokens(last, x) if self.dense_mode == "maskclip" else out
        if not tr.batch_first:
            out, dense = out.transpose(0, 1), dense.transpose(0, 1)

        # ln_post is per token, so applying it to CLS alone equals open_clip's _pool for
        # pool_type 'tok' with or without final_ln_after_pool.
        cls_embed = vis.ln_post(out[:, 0]) @ vis.proj
        patch = vis.ln_post(dense[:, 1:]) @ vis.proj
        patch = patch.transpose(1, 2).reshape(b, -1, gh, gw)
        if token_valid is None:
            token_valid = torch.ones(b, gh, gw, dtype=torch.bool, device=patch.device)
        return TeacherOutput(cls_embed=cls_embed, patch_embed=patch, token_valid=token_valid)


def teacher_grid_size(teacher: CLIPTeacher, height: int, width: int) -> tuple[int, int]:
    """Token grid the teacher produces for an input of the given size."""
    if teacher.input_size > 0:
        height = width = teacher.input_size
    ph, pw = teacher.patch_size
    return math.floor(height / ph), math.floor(width / pw)
