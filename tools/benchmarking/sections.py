"""The measurements of tools/benchmark.py: student throughput against CLIP in the loop, predictor
latency, the training step (tools/benchmark_train.py's timers) and torch.compile; one list of
table rows each."""

from __future__ import annotations

import gc
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.predictor import OpenVocabularyPredictor
from clipzss_d2.utils.config_loading import merge_config_file, merge_overrides

from .baseline import BASELINE_NAME, CLIPInTheLoop, pick_fastpath
from .measure import measure_peak, peak_gib, reset_peak, round_robin, sync, vm_gib

ROOT = Path(__file__).resolve().parents[2]
# Everything random and offline; norms that need no process group (same cost on one device).
OFFLINE = ["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN",
           "MODEL.CLIPZSS.MLP_HEAD.NORM", "BN", "MODEL.CLIPZSS.CLIP.PRETRAINED", "none",
           "MODEL.CLIPZSS.TEXT.TEMPLATES", "single", "MODEL.CLIPZSS.TEXT.CACHE_DIR", "",
           "MODEL.TIMM.PRETRAINED", "", "MODEL.SWIN.PRETRAINED", ""]  # fmt: skip


# -- students ----------------------------------------------------------------------------------
def student_cfg(args, config_file: str, precision: str = "fp32", extra=()):
    cfg = merge_config_file(get_clipzss_cfg(), str(ROOT / config_file), "--students")
    cfg.merge_from_list(
        OFFLINE
        + ["MODEL.DEVICE", args.device, "DATASETS.TRAIN", (), "DATASETS.TEST", ()]
        + ["MODEL.CLIPZSS.INFERENCE.PRECISION", precision]
    )
    merge_overrides(cfg, args.opts, "--opts")
    cfg.merge_from_list(list(extra))
    return cfg


def student_name(config_file: str) -> str:
    stem = Path(config_file).stem
    return {"Base-CLIPZSS": "DeepLabV3+ R-101 (current default)"}.get(stem, stem)


def student_step(model, images: torch.Tensor):
    """The model's public forward on a device batch, then per-pixel class ids."""
    outputs = model([{"image": img} for img in images])
    return [o["sem_seg"].argmax(dim=0) for o in outputs]


def parameters_m(model) -> float:
    parts = (model.backbone, model.embedding_head)
    return sum(p.numel() for m in parts for p in m.parameters()) / 1e6


# -- sections ----------------------------------------------------------------------------------
def throughput(args, predictors: dict) -> list[dict]:
    device = args.device
    first = next(iter(predictors.values())).model
    text = first.text_embeddings(first.vocabulary)
    logit_scale = float(first.logit_scale.detach())
    baseline = CLIPInTheLoop(args.clip_model, args.size, text, logit_scale).to(device).eval()
    students = {config: predictor.model for config, predictor in predictors.items()}
    n_clip = sum(p.numel() for p in baseline.visual.parameters()) / 1e6
    print(f"  {BASELINE_NAME}: {n_clip:.1f} M parameters (image encoder)", flush=True)

    rows = []
    for bs in args.batch_sizes:
        images = torch.randint(0, 256, (bs, 3, args.size, args.size), dtype=torch.uint8)
        images = images.to(device)
        float_images = images.float()
        for precision in args.precisions:
            fast = pick_fastpath(baseline, images, precision, device)
            fns = {BASELINE_NAME: lambda p=precision, x=images, f=fast: baseline(x, p, f)}
            for config, model in students.items():
                model.test_time.precision = precision  # MODEL.CLIPZSS.INFERENCE.PRECISION
                fns[config] = lambda m=model, x=float_images: student_step(m, x)

            def no_grad(fn):
                def run():
                    with torch.inference_mode():
                        return fn()

                return run

            fns = {k: no_grad(f) for k, f in fns.items()}
            timings = round_robin(fns, device, args.warmup, args.iters)
            base = bs / timings[BASELINE_NAME].median
            for name, timing in timings.items():
                ips = bs / timing.median
                row = {
                    "pipeline": student_name(name)
                    if name != BASELINE_NAME
                    else f"{name} (MHA fast path {'on' if fast else 'off'})",
                    "batch": bs,
                    "precision": precision,
                    "ms": timing.median * 1000,
                    "spread": timing.spread(1000),
                    "ips": ips,
                    "ratio": ips / base if name != BASELINE_NAME else None,
                    "peak": measure_peak(fns[name], device) if args.memory else math.nan,
                }
                rows.append(row)
                print(
                    f"  batch {bs:>2} {precision} {row['pipeline']:<38} {row['ms']:9.1f} ms "
                    f"[{row['spread']}] {ips:7.2f} img/s"
                    + (f"  {row['ratio']:.2f}x" if row["ratio"] else ""),
                    flush=True,
                )
    return rows


