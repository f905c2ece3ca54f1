"""Steps of open_clip's ``VisionTransformer`` that the teacher runs its own way.

The teacher (teacher.py) re-runs the tower step by step; these are the steps that differ from
open_clip's forward: which towers it can reproduce, a residual block with a key padding mask
(padding is no key) and MaskCLIP's value path for dense tokens.
"""

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn


def check_supported(visual: nn.Module) -> None:
    """Fail loudly on open_clip variants whose token layout or pooling we do not reproduce."""
    if not isinstance(visual, VisionTransformer):
        raise NotImplementedError(
            f"CLIPTeacher supports open_clip ViT image towers only, got {type(visual).__name__} "
            "(ModifiedResNet / timm towers have no CLS + patch token layout to reuse)."
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError(
            "CLIPTeacher does not support open_clip towers with attentional pooling (CoCa-style "
            "attn_pool): their image embedding is not a projected CLS token."
        )
    if getattr(visual, "pool_type", "tok") != "tok":
        raise NotImplementedError(
            f"CLIPTeacher needs pool_type='tok' (CLS token), got '{visual.pool_type}'."
        )
    if visual.proj is None:
        raise NotImplementedError("CLIPTeacher needs the visual projection (visual.proj).")


def masked_block(blk: nn.Module, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """One residual attention block in which padded tokens are no keys (open_clip's
    ResidualAttentionBlock step by step, with a key padding mask)."""
    if isinstance(blk, ResidualAttentionBlock) and not hasattr(blk, "ln_1_kv"):
        h = blk.ln_1(x)
        attn = blk.attn(h, h, h, need_weights=False, key_padding_mask=pad)[0]
        x = x + blk.ls_1(attn)
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    heads = blk.attn.num_heads
    mask = torch.zeros(pad.shape, dtype=x.dtype, device=x.device)
    mask = mask.masked_fill(pad, float("-inf"))[:, None, None, :]
    n = x.shape[1] if blk.attn.batch_first else x.shape[0]
    mask = mask.expand(-1, heads, n, -1).reshape(-1, n, pad.shape[1])
    return blk(x, attn_mask=mask)


def maskclip_tokens(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch tokens of TEACHER.DENSE_MODE "maskclip": the last block's value path.

    MaskCLIP (Zhou et al., ECCV 2022, "Extract Free Dense Labels from CLIP"): in the last
    block each token skips query-key attention and keeps only its own value path,
    ``v = x + out_proj(W_v ln_1(x))`` then ``v = v + mlp(ln_2(v))`` (layer scales kept when
    present), which is what MaskCLIP's ViT backbone returns as ``v`` before its head applies
    the final norm and projection. Real CLIP weights localise much better this way because
    the last layer's attention is nearly global.
    """
    attn = block.attn
    width = x.shape[-1]
    w_v = attn.in_proj_weight[2 * width :]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = F.linear(block.ln_1(x), w_v, b_v)
    v = attn.out_proj(v)
    v = x + block.ls_1(v)
    v = v + block.ls_2(block.mlp(block.ln_2(v)))
    return v
