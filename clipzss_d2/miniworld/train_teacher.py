"""Train the miniature world's CLIP: an open_clip model learned contrastively from captions here.

No real CLIP weights can be downloaded on offline machines, so the miniature benchmark brings its
own teacher. It is a plain open_clip `CLIP` built from `clip_configs/ClipZSS-MiniWorld.json` with
open_clip's tokenizer and `ClipLoss`, trained on freshly rendered scenes whose captions name every
class, seen and unseen (as the real CLIP saw sheep and sofas on the web). It is built and trained
with QuickGELU, as OpenAI's CLIP was, and saved the way OpenAI's weights reach users who load them
from a file: a plain state_dict beside an architecture config that does not name the activation,
so the same config route applies (MODEL.CLIPZSS.CLIP.PRETRAINED <file>,
MODEL.CLIPZSS.CLIP.ACTIVATION quick_gelu) and the same mistake (gelu) silently costs accuracy.
Config: teacher_config.py; data: teacher_data.py; probes: teacher_eval.py.

    python -m clipzss_d2.miniworld train-teacher [--output PATH] [--steps N] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time

import numpy as np
import open_clip
import torch

from ..errors import UserInputError
from ..modeling.clip_loading import create_clip_model
from ..utils.io import atomic_write_path, atomic_write_text
from ..utils.progress import progress
from .teacher_config import DEFAULT_TEACHER_PATH, MODEL_NAME, TeacherConfig, model_image_size
from .teacher_data import Batches, batch_loader
from .teacher_eval import evaluate_teacher

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TEACHER_PATH", "TeacherConfig", "get_miniworld_teacher", "train_teacher"]


# ---------------------------------------------------------------------------------------------
# Training


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's own rule: no decay on gains, biases, embeddings of one dim and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        exclude = exclude or name.endswith(("positional_embedding", "class_embedding"))
        (no_decay if exclude else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_at(step: int, cfg: TeacherConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def train_teacher(
    cfg: TeacherConfig, progress: bool = True, workers: int | None = None
) -> tuple[open_clip.CLIP, dict]:
    """Train from scratch; same config and torch build -> same weights (cfg.threads is fixed)."""
    cfg = cfg.resolved()
    size = model_image_size(cfg.model_name)
    if (cfg.world.min_short_side, cfg.world.max_short_side, cfg.world.max_aspect) != (
        size,
        size,
        1,
    ):
        raise ValueError(
            f"The teacher's images must be {size} x {size} ({cfg.model_name}'s input size); use "
            f"WorldParams.square({size})."
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, progress, workers)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TeacherConfig, progress: bool, workers: int | None):
    torch.manual_seed(cfg.seed)
    with _quiet_open_clip():
        model = open_clip.create_model(
            cfg.model_name,
            pretrained=None,
            quick_gelu=cfg.activation == "quick_gelu",
            force_patch_dropout=cfg.patch_dropout or None,
        )
    model.train()
    batches = Batches(model, cfg)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    max_logit_scale = math.log(100.0)
    history = []
    data_time = 0.0
    start, cpu_start = time.time(), time.process_time()
    if workers is None:  # render in another process if torch leaves a core free
        workers = 1 if (os.cpu_count() or 1) > cfg.threads else 0
    # a loader worker's seed is drawn from torch's global generator, which also draws the patch
    # dropout masks: fork it so the weights do not depend on the number of workers
    with torch.random.fork_rng(devices=[]):
        loader = iter(batch_loader(batches, cfg.steps, workers))
    bar = _progress(range(cfg.steps), progress, desc="miniworld CLIP")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        t0 = time.time()
        images, texts = next(loader)
        data_time += time.time() - t0
        image_features, text_features, logit_scale = model(images, texts)
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # as open_clip's trainer: keep the temperature above 1/100
            model.logit_scale.clamp_(0, max_logit_scale)
        history.append(loss.item())
        if hasattr(bar, "set_postfix") and (step % 10 == 0 or step == cfg.steps - 1):
            bar.set_postfix(loss=f"{np.mean(history[-10:]):.3f}", scale=f"{logit_scale.item():.1f}")
    model.eval()
    info = {
        "train_seconds": round(time.time() - start, 1),
        # CPU time of this process, all threads (spin-waiting OpenMP threads included)
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "data_seconds": round(data_time, 1),
        "final_loss": round(float(np.mean(history[-20:])), 4),
        "first_loss": round(history[0], 4),
        "logit_scale": round(model.logit_scale.detach().exp().item(), 2),
        "torch_threads": torch.get_num_threads(),
        "loader_workers": workers,
    }
    return model, info


# ---------------------------------------------------------------------------------------------
# Cache


def _meta_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def cached_teacher_info(path: str, cfg: TeacherConfig | None = None) -> dict | None:
    """The sidecar record of a cached checkpoint if it matches `cfg`, else None."""
    cfg = cfg or TeacherConfig()
    meta = _meta_path(path)
    if not (os.path.isfile(path) and os.path.isfile(meta)):
        return None
    try:
        with open(meta) as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return info if info.get("fingerprint") == cfg.fingerprint() else None


def get_miniworld_teacher(
    path: str = DEFAULT_TEACHER_PATH,
    cfg: TeacherConfig | None = None,
    force: bool = False,
    evaluate: bool = True,
    progress: bool = True,
    workers: int | None = None,
    replace_flag: str = "--force",
) -> str:
    """Path of the miniworld CLIP checkpoint, training it first unless a matching one is cached.

    The checkpoint is a plain open_clip state_dict (torch.save); its sidecar `.json` holds the
    config fingerprint that decides reuse, and the training/evaluation figures. A file at `path`
    trained with another config (or not by this function) is replaced only with `force`: it
    may be the teacher another command or table relies on. `replace_flag` is the caller's name
    for `force`, for the error message.
    """
    cfg = (cfg or TeacherConfig()).resolved()
    if not force and cached_teacher_info(path, cfg) is not None:
        logger.info("Reusing miniworld CLIP teacher %s", path)
        return path
    if not force and os.path.exists(path):
        raise UserInputError(
            f"{path} holds a teacher trained with another configuration (or not by this "
            f"project): give this teacher another path, or replace that file with {replace_flag}."
        )
    model, info = train_teacher(cfg, progress=progress, workers=workers)
    if evaluate:
        t0 = time.time()
        info["eval"] = evaluate_teacher(
            model, cfg.model_name, seed=cfg.seed, world=cfg.world, jpeg_quality=cfg.jpeg_quality
        )
        info["eval_seconds"] = round(time.time() - t0, 1)
    with atomic_write_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    info.update(
        fingerprint=cfg.fingerprint(),
        model_name=cfg.model_name,
        checkpoint_bytes=os.path.getsize(path),
        config=cfg.to_dict(),
        torch_version=torch.__version__,
        open_clip_version=open_clip.__version__,
    )
    # written last: a checkpoint without its record is never reused
    atomic_write_text(_meta_path(path), json.dumps(info, indent=2) + "\n")
    return path


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip warns about random init; training from scratch is the point here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _progress(it, enabled: bool, desc: str):
    """A bar on a terminal, plain lines in a log (utils/progress.py)."""
    return progress(it, desc=desc, unit="step") if enabled else it


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipzss_d2.miniworld train-teacher", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", default=DEFAULT_TEACHER_PATH, help="checkpoint path (.pt)")
    parser.add_argument("--steps", type=int, default=TeacherConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TeacherConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TeacherConfig.lr)
    parser.add_argument(
        "--patch-dropout",
        type=float,
        default=TeacherConfig.patch_dropout,
        help="share of patches dropped in each training step (FLIP; the saved model has none)",
    )
    parser.add_argument("--seed", type=int, default=TeacherConfig.seed)
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument(
        "--force",
        action="store_true",
        help="retrain and replace the checkpoint at --output, even one of the same or another config",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the zero-shot evaluation")
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate the checkpoint at --output (training nothing) and print the figures",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=TeacherConfig.threads,
        help=f"torch threads while training (default {TeacherConfig.threads}; part of the "
        "config fingerprint: another count trains slightly different weights)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default 1 if a CPU is left over)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("clipzss_d2").setLevel(logging.INFO)
    if args.eval_only:
        model = create_clip_model(
            args.model_name, pretrained=args.output, activation=TeacherConfig.activation
        )
        world = TeacherConfig().world.square(model_image_size(args.model_name))
        print(
            json.dumps(
                evaluate_teacher(model, args.model_name, seed=args.seed, world=world), indent=2
            )
        )
        return 0
    cfg = TeacherConfig(
        model_name=args.model_name,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        patch_dropout=args.patch_dropout,
        seed=args.seed,
        threads=args.threads,
    )
    path = get_miniworld_teacher(
        args.output, cfg, force=args.force, evaluate=not args.no_eval, workers=args.workers
    )
    with open(_meta_path(path)) as f:
        info = json.load(f)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"checkpoint: {path}")
    print(
        f'load with: create_clip_model("{cfg.model_name}", "{path}", activation="{cfg.activation}")'
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
