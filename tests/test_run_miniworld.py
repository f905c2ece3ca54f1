"""The README's main job (tools/run_miniworld.py), shortened: a small world, a teacher trained for
two steps, a few student iterations. Every stage runs as in `make main`: generation, teacher,
training with the inductive mapper, the generalized zero-shot evaluator, the demo script."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run_main_job(tmp_path, *extra):
    cmd = [
        sys.executable, str(ROOT / "tools" / "run_miniworld.py"),
        "--output", str(tmp_path / "out"),
        "--world-root", str(tmp_path / "world"),
        "--num-train", "24", "--num-val", "6",
        "--teacher-path", str(tmp_path / "teacher" / "clip.pt"),
        "--teacher-steps", "2",
        "--iters", "3",
        "--demo-images", "2",
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_short_main_job_runs_every_stage(tmp_path):
    overrides = ["SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0"]
    proc = run_main_job(tmp_path, *overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    out = tmp_path / "out"
    # the world was written where asked, in the real-dataset layout
    assert len(list((tmp_path / "world" / "images" / "train").glob("*.jpg"))) == 24
    assert len(list((tmp_path / "world" / "annotations_detectron2" / "val").glob("*.png"))) == 6
    # the teacher was trained and cached with its zero-shot figures
    sidecar = json.loads((tmp_path / "teacher" / "clip.json").read_text())
    assert 0.0 <= sidecar["eval"]["thing_zero_shot_acc"] <= 1.0
    # the student was trained (full method: every loss logged) and evaluated
    run_dir = out / "full" / "seed0"
    assert (run_dir / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (run_dir / "metrics.json").read_text().splitlines()]
    logged = set().union(*metrics)
    assert {"loss_ce", "loss_glm", "loss_bce", "loss_focal", "loss_dice"} <= logged
    result = json.loads((out / "results.json").read_text())["rows"][0]
    for key in ("mIoU(seen)", "mIoU(unseen)", "hIoU"):
        assert 0.0 <= result[key] <= 100.0 and not math.isnan(result[key]), result
    s, u = result["mIoU(seen)"], result["mIoU(unseen)"]
    assert math.isclose(result["hIoU"], 2 * s * u / (s + u) if s + u else 0.0, abs_tol=1e-6)
    table = (out / "results.md").read_text()
    assert "| full |" in table and "hIoU" in table
    # the demo wrote overlays for the validation images, with the unseen names in its vocabulary
    assert len(list((out / "demo").glob("*.png"))) >= 2
    assert "star" in proc.stdout and "stage times" in proc.stdout

    # --reuse keeps a finished run with the same config (an interrupted ablation resumes) ...
    weights = run_dir / "model_final.pth"
    before = weights.stat().st_mtime_ns
    again = run_main_job(tmp_path, "--reuse", "--no-demo", *overrides)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "reusing the finished run" in again.stdout
    assert weights.stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["rows"][0]["hIoU"] == result["hIoU"]
    # ... but never one trained with another config
    changed = run_main_job(tmp_path, "--reuse", "--no-demo", *overrides, "SOLVER.BASE_LR", "0.0123")
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "reusing the finished run" not in changed.stdout
    assert weights.stat().st_mtime_ns != before


def test_main_job_rejects_a_world_made_with_other_settings(tmp_path):
    from clipzss_d2.miniworld.generate import generate_world

    generate_world(str(tmp_path / "world"), num_train=3, num_val=2, workers=1)
    proc = run_main_job(tmp_path, "--no-demo")
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
