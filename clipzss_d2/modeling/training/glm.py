"""GLM (Global Learning Module): distil CLIP's image-level knowledge into dense student features.

The CLS token of the teacher queries the student's per-pixel embeddings (attention pooling);
the pooled vector must identify its own image's CLS token among the CLS tokens of the global
batch and of a FIFO bank of earlier batches (InfoNCE).

Pooling temperature. The method's scores S_b . R_b,l / sqrt(C) use the raw CLS against
unit-norm student features: their spread over positions is about one nat, so over thousands
of positions the softmax is a plain mean and cannot localise. Here query and keys are both
L2-normalised and the scores are cosines divided by a configured temperature (GLM.
POOL_TEMPERATURE, default 0.07: CLIP's own initial logit temperature, the scale at which the
student's classifier already compares embeddings, so a region the classifier would give the
CLS concept with confidence dominates the pooled vector). A learnable temperature is not used:
InfoNCE alone could flatten it back to mean pooling. 0 restores the literal formula. The
normalised entropy of the pooling weights is logged as ``glm/pool_entropy`` (1 = mean pooling).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import nn

from ...utils.precision import autocast_disabled


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
        pool_temperature: float = 0.07,
    ):
        """
        Args:
            embed_dim: C, the joint embedding dimension (size of bank entries).
            temperature: InfoNCE temperature tau.
            bank_size: FIFO bank of past (normalised) CLS tokens; 0 disables it.
            pool_temperature: attention pooling on cosines / this; 0 = raw CLS . R / sqrt(C).
        """
        super().__init__()
        if temperature <= 0:
            raise ValueError("GLM temperature must be > 0")
        self.embed_dim = int(embed_dim)
        self.temperature = float(temperature)
        self.bank_size = int(bank_size)
        if pool_temperature < 0:
            raise ValueError("GLM pool temperature must be >= 0 (0 = the unnormalised formula)")
        self.pool_temperature = float(pool_temperature)
        self.last_pool_entropy: float | None = None
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
            "pool_temperature": g.POOL_TEMPERATURE,
        }

    def pooling_weights(
        self, dense: torch.Tensor, cls: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """W_b,l = softmax over valid positions l of the query-key scores -> B x (h*w).

        valid: B x h x w bool at the resolution of ``dense``; padding gets weight exactly 0.
        """
        b, c = dense.shape[:2]
        r = dense.reshape(b, c, -1)
        if self.pool_temperature > 0:
            q = F.normalize(cls, dim=-1)
            scores = torch.einsum("bc,bcl->bl", q, F.normalize(r, dim=1)) / self.pool_temperature
        else:
            scores = torch.einsum("bc,bcl->bl", cls, r) * c**-0.5
        if valid is not None:
            valid = valid.reshape(b, -1)
            valid = valid | ~valid.any(dim=1, keepdim=True)  # an image must pool something
            scores = scores.masked_fill(~valid, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def attention_pool(
        self, dense: torch.Tensor, cls: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """S_hat_b = sum_l W_b,l R_b,l -> B x C."""
        b, c = dense.shape[:2]
        weights = self.pooling_weights(dense, cls, valid)
        self._log_entropy(weights, valid)
        return torch.einsum("bl,bcl->bc", weights, dense.reshape(b, c, -1))

    @torch.no_grad()
    def _log_entropy(self, weights: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Mean over images of H(W_b) / log(number of valid positions): 1 = mean pooling."""
        n = weights.shape[1] if valid is None else valid.flatten(1).sum(1).clamp(min=2)
        n = torch.as_tensor(n, dtype=weights.dtype, device=weights.device)
        ent = -(weights * weights.clamp(min=1e-30).log()).sum(1) / n.log().clamp(min=1e-6)
        self.last_pool_entropy = float(ent.mean())
        if self.training:
            try:
                get_event_storage().put_scalar("glm/pool_entropy", self.last_pool_entropy)
            except AssertionError:  # no trainer running (tests, notebooks)
                pass

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

    def forward(
        self, dense: torch.Tensor, cls: torch.Tensor, image_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dense: B x C x h x w student embeddings, L2-normalised per pixel (gradient flows).
        cls: B x C teacher CLS embeddings, raw (treated as constants).
        image_valid: B x H x W bool, False on padding (any resolution; sampled at the centres
        of dense's positions): padding gets no pooling weight.

        Returns the scalar L_glm, a mean over this process's images; DDP's gradient averaging
        then yields the global-batch mean when all processes hold equally many images.
        In training mode the gathered global batch is pushed into the bank afterwards.
        """
        cls = cls.detach()
        valid = None
        if image_valid is not None:
            valid = F.interpolate(
                image_valid[:, None].float(), size=dense.shape[-2:], mode="nearest-exact"
            )[:, 0].bool()
        with autocast_disabled():
            dense32, cls32 = dense.float(), cls.float()
            pooled = self.attention_pool(dense32, cls32, valid)
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
