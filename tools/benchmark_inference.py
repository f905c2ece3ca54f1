#!/usr/bin/env python
"""Inference speed of the CLIP-ZSS student versus a CLIP-in-the-loop pipeline, in one run.

The paper's practical claim is that the student needs no CLIP image encoder at test time. This
times, on the same device and synthetic 512 x 512 images, with random weights (no download, no
dataset):

* student: the config's model (default DeepLabV3+ on DeepLab R-101, 512-d embeddings) through the
  predictor's own path, ``CLIPZSS.forward`` on a batch (normalise, pad, backbone, head, cosine
  with the cached text embeddings of N classes, upsample to the input, argmax). Its text
  embeddings are computed once beforehand; the timed path never runs CLIP.
* CLIP-in-the-loop (a ZegCLIP-like lower bound): open_clip ViT-B/16 image encoder at 512 x 512
  with interpolated positional embeddings, its patch tokens projected into the joint space and
  matched with the same text embeddings, upsample, argmax. Real one-stage methods add a decoder
  on top, so they are slower than this.
* predictor end-to-end (batch 1, first precision only): numpy image in, labels and scores out,
  including the test-time resize and host transfers.

    python tools/benchmark_inference.py                            # GPU: batch 1/16, fp32/fp16/bf16
    python tools/benchmark_inference.py --device cpu --batch-sizes 1 --iters 3 --warmup 1

Prints a markdown table of latency per batch and images/s, and the student / baseline ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.predictor import OpenVocabularyPredictor  # noqa: E402

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default=str(ROOT / "configs" / "Base-CLIPZSS.yaml"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-classes", type=int, default=171, help="vocabulary size (COCO-Stuff)")
    p.add_argument("--size", type=int, default=512, help="square input side")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=list(DTYPES),
        default=None,
        help="default: fp32 fp16 bf16 on CUDA (bf16 if supported), fp32 bf16 on a CPU with "
        "native bf16, else fp32",
    )
    p.add_argument("--iters", type=int, default=None, help="timed runs (default 20 GPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default 5 GPU, 1 CPU)")
    p.add_argument(
        "--clip-model", default="ViT-B-16", help="open_clip image encoder of the baseline"
    )
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="NHWC weights for both pipelines (much faster convolutions on CPUs with oneDNN)",
    )
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.iters = args.iters or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    if args.precisions is None:
        args.precisions = ["fp32"] + [p for p in ("fp16", "bf16") if supports(args.device, p)]
    for p_ in args.precisions:
        if not supports(args.device, p_):
            p.error(f"{p_} is not supported on {args.device}")
    return args


def supports(device: str, precision: str) -> bool:
    if precision == "fp32":
        return True
    if device.startswith("cuda"):
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if precision == "bf16":  # CPUs with AVX512-BF16 / AMX run bf16 natively
        with contextlib.suppress(Exception):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast(device: str, precision: str):
    if DTYPES[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(fn, device, warmup, iters) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


# -- the student, through the predictor --------------------------------------------------------
def build_student(args, vocabulary):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS",
            "",  # random student
            "MODEL.DEVICE",
            args.device,
            "MODEL.RESNETS.NORM",
            "BN",  # SyncBN is BN in eval; BN needs no process group
            "MODEL.SEM_SEG_HEAD.NORM",
            "BN",
            "MODEL.CLIPZSS.CLIP.PRETRAINED",
            "none",  # random text tower, used once
            "MODEL.CLIPZSS.TEXT.TEMPLATES",
            "single",
            "MODEL.CLIPZSS.TEXT.CACHE_DIR",
            "",
            "DATASETS.TRAIN",
            (),
            "DATASETS.TEST",
            (),
        ]  # fmt: skip
        + args.opts
    )
    predictor = OpenVocabularyPredictor(cfg, vocabulary)
    predictor.model.set_vocabulary(vocabulary)
    if args.channels_last:
        predictor.model.to(memory_format=torch.channels_last)
    return predictor


def student_step(model, images: torch.Tensor):
    """The predictor's model call on a device batch: normalise, pad, infer, argmax."""
    outputs = model([{"image": img} for img in images])
    return torch.stack([o["sem_seg"] for o in outputs]).argmax(dim=1)


