"""Train the miniature world's CLIP: an open_clip model learned contrastively from captions here.

No real CLIP weights can be downloaded on offline machines, so the miniature benchmark brings its
own teacher. It is a plain open_clip `CLIP` built from `clip_configs/ClipZSS-MiniWorld.json` with
open_clip's tokenizer and `ClipLoss`, trained on freshly rendered scenes whose captions name every
class, seen and unseen (as the real CLIP saw sheep and sofas on the web). It is built and trained
with QuickGELU, as OpenAI's CLIP was, and saved the way OpenAI's weights reach users who load them
from a file: a plain state_dict beside an architecture config that does not name the activation,
so the same config route applies (MODEL.CLIPZSS.CLIP.PRETRAINED <file>,
MODEL.CLIPZSS.CLIP.ACTIVATION quick_gelu) and the same mistake (gelu) silently costs accuracy.

    python -m clipzss_d2.miniworld train-teacher [--output PATH] [--steps N] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from ..modeling.clip_loading import create_clip_model
from ..utils.io import atomic_write_path, atomic_write_text
from ..utils.progress import progress  # also registers ClipZSS-* configs
from . import render as R
from . import world as W
from .captions import make_caption

logger = logging.getLogger(__name__)

MODEL_NAME = "ClipZSS-MiniWorld"
DEFAULT_TEACHER_PATH = os.path.join("output", "miniworld", "teacher", "clip_miniworld.pt")
# Independent random streams, so teacher images never coincide with the dataset's images.
STREAM_TRAIN, STREAM_EVAL = 1001, 1002
# Bump when the training code changes in a way the config does not capture (invalidates caches).
TRAINER_VERSION = 2  # 2: QuickGELU


@dataclass(frozen=True)
class TeacherConfig:
    """Everything the trained weights depend on; its hash names a cached checkpoint."""

    model_name: str = MODEL_NAME
    activation: str = "quick_gelu"  # as OpenAI's CLIP; the architecture config does not say it
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    jpeg_quality: int = 90
    # torch threads while training, fixed so that any machine trains the same weights (float
    # reductions depend on the thread count); a loader process renders the next batch meanwhile
    threads: int = 1
    # Scenes as in the dataset, square at the model's input size (0 = read it from the model
    # config), without void rings (a caption names objects, not annotation bands).
    world: W.WorldParams = field(default_factory=lambda: W.WorldParams().square(0))

    def resolved(self) -> TeacherConfig:
        """Fill in the image size from the open_clip config so the hash sees the real value."""
        if self.world.max_short_side:
            return self
        size = model_image_size(self.model_name)
        return dataclasses.replace(self, world=self.world.square(size))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["world"] = self.world.to_dict()
        return d

    def fingerprint(self) -> str:
        cfg = self.resolved()
        payload = {
            "trainer_version": TRAINER_VERSION,
            "world_version": W.WORLD_VERSION,
            "config": cfg.to_dict(),
            "model_cfg": open_clip.get_model_config(cfg.model_name),
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def model_image_size(model_name: str) -> int:
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f"Unknown open_clip model config {model_name!r}")
    size = model_cfg["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


# ---------------------------------------------------------------------------------------------
# Data


class Batches:
    """Deterministic image-caption batches: batch i depends only on (seed, stream, i)."""

    def __init__(self, model: open_clip.CLIP, cfg: TeacherConfig, stream: int = STREAM_TRAIN):
        self.cfg = cfg = cfg.resolved()
        self.stream = stream
        self.tokenizer = open_clip.get_tokenizer(cfg.model_name)
        pp = open_clip.get_model_preprocess_cfg(model)
        self.mean = torch.tensor(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(pp.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, self.stream, index]))

    def to_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def render(self, index: int, params: W.WorldParams, n: int) -> list[R.Rendered]:
        rng = self.rng(index)
        out = []
        for _ in range(n):
            r = R.make_sample(rng, params)
            if self.cfg.jpeg_quality:
                r.image = R.jpeg_roundtrip(r.image, self.cfg.jpeg_quality)
            out.append(r)
        return out

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(index)
        images, captions = [], []
        for _ in range(self.cfg.batch_size):
            r = R.make_sample(rng, self.cfg.world)
            captions.append(make_caption(r, self.cfg.world, rng))
            img = r.image
            if self.cfg.jpeg_quality:
                img = R.jpeg_roundtrip(img, self.cfg.jpeg_quality)
            images.append(img)
        return self.to_tensor(images), self.tokenizer(captions)


class _StepDataset(torch.utils.data.Dataset):
    """Batch i of the stream as item i, so a loader worker renders ahead of the training step."""

    def __init__(self, batches: Batches, steps: int):
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.batches(index)


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)


def _batch_loader(batches: Batches, steps: int, workers: int):
    dataset = _StepDataset(batches, steps)
    if workers <= 0:
        return (dataset[i] for i in range(steps))
    # spawn, not fork: a child forked from a process whose OpenMP/cv2 pools have run can hang in
    # its first cv2 call. Batches depend on the index only, so the weights do not depend on the
    # number of workers.
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        multiprocessing_context="spawn",
        worker_init_fn=_worker_init,
    )


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
            cfg.model_name, pretrained=None, quick_gelu=cfg.activation == "quick_gelu"
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
    loader = iter(_batch_loader(batches, cfg.steps, workers))
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
# Evaluation


@torch.no_grad()
def encode_names(
    model: open_clip.CLIP, model_name: str, names, template="a photo of a {}."
) -> torch.Tensor:
    tokenizer = open_clip.get_tokenizer(model_name)
    t = model.encode_text(tokenizer([template.format(n) for n in names]))
    return F.normalize(t, dim=-1)


@torch.no_grad()
def image_tokens(model: open_clip.CLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS embedding (B x C) and patch tokens in the joint space (B x h x w x C), both normalised,
    of CLIP-normalised images: the student's teacher itself ('plain' dense mode), so the probes
    measure exactly what training uses. (Freezes ``model.visual``: evaluation comes last.)"""
    from ..modeling.teacher import CLIPTeacher  # training-only: not imported with the package

    teacher = CLIPTeacher(
        visual=model.visual, clip_mean=(0.0,) * 3, clip_std=(1.0,) * 3, precision="fp32"
    )
    out = teacher.encode(images.to(teacher.dtype))
    patches = F.normalize(out.patch_embed, dim=1).permute(0, 2, 3, 1)
    return F.normalize(out.cls_embed, dim=-1), patches


