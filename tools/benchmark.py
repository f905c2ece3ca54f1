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
   smaller input, and with the teacher cache: its hits and its misses) against the supervised
   baseline, timed round-robin, with where the time goes (tools/benchmark_train.py's timers);
4. the floor of inference (``--floor-students``, SegFormer-B0 by default; fp32): the network's
   FLOPs (fvcore, 2 FLOPs per multiply-add) over the machine's sustained fp32 throughput
   (torch.mm and F.conv2d probes in the same process), the predictor's time at each batch size
   as a multiple of that floor, where it goes stage by stage (decode, resize, normalise,
   backbone, head, text classifier, upsampling, argmax, post-processing), and the exported
   ONNX model under onnxruntime against PyTorch eager on the same images;
5. peak memory of each measurement: CUDA ``max_memory_allocated``; on CPU the process's peak
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
import gc
import os
import platform
import shlex
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

import torch  # noqa: E402
from benchmarking.breakdown import floor_markdown, inference_floor  # noqa: E402
from benchmarking.measure import supports, vm_gib  # noqa: E402
from benchmarking.report import markdown  # noqa: E402
from benchmarking.sections import (  # noqa: E402
    compile_cost,
    parameters_m,
    predictor_latency,
    student_cfg,
    student_name,
    throughput,
    train_steps,
)

from clipzss_d2.entry import run_main  # noqa: E402
from clipzss_d2.predictor import OpenVocabularyPredictor  # noqa: E402

STUDENTS = [
    "configs/Base-CLIPZSS.yaml",
    "configs/students/segformer-b0.yaml",
    "configs/students/segformer-b1.yaml",
    "configs/students/swin-t.yaml",
]


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
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["throughput", "predictor", "train", "floor", "onnx"],
        help="sections not to run ('onnx': the floor section without the ONNX comparison)",
    )
    p.add_argument(
        "--floor-students",
        nargs="+",
        default=["configs/students/segformer-b0.yaml"],
        help="student configs of the floor section",
    )
    p.add_argument("--train-students", nargs="+", default=None, help="default: --students")
    p.add_argument("--train-batch", type=int, default=None, help="16 GPU, 2 CPU")
    p.add_argument("--train-crop", type=int, default=None, help="512 GPU, 256 CPU")
    p.add_argument("--train-iters", type=int, default=None, help="10 GPU, 3 CPU")
    p.add_argument("--train-warmup", type=int, default=None, help="3 GPU, 1 CPU; at least 1 is run")
    p.add_argument(
        "--teacher-sizes",
        type=int,
        nargs="+",
        default=[0],
        help="MODEL.CLIPZSS.TEACHER.INPUT_SIZE values of the full step (0 = the crop)",
    )
    p.add_argument(
        "--teacher-cache",
        action="store_true",
        help="also the full step with MODEL.CLIPZSS.TEACHER.CACHE: its hits and its misses",
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--compile-student", default="configs/students/segformer-b0.yaml")
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
    floored = [] if "floor" in args.skip else args.floor_students
    for config in dict.fromkeys([*args.students, *args.train_students, *compiled, *floored]):
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
            f"before the measurement (all loaded models), after glibc's malloc_trim. Idle process RSS: {vm_gib('VmRSS'):.2f} GiB."
        )
    command = "python tools/benchmark.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print("\n".join(header), flush=True)

    vocabulary = [f"class number {i}" for i in range(args.num_classes)]
    predictors = {}
    inferred = [] if {"throughput", "predictor"} <= set(args.skip) else args.students
    if inferred or floored:
        # one random text tower: the same text embeddings for all
        for config in dict.fromkeys([*inferred, *floored]):
            predictor = OpenVocabularyPredictor(student_cfg(args, config), vocabulary)
            if predictors:
                first = next(iter(predictors.values())).model
                predictor.model.text_classifier = first.text_classifier
            predictor.model.set_vocabulary(vocabulary)
            predictors[config] = predictor
            print(
                f"  {student_name(config)}: {parameters_m(predictor.model):.1f} M parameters",
                flush=True,
            )

    timed = {k: v for k, v in predictors.items() if k in inferred}
    tput = [] if "throughput" in args.skip else throughput(args, timed)
    pred = [] if "predictor" in args.skip else predictor_latency(args, timed)
    floor = inference_floor(args, predictors, floored, "onnx" not in args.skip) if floored else {}
    predictors.clear()
    gc.collect()
    train = [] if "train" in args.skip else train_steps(args)
    comp = compile_cost(args, vocabulary) if args.compile else []
    header.append(f"Load average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    header.append(f"Command: `{command}`")
    table = markdown(args, header, tput, pred, train, comp, floor_markdown(args, floor))
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
