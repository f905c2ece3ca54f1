"""The README's main job (tools/run_miniworld.py), shortened: a small world, a teacher trained for
two steps, a few student iterations. Every stage runs as in `make main`: generation, teacher,
training with the inductive mapper, the generalized zero-shot evaluator on the test split, the
pseudo-label diagnostics, the demo script. The --tune search and the tables are checked without
training (fake runs), in-process."""

import json
import math
import subprocess
import sys

import pytest
import yaml

from clipzss_d2.evaluation.gzss_evaluation import PER_CLASS_FILE
from clipzss_d2.miniworld import world
from tests.helpers import ROOT, load_script


def run_main_job(tmp_path, *extra):
    cmd = [
        sys.executable, str(ROOT / "tools" / "run_miniworld.py"),
        "--output", str(tmp_path / "out"),
        "--world-root", str(tmp_path / "world"),
        "--num-train", "24", "--num-tune", "2", "--num-test", "6",
        "--teacher-path", str(tmp_path / "teacher" / "clip.pt"),
        "--teacher-steps", "2",
        "--iters", "3",
        "--demo-images", "2",
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_short_main_job_runs_every_stage(tmp_path):
    # an evaluation after 2 of the 3 iterations as well (the schedule's curve)
    overrides = [
        "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "2",
    ]  # fmt: skip
    # the teacher's own setting, given again below (a teacher of another config at that path
    # would be refused, not written over)
    teacher = ["--teacher-patch-dropout", "0.25"]
    proc = run_main_job(tmp_path, *teacher, *overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    out = tmp_path / "out"
    # the world was written where asked, in the real-dataset layout
    assert len(list((tmp_path / "world" / "images" / "train").glob("*.jpg"))) == 24
    labels = tmp_path / "world" / "annotations_detectron2"
    assert len(list((labels / "tune").glob("*.png"))) == 2
    assert len(list((labels / "test").glob("*.png"))) == 6
    # the teacher was trained and cached with its zero-shot figures
    sidecar = json.loads((tmp_path / "teacher" / "clip.json").read_text())
    assert 0.0 <= sidecar["eval"]["thing_zero_shot_acc"] <= 1.0
    assert (sidecar["config"]["steps"], sidecar["config"]["patch_dropout"]) == (2, 0.25)
    # the student was trained (full method: every loss logged) and evaluated
    run_dir = out / "full" / "seed0"
    assert (run_dir / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (run_dir / "metrics.json").read_text().splitlines()]
    logged = set().union(*metrics)
    assert {"loss_ce", "loss_glm", "loss_bce", "loss_focal", "loss_dice"} <= logged
    assert {"pseudo/unseen_share", "pseudo/void_share"} <= logged  # the probe's batch figures
    result = json.loads((out / "results.json").read_text())["rows"][0]
    for key in ("mIoU(seen)", "mIoU(unseen)", "hIoU"):
        assert 0.0 <= result[key] <= 100.0 and not math.isnan(result[key]), result
    assert 0.0 <= result["seen_as_unseen"] <= 100.0, result  # the errors that cross the split
    assert set(result["from_seen"]) == set(world.UNSEEN)
    # ... and the evaluator's per-class file, with the confusion matrix, beside the run
    per_class = json.loads((run_dir / "inference" / "miniworld_test" / PER_CLASS_FILE).read_text())
    assert len(per_class["confusion"]) == len(world.CLASSES)
    s, u = result["mIoU(seen)"], result["mIoU(unseen)"]
    assert math.isclose(result["hIoU"], 2 * s * u / (s + u) if s + u else 0.0, abs_tol=1e-6)
    assert result["test_set"] == ["miniworld_test"]
    # both evaluations, the last one the reported result
    assert [point[0] for point in result["curve"]] == [2, 3]
    assert result["curve"][-1][1:] == [result["mIoU(seen)"], result["mIoU(unseen)"], result["hIoU"]]
    assert "| 2 | " in (out / "results.md").read_text()
    assert set(result["unseen_iou"]) == set(world.UNSEEN)
    # the full method trains with pseudo labels: the run wrote the diagnostics against the
    # hidden labels, one entry per class, and the results row carries the unseen classes' figures
    report = json.loads((run_dir / "pseudo_label_diagnostics.json").read_text())
    assert report["unseen"] == [c for c in world.CLASSES if c in world.UNSEEN]
    per = report["per_class"]
    assert set(per) == set(world.CLASSES) | {"(void)"}
    for c in list(world.CLASSES) + ["(void)"]:
        assert set(per[c]) == {"unlabelled_pixels", "share", "regions", "purity"}
        assert per[c]["share"] is None or 0.0 <= per[c]["share"] <= 1.0
        assert per[c]["purity"] is None or 0.0 <= per[c]["purity"] <= 1.0
    assert sum(per[c]["unlabelled_pixels"] for c in world.UNSEEN) > 0
    assert per["(void)"]["unlabelled_pixels"] > 0  # void rings and clutter
    assert result["pseudo_labels"] == {
        "unseen_share": report["unseen_share"],
        "share": {c: per[c]["share"] for c in world.UNSEEN},
        "purity": {c: per[c]["purity"] for c in world.UNSEEN},
        "void_share": per["(void)"]["share"],
    }
    table = (out / "results.md").read_text()
    assert "| full |" in table and "hIoU" in table and "miniworld_test" in table
    for c in world.UNSEEN:  # the per unseen class table
        assert f"| full | {c} |" in table
    # the demo wrote overlays for the test images, with the unseen names in its vocabulary
    assert len(list((out / "demo").glob("*.png"))) >= 2
    assert "star" in proc.stdout and "stage times" in proc.stdout

    # --reuse keeps a finished run with the same config (an interrupted ablation resumes) ...
    weights = run_dir / "model_final.pth"
    before = weights.stat().st_mtime_ns
    again = run_main_job(tmp_path, "--reuse", "--no-demo", *teacher, *overrides)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "reusing the finished run" in again.stdout
    assert weights.stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["rows"][0]["hIoU"] == result["hIoU"]
    # ... but never one trained with another config; the baseline (no pseudo labels) writes no
    # diagnostics and its row says so
    changed = run_main_job(
        tmp_path, "--reuse", "--variants", "full", "baseline", "--no-demo", *teacher,
        *overrides, "SOLVER.BASE_LR", "0.0123",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "reusing the finished run" not in changed.stdout
    assert weights.stat().st_mtime_ns != before
    rows = json.loads((out / "ablation.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["full", "baseline"]
    assert rows[0]["pseudo_labels"] is not None and rows[1]["pseudo_labels"] is None
    assert (out / "baseline" / "seed0" / "model_final.pth").is_file()
    assert not (out / "baseline" / "seed0" / "pseudo_label_diagnostics.json").exists()
    assert "| baseline | star |" in (out / "ablation.md").read_text()

    # --table-only: the table of the runs finished with these configs, the others named as
    # missing; nothing is generated, trained or evaluated
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pth")}
    listing = sorted(p.name for p in out.iterdir())
    table_only = run_main_job(
        tmp_path, "--table-only", "--variants", "full", "glm-only", "baseline", *teacher,
        *overrides, "SOLVER.BASE_LR", "0.0123",
    )  # fmt: skip
    assert table_only.returncode == 0, table_only.stdout[-3000:] + table_only.stderr[-3000:]
    assert "not finished (1 runs): glm-only, seed 0" in table_only.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pth")} == trained
    assert sorted(p.name for p in out.iterdir()) == listing  # no glm-only folder, no demo
    rows = json.loads((out / "ablation.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["full", "baseline"]
    # a job with no finished run at all: one line, exit 2, and no table written over
    before = (out / "ablation.md").read_text()
    none = run_main_job(tmp_path, "--table-only", "--ablation", "--seeds", "7", *teacher)
    assert none.returncode == 2, none.stdout[-3000:] + none.stderr[-3000:]
    assert "No finished run with these configs under" in none.stderr
    assert "Traceback" not in none.stderr
    assert (out / "ablation.md").read_text() == before


@pytest.mark.slow
def test_main_job_rejects_a_world_made_with_other_settings(tmp_path):
    from clipzss_d2.miniworld.generate import generate_world

    generate_world(str(tmp_path / "world"), counts={"train": 3, "tune": 1, "test": 2}, workers=1)
    proc = run_main_job(tmp_path, "--no-demo")
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_main_job_trains_another_student_from_a_config_delta(tmp_path):
    delta = "configs/miniworld/students/segformer-b0.yaml"
    overrides = ["SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0"]
    proc = run_main_job(tmp_path, "--no-demo", "--student", delta, *overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "out" / "full" / "seed0"
    config = (run_dir / "config.yaml").read_text()
    assert "pvt_v2_b0" in config and "MLPEmbeddingHead" in config
    assert "GLM" in config and "LOSS_WEIGHT: 0.1" in config  # the variant's own keys are kept
    row = json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    assert row["student"] == delta and 0.0 <= row["hIoU"] <= 100.0


def test_main_job_refuses_a_missing_student_file_before_any_work(tmp_path):
    proc = run_main_job(tmp_path, "--student", "configs/miniworld/students/nope.yaml")
    assert proc.returncode == 2
    assert "--student configs/miniworld/students/nope.yaml: no such file." in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "world").exists()


# -- in-process, no training: the --tune search and the tables -------------------------------------
def load_tool():
    return load_script("tools/run_miniworld.py", "clipzss_run_miniworld")


def fake_row(variant, seed, hiou, pseudo=None, **extra):
    return {
        "mIoU(seen)": hiou + 10, "mIoU(unseen)": hiou - 5, "hIoU": hiou, "mIoU": hiou,
        "pAcc": 50.0, "unseen_iou": {c: float(i) for i, c in enumerate(world.UNSEEN)},
        "seen_as_unseen": 2.0 + seed, "unseen_as_seen": 10.0,
        "from_seen": {c: 10.0 * (i + 1) for i, c in enumerate(world.UNSEEN)},
        "pseudo_labels": pseudo, "variant": variant, "seed": seed, "train_minutes": 1.0,
        "output_dir": "x", "test_set": ["miniworld_test"], "overrides": [], **extra,
    }  # fmt: skip


def test_tune_is_a_coordinate_search_on_the_tune_split(monkeypatch):
    """Each step tries its values with the best values so far fixed, on miniworld_tune, seed
    --tune-seed, and keeps the best hIoU; a tie keeps the configs' value; a setting already run
    (the configs' own value in a later step) is not trained again."""
    tool = load_tool()
    steps = (
        ("MODEL.CLIPZSS.GLM.LOSS_WEIGHT", (0.3, 0.1, 1.0)),  # configs/miniworld: 0.1
        ("MODEL.CLIPZSS.PLM.FUSION_THRESHOLD", (0.8, 0.9, 0.95)),  # Base-CLIPZSS: 0.9
    )
    monkeypatch.setattr(tool, "TUNING_STEPS", steps)
    weight, fusion = (key for key, _ in steps)
    # hIoU by (weight, fusion): weight 1.0 is best; then 0.8 ties with the configs' 0.9
    score = {(0.3, 0.9): 20.0, (0.1, 0.9): 25.0, (1.0, 0.9): 31.0, (1.0, 0.8): 31.0,
             (1.0, 0.95): 12.0}  # fmt: skip
    calls = []

    def fake_train(variant, seed, args, teacher_path, extra=(), name=None):
        calls.append((variant, seed, list(extra), name))
        setting = dict(zip(extra[:-2:2], extra[1:-2:2]))
        return fake_row(variant, seed, score[setting[weight], setting[fusion]])

    monkeypatch.setattr(tool, "train_and_evaluate", fake_train)
    args = tool.argparse.Namespace(tune_seed=3, opts=[], output="unused", student="")
    table, rows, chosen = tool.tune(args, "teacher.pt")
    tune_split = ["DATASETS.TEST", "('miniworld_tune',)"]
    assert calls == [
        ("full", 3, [weight, 0.3, fusion, 0.9, *tune_split], "tune/LOSS_WEIGHT=0.3_FUSION_THRESHOLD=0.9"),
        ("full", 3, [weight, 0.1, fusion, 0.9, *tune_split], "tune/LOSS_WEIGHT=0.1_FUSION_THRESHOLD=0.9"),
        ("full", 3, [weight, 1.0, fusion, 0.9, *tune_split], "tune/LOSS_WEIGHT=1.0_FUSION_THRESHOLD=0.9"),
        ("full", 3, [weight, 1.0, fusion, 0.8, *tune_split], "tune/LOSS_WEIGHT=1.0_FUSION_THRESHOLD=0.8"),
        ("full", 3, [weight, 1.0, fusion, 0.95, *tune_split], "tune/LOSS_WEIGHT=1.0_FUSION_THRESHOLD=0.95"),
    ]  # fmt: skip
    assert chosen == {weight: 1.0, fusion: 0.9}  # the tie keeps the configs' 0.9
    assert [r["setting"] for r in rows][-1] == {weight: 1.0, fusion: 0.95}
    assert "| LOSS_WEIGHT=1.0, FUSION_THRESHOLD=0.8 | 41.0 | 26.0 | 31.0 |" in table
    assert table.rstrip().endswith(f"chosen: {weight} 1.0, {fusion} 0.9")
    assert "miniworld_tune, seed 3" in table


def test_results_table_per_unseen_class_and_pseudo_labels():
    tool = load_tool()
    pseudo = {
        "unseen_share": 0.5,
        "share": {c: 0.25 for c in world.UNSEEN},
        "purity": {c: (None if c == "snow" else 0.8) for c in world.UNSEEN},
        "void_share": 0.1,
    }
    rows = [
        fake_row("full", 0, 30.0, pseudo),
        fake_row("full", 1, 32.0, pseudo),
        fake_row("baseline", 0, 20.0),
    ]
    table = tool.results_table(rows, [0, 1])
    row = "| full | 41.0 ± 1.0 | 26.0 ± 1.0 | 31.0 ± 1.0 | 31.0 ± 1.0 | 2.5 ± 0.5 | 10.0 ± 0.0 |"
    assert row + " 1.0 ± 0.0 |" in table
    # the baseline ran on seed 0 alone: its row says so, not "mean over seeds [0, 1]"
    assert "| baseline (seed 0) | 30.0 | 15.0 | 20.0 | 20.0 | 2.0 | 10.0 | 1.0 |" in table
    # per unseen class: IoU and from seen (mean ± std over seeds), pseudo share / purity in %
    assert "| full | star | 0.0 ± 0.0 | 10.0 ± 0.0 | 25.0 ± 0.0 | 80.0 ± 0.0 |" in table
    assert "| full | snow | 3.0 ± 0.0 | 40.0 ± 0.0 | 25.0 ± 0.0 | n/a |" in table  # no purity
    assert "| baseline | star | 0.0 | 10.0 | - | - |" in table  # no pseudo labels at all
    assert "evaluated on miniworld_test; mean ± std over seeds [0, 1]" in table
    assert "- baseline, seed 0: 30.0 / 15.0 / 20.0" in table


def test_results_table_shows_each_run_against_iterations():
    """Runs that evaluated on the way (TEST.EVAL_PERIOD) get one column each, an iteration per
    line, a dash where a run has no evaluation; runs evaluated once add no section."""
    tool = load_tool()
    rows = [
        fake_row("full", 0, 30.0, curve=[[200, 50.0, 20.0, 28.6], [400, 60.0, 30.0, 40.0]]),
        fake_row("baseline", 0, 20.0, curve=[[200, 40.0, 10.0, 16.0]]),
        fake_row("glm-only", 1, 25.0, curve=[[400, 55.0, 25.0, 34.4], [600, 56.0, 26.0, 35.5]]),
    ]
    table = tool.results_table(rows, [0, 1])
    section = table.split(
        "At every evaluation of the run (TEST.EVAL_PERIOD; seen / unseen / hIoU):"
    )[1]
    assert section.split("\n")[2:7] == [
        "| iterations | full, seed 0 | glm-only, seed 1 |",
        "|---:|---:|---:|",
        "| 200 | 50.0 / 20.0 / 28.6 | - |",
        "| 400 | 60.0 / 30.0 / 40.0 | 55.0 / 25.0 / 34.4 |",
        "| 600 | - | 56.0 / 26.0 / 35.5 |",
    ]
    assert "At every evaluation" not in tool.results_table(rows[1:2], [0])


def test_read_curve_counts_iterations_done(tmp_path):
    """detectron2 stores a periodic evaluation at the index of the iteration just finished
    (199 after 200 iterations) and the final one at MAX_ITER; lines without an evaluation and
    other metrics are skipped. A hand-written metrics.json in detectron2's JSONWriter format."""
    tool = load_tool()
    lines = [
        {"iteration": 19, "total_loss": 3.0},
        {"iteration": 199, "total_loss": 1.0, "sem_seg/mIoU(seen)": 50.0,
         "sem_seg/mIoU(unseen)": 20.0, "sem_seg/hIoU": 28.57, "sem_seg/mIoU": 40.0},
        {"iteration": 219, "total_loss": 0.9},
        {"iteration": 400, "sem_seg/mIoU(seen)": 60.0, "sem_seg/mIoU(unseen)": 30.0,
         "sem_seg/hIoU": 40.0},
    ]  # fmt: skip
    (tmp_path / "metrics.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert tool.read_curve(str(tmp_path), 400) == [
        [200, 50.0, 20.0, 28.57],
        [400, 60.0, 30.0, 40.0],
    ]


def test_ladder_trains_each_rung_with_its_teacher(monkeypatch):
    """--ladder: the trained teacher, the oracle (the trained teacher's file, its outputs
    replaced by the hidden labels' through the config key), the oracle with ideal text (every
    variant's classifier orthonormal, the oracle only where a teacher teaches) and a weak
    teacher (a quarter of the default recipe's steps, in a file of its own beside the trained
    one) each teach the four variants; the oracle's baseline is the trained teacher's (no
    teacher, same text embeddings) and is not trained again; seeds before variants; each rung's
    runs in its own folder; one table whose methods name their teacher, and the teachers'
    zero-shot figures above it."""
    tool = load_tool()
    teachers, calls = [], []

    def fake_teacher(path, cfg=None, force=False, replace_flag="--force", **_):
        teachers.append((path, cfg, force, replace_flag))
        return path

    def fake_info(path, cfg=None):
        acc = 0.5 if "weak" in path else 0.9
        return {"eval": {"thing_zero_shot_acc_seen": acc, "thing_zero_shot_acc_unseen": acc - 0.2}}

    def fake_train(variant, seed, args, teacher_path, extra=()):
        calls.append((args.output, variant, seed, teacher_path, tuple(extra)))
        return fake_row(variant, seed, 20.0 + seed)

    monkeypatch.setattr(tool, "get_miniworld_teacher", fake_teacher)
    monkeypatch.setattr(tool, "cached_teacher_info", fake_info)
    monkeypatch.setattr(tool, "train_and_evaluate", fake_train)
    args = tool.argparse.Namespace(
        output="out", retrain_teacher=False, teacher_path="", table_only=False
    )
    rungs = tool.ladder_rungs(args, None, "t/clip.pt", {"thing_zero_shot_acc_seen": 0.9})
    ((weak_path, weak_cfg, force, flag),) = teachers
    assert weak_cfg.steps == tool.TeacherConfig().steps // 4 == 100
    assert weak_cfg == tool.dataclasses.replace(tool.TeacherConfig(), steps=100)
    assert weak_path == f"t/clip-weak-{weak_cfg.fingerprint()[:10]}.pt"
    assert (force, flag) == (False, "--retrain-teacher")
    assert list(rungs) == ["trained", "oracle", "ideal-text", "weak"]

    rows, missing = tool.run_ladder(rungs, tool.VARIANTS, [0, 1], args)
    oracle = ("MODEL.CLIPZSS.DIAGNOSTICS.ORACLE_TEACHER", True)
    ideal = ("MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT", True)
    expected = []
    for rung, path in (("trained", "t/clip.pt"), ("oracle", "t/clip.pt"),
                       ("ideal-text", "t/clip.pt"), ("weak", weak_path)):  # fmt: skip
        for seed in (0, 1):
            for variant in tool.VARIANTS:
                taught = variant != "baseline"
                extra = {
                    "trained": (), "weak": (), "oracle": oracle,
                    "ideal-text": ideal + oracle if taught else ideal,
                }[rung]  # fmt: skip
                if not (rung == "oracle" and variant == "baseline"):
                    expected.append((f"out/{rung}", variant, seed, path, extra))
    assert calls == expected
    assert args.output == "out"  # each rung had its own copy of the arguments
    assert [r["label"] for r in rows[:4]] == [f"trained teacher: {v}" for v in tool.VARIANTS]
    table = tool.ladder_preamble(rungs) + tool.results_table(rows, [0, 1])
    assert missing == []
    assert "| weak teacher: baseline | 30.5 ± 0.5 | 15.5 ± 0.5 | 20.5 ± 0.5 |" in table
    assert "| ideal-text teacher: baseline | 30.5 ± 0.5 |" in table
    assert "| oracle teacher: baseline |" not in table
    assert "| oracle teacher: full | diamond |" in table
    assert f"- weak: `{weak_path}`, 50.0 / 30.0 %" in table
    assert "- trained: `t/clip.pt`, 90.0 / nan %" in table  # a figure missing is shown missing
    assert "- ideal-text: the oracle, with every class's text embedding" in table

    # --rungs: only the teachers asked for; the weak one is then neither trained nor read
    teachers.clear()
    assert list(tool.ladder_rungs(args, None, "t/clip.pt", {}, ["ideal-text"])) == ["ideal-text"]
    assert teachers == []


def test_ladder_ablation_and_tune_are_separate_jobs(tmp_path):
    proc = run_main_job(tmp_path, "--ladder", "--tune")
    assert proc.returncode == 2
    assert "--ablation, --ladder and --tune are separate jobs: give one." in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "world").exists()


def test_a_run_written_before_a_key_was_added_is_the_same_config():
    """--reuse / --table-only: a config.yaml written before a key joined the defaults matches
    the config with that key at its default value, not at another value; a key the defaults no
    longer have makes it another config."""
    tool = load_tool()
    cfg = tool.get_clipzss_cfg()
    cfg.merge_from_list(["SEED", 3])
    stored = yaml.safe_load(cfg.dump())
    del stored["MODEL"]["CLIPZSS"]["DIAGNOSTICS"]["IDEAL_TEXT"]  # as written before it existed
    before = yaml.safe_dump(stored)
    assert before != cfg.dump() and tool.same_config(before, cfg)
    cfg.merge_from_list(["MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT", True])
    assert not tool.same_config(before, cfg)
    cfg.merge_from_list(["MODEL.CLIPZSS.DIAGNOSTICS.IDEAL_TEXT", False, "SEED", 4])
    assert not tool.same_config(before, cfg)
    stored["MODEL"]["CLIPZSS"]["REMOVED_KEY"] = 1
    assert not tool.same_config(yaml.safe_dump(stored), tool.get_clipzss_cfg())
    assert not tool.same_config(before[: len(before) // 2] + "\n  - [", cfg)  # cut short


def test_rungs_need_the_ladder(tmp_path):
    proc = run_main_job(tmp_path, "--rungs", "weak")
    assert proc.returncode == 2
    assert "--rungs picks the teachers of --ladder: add --ladder, or drop it." in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "world").exists()


def test_table_only_refuses_to_retrain_the_teacher(tmp_path):
    proc = run_main_job(tmp_path, "--table-only", "--retrain-teacher")
    assert proc.returncode == 2
    assert "--table-only trains nothing: drop --retrain-teacher" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "world").exists()
    assert not (tmp_path / "teacher").exists()


@pytest.mark.slow
def test_short_ladder_runs_every_rung(tmp_path):
    """The real route of `make ablation`, shortened: the weak teacher is trained beside the
    given one, the oracle runs' configs ask for the oracle (and ideal text), and one table holds
    the four; it is named by the part of the ladder asked for, so it never replaces the whole
    ladder's table."""
    overrides = ["SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0"]
    proc = run_main_job(tmp_path, "--ladder", "--variants", "full", "--seeds", "0", "--no-demo",
                        *overrides)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    weak = list((tmp_path / "teacher").glob("clip-weak-*.pt"))
    assert len(weak) == 1
    sidecar = json.loads(weak[0].with_suffix(".json").read_text())
    assert sidecar["config"]["steps"] == 1  # a quarter of --teacher-steps 2, at least one
    configs = {rung: (out / rung / "full" / "seed0" / "config.yaml").read_text()
               for rung in ("trained", "oracle", "ideal-text", "weak")}  # fmt: skip
    assert "ORACLE_TEACHER: true" in configs["oracle"] and "IDEAL_TEXT: false" in configs["oracle"]
    assert "ORACLE_TEACHER: true" in configs["ideal-text"]
    assert "IDEAL_TEXT: true" in configs["ideal-text"]
    assert "ORACLE_TEACHER: false" in configs["trained"] + configs["weak"]
    assert weak[0].name in configs["weak"] and weak[0].name not in configs["trained"]
    name = "ladder_full_seeds0"
    assert not (out / "ladder.md").exists()
    rows = json.loads((out / f"{name}.json").read_text())["rows"]
    assert [(r["teacher"], r["variant"]) for r in rows] == [
        ("trained", "full"), ("oracle", "full"), ("ideal-text", "full"), ("weak", "full"),
    ]  # fmt: skip
    table = (out / f"{name}.md").read_text()
    assert "| oracle teacher: full |" in table and f"- weak: `{weak[0]}`" in table