def _patch_labels(labels: np.ndarray, patch: int, purity: float) -> np.ndarray:
    """Majority class per patch (B x h x w), -1 where the patch is mixed or mostly ignored."""
    b, hh, ww = labels.shape
    h, w = hh // patch, ww // patch
    blocks = labels[:, : h * patch, : w * patch].reshape(b, h, patch, w, patch)
    blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(-1, patch * patch).astype(np.int64)
    nc = len(W.CLASSES) + 1  # last bin: ignore
    blocks = np.where(blocks == W.IGNORE_LABEL, nc - 1, blocks)
    flat = blocks + nc * np.arange(len(blocks))[:, None]
    counts = np.bincount(flat.ravel(), minlength=nc * len(blocks)).reshape(-1, nc)
    major = counts.argmax(-1)
    major[(counts.max(-1) < purity * patch * patch) | (major == nc - 1)] = -1
    return major.reshape(b, h, w)


@torch.no_grad()
def evaluate_teacher(
    model: open_clip.CLIP,
    model_name: str = MODEL_NAME,
    num_images: int = 400,
    seed: int = 0,
    world: W.WorldParams | None = None,
    jpeg_quality: int = 90,
    batch_size: int = 100,
) -> dict:
    """Zero-shot accuracy on fresh single-object / stuff-only images and patch-token quality."""
    model.eval()
    size = model_image_size(model_name)
    base = world or W.WorldParams().square(size)
    cfg = TeacherConfig(model_name=model_name, seed=seed, jpeg_quality=jpeg_quality, world=base)
    batches = Batches(model, cfg, stream=STREAM_EVAL)
    things, stuff = list(base.things), list(base.stuff)
    results: dict = {"num_images": num_images}

    def run(params: W.WorldParams, offset: int):
        rendered = []
        for start in range(0, num_images, batch_size):
            n = min(batch_size, num_images - start)
            rendered += batches.render(offset + start, params, n)
        x = batches.to_tensor([r.image for r in rendered])
        cls, patches = zip(
            *(image_tokens(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size))
        )
        return rendered, torch.cat(cls), torch.cat(patches)

    # 1) one object, no clutter: which thing is it? (over thing names, as in CLIP's zero-shot use)
    single = dataclasses.replace(
        base, min_objects=1, max_objects=1, empty_prob=0.0, clutter_prob=0.0
    )
    rendered, cls, _ = run(single, 0)
    text = encode_names(model, model_name, things)
    pred = (cls @ text.T).argmax(1).numpy()
    truth = np.array([things.index(r.scene.things[0].name) for r in rendered])
    results["thing_zero_shot_acc"] = float((pred == truth).mean())
    for split, members in (
        ("seen", [c for c in things if c not in W.UNSEEN]),
        ("unseen", [c for c in things if c in W.UNSEEN]),
    ):
        sel = np.isin(truth, [things.index(c) for c in members])
        if sel.any():
            results[f"thing_zero_shot_acc_{split}"] = float((pred[sel] == truth[sel]).mean())
    results["thing_chance"] = 1.0 / len(things)
    typical = np.array([r.scene.things[0].typical_colour for r in rendered])
    for key, sel in (("typical_colour", typical), ("other_colour", ~typical)):
        if sel.any():
            results[f"thing_zero_shot_acc_{key}"] = float((pred[sel] == truth[sel]).mean())
    results["thing_zero_shot_acc_per_class"] = {
        c: round(float((pred[truth == i] == i).mean()), 3)
        for i, c in enumerate(things)
        if (truth == i).any()
    }

    # 2) background only: which texture?
    if len(stuff) > 1:
        plain = dataclasses.replace(
            base, max_objects=0, min_objects=0, second_stuff_prob=0.0, clutter_prob=0.0
        )
        rendered, cls, _ = run(plain, 10_000)
        text = encode_names(model, model_name, stuff)
        pred = (cls @ text.T).argmax(1).numpy()
        truth = np.array([stuff.index(r.scene.stuff[0].name) for r in rendered])
        results["stuff_zero_shot_acc"] = float((pred == truth).mean())

    # 3) dataset-like scenes: patch tokens against text and against each other
    rendered, _, patches = run(base, 20_000)
    patch = size // patches.shape[1]
    labels = _patch_labels(np.stack([r.label for r in rendered]), patch, purity=0.75)
    names = list(W.CLASSES)
    text = encode_names(model, model_name, names)
    valid = labels >= 0
    tok = patches[torch.from_numpy(valid)]
    lab = labels[valid]
    patch_pred = (tok @ text.T).argmax(1).numpy()
    results["patch_text_acc"] = float((patch_pred == lab).mean())
    results["patch_chance"] = 1.0 / len(names)
    unseen_ids = [W.CLASS_ID[c] for c in W.UNSEEN]
    sel = np.isin(lab, unseen_ids)
    if sel.any():
        results["patch_text_acc_unseen"] = float((patch_pred[sel] == lab[sel]).mean())
    # cosine similarity of patch tokens: pooled over images (subsampled) and within each image
    gen = np.random.default_rng(seed)
    idx = gen.choice(len(lab), size=min(4000, len(lab)), replace=False)
    sim = (tok[idx] @ tok[idx].T).numpy()
    same = lab[idx][:, None] == lab[idx][None, :]
    off = ~np.eye(len(idx), dtype=bool)
    results["patch_cos_same_class"] = float(sim[same & off].mean())
    results["patch_cos_diff_class"] = float(sim[~same].mean())
    s_in, d_in = [], []
    for b in range(len(rendered)):
        v = valid[b]
        if v.sum() < 2:
            continue
        t = patches[b][torch.from_numpy(v)]
        lb = labels[b][v]
        sm = (t @ t.T).numpy()
        sa = lb[:, None] == lb[None, :]
        o = ~np.eye(len(lb), dtype=bool)
        if (sa & o).any():
            s_in.append(sm[sa & o].mean())
        if (~sa).any():
            d_in.append(sm[~sa].mean())
    results["patch_cos_same_class_within_image"] = float(np.mean(s_in))
    results["patch_cos_diff_class_within_image"] = float(np.mean(d_in))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}


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
) -> str:
    """Path of the miniworld CLIP checkpoint, training it first unless a matching one is cached.

    The checkpoint is a plain open_clip state_dict (torch.save); its sidecar `.json` holds the
    config fingerprint that decides reuse, and the training/evaluation figures.
    """
    cfg = (cfg or TeacherConfig()).resolved()
    if not force and cached_teacher_info(path, cfg) is not None:
        logger.info("Reusing miniworld CLIP teacher %s", path)
        return path
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
    parser.add_argument("--seed", type=int, default=TeacherConfig.seed)
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument(
        "--force", action="store_true", help="retrain even if a matching checkpoint exists"
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
