"""tools/gpu_check.py: its CPU mode end to end (so the GPU command cannot rot between GPU
sessions), and its parsing of pytest's JUnit XML and detectron2's metrics.json on hand-made
inputs, failures included."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import gpu_check  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.modeling.training.test_autocast" name="test_a[fp16]" time="1.25"/>
<testcase classname="tests.modeling.training.test_autocast" name="test_b" time="0.5">
  <failure message="AssertionError: voc.yaml fp16 whole step: loss_ce 3.2 vs fp32 3.0&#10;more">trace</failure></testcase>
<testcase classname="tests.modeling.training.test_autocast" name="test_c" time="0">
  <skipped message="no GPU"/></testcase>
</testsuite></testsuites>"""


def test_junit_report_is_read_case_by_case():
    cases = gpu_check.junit_cases(JUNIT)
    assert [(c["name"], c["outcome"]) for c in cases] == [
        ("test_a[fp16]", "passed"), ("test_b", "FAILED"), ("test_c", "skipped")
    ]  # fmt: skip
    assert cases[0]["seconds"] == 1.25
    assert (
        cases[1]["message"] == "AssertionError: voc.yaml fp16 whole step: loss_ce 3.2 vs fp32 3.0"
    )


def metrics_file(tmp_path, rows):
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN as NaN
    return gpu_check.read_metrics(path)


def test_training_figures_flag_nan_and_missing_pseudo_labels(tmp_path):
    good = {"iteration": 19, "total_loss": 3.0, "loss_ce": 2.0, "logit_scale": 14.3,
            "[metric]grad_scaler": 65536.0, "pseudo/unseen_share": 0.1, "pseudo/void_share": 0.3}  # fmt: skip
    lines, problems = gpu_check.training_figures(metrics_file(tmp_path, [good]))
    assert problems == []
    assert "| [metric]grad_scaler | 6.554e+04 | 6.554e+04 | 6.554e+04 | 6.554e+04 |" in lines
    bad = {**good, "iteration": 39, "loss_ce": float("nan"), "pseudo/unseen_share": 0.0}
    _, problems = gpu_check.training_figures(metrics_file(tmp_path, [good, bad]))
    assert problems == ["loss_ce is not finite"]
    none = {**good, "pseudo/unseen_share": 0.0, "pseudo/void_share": 0.0}
    _, problems = gpu_check.training_figures(metrics_file(tmp_path, [none]))
    assert problems == ["no unlabelled pixel got a pseudo label (or the diagnostics are off)"]
    _, problems = gpu_check.training_figures(metrics_file(tmp_path, [{"eval": 1}]))
    assert problems == ["metrics.json has no iteration"]


def test_the_report_says_which_section_failed():
    sections = [gpu_check.Section("Numerics", True, 12.0, ["table"]),
                gpu_check.Section("Training", False, 3.0, ["Problems: x"])]  # fmt: skip
    report = gpu_check.markdown(sections, ["header"])
    assert "| Numerics | PASS | 12 |" in report and "| Training | FAIL | 3 |" in report
    assert report.index("## Numerics") < report.index("## Training")


def test_without_a_gpu_it_says_why_in_one_line(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("gpu_check: no CUDA device (") and "--cpu" in err


@pytest.mark.slow
def test_cpu_mode_runs_every_section(tmp_path, shared_data):
    out = tmp_path / "check.md"
    proc = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--cpu", "--output", str(out),
         "--shared-data", str(shared_data)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    report = out.read_text()
    assert report.endswith("|\n") and report.strip() == proc.stdout.strip()  # printed too
    for title in ("Numerics under autocast", "Training: configs/voc.yaml, 3 iterations",
                  "Speed and memory"):  # fmt: skip
        assert f"| {title}" in report and f"## {title}" in report
    assert "FAIL" not in report
    assert "| test_pseudo_labels_of_a_real_voc_sample_ignore_autocast | passed |" in report
    assert "| logit_scale |" in report and "| pseudo/void_share |" in report
    assert "#### Throughput at 64², 5 classes" in report
