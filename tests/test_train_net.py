"""train_net.py end to end on the real VOC samples: train, checkpoint, resume, evaluate, DDP.

Runs as subprocesses (as users run it) with a tiny student and a tiny random CLIP teacher, so
the numbers are meaningless but every part of the pipeline is real: the inductive mapper, all
four losses, detectron2's trainer and checkpointer, the generalized zero-shot evaluator.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.data_samples import stage_voc
from tests.helpers import ROOT, TINY_MODEL_OPTS

LOSSES = {"loss_ce", "loss_focal", "loss_dice", "loss_glm", "loss_bce"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def voc_root(shared_data, tmp_path_factory):
    from clipzss_d2.data.prepare import prepare_voc

    root = tmp_path_factory.mktemp("datasets")
    lists = stage_voc(shared_data, root)
    summaries = prepare_voc(
        str(root), aug_list=lists["aug_list"], val_list=lists["val_list"], log=lambda *a: None
    )
    assert all(s.ok for s in summaries)
    return root


def without_norm_overrides(opts):
    """TINY_MODEL_OPTS less its NORM keys: the config's own normalisation layers (SyncBN)."""
    pairs = list(zip(opts[::2], opts[1::2]))
    return [str(x) for key, value in pairs if not key.endswith(".NORM") for x in (key, value)]


def run_train_net(voc_root, output_dir, *extra, num_gpus=None, max_iter=4, shipped_norm=False):
    tiny = without_norm_overrides(TINY_MODEL_OPTS) if shipped_norm else TINY_MODEL_OPTS
    opts = [str(o) for o in tiny] + [
        "OUTPUT_DIR", str(output_dir),
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.IMS_PER_BATCH", "2",
        "DATALOADER.NUM_WORKERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.CROP.SIZE", "(64, 64)",
        "INPUT.SIZE_DIVISIBILITY", "64",
        "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96",
        "MODEL.CLIPZSS.PLM.SYNTH_HEADS", "2",
        "TEST.EVAL_PERIOD", "0",
    ]  # fmt: skip
    args = [
        sys.executable,
        str(ROOT / "train_net.py"),
        "--config-file",
        str(ROOT / "configs/voc.yaml"),
    ]
    if num_gpus:
        args += ["--num-gpus", str(num_gpus)]
    args += list(extra[0]) if extra else []
    env = dict(os.environ, DETECTRON2_DATASETS=str(voc_root), OMP_NUM_THREADS="1")
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched (timm's ImageNet weights come from there)
    proc = subprocess.run(
        args + opts + list(extra[1:]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def metrics(output_dir):
    lines = (Path(output_dir) / "metrics.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_train_checkpoint_resume_and_evaluate(voc_root, tmp_path):
    out = tmp_path / "run"
    log = run_train_net(voc_root, out)

    # every loss of the full method is logged and finite
    last = [m for m in metrics(out) if "loss_ce" in m][-1]
    assert LOSSES <= set(last) and all(math.isfinite(last[k]) for k in LOSSES), last
    assert last["iteration"] == 3
    # the final evaluation reports the generalized zero-shot metrics
    for key in ("mIoU(seen)", "mIoU(unseen)", "hIoU", "pAcc"):
        assert key in log, key

    # checkpoints hold the student (+ synthesizer), never the CLIP teacher
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    keys = ckpt["model"].keys()
    assert any(k.startswith("backbone.") for k in keys)
    assert not any("teacher" in k or "visual" in k or "transformer.resblocks" in k for k in keys)
    assert ckpt["iteration"] == 3

    # --resume continues from the last checkpoint instead of starting again
    log = run_train_net(voc_root, out, ["--resume"], max_iter=6)
    iters = [m["iteration"] for m in metrics(out) if "loss_ce" in m]
    assert iters[-1] == 5
    assert "Starting training from iteration 4" in log
    assert (
        torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"]
        == 5
    )

    # --eval-only with MODEL.WEIGHTS, as a user evaluates a downloaded model
    log = run_train_net(
        voc_root, tmp_path / "eval", ["--eval-only"], "MODEL.WEIGHTS", str(out / "model_final.pth")
    )
    assert "mIoU(unseen)" in log and "hIoU" in log


def test_two_process_cpu_training(voc_root, tmp_path):
    """With the config's own SyncBN (no CPU kernel): its layers become detectron2's
    NaiveSyncBatchNorm over gloo, said in the log, instead of a crash at the first forward."""
    out = tmp_path / "ddp"
    log = run_train_net(voc_root, out, num_gpus=2, max_iter=3, shipped_norm=True)
    assert "NORM: SyncBN" in (out / "config.yaml").read_text()
    assert "synchronise through detectron2's NaiveSyncBatchNorm" in log
    last = [m for m in metrics(out) if "loss_ce" in m][-1]
    assert LOSSES <= set(last) and all(math.isfinite(last[k]) for k in LOSSES), last
    assert (out / "model_final.pth").exists()


def test_light_student_dataset_config_trains_and_evaluates(voc_root, tmp_path):
    """configs/students/voc-segformer-b0.yaml names timm's ImageNet weights for training; a
    trained student is evaluated from MODEL.WEIGHTS without fetching them."""
    config = ["--config-file", str(ROOT / "configs/students/voc-segformer-b0.yaml")]
    out = tmp_path / "b0"
    log = run_train_net(voc_root, out, config, "MODEL.TIMM.PRETRAINED", "", max_iter=2)
    assert "build_clipzss_timm_backbone" in (out / "config.yaml").read_text() and "hIoU" in log
    log = run_train_net(
        voc_root, tmp_path / "eval", [*config, "--eval-only"],
        "MODEL.WEIGHTS", str(out / "model_final.pth"),
    )  # fmt: skip
    assert "mIoU(unseen)" in log and "hIoU" in log
