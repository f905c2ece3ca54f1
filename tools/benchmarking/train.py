"""Training-step cost of CLIP-ZSS versus the supervised baseline, measured in one run.

The paper's practical claim is that the teacher-driven modules are cheap; this prints the step
time of the baseline (no teacher) and of the full method (teacher + GLM + PLM) on the same
synthetic batch, their ratio, and where the full step's time goes (teacher forward, K-Means +
fusion, synthesizer, GLM, the rest = student forward/backward + losses + optimizer). Random
weights, no dataset, no download. Examples:

    python tools/benchmark_train.py --device cuda                       # R-101 + ViT-B/16, 16 x 512^2
    python tools/benchmark_train.py --device cpu --batch 2 --crop 256 --iters 2
    python tools/benchmark_train.py --kmeans                             # + K-Means vs scikit-learn
"""

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.solver import build_optimizer
from clipzss_d2.utils.config_loading import merge_config_file

ROOT = Path(__file__).resolve().parents[2]

SYNTHETIC = "benchmark_synthetic_train"
SEEN = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "dining table", "dog", "horse", "motorbike", "person"]  # fmt: skip


def register_synthetic():
    if SYNTHETIC not in DatasetCatalog.list():
        DatasetCatalog.register(SYNTHETIC, lambda: [])
        MetadataCatalog.get(SYNTHETIC).set(stuff_classes=SEEN, unseen_classes=[], ignore_label=255)


def make_cfg(args, variant):
    cfg = get_clipzss_cfg()
    merge_config_file(cfg, args.config_file)
    register_synthetic()
    modules_on = variant == "full"
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            args.device,
            "MODEL.RESNETS.NORM",
            "BN",  # SyncBN needs a process group; same cost on one GPU
            "MODEL.SEM_SEG_HEAD.NORM",
            "BN",
            "MODEL.CLIPZSS.CLIP.PRETRAINED",
            "none",
            "MODEL.CLIPZSS.TEXT.CACHE_DIR",
            "",
            "MODEL.CLIPZSS.TEXT.TEMPLATES",
            "single",
            "MODEL.CLIPZSS.GLM.ENABLED",
            modules_on,
            "MODEL.CLIPZSS.PLM.PSEUDO_LABELS",
            modules_on,
            "MODEL.CLIPZSS.PLM.SYNTHESIZER",
            modules_on,
            "DATASETS.TRAIN",
            (SYNTHETIC,),
            "DATASETS.TEST",
            (),
        ]  # fmt: skip
        + args.opts
    )
    return cfg


def synthetic_batch(batch, crop, seed=0, views=False):
    """Blocky label maps with seen classes and ~30% ignored area (where PLM has work to do).

    views: also the teacher cache's inputs (MODEL.CLIPZSS.TEACHER.CACHE), as the mapper gives
    them for a 4:3 image whose short side is the crop's: the crop is its left part, unscaled.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, len(SEEN), (batch, 1, 8, 8), generator=g)
    coarse[torch.rand(coarse.shape, generator=g) < 0.3] = 255
    labels = torch.nn.functional.interpolate(coarse.float(), size=(crop, crop), mode="nearest")[
        :, 0
    ].long()
    wide = crop * 4 // 3
    whole = torch.randint(0, 256, (batch, 3, crop, wide), generator=g, dtype=torch.uint8)
    out = []
    for i, (im, lb) in enumerate(zip(whole, labels)):
        x = {"image": im[:, :, :crop].contiguous(), "sem_seg": lb, "height": crop, "width": wide}
        if views:
            x["teacher_view"] = im
            x["teacher_view_from_crop"] = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
            x["teacher_cache_key"] = f"synthetic-{seed}-{i}"
        out.append(x)
    return out


class Timers:
    """Wraps module forwards with synchronised timers to split a training step into parts."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.totals = defaultdict(float)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, name, owner, attr):
        """Replace owner.<attr> (a module or any callable) by a timed proxy."""
        target = getattr(owner, attr, None)
        if target is None:
            return
        timers = self

        class Timed(torch.nn.Module if isinstance(target, torch.nn.Module) else object):
            def __init__(self):
                super().__init__()
                self.inner = target

            def __call__(self, *a, **kw):
                timers.sync()
                t0 = time.perf_counter()
                out = self.inner(*a, **kw)
                timers.sync()
                timers.totals[name] += time.perf_counter() - t0
                return out

            def __getattr__(self, key):
                try:
                    return super().__getattr__(key)
                except AttributeError:
                    return getattr(self.__dict__.get("inner") or self._modules["inner"], key)

        if attr == "_teacher":
            owner.__dict__[attr] = Timed()
        else:
            setattr(owner, attr, Timed())


