import math
import os

import pytest
import torch
import torch.nn.functional as F

from clipzss_d2.modeling.training.glm import GlobalLearningModule


def hand_glm_loss(dense, cls, negatives_extra=(), tau=0.07, pool_tau=0.07):
    """L_glm with plain Python loops (no torch ops on the formula); pooling on cosines / pool_tau,
    or with pool_tau=0 on raw CLS . R / sqrt(C) (the method's literal formula)."""
    dense = dense.tolist()  # B x C x h x w
    cls = cls.tolist()
    B, C = len(dense), len(dense[0])
    L = len(dense[0][0]) * len(dense[0][0][0])

    def norm(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    keys = [norm(c) for c in cls] + [norm(list(v)) for v in negatives_extra]
    total = 0.0
    for b in range(B):
        pix = [
            [dense[b][c][i // len(dense[b][0][0])][i % len(dense[b][0][0])] for c in range(C)]
            for i in range(L)
        ]
        if pool_tau:
            logits = [dot(norm(cls[b]), norm(p)) / pool_tau for p in pix]
        else:
            logits = [dot(cls[b], p) * C**-0.5 for p in pix]
        m = max(logits)
        w = [math.exp(v - m) for v in logits]
        w = [v / sum(w) for v in w]
        pooled = norm([sum(w[i] * pix[i][c] for i in range(L)) for c in range(C)])
        sims = [dot(pooled, k) / tau for k in keys]
        denom = sum(math.exp(s) for s in sims)
        total += -math.log(math.exp(sims[b]) / denom)
    return total / B


def example(B=3, C=4, h=2, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = F.normalize(torch.randn(B, C, h, w, generator=g, dtype=torch.float64), dim=1)
    cls = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
    return dense.float(), cls.float()


def test_loss_matches_hand_computation():
    dense, cls = example()
    glm = GlobalLearningModule(embed_dim=4, temperature=0.07, bank_size=0)
    loss = glm(dense, cls)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(hand_glm_loss(dense, cls), rel=1e-5)
    glm2 = GlobalLearningModule(embed_dim=4, temperature=0.5, bank_size=0, pool_temperature=0.3)
    ref = hand_glm_loss(dense, cls, tau=0.5, pool_tau=0.3)
    assert glm2(dense, cls).item() == pytest.approx(ref, rel=1e-5)
    literal = GlobalLearningModule(embed_dim=4, temperature=0.5, bank_size=0, pool_temperature=0)
    ref = hand_glm_loss(dense, cls, tau=0.5, pool_tau=0)
    assert literal(dense, cls).item() == pytest.approx(ref, rel=1e-5)


def test_gradient_reaches_dense_only():
    dense, cls = example()
    dense.requires_grad_(True)
    cls.requires_grad_(True)
    glm = GlobalLearningModule(embed_dim=4, bank_size=8)
    glm(dense, cls).backward()
    assert dense.grad is not None and dense.grad.abs().sum() > 0
    assert cls.grad is None
    assert all(not b.requires_grad for b in glm.buffers())


def test_bank_fifo_and_negatives():
    glm = GlobalLearningModule(embed_dim=4, temperature=0.1, bank_size=4)
    d1, c1 = example(seed=1)
    d2, c2 = example(seed=2)
    d3, c3 = example(seed=3)
    # First batch: bank empty, so the loss is the plain in-batch InfoNCE.
    assert glm(d1, c1).item() == pytest.approx(hand_glm_loss(d1, c1, tau=0.1), rel=1e-5)
    assert int(glm.bank_count) == 3
    n1 = F.normalize(c1, dim=-1)
    torch.testing.assert_close(glm.bank_entries(), n1)
    # Second batch: negatives = its own batch + batch 1 (partially filled bank), not itself.
    loss2 = glm(d2, c2)
    assert loss2.item() == pytest.approx(hand_glm_loss(d2, c2, n1, tau=0.1), rel=1e-5)
    # FIFO with 4 slots after 3 + 3 entries: the oldest two of batch 1 were overwritten.
    n2 = F.normalize(c2, dim=-1)
    assert int(glm.bank_count) == 4
    expected = {tuple(v) for v in torch.cat([n1[2:], n2]).round(decimals=5).tolist()}
    assert {tuple(v) for v in glm.bank_entries().round(decimals=5).tolist()} == expected
    loss3 = glm(d3, c3)
    bank_before = torch.cat([n1[2:], n2])
    assert loss3.item() == pytest.approx(hand_glm_loss(d3, c3, bank_before, tau=0.1), rel=1e-5)
    # Eval mode does not enqueue.
    glm.eval()
    snapshot = glm.bank.clone()
    glm(d1, c1)
    torch.testing.assert_close(glm.bank, snapshot)


def test_bank_larger_batch_than_bank():
    glm = GlobalLearningModule(embed_dim=4, bank_size=2)
    d, c = example(B=5)
    glm(d, c)
    assert {tuple(v) for v in glm.bank_entries().round(decimals=5).tolist()} == {
        tuple(v) for v in F.normalize(c, dim=-1)[3:].round(decimals=5).tolist()
    }


def test_bank_not_in_state_dict_and_from_config():
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from clipzss_d2.config import add_clipzss_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_clipzss_config(cfg)
    cfg.MODEL.CLIPZSS.EMBED_DIM = 16
    cfg.MODEL.CLIPZSS.GLM.BANK_SIZE = 10
    glm = GlobalLearningModule(cfg)
    assert glm.bank.shape == (10, 16) and glm.temperature == pytest.approx(0.07)
    assert glm.state_dict() == {}


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        d_all, c_all = example(B=4, seed=7)
        local = slice(2 * rank, 2 * rank + 2)
        dense = d_all[local].clone().requires_grad_(True)
        glm = GlobalLearningModule(embed_dim=4, temperature=0.2, bank_size=16)
        loss = glm(dense, c_all[local])
        loss.backward()
        torch.save(
            {"loss": loss.item(), "bank": glm.bank_entries().clone(), "grad": dense.grad},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_global_batch_negatives_across_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    d_all, c_all = example(B=4, seed=7)
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        local = slice(2 * rank, 2 * rank + 2)
        # hand formula over this rank's images with all 4 CLS tokens as candidates
        others = [c_all[i] for i in range(4) if not (2 * rank <= i < 2 * rank + 2)]
        # key order is irrelevant to InfoNCE: local keys first, then the other process's
        extra = [F.normalize(o, dim=0) for o in others]
        ref = hand_glm_loss(d_all[local], c_all[local], extra, tau=0.2)
        assert res["loss"] == pytest.approx(ref, rel=1e-5)
        torch.testing.assert_close(res["bank"], F.normalize(c_all, dim=-1))
        assert res["grad"].abs().sum() > 0


def toy_scene(c=512, size=48, seed=0):
    """Dense unit features of CLIP's width: a 12 x 12 'object' whose features are near the query
    direction (cosine ~0.9), the rest noise (cosine ~0); the query has the norm of a raw CLIP
    ViT-B/16 image embedding (~10). Returns dense, query, object mask."""
    g = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(c, generator=g), dim=0)
    dense = F.normalize(torch.randn(1, c, size, size, generator=g), dim=1)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[5:17, 20:32] = True
    obj = F.normalize(query[:, None] + 0.02 * torch.randn(c, int(mask.sum()), generator=g), dim=0)
    dense[0][:, mask] = obj
    return dense, query[None] * 10.0, mask


def test_pooling_follows_the_region_that_matches_the_query():
    """Through the config route: with the default temperature the pooled vector is the object
    (94 % of the weight on 6 % of the positions); the literal formula is a plain mean."""
    from clipzss_d2.config import get_clipzss_cfg

    cfg = get_clipzss_cfg()
    glm = GlobalLearningModule(cfg)
    assert glm.pool_temperature == 0.07
    dense, query, mask = toy_scene()
    weights = glm.pooling_weights(dense, query).view(48, 48)
    assert weights[mask].sum() > 0.9
    obj_mean = F.normalize(dense[0][:, mask].mean(1), dim=0)
    pooled = F.normalize(glm.attention_pool(dense, query)[0], dim=0)
    assert float(pooled @ obj_mean) > 0.95
    assert glm.last_pool_entropy < 0.7  # a uniform spread over the object alone gives 0.64

    cfg.MODEL.CLIPZSS.GLM.POOL_TEMPERATURE = 0.0
    literal = GlobalLearningModule(cfg)
    w = literal.pooling_weights(dense, query).view(48, 48)
    assert w[mask].sum() < 0.1  # 144 of 2304 positions = 6 %: hardly more than a mean
    literal.attention_pool(dense, query)
    assert literal.last_pool_entropy > 0.99


def test_padding_gets_no_pooling_weight_and_changes_nothing():
    glm = GlobalLearningModule(embed_dim=512, bank_size=0)
    dense, query, _ = toy_scene()
    dense = dense.expand(2, -1, -1, -1).clone()
    cls = torch.cat([query, F.normalize(torch.randn(1, 512), dim=-1)])
    valid = torch.zeros(2, 96, 96, dtype=torch.bool)  # image_valid at 2x the dense resolution
    valid[:, :64, :80] = True
    w = glm.pooling_weights(dense, cls, valid[:, ::2, ::2])
    assert w.view(2, 48, 48)[:, 32:].abs().max() == 0 and w.view(2, 48, 48)[:, :, 40:].max() == 0
    loss = glm(dense, cls, valid)
    garbage = dense.clone()
    garbage[:, :, 32:] = F.normalize(torch.randn_like(garbage[:, :, 32:]), dim=1)
    assert glm(garbage, cls, valid).item() == pytest.approx(loss.item(), rel=1e-6)
    cropped = glm(dense[:, :, :32, :40].contiguous(), cls)
    assert cropped.item() == pytest.approx(loss.item(), rel=1e-6)
