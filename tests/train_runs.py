"""train_net.py runs on the staged VOC samples with a tiny model, for the reproducibility tests
(and for measuring them by hand: python -m tests.train_runs OUT_DIR [KEY VALUE ...])."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT, TINY_MODEL_OPTS

TINY_TRAIN_OPTS = [str(o) for o in TINY_MODEL_OPTS] + [
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.IMS_PER_BATCH", "4",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64, 80)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.CROP.SIZE", "(64, 64)",
    "INPUT.SIZE_DIVISIBILITY", "64",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96",
    "INPUT.COLOR_AUG_SSD", "True",
    "MODEL.CLIPZSS.PLM.SYNTH_HEADS", "2",
    "MODEL.CLIPZSS.GLM.BANK_SIZE", "16",
    "TEST.EVAL_PERIOD", "0",
]  # fmt: skip


def train_net_command(output_dir, *opts, num_gpus: int | None = None) -> list[str]:
    cmd = [
        sys.executable,
        str(ROOT / "train_net.py"),
        "--config-file",
        str(ROOT / "configs/voc.yaml"),
    ]
    if num_gpus:
        cmd += ["--num-gpus", str(num_gpus)]
    flags = [o for o in opts if o.startswith("--")]
    rest = [o for o in opts if not o.startswith("--")]
    return cmd + flags + TINY_TRAIN_OPTS + ["OUTPUT_DIR", str(output_dir)] + rest


def train_env(voc_root, threads: int = 1) -> dict:
    return dict(os.environ, DETECTRON2_DATASETS=str(voc_root), OMP_NUM_THREADS=str(threads))


def run(voc_root, output_dir, *opts, num_gpus=None, threads=1) -> str:
    proc = subprocess.run(
        train_net_command(output_dir, *opts, num_gpus=num_gpus),
        cwd=ROOT, env=train_env(voc_root, threads), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


if __name__ == "__main__":
    out = run(os.environ["DETECTRON2_DATASETS"], sys.argv[1], *sys.argv[2:])
    print(out[-3000:])