def build_step(args, variant, batch_size, crop, teacher_cache=None):
    """One training step of `variant` on a synthetic batch (model, optimizer and AMP as the
    config says) and the timers wrapped around its parts; args: config_file, device, opts.

    teacher_cache: None (the paper's teacher on every crop), "hits" (MODEL.CLIPZSS.TEACHER.CACHE
    holding the batch's images: every later epoch) or "misses" (emptied before each step: the
    first epoch, the teacher on each whole image)."""
    if teacher_cache not in (None, "hits", "misses"):
        raise ValueError(f"teacher_cache must be None, 'hits' or 'misses', not {teacher_cache!r}")
    if teacher_cache is not None:
        args = argparse.Namespace(**vars(args))
        args.opts = list(args.opts) + ["MODEL.CLIPZSS.TEACHER.CACHE", True]
    cfg = make_cfg(args, variant)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.build_teacher()
    model.train()
    optimizer = build_optimizer(cfg, model)
    timers = Timers(args.device)
    cache = model.teacher_cache
    if variant == "full" and teacher_cache is not None:
        timers.wrap("teacher cache (teacher on misses + resampling)", model, "teacher_cache")
    elif variant == "full":
        timers.wrap("teacher forward", model, "_teacher")
    if variant == "full":
        timers.wrap("K-Means + fusion", model.plm, "pseudo_targets")
        timers.wrap("synthesizer", model.plm, "synthesizer")
        timers.wrap("GLM", model, "glm")
    batch = synthetic_batch(batch_size, crop, views=teacher_cache is not None)
    use_amp = args.device.startswith("cuda") and cfg.SOLVER.AMP.ENABLED
    autocast = (
        torch.autocast("cuda", dtype=getattr(torch, cfg.SOLVER.AMP.PRECISION))
        if use_amp
        else contextlib.nullcontext()
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and cfg.SOLVER.AMP.PRECISION == "float16")

    def step():
        if teacher_cache == "misses":
            cache.clear()
        with autocast:
            loss = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step.model = model  # for callers that inspect it (the teacher cache's counts)
    return step, timers


def run_variant(args, variant):
    step, timers = build_step(args, variant, args.batch, args.crop)
    for _ in range(args.warmup):
        step()
    timers.totals.clear()
    times = []
    for _ in range(args.iters):
        timers.sync()
        t0 = time.perf_counter()
        step()
        timers.sync()
        times.append(time.perf_counter() - t0)
    parts = {k: v / args.iters * 1000 for k, v in timers.totals.items()}
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    return statistics.median(times) * 1000, parts, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config-file", default=str(ROOT / "configs" / "Base-CLIPZSS.yaml"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--kmeans", action="store_true", help="also run tools/benchmark_kmeans.py")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = ap.parse_args(argv)

    device_name = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {device_name}; batch {args.batch} x {args.crop}^2; config {args.config_file} {' '.join(args.opts)}"
    )
    base_ms, _, base_mem = run_variant(args, "baseline")
    full_ms, parts, full_mem = run_variant(args, "full")
    rows = [("baseline step (student only)", base_ms), ("full step (teacher + GLM + PLM)", full_ms)]
    rows += [(f"  of which {k}", v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])]
    rows.append(("  of which student fwd/bwd, losses, optimizer", full_ms - sum(parts.values())))
    print("\n| part | ms per step |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    print(f"\nfull / baseline step time: {full_ms / base_ms:.2f}x")
    if args.device == "cuda":
        print(f"peak GPU memory: baseline {base_mem:.1f} GiB, full {full_mem:.1f} GiB")
    if args.kmeans:
        from . import kmeans

        kmeans.main(["--device", "all"])
