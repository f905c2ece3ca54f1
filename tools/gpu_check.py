#!/usr/bin/env python
"""The checks only a GPU can make, in one command and one Markdown report.

The CPU test suite emulates AMP with CPU autocast; this runs what a GPU user runs:

1. numerics: tests/modeling/training/test_autocast.py on the GPU (CLIPZSS_TEST_DEVICE=cuda: CUDA fp16/bf16
   autocast against fp32 for PLM on planted scenes and a real VOC sample, the teacher in its
   shipped fp16 on padded batches, the synthesizer, text embeddings, and the training step of
   each shipped config, slow ones included);
2. training: configs/voc.yaml as shipped (SyncBN, fp16 AMP, R-101 student, ViT-B/16 teacher;
   random weights, nothing can be downloaded) for --iters iterations on the real VOC samples of
   ../shared/data, with the pseudo-label diagnostics on: losses, logit_scale, the GradScaler's
   loss scale, the pseudo-label share, no NaN, peak memory;
3. speed: tools/benchmark.py (R-101 and SegFormer-B0 students against CLIP-in-the-loop, batch
   1 and 16, fp32 / bf16 / fp16, peak memory).

    python tools/gpu_check.py --output gpu-check.md      # one GPU: about 8 minutes
    python tools/gpu_check.py --cpu --output check.md    # the same route, tiny, on the CPU

``--cpu`` runs every section at tiny sizes (non-slow numerics, a tiny student and CLIP, a few
iterations) so that the command, its parsing and its report are tested in CI. Exit status: 0
when every section passed, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# sections run in subprocesses, each with its own time limit (the whole check fits 8 minutes
# on one H100)
LIMITS_S = {"numerics": 200, "training": 150, "speed": 240}
STUDENTS = ["configs/Base-CLIPZSS.yaml", "configs/students/segformer-b0.yaml"]
TINY_CLIP = "ClipZSS-Tiny-Test"


@dataclass
class Section:
    title: str
    passed: bool
    seconds: float
    lines: list[str] = field(default_factory=list)


# -- running ---------------------------------------------------------------------------------------
def run(command: list[str], limit_s: float, env: dict | None = None) -> tuple[int, str, float]:
    """Return code (124 when past the limit), stdout + stderr, seconds."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
            text=True, timeout=limit_s,
        )  # fmt: skip
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = 124
        output = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(
            errors="replace"
        )
    return code, output, time.perf_counter() - start


def tail(text: str, lines: int = 15) -> list[str]:
    return ["```", *text.strip().splitlines()[-lines:], "```"]


# -- 1. numerics -----------------------------------------------------------------------------------
def junit_cases(xml_text: str) -> list[dict]:
    """One dict per test case of a pytest JUnit XML report: name, outcome, seconds, message."""
    cases = []
    for case in ET.fromstring(xml_text).iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                message = (node.get("message") or "").strip().splitlines()[0:1]
                message = message[0][:160] if message else ""
                break
        cases.append(
            {"name": case.get("name", "?"), "outcome": outcome,
             "seconds": float(case.get("time", 0)), "message": message}
        )  # fmt: skip
    return cases


def numerics(device: str, cpu_mode: bool, workdir: Path) -> Section:
    report = workdir / "numerics.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/modeling/training/test_autocast.py", f"--junitxml={report}", "-m",
               "not slow" if cpu_mode else "slow or not slow"]  # fmt: skip
    code, output, seconds = run(command, LIMITS_S["numerics"], {"CLIPZSS_TEST_DEVICE": device})
    lines = [f"`CLIPZSS_TEST_DEVICE={device} {shlex.join(command[1:])}`", ""]
    cases = junit_cases(report.read_text()) if report.exists() else []
    if cases:
        lines += ["| test | outcome | s | message |", "|---|---|---:|---|"]
        lines += [
            f"| {c['name']} | {c['outcome']} | {c['seconds']:.1f} | {c['message']} |" for c in cases
        ]
    passed = code == 0 and bool(cases) and all(c["outcome"] == "passed" for c in cases)
    if not passed:
        lines += ["", f"pytest exited with {code}:", *tail(output)]
    return Section(
        "Numerics under autocast (tests/modeling/training/test_autocast.py)", passed, seconds, lines
    )


