"""tools/eval_open_vocab.py: one trained model, every open-vocabulary set, one table.

A tiny random model (numbers meaningless) on the real samples of ADE20K, Context-459/-59 and
VOC, prepared by the prepare functions; what is checked is the route: each set evaluated over
its own classes and images, the ground truth read from the right files (pixel counts computed
here from the original annotations), one table and one JSON, and a clear stop when a set is
missing.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from clipzss_d2 import get_clipzss_cfg
from tests.data_samples import (
    ADE_VAL,
    CONTEXT_VAL,
    context_label_maps,
    prepare_all_samples,
    read_png,
)
from tests.helpers import ROOT, TINY_MODEL_OPTS, RunsACommand

CONFIG = ROOT / "configs/open_vocab/coco_stuff171.yaml"
TEST_OPTS = [
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "96",
    "DATALOADER.NUM_WORKERS",
    "0",
]


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    prepare_all_samples(shared_data, root)
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(TINY_MODEL_OPTS)
    weights = tmp_path_factory.mktemp("model")
    DetectionCheckpointer(build_model(cfg), save_dir=str(weights)).save("tiny")
    return root, weights / "tiny.pth"


def run_tool(root, *args):
    # TINY_MODEL_OPTS sets MODEL.WEIGHTS ""; the callers pass the checkpoint instead
    opts = [str(o) for o in TINY_MODEL_OPTS] + TEST_OPTS
    i = opts.index("MODEL.WEIGHTS")
    del opts[i : i + 2]
    return subprocess.run(
        [sys.executable, "tools/eval_open_vocab.py", "--config-file", str(CONFIG), *args, *opts],
        cwd=ROOT,
        env=dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_one_command_evaluates_every_set(prepared, shared_data, tmp_path):
    root, weights = prepared
    proc = run_tool(root, "--output", str(tmp_path), "MODEL.WEIGHTS", str(weights))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    table = proc.stdout[proc.stdout.index("Open-vocabulary evaluation of") :]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if "_ov_val" in line}
    expected = {"ade150_ov_val": (150, 3), "pcontext459_ov_val": (459, 2),
                "pcontext59_ov_val": (59, 2), "voc20_ov_val": (20, 17)}  # fmt: skip
    assert list(rows) == list(expected)
    results = json.loads((tmp_path / "open_vocab_results.json").read_text())["results"]
    for name, (classes, images) in expected.items():
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[1:3] == [str(classes), str(images)]
        assert results[name]["classes"] == classes and results[name]["images"] == images
        assert cells[3] == f"{results[name]['mIoU']:.2f}"
        assert 0 <= results[name]["mIoU"] <= 100 and 0 <= results[name]["pAcc"] <= 100

    # ADE20K: the evaluator counted exactly the labelled pixels of the original annotations
    ade = shared_data / "ade20k/ADEChallengeData2016/annotations/validation"
    counts = np.zeros(151, dtype=np.int64)
    for i in ADE_VAL:
        counts += np.bincount(read_png(ade / f"{i}.png").ravel(), minlength=151)
    per_class = json.loads((tmp_path / "ade150_ov_val/gzss_per_class_iou.json").read_text())
    assert [c["gt_pixels"] for c in per_class["classes"]] == counts[1:].tolist()
    # Context-459: the 459-label ids of the staged LabelMaps, unlabelled (0) ignored
    counts = np.zeros(460, dtype=np.int64)
    for label in context_label_maps(shared_data, CONTEXT_VAL).values():
        counts += np.bincount(label.ravel().astype(np.int64), minlength=460)
    per_class = json.loads((tmp_path / "pcontext459_ov_val/gzss_per_class_iou.json").read_text())
    assert [c["gt_pixels"] for c in per_class["classes"]] == counts[1:].tolist()


def test_missing_set_stops_before_inference(prepared, tmp_path):
    _, weights = prepared
    proc = run_tool(
        tmp_path / "empty", "--datasets", "ade150_ov_val,nope", "MODEL.WEIGHTS", str(weights)
    )
    assert proc.returncode == 2
    assert "python datasets/prepare_ade20k.py" in proc.stderr
    assert "nope is not a registered dataset" in proc.stderr and "Traceback" not in proc.stderr


def test_same_route_and_numbers_as_train_net_eval_only(prepared, tmp_path):
    """The tool evaluates as `train_net.py --eval-only` does: the same per-class figures."""
    root, weights = prepared
    tool = run_tool(root, "--datasets", "voc20_ov_val", "--output", str(tmp_path / "tool"),
                    "MODEL.WEIGHTS", str(weights))  # fmt: skip
    assert tool.returncode == 0, tool.stderr[-3000:]
    opts = [str(o) for o in TINY_MODEL_OPTS] + TEST_OPTS
    i = opts.index("MODEL.WEIGHTS")
    opts[i + 1] = str(weights)
    net = subprocess.run(
        [sys.executable, "train_net.py", "--eval-only", "--config-file", str(CONFIG), *opts,
         "DATASETS.TEST", "('voc20_ov_val',)", "OUTPUT_DIR", str(tmp_path / "net")],
        cwd=ROOT, env=dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert net.returncode == 0, net.stderr[-3000:]
    ours = json.loads((tmp_path / "tool/voc20_ov_val/gzss_per_class_iou.json").read_text())
    theirs = json.loads(
        (tmp_path / "net/inference/voc20_ov_val/gzss_per_class_iou.json").read_text()
    )
    assert ours == theirs


def test_a_hostile_weights_file_is_refused(prepared, tmp_path):
    import pickle

    root, _ = prepared
    marker, weights = tmp_path / "ran", tmp_path / "model.pkl"

    weights.write_bytes(pickle.dumps({"model": {"w": RunsACommand(marker)}}))
    proc = run_tool(root, "--datasets", "voc20_ov_val", "--output", str(tmp_path / "out"),
                    "MODEL.WEIGHTS", str(weights))  # fmt: skip
    assert proc.returncode == 2 and not marker.exists()
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
