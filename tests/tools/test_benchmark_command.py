"""tools/benchmark.py end to end on tiny settings: every section runs for several students, and
the ratios it prints agree with the times in its own table."""

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, TINY_CLIP

STUDENTS = ["configs/Base-CLIPZSS.yaml", "configs/students/segformer-b0.yaml"]


def table_rows(markdown: str, title: str) -> list[list[str]]:
    """The body rows (cells) of the table under the heading that contains `title`."""
    section = markdown.split(title, 1)[1].split("\n#", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]  # header, rule
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def ratio(cell: str) -> float:
    return float(re.search(r"([0-9.]+)x", cell).group(1))


@pytest.mark.slow
def test_benchmark_runs_every_section_for_every_student(tmp_path):
    out = tmp_path / "bench.md"
    command = [
        sys.executable, "tools/benchmark.py", "--device", "cpu", "--students", *STUDENTS,
        "--size", "64", "--batch-sizes", "1", "2", "--precisions", "fp32", "--iters", "2",
        "--warmup", "0", "--num-classes", "5", "--clip-model", TINY_CLIP,
        "--train-batch", "1", "--train-crop", "64", "--train-iters", "1", "--train-warmup", "0",
        "--teacher-sizes", "0", "32", "--teacher-cache", "--output", str(out), "--skip", "floor",
        "--opts", "MODEL.CLIPZSS.CLIP.MODEL_NAME", TINY_CLIP, "MODEL.CLIPZSS.EMBED_DIM", "32",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = out.read_text()
    assert "machine's floor" not in report
    names = ["DeepLabV3+ R-101 (current default)", "segformer-b0"]

    rows = table_rows(report, "Throughput")
    baseline = {r[1]: float(r[5]) for r in rows if r[0].startswith("CLIP-in-the-loop")}
    assert set(baseline) == {"1", "2"}
    for name in names:
        mine = [r for r in rows if r[0] == name]
        assert {r[1] for r in mine} == {"1", "2"}, name
        for r in mine:  # the printed ratio is images/s over the baseline's, same batch
            assert ratio(r[6]) == pytest.approx(float(r[5]) / baseline[r[1]], rel=0.05, abs=0.01)

    assert {r[0] for r in table_rows(report, "OpenVocabularyPredictor")} == set(names)

    steps = table_rows(report, "Training step")
    for name in names:
        mine = {r[1]: r for r in steps if r[0] == name}
        assert set(mine) == {
            "baseline (student only)", "full, teacher 64²", "full, teacher 32²",
            "full, teacher cache: hits (later epochs)", "full, teacher cache: misses (first epoch)",
        }  # fmt: skip
        base_ms = float(mine["baseline (student only)"][2])
        for r in mine.values():
            assert ratio(r[4]) == pytest.approx(float(r[2]) / base_ms, rel=0.05, abs=0.01)
    header = report.split("### Training step", 1)[1].split("\n|", 1)[1].split("\n")[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    cache_part = columns.index("teacher cache (teacher on misses + resampling)")
    teacher_part = columns.index("teacher forward")
    for r in steps:  # each full step times the teacher by one route
        if "cache" in r[1]:
            assert r[cache_part] and not r[teacher_part], r
        elif r[1].startswith("full"):
            assert r[teacher_part] and not r[cache_part], r


@pytest.mark.parametrize("arm", ["hits", "misses"])
def test_the_cache_arms_hit_and_miss_as_labelled(arm, monkeypatch):
    """tools/benchmarking/train.build_step's cache arms: "misses" runs the teacher on every
    image of every step, "hits" only on the warm-up's."""
    import argparse

    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    from benchmarking import train as bt

    args = argparse.Namespace(
        config_file=str(ROOT / "configs" / "students" / "segformer-b0.yaml"),
        device="cpu",
        opts=["MODEL.CLIPZSS.CLIP.MODEL_NAME", TINY_CLIP, "MODEL.CLIPZSS.EMBED_DIM", "32",
              "MODEL.CLIPZSS.PLM.WINDOW_SIZES", [2]],
    )  # fmt: skip
    step, _ = bt.build_step(args, "full", 2, 32, teacher_cache=arm)
    for _ in range(3):
        step()
    cache = step.model.teacher_cache
    assert (cache.misses, cache.hits) == ((2, 0) if arm == "misses" else (2, 4))


@pytest.mark.slow
def test_training_step_breakdown_command():
    """tools/benchmark_train.py alone: the full step, where its time goes, and the ratio."""
    command = [
        sys.executable, "tools/benchmark_train.py", "--device", "cpu", "--batch", "1",
        "--crop", "64", "--iters", "1", "--warmup", "0",
        "MODEL.CLIPZSS.CLIP.MODEL_NAME", TINY_CLIP, "MODEL.CLIPZSS.EMBED_DIM", "32",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = dict(re.findall(r"^\| (.+?) \| ([0-9.]+) \|$", proc.stdout, flags=re.M))
    base, full = rows["baseline step (student only)"], rows["full step (teacher + GLM + PLM)"]
    parts = [k for k in rows if k.startswith("  of which")]
    assert {"  of which teacher forward", "  of which K-Means + fusion"} <= set(parts)
    # Each printed row is rounded to 0.1 ms, so the parts and the total may each be 0.05 off.
    rounding = 0.05 * (len(parts) + 1) + 1e-6
    assert sum(float(rows[k]) for k in parts) == pytest.approx(float(full), abs=rounding)
    printed = float(re.search(r"full / baseline step time: ([0-9.]+)x", proc.stdout).group(1))
    assert printed == pytest.approx(float(full) / float(base), abs=0.01)


STAGES = ["decode", "resize", "normalise", "backbone", "head", "text classifier", "upsampling",
          "argmax", "post-processing"]  # fmt: skip


@pytest.mark.slow
def test_floor_section_prints_the_floor_the_multiples_and_the_breakdown(tmp_path):
    out = tmp_path / "floor.md"
    command = [
        sys.executable, "tools/benchmark.py", "--device", "cpu",
        "--students", "configs/students/segformer-b0.yaml",
        "--skip", "throughput", "predictor", "train", "--size", "64", "--batch-sizes", "1", "2",
        "--precisions", "fp32", "--iters", "1", "--warmup", "0", "--num-classes", "5",
        "--output", str(out), "--opts", "MODEL.CLIPZSS.CLIP.MODEL_NAME", TINY_CLIP,
        "MODEL.CLIPZSS.EMBED_DIM", "32", "INPUT.MIN_SIZE_TEST", "64",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = out.read_text()
    title = "Inference against the machine's floor"
    header = report.split(title, 1)[1].split("\n|")[1]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:6] == ["student", "batch", "GFLOP", "floor ms", "predictor ms", "**x floor**"]
    assert columns[6 : 6 + len(STAGES)] == STAGES
    rows = table_rows(report, title)
    assert [r[1] for r in rows] == ["1", "2"]
    for r in rows:
        assert r[0] == "segformer-b0" and r[-1] == "yes"  # staged labels = the predictor's
        floor_ms, predictor_ms = float(r[3]), float(r[4])
        assert ratio(r[5]) == pytest.approx(predictor_ms / floor_ms, rel=0.02)
        stages = [float(c) for c in r[6 : 6 + len(STAGES)]]
        assert sum(stages) == pytest.approx(float(r[6 + len(STAGES)]), abs=0.5)
    assert float(rows[1][2]) == pytest.approx(2 * float(rows[0][2]), rel=0.01)  # GFLOP x batch
    assert "1 multiply-add = 2 FLOPs" in report and "GFLOP/s" in report
    # the predictor against NCHW weights and one forward pass per batch, same run: times and
    # the share of pixels whose label differs (float-rounding ties at most)
    before = [line for line in report.splitlines() if "routes before 2026-12-08" in line]
    assert [("batch 1" in b, "batch 2" in b) for b in before] == [(True, False), (False, True)]
    found = [re.findall(r"(\w[\w ,]*?) (\d+) \(([\d.]+) %\)", b.split(": ", 1)[1]) for b in before]
    assert [[v[0] for v in variants] for variants in found] == [
        ["predictor", "NCHW weights"],
        [
            "predictor",
            "NCHW weights",
            "predictor, one forward pass",
            "NCHW weights, one forward pass",
        ],
    ]
    assert all(float(share) < 0.1 for variants in found for _, _, share in variants)

    onnx = table_rows(report, "Exported ONNX model")
    assert {(r[1], r[2]) for r in onnx} == {(b, g) for b in "12" for g in ("labels", "logits")}
    for r in onnx:
        assert float(r[6]) < 0.1  # % of pixels whose label differs from PyTorch's
        assert ratio(r[5]) == pytest.approx(float(r[3]) / float(r[4]), rel=0.05, abs=0.01)