# -- 2. training -----------------------------------------------------------------------------------
def read_metrics(path: Path) -> list[dict]:
    """detectron2's metrics.json: one JSON object per line (NaN written as NaN)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def training_figures(rows: list[dict]) -> tuple[list[str], list[str]]:
    """Table lines (first / last logged value of each figure) and the problems found."""
    rows = [r for r in rows if "iteration" in r]
    problems = []
    if not rows:
        return [], ["metrics.json has no iteration"]
    keys = sorted({k for r in rows for k in r} - {"iteration"})
    shown = [k for k in keys if k.startswith(("loss", "total_loss", "logit_scale", "[metric]",
                                               "pseudo/", "glm/"))]  # fmt: skip
    lines = ["| figure | first | last | min | max |", "|---|---:|---:|---:|---:|"]
    for key in shown:
        values = [float(r[key]) for r in rows if key in r]
        if not all(math.isfinite(v) for v in values):
            problems.append(f"{key} is not finite")
        finite = [v for v in values if math.isfinite(v)] or [float("nan")]
        lines.append(
            f"| {key} | {values[0]:.4g} | {values[-1]:.4g} | {min(finite):.4g} | "
            f"{max(finite):.4g} |"
        )
    for need in ("total_loss", "logit_scale"):
        if need not in keys:
            problems.append(f"{need} was not logged")
    shares = ("pseudo/unseen_share", "pseudo/void_share")
    if not any(r.get(k, 0) > 0 for r in rows for k in shares):
        problems.append("no unlabelled pixel got a pseudo label (or the diagnostics are off)")
    return lines, problems


def prepare_voc_samples(shared: Path, root: Path) -> None:
    from clipzss_d2.data.prepare import prepare_voc
    from tests.data_samples import stage_voc

    lists = stage_voc(shared, root)
    summaries = prepare_voc(str(root), aug_list=lists["aug_list"], val_list=lists["val_list"],
                            workers=1, log=lambda *a: None)  # fmt: skip
    if not all(s.ok for s in summaries):
        raise RuntimeError("; ".join(s.report() for s in summaries))


def training(args, workdir: Path) -> Section:
    title = f"Training: configs/voc.yaml, {args.iters} iterations on the real VOC samples"
    datasets, output = workdir / "datasets", workdir / "train"
    start = time.perf_counter()
    try:
        prepare_voc_samples(Path(args.shared_data), datasets)
    except Exception as e:  # no samples, a broken prepare: the section fails, the others run
        return Section(title, False, time.perf_counter() - start, [f"prepare failed: {e}"])
    opts = ["OUTPUT_DIR", str(output), "SOLVER.MAX_ITER", str(args.iters),
            "SOLVER.CHECKPOINT_PERIOD", "1000000", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
            "MODEL.WEIGHTS", "", "MODEL.CLIPZSS.CLIP.PRETRAINED", "none",
            "MODEL.CLIPZSS.TEXT.CACHE_DIR", str(workdir / "text_cache"),
            "MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", "True"]  # fmt: skip
    if args.cpu:
        from tests.helpers import TINY_MODEL_OPTS

        opts = [str(o) for o in TINY_MODEL_OPTS] + opts + [
            "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
            "INPUT.CROP.SIZE", "(64, 64)", "INPUT.SIZE_DIVISIBILITY", "64",
            "MODEL.CLIPZSS.PLM.SYNTH_HEADS", "2", "SOLVER.WARMUP_ITERS", "1",
        ]  # fmt: skip
    elif args.train_batch:
        opts += ["SOLVER.IMS_PER_BATCH", str(args.train_batch)]
    command = [sys.executable, "train_net.py", "--config-file", "configs/voc.yaml", *opts]
    env = {"DETECTRON2_DATASETS": str(datasets), "HF_HUB_OFFLINE": "1"}
    code, log, _ = run(command, LIMITS_S["training"], env)
    lines = [f"`{shlex.join(command[1:4])} ...` (random weights; AMP as shipped on a GPU)", ""]
    table, problems = training_figures(read_metrics(output / "metrics.json"))
    lines += table
    memory = re.findall(r"max_mem: (\d+)M", log)
    if memory:
        lines += ["", f"Peak GPU memory (detectron2's max_mem): {max(map(int, memory))} MiB"]
    if re.search(r"SOLVER.AMP.ENABLED is ignored on the CPU", log):
        lines += ["", "AMP: off (a CPU run trains in fp32; the numerics section emulates AMP)"]
    summary = output / "pseudo_label_diagnostics.json"
    if summary.exists():
        from clipzss_d2.diagnostics.pseudo_labels import format_summary

        data = json.loads(summary.read_text())
        lines += ["", f"Pseudo labels over the run: unseen share {data['unseen_share']}, "
                  f"purity {data['all_purity']} (a random teacher: what counts is that regions exist)",
                  "", *format_summary(data).splitlines()]  # fmt: skip
    else:
        problems.append("no pseudo_label_diagnostics.json")
    if code != 0:
        problems.append(f"train_net.py exited with {code}")
    if problems:
        lines += ["", "Problems: " + "; ".join(problems), *tail(log)]
    return Section(title, not problems, time.perf_counter() - start, lines)


# -- 3. speed --------------------------------------------------------------------------------------
def speed(args, workdir: Path) -> Section:
    out = workdir / "benchmark.md"
    command = [sys.executable, "tools/benchmark.py", "--device", args.device,
               "--students", *STUDENTS, "--output", str(out)]  # fmt: skip
    if args.cpu:
        command += ["--size", "64", "--batch-sizes", "1", "--precisions", "fp32", "--iters", "1",
                    "--warmup", "0", "--num-classes", "5", "--clip-model", TINY_CLIP,
                    "--train-batch", "1", "--train-crop", "64", "--train-iters", "1",
                    "--train-warmup", "0", "--teacher-sizes", "0",
                    "--opts", "MODEL.CLIPZSS.CLIP.MODEL_NAME", TINY_CLIP,
                    "MODEL.CLIPZSS.EMBED_DIM", "32"]  # fmt: skip
    else:
        command += ["--batch-sizes", "1", "16", "--precisions", "fp32", "bf16", "fp16"]
    code, output, seconds = run(command, LIMITS_S["speed"])
    lines = [f"`{shlex.join(command[1:])}`", ""]
    body = out.read_text() if out.exists() else ""
    lines += [f"##{ln}" if ln.startswith("#") else ln for ln in body.splitlines()]  # nested
    passed = code == 0 and "|" in body
    if not passed:
        lines += ["", f"tools/benchmark.py exited with {code}:", *tail(output)]
    return Section("Speed and memory (tools/benchmark.py)", passed, seconds, lines)


# -- report ----------------------------------------------------------------------------------------
def environment(device: str) -> list[str]:
    import torch

    lines = [f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             f"- python {platform.python_version()}, torch {torch.__version__} "
             f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"]  # fmt: skip
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"- device: {props.name}, {props.total_memory / 2**30:.0f} GiB")
    else:
        lines.append(f"- device: CPU ({platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} cores); GPU sections at tiny sizes")  # fmt: skip
    return lines


def markdown(sections: list[Section], header: list[str]) -> str:
    lines = ["# GPU check", "", *header, "", "| section | result | s |", "|---|---|---:|"]
    lines += [f"| {s.title} | {'PASS' if s.passed else 'FAIL'} | {s.seconds:.0f} |"
              for s in sections]  # fmt: skip
    for s in sections:
        lines += ["", f"## {s.title}", "", *s.lines]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--output", default="", help="Markdown report (also printed)")
    p.add_argument("--sections", nargs="+", default=list(LIMITS_S), choices=list(LIMITS_S))
    p.add_argument("--iters", type=int, default=None, help="training iterations (200; CPU 3)")
    p.add_argument("--train-batch", type=int, default=0, help="default: the config's")
    p.add_argument(
        "--shared-data",
        default=os.environ.get("CLIPZSS_SHARED_DATA", str(ROOT.parent / "shared" / "data")),
    )
    args = p.parse_args(argv)
    args.device = "cpu" if args.cpu else "cuda"
    args.iters = args.iters or (3 if args.cpu else 200)
    if args.iters < 1:
        p.error("--iters must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            from clipzss_d2.utils.cuda_check import why_no_gpu

            print(f"gpu_check: no CUDA device ({why_no_gpu()}); use --cpu for the tiny CPU "
                  f"run.", file=sys.stderr)  # fmt: skip
            return 2
    sections = []
    with tempfile.TemporaryDirectory(prefix="clipzss-gpu-check-") as tmp:
        workdir = Path(tmp)
        if "numerics" in args.sections:
            sections.append(numerics(args.device, args.cpu, workdir))
        if "training" in args.sections:
            sections.append(training(args, workdir))
        if "speed" in args.sections:
            sections.append(speed(args, workdir))
    command = "python tools/gpu_check.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = markdown(sections, [f"`{command.strip()}`", "", *environment(args.device)])
    print(report)
    if args.output:
        from clipzss_d2.utils.io import atomic_write_path

        with atomic_write_path(args.output) as tmp_path:
            Path(tmp_path).write_text(report, encoding="utf-8")
    return 0 if all(s.passed for s in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
