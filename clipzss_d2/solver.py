"""Optimizer for CLIP-ZSS: AdamW (or SGD) with a backbone LR multiplier, no weight decay on
norms and embedding-like parameters, and optional clipping of the whole model's gradient norm.

Parameter grouping reuses detectron2's `get_default_optimizer_params`; this module adds the
pieces detectron2 lacks (full-model clipping, a table of the groups for the training log).
"""

import itertools
import logging
from collections import defaultdict

import torch
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from tabulate import tabulate

logger = logging.getLogger(__name__)

# Parameters that act as embeddings rather than weights: no weight decay on them.
EMBEDDING_PARAM_NAMES = (
    "log_logit_scale",
    "positional_embedding",
    "class_embedding",
    "pos_embed",
    "absolute_pos_embed",
    "relative_position_bias_table",
    "query_embed",
)


def _with_full_model_gradient_clipping(optimizer_class, max_norm: float, norm_type: float):
    """Optimizer subclass that clips the global gradient norm of all its parameters in step().

    GradScaler unscales gradients before calling step(), so this also works under AMP.
    """

    class FullModelGradientClippingOptimizer(optimizer_class):
        def step(self, closure=None):
            all_params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(all_params, max_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = (
        f"FullModelGradientClipping{optimizer_class.__name__}"
    )
    return FullModelGradientClippingOptimizer


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    solver = cfg.SOLVER
    multiplier = solver.BACKBONE_MULTIPLIER

    def lr_factor(name: str) -> float:
        return multiplier if name.startswith(("backbone.", "module.backbone.")) else 1.0

    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        lr_factor_func=lr_factor,
        overrides={n: {"weight_decay": solver.WEIGHT_DECAY_EMBED} for n in EMBEDDING_PARAM_NAMES},
    )
    name = solver.OPTIMIZER.upper()
    if name == "ADAMW":
        optimizer_class, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    elif name == "SGD":
        optimizer_class, kwargs = (
            torch.optim.SGD,
            {"momentum": solver.MOMENTUM, "nesterov": solver.NESTEROV},
        )
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {solver.OPTIMIZER!r}")

    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        optimizer_class = _with_full_model_gradient_clipping(
            optimizer_class, clip.CLIP_VALUE, clip.NORM_TYPE
        )
        optimizer = optimizer_class(params, lr=solver.BASE_LR, **kwargs)
    else:
        # detectron2 handles per-parameter "value" / "norm" clipping (and disabled clipping).
        optimizer = maybe_add_gradient_clipping(cfg, optimizer_class)(
            params, lr=solver.BASE_LR, **kwargs
        )
    logger.info(
        "Optimizer %s, parameter groups:\n%s",
        type(optimizer).__name__,
        param_group_table(model, optimizer),
    )
    return optimizer


def param_group_table(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """Which parameters get which lr / weight decay: the first thing to check in a training log."""
    group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    members = defaultdict(list)
    for pname, p in model.named_parameters():
        if id(p) in group_of:
            members[group_of[id(p)]].append((pname, p.numel()))
    rows = []
    for i, group in enumerate(optimizer.param_groups):
        names = [n for n, _ in members[i]]
        prefixes = sorted({n.split(".")[0] for n in names})
        rows.append(
            [
                i,
                ", ".join(prefixes),
                len(names),
                f"{sum(c for _, c in members[i]):,}",
                f"{group['lr']:.3g}",
                f"{group['weight_decay']:.3g}",
                names[0] if names else "",
            ]
        )
    headers = ["group", "modules", "tensors", "params", "lr", "weight decay", "e.g."]
    return tabulate(rows, headers=headers, tablefmt="pipe")
