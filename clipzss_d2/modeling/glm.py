"""GLM (Global Learning Module): distil CLIP's image-level knowledge into dense student features.

The CLS token of the teacher queries the student's per-pixel embeddings (attention pooling);
the pooled vector must identify its own image's CLS token among the CLS tokens of the global
batch and of a FIFO bank of earlier batches (InfoNCE), as in method.md.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from torch import nn


def gather_across_processes(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` (n_i x C, sizes may differ) from all processes; no gradient.

    Returns the gathered tensor and the offset of this process's rows in it.
    """
    world = comm.get_world_size()
    if world == 1:
        return x.detach(), 0
    x = x.detach().contiguous()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    max_n = max(sizes)
    padded = x.new_zeros((max_n,) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    rank = comm.get_rank()
    return torch.cat([c[:s] for c, s in zip(chunks, sizes)], dim=0), sum(sizes[:rank])


class GlobalLearningModule(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        embed_dim: int,
        temperature: float = 0.07,
        bank_size: int = 1024,
        pool_scale: float = 0.0,
    ):
        """
        Args:
            embed_dim: C, the joint embedding dimension (size of bank entries).
            temperature: InfoNCE temperature tau.
            bank_size: FIFO bank of past (normalised) CLS tokens; 0 disables it.
            pool_scale: attention-pooling logit scale; 0 means 1/sqrt(C) (method.md).
        """
        super().__init__()
        if temperature <= 0:
            raise ValueError("GLM temperature must be > 0")
        self.embed_dim = int(embed_dim)
        self.temperature = float(temperature)
        self.bank_size = int(bank_size)
        self.pool_scale = float(pool_scale)
        # Bank state is transient training state: not saved in checkpoints (a resumed run just
        # refills it within a few iterations) and sized at construction so .to() moves it.
        self.register_buffer("bank", torch.zeros(self.bank_size, self.embed_dim), False)
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long), False)
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long), False)

    @classmethod
    def from_config(cls, cfg):
        g = cfg.MODEL.CLIPZSS.GLM
        return {
            "embed_dim": cfg.MODEL.CLIPZSS.EMBED_DIM,
            "temperature": g.TEMPERATURE,
            "bank_size": g.BANK_SIZE,
            "pool_scale": g.POOL_SCALE,
        }

    def attention_pool(self, dense: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """S_hat_b = sum_l softmax_l(scale * S_b . R_b,l) R_b,l  -> B x C."""
        b, c = dense.shape[:2]
        r = dense.reshape(b, c, -1)
        scale = self.pool_scale if self.pool_scale > 0 else c**-0.5
        weights = torch.softmax(torch.einsum("bc,bcl->bl", cls, r) * scale, dim=-1)
        return torch.einsum("bl,bcl->bc", weights, r)

    def bank_entries(self) -> torch.Tensor:
        """Filled part of the bank (all of it once full; order is irrelevant to the loss)."""
        return self.bank[: int(self.bank_count)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        if self.bank_size == 0:
            return
        keys = keys[-self.bank_size :].to(self.bank.dtype)
        n = keys.shape[0]
        idx = (self.bank_ptr + torch.arange(n, device=keys.device)) % self.bank_size
        self.bank[idx] = keys
        self.bank_ptr.copy_((self.bank_ptr + n) % self.bank_size)
        self.bank_count.clamp_(min=0).add_(n).clamp_(max=self.bank_size)

    def forward(self, dense: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """dense: B x C x h x w student embeddings, L2-normalised per pixel (gradient flows).
        cls: B x C teacher CLS embeddings, raw (treated as constants).

        Returns the scalar L_glm, a mean over this process's images; DDP's gradient averaging
        then yields the global-batch mean when all processes hold equally many images.
        In training mode the gathered global batch is pushed into the bank afterwards.
        """
        cls = cls.detach()
        with torch.autocast(device_type=dense.device.type, enabled=False):
            dense32, cls32 = dense.float(), cls.float()
            pooled = self.attention_pool(dense32, cls32)
            query = F.normalize(pooled, dim=-1)
            keys_local = F.normalize(cls32, dim=-1)
            keys_global, offset = gather_across_processes(keys_local)
            logits = query @ keys_global.t() / self.temperature
            if self.bank_size > 0:
                # whole bank with unfilled slots masked: no host sync on bank_count
                # a copy: enqueue() below overwrites the bank before backward runs
                bank = self.bank.detach().clone().float()
                bank_logits = query @ bank.t() / self.temperature
                filled = torch.arange(self.bank_size, device=query.device) < self.bank_count
                bank_logits = bank_logits.masked_fill(~filled, float("-inf"))
                logits = torch.cat([logits, bank_logits], dim=1)
            target = torch.arange(query.shape[0], device=query.device) + offset
            loss = F.cross_entropy(logits, target)
        if self.training:
            self.enqueue(keys_global)
        return loss