def predictor_latency(args, predictors: dict) -> list[dict]:
    rows = []
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    for config, predictor in predictors.items():
        for precision in args.precisions:
            predictor.model.test_time.precision = precision  # MODEL.CLIPZSS.INFERENCE.PRECISION
            timing = round_robin(
                {"p": lambda p=predictor: p(image)}, args.device, args.warmup, args.iters
            )["p"]
            peak = (
                measure_peak(lambda p=predictor: p(image), args.device) if args.memory else math.nan
            )
            rows.append(
                {
                    "student": student_name(config),
                    "precision": precision,
                    "ms": timing.median * 1000,
                    "spread": timing.spread(1000),
                    "peak": peak,
                }
            )
            print(
                f"  predictor {student_name(config):<38} {precision}: {timing.median * 1000:7.1f} "
                f"ms [{timing.spread(1000)}]",
                flush=True,
            )
    return rows


CACHE_LABELS = {
    "hits": "full, teacher cache: hits (later epochs)",
    "misses": "full, teacher cache: misses (first epoch)",
}


def train_steps(args) -> list[dict]:
    """Baseline vs full step per student (per teacher input size, with and without the teacher
    cache), with the breakdown. A student's variants are all built, each warmed up alone (its
    peak memory), then timed round-robin, so a load change on a shared machine hits them alike."""
    from . import train as bt  # detectron2's trainer pieces: loaded only for this section

    rows = []
    for config in args.train_students:
        variants = [("baseline", None, None)] + [("full", s, None) for s in args.teacher_sizes]
        if args.teacher_cache:
            variants += [("full", 0, "hits"), ("full", 0, "misses")]
        steps, timers, peaks = {}, {}, {}
        for variant, teacher_size, cache in variants:
            targs = SimpleNamespace(
                config_file=str(ROOT / config),
                device=args.device,
                opts=OFFLINE
                + list(args.opts)
                + (["MODEL.CLIPZSS.TEACHER.INPUT_SIZE", teacher_size] if teacher_size else []),
            )
            label = (
                "baseline (student only)"
                if variant == "baseline"
                else CACHE_LABELS[cache]
                if cache
                else f"full, teacher {teacher_size or args.train_crop}²"
            )
            step, timers[label] = bt.build_step(
                targs, variant, args.train_batch, args.train_crop, teacher_cache=cache
            )
            reset_peak(args.device)
            resident = (
                torch.cuda.memory_allocated() / 2**30
                if args.device.startswith("cuda")
                else vm_gib("VmRSS")
            )
            for _ in range(max(args.train_warmup, 1)):
                step()
            peaks[label] = peak_gib(args.device) - resident
            steps[label] = step
        for t in timers.values():
            t.totals.clear()
        timings = round_robin(steps, args.device, 0, args.train_iters)
        base_ms = timings["baseline (student only)"].median * 1000
        for label, timing in timings.items():
            ms = timing.median * 1000
            parts = {k: v / args.train_iters * 1000 for k, v in timers[label].totals.items()}
            rows.append(
                {
                    "student": student_name(config),
                    "variant": label,
                    "ms": ms,
                    "spread": timing.spread(1000),
                    "ratio": ms / base_ms,
                    "parts": parts,
                    "rest": ms - sum(parts.values()),
                    "peak": peaks[label],
                }
            )
            print(
                f"  train {student_name(config):<38} {label:<42} {ms:9.1f} ms "
                f"[{timing.spread(1000)}] {ms / base_ms:.2f}x baseline",
                flush=True,
            )
        del steps, timers
        gc.collect()
    return rows


def compile_cost(args, vocabulary) -> list[dict]:
    """torch.compile of backbone + head of the first light student: warm-up cost and speed."""
    config = args.compile_student
    rows = []
    images = torch.randint(0, 256, (1, 3, args.size, args.size), dtype=torch.uint8)
    images = images.float().to(args.device)
    for precision in args.precisions:
        cfg = student_cfg(args, config, precision)
        model = OpenVocabularyPredictor(cfg, vocabulary).model
        model.set_vocabulary(vocabulary)
        eager = round_robin(
            {"e": lambda m=model: student_step(m, images)}, args.device, args.warmup, args.iters
        )["e"]
        model.backbone.compile()
        model.embedding_head.compile()
        start = time.perf_counter()
        with torch.inference_mode():
            student_step(model, images)
        sync(args.device)
        first = time.perf_counter() - start
        with torch.inference_mode():
            compiled = round_robin(
                {"c": lambda m=model: student_step(m, images)}, args.device, args.warmup, args.iters
            )["c"]
        rows.append(
            {
                "student": student_name(config),
                "precision": precision,
                "first": first,
                "eager": eager.median * 1000,
                "compiled": compiled.median * 1000,
                "spread": compiled.spread(1000),
            }
        )
        print(
            f"  compile {precision}: first call {first:.1f} s, eager {eager.median * 1000:.0f} "
            f"ms, compiled {compiled.median * 1000:.0f} ms",
            flush=True,
        )
    return rows