# -- CLIP in the loop -----------------------------------------------------------------------------
class CLIPInTheLoop(nn.Module):
    """ViT image encoder -> projected patch tokens -> cosine with text -> upsample -> argmax."""

    def __init__(self, clip_model: str, size: int, text: torch.Tensor, logit_scale: float):
        super().__init__()
        clip = open_clip.create_model(clip_model)  # random weights: pretrained=None, no download
        pp = open_clip.get_model_preprocess_cfg(clip)
        self.visual = clip.visual
        del clip
        self.visual.eval()
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        vis = self.visual
        x = (images.float() - self.mean) / self.std
        x = vis.conv1(x)
        b, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = vis.class_embedding.view(1, 1, width).expand(b, 1, width).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.pos.to(x.dtype)
        x = vis.ln_pre(x)
        tr = vis.transformer
        x = tr(x) if tr.batch_first else tr(x.transpose(0, 1)).transpose(0, 1)
        patches = vis.ln_post(x[:, 1:]) @ vis.proj  # joint space, like ZegCLIP's dense tokens
        patches = F.normalize(patches, dim=-1)
        logits = self.logit_scale * patches @ self.text.to(patches.dtype).t()
        logits = logits.transpose(1, 2).reshape(b, -1, gh, gw)
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    torch.manual_seed(0)
    vocabulary = [f"class number {i}" for i in range(args.num_classes)]
    print(
        f"device: {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}"
        f", {torch.get_num_threads()} threads), torch {torch.__version__}, {args.size}x{args.size},"
        f" {args.num_classes} classes, warmup {args.warmup}, iters {args.iters}"
        f"{', channels-last' if args.channels_last else ''}"
    )
    predictor = build_student(args, vocabulary)
    model = predictor.model
    text = model.text_embeddings(vocabulary)
    baseline = None
    if not args.skip_baseline:
        scale = float(model.logit_scale.detach())
        baseline = CLIPInTheLoop(args.clip_model, args.size, text, scale)
        baseline = baseline.to(device).eval()
        if args.channels_last:
            baseline.to(memory_format=torch.channels_last)
    n_student = sum(p.numel() for p in model.backbone.parameters())
    n_student += sum(p.numel() for p in model.embedding_head.parameters())
    print(f"student parameters: {n_student / 1e6:.1f} M (config {args.config_file})")
    if baseline is not None:
        n_clip = sum(p.numel() for p in baseline.visual.parameters()) / 1e6
        print(f"baseline image encoder: {args.clip_model}, {n_clip:.1f} M parameters")

    rows = []
    for bs in args.batch_sizes:
        images = torch.randint(0, 256, (bs, 3, args.size, args.size), dtype=torch.uint8)
        images = images.to(device)
        float_images = images.float()
        for precision in args.precisions:
            pipelines = [("student (CLIP-ZSS)", lambda x=float_images: student_step(model, x))]
            if baseline is not None:
                pipelines.append(("CLIP-in-the-loop (ZegCLIP-like)", lambda x=images: baseline(x)))
            for name, fn in pipelines:

                def step(fn=fn, precision=precision):
                    with torch.inference_mode(), autocast(device, precision):
                        fn()

                try:
                    times = time_it(step, device, args.warmup, args.iters)
                except torch.OutOfMemoryError:
                    rows.append((name, bs, precision, math.nan, math.nan))
                    continue
                latency = statistics.median(times)
                rows.append((name, bs, precision, latency * 1000, bs / latency))
                print(
                    f"  {name:<34} batch {bs:>2} {precision}: {latency * 1000:9.1f} ms", flush=True
                )

    # one image through the whole predictor: numpy in, labels + scores out
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    precision = args.precisions[0]

    def predict():
        with autocast(device, precision):
            predictor(image)

    times = time_it(predict, device, args.warmup, args.iters)
    e2e = statistics.median(times)

    print()
    print("| pipeline | batch | precision | latency / batch (ms) | images/s | student speed-up |")
    print("|---|---:|---|---:|---:|---:|")
    by_key = {(r[0], r[1], r[2]): r for r in rows}
    for name, bs, precision, ms, ips in rows:
        ratio = ""
        if name.startswith("student") and baseline is not None:
            base = by_key.get(("CLIP-in-the-loop (ZegCLIP-like)", bs, precision))
            if base and not math.isnan(base[4]) and not math.isnan(ips):
                ratio = f"{ips / base[4]:.2f}x"
        print(f"| {name} | {bs} | {precision} | {ms:.1f} | {ips:.2f} | {ratio} |")
    print(
        f"| predictor end-to-end (numpy in, labels+scores out) | 1 | {args.precisions[0]} | "
        f"{e2e * 1000:.1f} | {1 / e2e:.2f} | |"
    )
    print(
        f"\nMedian of {args.iters} timed runs after {args.warmup} warm-up runs; random weights; "
        f"speed-up = student images/s / CLIP-in-the-loop images/s at the same batch and precision."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
