import pytest
import torch
from detectron2.modeling import build_model

from clipzss_d2.solver import build_optimizer, param_group_table
from tests.helpers import tiny_cfg


def _groups_by_param(model, optimizer):
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return {n: group_of[id(p)] for n, p in model.named_parameters()}


def test_param_groups_lr_and_weight_decay():
    cfg = tiny_cfg(
        extra_opts=[
            "SOLVER.BASE_LR",
            1e-3,
            "SOLVER.BACKBONE_MULTIPLIER",
            0.1,
            "SOLVER.WEIGHT_DECAY",
            0.05,
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            False,
        ]
    )
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    groups = _groups_by_param(model, opt)
    assert groups["backbone.stem.conv1.weight"]["lr"] == pytest.approx(1e-4)
    assert groups["backbone.stem.conv1.weight"]["weight_decay"] == 0.05
    assert groups["embedding_head.projection.weight"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone.stem.conv1.norm.weight"]["weight_decay"] == 0.0  # norm
    assert groups["log_logit_scale"]["weight_decay"] == 0.0  # embedding-like
    # Every trainable parameter is optimised exactly once.
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters() if p.requires_grad)
    table = param_group_table(model, opt)
    assert "backbone" in table and "embedding_head" in table


def test_full_model_gradient_clipping_bounds_global_norm():
    cfg = tiny_cfg(
        extra_opts=[
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            True,
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
            "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
            0.5,
            "SOLVER.BASE_LR",
            0.0,
        ]
    )
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    opt.step()
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total.item() == pytest.approx(0.5, rel=1e-4)


def test_unknown_optimizer_is_refused():
    cfg = tiny_cfg(extra_opts=["SOLVER.OPTIMIZER", "LION"])
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, build_model(cfg))
