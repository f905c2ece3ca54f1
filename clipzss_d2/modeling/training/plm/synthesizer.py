"""Pseudo classifier weights: region centroids of the student, refined by CLIP's image context.

Pseudo regions have no class name, hence no text embedding. The synthesizer turns a region's
centroid into a "text-like" prototype by cross-attending to the teacher's CLS token (and
optionally its patch tokens); it learns what text-like means from the seen classes (L_bce).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ....utils.precision import at_least_float32
from ...segments import segment_means


def region_centroids(
    dense: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean of ``dense`` (B x C x h x w) per class id of ``labels`` (B x h x w).

    Ids outside [0, num_classes) (the ignore value included) are ignored. Returns centroids
    B x K x C in dense's dtype (zero where absent; gradients flow to ``dense``) and present
    B x K bool.
    """
    b, c, h, w = dense.shape
    if labels.shape != (b, h, w):
        raise ValueError(f"labels {tuple(labels.shape)} must match dense {(b, h, w)}")
    x = dense.reshape(b, c, h * w).transpose(1, 2)
    means, counts = segment_means(x, labels.reshape(b, h * w).long(), int(num_classes))
    return means.to(dense.dtype), counts > 0


class PseudoWeightSynthesizer(nn.Module):
    """Transformer decoder: queries = region centroids, keys/values = teacher tokens."""

    def __init__(
        self,
        embed_dim: int,
        num_layers: int = 2,
        num_heads: int = 8,
        use_patch_tokens: bool = False,
        ffn_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        layer = nn.TransformerDecoderLayer(
            d_model=embed_dim,
            nhead=num_heads,
            dim_feedforward=int(embed_dim * ffn_ratio),
            dropout=dropout,
            batch_first=True,
            norm_first=True,  # pre-norm keeps the residual path = the input centroid
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        # identity start: prototypes begin close to the (normalised) centroids themselves
        nn.init.eye_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.use_patch_tokens = bool(use_patch_tokens)
        self.embed_dim = int(embed_dim)

    def forward(
        self,
        queries: torch.Tensor,
        query_valid: torch.Tensor,
        cls_embed: torch.Tensor,
        patch_embed: torch.Tensor | None = None,
        token_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries: B x Q x C centroids; query_valid: B x Q bool (False = padding);
        cls_embed: B x C teacher CLS; patch_embed: B x C x h x w teacher tokens (used when
        ``use_patch_tokens``); token_valid: B x h x w bool, False for tokens of image padding,
        which are then no keys. Returns B x Q x C L2-normalised prototypes, at least float32 (padding
        rows are computed but meaningless); the layers run in the ambient autocast."""
        b, q, c = queries.shape
        if q == 0:
            return queries.new_zeros(b, 0, c)
        # normalised in float32: absent regions are zero rows, and fp16's eps underflows to a
        # 0/0 = NaN that masked attention would spread to every prototype (0 x NaN = NaN)
        x = F.normalize(at_least_float32(queries), dim=-1)
        memory = [F.normalize(cls_embed.detach().to(x.dtype), dim=-1).unsqueeze(1)]
        memory_pad = None
        if self.use_patch_tokens:
            if patch_embed is None:
                raise ValueError("use_patch_tokens=True needs the teacher's patch tokens")
            tokens = patch_embed.detach().to(x.dtype).flatten(2).transpose(1, 2)
            memory.append(F.normalize(tokens, dim=-1))
            if token_valid is not None and not bool(token_valid.all()):
                cls_pad = token_valid.new_zeros(b, 1)  # the CLS is always a key
                memory_pad = torch.cat([cls_pad, ~token_valid.reshape(b, -1)], dim=1)
        memory = torch.cat(memory, dim=1)
        pad = ~query_valid.bool()
        # an image without any valid query would make self-attention softmax over nothing (NaN);
        # unmask its first slot, whose output is discarded anyway
        all_pad = pad.all(dim=1)
        pad[:, 0] &= ~all_pad
        out = self.decoder(x, memory, tgt_key_padding_mask=pad, memory_key_padding_mask=memory_pad)
        return F.normalize(at_least_float32(self.out_proj(out)), dim=-1)
