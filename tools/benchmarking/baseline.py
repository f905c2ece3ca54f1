"""The lower bound tools/benchmark.py compares students with: CLIP in the loop (open_clip's ViT
image encoder run densely on every image, random weights, no download)."""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from clipzss_d2.modeling.inference import autocast

from .measure import round_robin

BASELINE_NAME = "CLIP-in-the-loop ViT-B/16"


class CLIPInTheLoop(nn.Module):
    """open_clip ViT image encoder -> projected patch tokens -> cosine with text -> upsample ->
    argmax, in its fastest honest form: inference mode, PyTorch's fused MHA fast path or the
    plain SDPA path, whichever is faster here (`pick_fastpath`), the precision's autocast for the encoder and the matching, and one fp32 upsample of the
    logits in NHWC, the layout the token-text product gives for free, so that the argmax over
    classes reads contiguous memory (NCHW logits make the argmax 4x slower on CPU)."""

    def __init__(self, clip_model: str, size: int, text: torch.Tensor, logit_scale: float):
        super().__init__()
        clip = open_clip.create_model(clip_model)  # random weights, no download
        pp = open_clip.get_model_preprocess_cfg(clip)
        self.visual = clip.visual.eval()
        del clip
        patch = self.visual.patch_size[0]
        grid = size // patch
        pos = self.visual.positional_embedding.detach()
        gh0, gw0 = self.visual.grid_size
        grid_pos = pos[1:].reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(grid, grid), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(grid * grid, -1)
        self.register_buffer("pos", torch.cat([pos[:1], grid_pos]))
        self.register_buffer("text", F.normalize(text.float(), dim=-1))
        self.logit_scale = logit_scale
        mean = pp.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pp.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def dense_logits(self, images: torch.Tensor) -> torch.Tensor:
        """B x gh x gw x K logits (NHWC) at the patch grid."""
        vis = self.visual
        x = vis.conv1((images.float() - self.mean) / self.std)
        b, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = vis.class_embedding.view(1, 1, width).expand(b, 1, width).to(x.dtype)
        x = vis.ln_pre(torch.cat([cls, x], dim=1) + self.pos.to(x.dtype))
        tr = vis.transformer
        x = tr(x) if tr.batch_first else tr(x.transpose(0, 1)).transpose(0, 1)
        patches = F.normalize(vis.ln_post(x[:, 1:]) @ vis.proj, dim=-1)
        logits = self.logit_scale * patches @ self.text.to(patches.dtype).t()
        return logits.reshape(b, gh, gw, -1)

    def forward(
        self, images: torch.Tensor, precision: str = "fp32", mha_fastpath: bool = True
    ) -> torch.Tensor:
        previous = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)
        try:
            with autocast(images.device, precision):
                logits = self.dense_logits(images)
        finally:
            torch.backends.mha.set_fastpath_enabled(previous)
        logits = logits.float().permute(0, 3, 1, 2)  # a channels-last view, no copy
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)


def pick_fastpath(baseline, images, precision: str, device: str, tries: int = 2) -> bool:
    """nn.MultiheadAttention's fused inference fast path is not always the faster one (on this
    project's CPU the SDPA path was ~10% faster in fp32); keep whichever is faster."""
    best = {}
    for fastpath in (True, False):
        with torch.inference_mode():
            best[fastpath] = min(
                round_robin(
                    {"b": lambda f=fastpath: baseline(images, precision, f)}, device, 0, tries
                )["b"].times
            )
    return min(best, key=best.get)
