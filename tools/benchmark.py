#!/usr/bin/env python
"""One command for the speed claims: students vs CLIP-in-the-loop, predictor latency, training.

In one process, on one device (random weights, synthetic 512 x 512 images, no dataset, no
download), for every student config given:

1. throughput, images/s, at each batch size and precision, of the student through its public
   path (``CLIPZSS.forward``: normalise, pad, backbone, head, cosine with cached text
   embeddings, upsample, then a per-pixel argmax) against the CLIP-in-the-loop lower bound
   (open_clip ViT-B/16 at 512 x 512: dense tokens, text matching, one upsample, argmax);
   pipelines are timed round-robin (one call of each in turn) so a load change on a shared
   machine hits all of them alike;
2. ``OpenVocabularyPredictor`` latency for one 512 x 512 uint8 image (numpy in, labels and
   scores out) at each precision;
3. the training step of the full method (teacher + GLM + PLM, optionally with the teacher at a
   smaller input) against the supervised baseline, with where the time goes
   (tools/benchmark_train.py's timers);
4. peak memory of each measurement: CUDA ``max_memory_allocated``; on CPU the process's peak
   resident set size (Linux VmHWM, reset through /proc/self/clear_refs before each
   measurement) minus the RSS just before it, i.e. what the measurement adds to the resident
   models.

    python tools/benchmark.py --device cuda --output benchmark.md
    python tools/benchmark.py --device cpu --batch-sizes 1 --train-batch 2 --train-crop 256 \\
        --output benchmark-cpu.md                                          # a few minutes

The Markdown table goes to --output (and stdout); ratios are student / baseline images/s in the
same run, at the same batch size and precision.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import clipzss_d2  # noqa: E402,F401  (first: silences fvcore's torch.jit warning)

# isort: split
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from torch import nn  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.entry import run_main  # noqa: E402
from clipzss_d2.modeling.inference import autocast  # noqa: E402
from clipzss_d2.predictor import OpenVocabularyPredictor  # noqa: E402
from clipzss_d2.solver import build_optimizer  # noqa: E402
from clipzss_d2.utils.config_loading import merge_config_file, merge_overrides  # noqa: E402

STUDENTS = [
    "configs/Base-CLIPZSS.yaml",
    "configs/students/segformer-b0.yaml",
    "configs/students/segformer-b1.yaml",
    "configs/students/swin-t.yaml",
]
# Everything random and offline; norms that need no process group (same cost on one device).
OFFLINE = ["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN",
           "MODEL.CLIPZSS.MLP_HEAD.NORM", "BN", "MODEL.CLIPZSS.CLIP.PRETRAINED", "none",
           "MODEL.CLIPZSS.TEXT.TEMPLATES", "single", "MODEL.CLIPZSS.TEXT.CACHE_DIR", "",
           "MODEL.TIMM.PRETRAINED", "", "MODEL.SWIN.PRETRAINED", ""]  # fmt: skip
BASELINE_NAME = "CLIP-in-the-loop ViT-B/16"


# -- timing and memory --------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    def spread(self, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        if not self.times:
            return "n/a"
        lo, hi = min(self.times) * scale, max(self.times) * scale
        return f"{fmt.format(lo)}–{fmt.format(hi)}"


def round_robin(fns: dict, device: str, warmup: int, iters: int) -> dict[str, Timing]:
    """Warm each up, then time one call of each in turn, `iters` rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    out = {k: Timing() for k in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            out[name].times.append(time.perf_counter() - start)
    return out


def reset_peak(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        with contextlib.suppress(OSError, AttributeError):  # glibc: return freed memory to the OS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return _vm("VmHWM")


def _vm(key: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    return math.nan


def measure_peak(fn, device: str) -> float:
    """Peak memory of one call beyond what was resident before it (models, inputs)."""
    reset_peak(device)
    before = torch.cuda.memory_allocated() / 2**30 if device.startswith("cuda") else _vm("VmRSS")
    fn()
    sync(device)
    return peak_gib(device) - before


def supports(device: str, precision: str) -> bool:
    if precision == "fp32":
        return True
    if device.startswith("cuda"):
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if precision == "bf16":  # CPUs with AVX512-BF16 / AMX run bf16 natively
        with contextlib.suppress(Exception):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


# -- the CLIP-in-the-loop lower bound ------------------------------------------------------------
class CLIPInTheLoop(nn.Module):
    """open_clip ViT image encoder -> projected patch tokens -> cosine with text -> upsample ->
    argmax, in its fastest honest form: inference mode, PyTorch's fused MHA fast path or the
    plain SDPA path, whichever is faster here (`pick_fastpath`), the precision's autocast for the encoder and the matching, and one fp32 upsample of the
    logits in NHWC, the layout the token-text product gives for free, so that the argmax over
    classes reads contiguous memory (NCHW logits make the argmax 4x slower on CPU)."""

    def __init__(self, clip_model: str, size: int, text: torch.Tensor, logit_scale: float):
        super().__init__()
        clip = open_clip.create_model(clip_model)  # random weights, no download
        pp = open_clip.get_model_preprocess_cfg(clip)
        self.visual = clip.visual.eval()
        del clip
        patch = self.visual.patch_size[0]
        grid = size // patch
        pos = self.visual.positional_embedding.detach()
        gh0, gw0 = self.visual.grid_size
        grid_pos = pos[1:].reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(grid, grid), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(grid * grid, -1)
        self.register_buffer("pos", torch.cat([pos[:1], grid_pos]))
        self.register_buffer("text", F.normalize(text.float(), dim=-1))
        self.logit_scale = logit_scale
        mean = pp.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pp.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def dense_logits(self, images: torch.Tensor) -> torch.Tensor:
        """B x gh x gw x K logits (NHWC) at the patch grid."""
        vis = self.visual
        x = vis.conv1((images.float() - self.mean) / self.std)
        b, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = vis.class_embedding.view(1, 1, width).expand(b, 1, width).to(x.dtype)
        x = vis.ln_pre(torch.cat([cls, x], dim=1) + self.pos.to(x.dtype))
        tr = vis.transformer
        x = tr(x) if tr.batch_first else tr(x.transpose(0, 1)).transpose(0, 1)
        patches = F.normalize(vis.ln_post(x[:, 1:]) @ vis.proj, dim=-1)
        logits = self.logit_scale * patches @ self.text.to(patches.dtype).t()
        return logits.reshape(b, gh, gw, -1)

    def forward(
        self, images: torch.Tensor, precision: str = "fp32", mha_fastpath: bool = True
    ) -> torch.Tensor:
        previous = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)
        try:
            with autocast(images.device, precision):
                logits = self.dense_logits(images)
        finally:
            torch.backends.mha.set_fastpath_enabled(previous)
        logits = logits.float().permute(0, 3, 1, 2)  # a channels-last view, no copy
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)


def pick_fastpath(baseline, images, precision: str, device: str, tries: int = 2) -> bool:
    """nn.MultiheadAttention's fused inference fast path is not always the faster one (on this
    project's CPU the SDPA path was ~10% faster in fp32); keep whichever is faster."""
    best = {}
    for fastpath in (True, False):
        with torch.inference_mode():
            best[fastpath] = min(
                round_robin(
                    {"b": lambda f=fastpath: baseline(images, precision, f)}, device, 0, tries
                )["b"].times
            )
    return min(best, key=best.get)


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


def train_steps(args) -> list[dict]:
    """Baseline vs full step per student (and per teacher input size), with the breakdown."""
    import benchmark_train as bt

    rows = []
    for config in args.train_students:
        variants = [("baseline", None)] + [("full", s) for s in args.teacher_sizes]
        base_ms = None
        for variant, teacher_size in variants:
            targs = SimpleNamespace(
                config_file=str(ROOT / config),
                device=args.device,
                opts=OFFLINE
                + list(args.opts)
                + (["MODEL.CLIPZSS.TEACHER.INPUT_SIZE", teacher_size] if teacher_size else []),
            )
            cfg = bt.make_cfg(targs, variant)
            torch.manual_seed(0)
            model = build_model(cfg)
            model.build_teacher()
            model.train()
            optimizer = build_optimizer(cfg, model)
            timers = bt.Timers(args.device)
            if variant == "full":
                timers.wrap("teacher forward", model, "_teacher")
                timers.wrap("K-Means + fusion", model.plm, "labeler")
                timers.wrap("synthesizer", model.plm, "synthesizer")
                timers.wrap("GLM", model, "glm")
            batch = bt.synthetic_batch(args.train_batch, args.train_crop)
            use_amp = args.device.startswith("cuda") and cfg.SOLVER.AMP.ENABLED
            amp_dtype = getattr(torch, cfg.SOLVER.AMP.PRECISION)
            scaler = torch.amp.GradScaler(
                "cuda", enabled=use_amp and cfg.SOLVER.AMP.PRECISION == "float16"
            )

            ctx = torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()

            def step(model=model, optimizer=optimizer, batch=batch, scaler=scaler, ctx=ctx):
                with ctx:
                    loss = sum(model(batch).values())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            reset_peak(args.device)
            resident = (
                torch.cuda.memory_allocated() / 2**30
                if args.device.startswith("cuda")
                else _vm("VmRSS")
            )
            for _ in range(args.train_warmup):
                step()
            timers.totals.clear()
            timing = round_robin({"s": step}, args.device, 0, args.train_iters)["s"]
            peak = peak_gib(args.device) - resident
            ms = timing.median * 1000
            parts = {k: v / args.train_iters * 1000 for k, v in timers.totals.items()}
            if variant == "baseline":
                base_ms = ms
            teacher = teacher_size or args.train_crop
            label = (
                "baseline (student only)" if variant == "baseline" else f"full, teacher {teacher}²"
            )
            rows.append(
                {
                    "student": student_name(config),
                    "variant": label,
                    "ms": ms,
                    "spread": timing.spread(1000),
                    "ratio": ms / base_ms,
                    "parts": parts,
                    "rest": ms - sum(parts.values()),
                    "peak": peak,
                }
            )
            print(
                f"  train {student_name(config):<38} {label:<24} {ms:9.1f} ms "
                f"[{timing.spread(1000)}] {ms / base_ms:.2f}x baseline",
                flush=True,
            )
            del model, optimizer, timers
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


# -- report -----------------------------------------------------------------------------------
def markdown(args, header: list[str], tput, pred, train, comp) -> str:
    mem = (
        "peak GPU memory allocated beyond the resident models (GiB)"
        if args.device.startswith("cuda")
        else "peak RSS increase over the resident models (GiB)"
    )
    out = ["## Benchmark (`tools/benchmark.py`)", "", *header, ""]
    if tput:
        out += [
            f"### Throughput at {args.size}², {args.num_classes} classes",
            "",
            f"| pipeline | batch | precision | ms / batch (median) | min–max | images/s | "
            f"vs CLIP-in-the-loop | {mem} |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in tput:
            ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] else ""
            out.append(
                f"| {r['pipeline']} | {r['batch']} | {r['precision']} | {r['ms']:.1f} | "
                f"{r['spread']} | {r['ips']:.2f} | {ratio} | {r['peak']:.2f} |"
            )
        out.append("")
    if pred:
        out += [
            f"### `OpenVocabularyPredictor`, one {args.size}² uint8 image (numpy in, labels + "
            f"scores out)",
            "",
            f"| student | precision | latency ms (median) | min–max | {mem} |",
            "|---|---|---:|---:|---:|",
        ]
        for r in pred:
            out.append(
                f"| {r['student']} | {r['precision']} | {r['ms']:.1f} | {r['spread']} | "
                f"{r['peak']:.2f} |"
            )
        out.append("")
    if train:
        names = sorted({k for r in train for k in r["parts"]})
        out += [
            f"### Training step, batch {args.train_batch} x {args.train_crop}², "
            f"{args.train_iters} timed steps after {args.train_warmup} warm-up",
            "",
            "| student | step | ms (median) | min–max | vs baseline | "
            + " | ".join(names)
            + f" | student fwd/bwd + losses + optimizer | {mem} |",
            "|---|---|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|",
        ]
        for r in train:
            parts = " | ".join(f"{r['parts'][n]:.0f}" if n in r["parts"] else "" for n in names)
            out.append(
                f"| {r['student']} | {r['variant']} | {r['ms']:.0f} | {r['spread']} | "
                f"{r['ratio']:.2f}x | {parts} | {r['rest']:.0f} | {r['peak']:.2f} |"
            )
        out.append("")
    if comp:
        out += [
            "### `torch.compile` (backbone + head), batch 1",
            "",
            "| student | precision | first call (compile) s | eager ms | compiled ms | min–max |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in comp:
            out.append(
                f"| {r['student']} | {r['precision']} | {r['first']:.1f} | {r['eager']:.0f} | "
                f"{r['compiled']:.0f} | {r['spread']} |"
            )
        out.append("")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--students", nargs="+", default=STUDENTS, help="student config files")
    p.add_argument("--output", default="", help="Markdown file for the tables")
    p.add_argument("--num-classes", type=int, default=171, help="vocabulary size (COCO-Stuff)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16", "fp16"])
    p.add_argument("--iters", type=int, default=None, help="timed rounds (20 GPU, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls each (10 GPU, 2 CPU)")
    p.add_argument("--clip-model", default="ViT-B-16")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak memory")
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "predictor", "train"])
    p.add_argument("--train-students", nargs="+", default=None, help="default: --students")
    p.add_argument("--train-batch", type=int, default=None, help="16 GPU, 2 CPU")
    p.add_argument("--train-crop", type=int, default=None, help="512 GPU, 256 CPU")
    p.add_argument("--train-iters", type=int, default=None, help="10 GPU, 3 CPU")
    p.add_argument("--train-warmup", type=int, default=None, help="3 GPU, 1 CPU")
    p.add_argument(
        "--teacher-sizes",
        type=int,
        nargs="+",
        default=[0],
        help="MODEL.CLIPZSS.TEACHER.INPUT_SIZE values of the full step (0 = the crop)",
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--compile-student", default="configs/students/segformer-b1.yaml")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    defaults = {
        "iters": (20, 5),
        "warmup": (10, 2),
        "train_batch": (16, 2),
        "train_crop": (512, 256),
        "train_iters": (10, 3),
        "train_warmup": (3, 1),
    }
    for key, (g, c) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, g if gpu else c)
    args.train_students = args.train_students or args.students
    if args.precisions is None:
        args.precisions = [x for x in ("fp32", "bf16") if supports(args.device, x)]
    for x in args.precisions:
        if not supports(args.device, x):
            p.error(f"{x} is not supported on {args.device}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(run, args, argv, prog="benchmark.py")


def run(args, argv=None) -> int:
    compiled = [args.compile_student] if args.compile else []
    for config in dict.fromkeys([*args.students, *args.train_students, *compiled]):
        student_cfg(args, config)  # a bad file or override stops here, not minutes later
    device = args.device
    torch.manual_seed(0)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    header = [
        f"Device: {name}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"random weights; warm-up {args.warmup}, {args.iters} timed rounds (round-robin).",
        f"Load average at start (1/5/15 min): {load}.",
    ]
    if not device.startswith("cuda"):
        header.append(
            f"Memory: peak RSS (VmHWM, reset via /proc/self/clear_refs) minus the RSS just "
            f"before the measurement (all loaded models), after glibc's malloc_trim. Idle process RSS: {_vm('VmRSS'):.2f} GiB."
        )
    command = "python tools/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print("\n".join(header), flush=True)

    vocabulary = [f"class number {i}" for i in range(args.num_classes)]
    predictors = {}
    if not {"throughput", "predictor"} <= set(args.skip):
        for config in args.students:  # one random text tower: the same text embeddings for all
            predictor = OpenVocabularyPredictor(student_cfg(args, config), vocabulary)
            if predictors:
                first = next(iter(predictors.values())).model
                predictor.model._text_embeddings = first._text_embeddings
            predictor.model.set_vocabulary(vocabulary)
            predictors[config] = predictor
            print(
                f"  {student_name(config)}: {parameters_m(predictor.model):.1f} M parameters",
                flush=True,
            )

    tput = [] if "throughput" in args.skip else throughput(args, predictors)
    pred = [] if "predictor" in args.skip else predictor_latency(args, predictors)
    predictors.clear()
    gc.collect()
    train = [] if "train" in args.skip else train_steps(args)
    comp = compile_cost(args, vocabulary) if args.compile else []
    header.append(f"Load average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    header.append(f"Command: `{command}`")
    table = markdown(args, header, tput, pred, train, comp)
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
