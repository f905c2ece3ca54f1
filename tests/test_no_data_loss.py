"""No command deletes or overwrites a file it was not told to replace
(docs/reproducibility.md#nothing-is-deleted-or-overwritten-that-a-command-was-not-told-to-replace).
Each command that writes runs against folders of planted user files, which must be
byte-identical afterwards unless the command was told to overwrite them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY_MODEL_OPTS, load_script, save_tiny_checkpoint, tiny_cfg


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under folder: file bytes, or None for a folder."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def plant(folder: Path) -> dict[str, bytes | None]:
    """A user's folder: some files, a subfolder, a hidden file; returns its snapshot."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)))
    (folder / ".hidden").write_text("x")
    return snapshot(folder)


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- the model folder (tools/make_model_folder.py, and the end of train_net.py) --------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_cfg(
        extra_opts=["DATASETS.TEST", (), "MODEL.CLIPZSS.TEST_VOCABULARY", ["sky", "tree"]]
    )
    save_tiny_checkpoint(folder, cfg)
    return folder


def make_model_folder(checkpoint, output, *extra, capsys):
    tool = load_script("tools/make_model_folder.py", "clipzss_make_model_folder_safety")
    argv = ["--config-file", str(checkpoint / "config.yaml"), "--output", str(output), *extra]
    code = tool.main([*argv, "MODEL.WEIGHTS", str(checkpoint / "model.pth")])
    return code, capsys.readouterr().err


def test_a_model_folder_never_replaces_a_users_folder(checkpoint, tmp_path, capsys):
    users = tmp_path / "mine"
    before = plant(users)
    code, err = make_model_folder(checkpoint, users, capsys=capsys)
    line = one_line(err)
    assert code == 2 and "holds files that are not a model folder this project wrote" in line
    assert "(.hidden, notes.txt, sub)" in line and "pass --overwrite to replace it" in line
    assert snapshot(users) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing written beside it

    # a file where the folder should go is refused too
    (tmp_path / "file").write_text("keep")
    code, err = make_model_folder(checkpoint, tmp_path / "file", capsys=capsys)
    assert code == 2 and "exists and is not a folder" in one_line(err)
    assert (tmp_path / "file").read_text() == "keep"

    # told to: replaced
    code, err = make_model_folder(checkpoint, users, "--overwrite", capsys=capsys)
    assert code == 0, err
    assert sorted(p.name for p in users.iterdir()) == [
        "MODEL_CARD.md", "config.yaml", "model.pth", "text_cache"
    ]  # fmt: skip


def test_a_model_folder_replaces_its_own_earlier_version_and_empty_folders(
    checkpoint, tmp_path, capsys
):
    target = tmp_path / "model"
    target.mkdir()  # empty
    assert make_model_folder(checkpoint, target, capsys=capsys)[0] == 0
    first = (target / "MODEL_CARD.md").read_text()
    assert make_model_folder(checkpoint, target, capsys=capsys)[0] == 0  # its own: replaced
    assert (target / "MODEL_CARD.md").read_text().splitlines()[0] == first.splitlines()[0]
    (target / "notes.txt").write_text("added by the user")
    code, err = make_model_folder(checkpoint, target, capsys=capsys)
    assert code == 2 and "(notes.txt)" in one_line(err)
    assert (target / "notes.txt").read_text() == "added by the user"


@pytest.mark.parametrize("where", [".", "..", "home"])
def test_never_the_working_folder_its_ancestors_or_home(
    checkpoint, tmp_path, where, capsys, monkeypatch
):
    work, home = tmp_path / "repo" / "work", tmp_path / "home"
    before, home_before = plant(work), plant(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    output = str(home) if where == "home" else where
    for extra in ([], ["--overwrite"]):  # not even when told to
        code, err = make_model_folder(checkpoint, output, *extra, capsys=capsys)
        line = one_line(err)
        assert code == 2 and "is the working folder, one of its ancestors, the home" in line
    assert snapshot(work) == before and snapshot(home) == home_before


def test_training_refuses_before_it_starts_when_output_dir_model_is_a_users(tmp_path):
    """The end of training writes OUTPUT_DIR/model: a user's folder there stops the run at once,
    not after hours of training."""
    out = tmp_path / "run"
    before = plant(out / "model")
    opts = [str(o) for o in TINY_MODEL_OPTS] + ["OUTPUT_DIR", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(ROOT / "configs/voc.yaml"),
         *opts],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    # torch's glog-style start-up notes (e.g. "W1129 ... No CUDA runtime is found") are not ours
    err = "\n".join(
        ln for ln in proc.stderr.splitlines() if not re.match(r"[IW]\d{4} \d\d:\d\d:\d\d", ln)
    )
    line = one_line(err)
    assert proc.returncode == 2 and f"OUTPUT_DIR/model, {out / 'model'} holds files" in line
    assert "move it away or choose another OUTPUT_DIR" in line
    assert snapshot(out / "model") == before


def test_make_clean_keeps_trained_runs():
    """`make clean` removes caches only: output/ holds the user's runs and model folders."""
    proc = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "rm " in proc.stdout
    assert "output" not in proc.stdout.replace(".pytest_cache", "").replace(".ruff_cache", "")


# -- export and the web demo -----------------------------------------------------------------------
def test_export_adds_its_files_beside_a_users_and_keeps_them(checkpoint, tmp_path, capsys):
    out = tmp_path / "exported"
    before = plant(out)
    tool = load_script("tools/export_model.py", "clipzss_export_safety")
    argv = ["--config-file", str(checkpoint / "config.yaml"), "--vocab", "sky,tree",
            "--format", "torchscript", "--height", "32", "--width", "32", "--output", str(out),
            "--opts", "MODEL.WEIGHTS", str(checkpoint / "model.pth")]  # fmt: skip
    assert tool.main(argv) == 0, capsys.readouterr().err
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"model.ts", "export.json"}


def test_the_web_demo_writes_nothing_into_a_model_folder(checkpoint, tmp_path):
    """Start-up vocabulary, 5 requests with new vocabularies: the served model folder is
    byte-identical afterwards."""
    from clipzss_d2.model_folder import write_model_folder
    from clipzss_d2.predictor import OpenVocabularyPredictor

    source = OpenVocabularyPredictor.from_config_file(
        str(checkpoint / "config.yaml"), ["MODEL.WEIGHTS", str(checkpoint / "model.pth")]
    )
    folder = Path(write_model_folder(source.cfg, source.model, str(tmp_path / "model")))
    before = snapshot(folder)
    web_demo = load_script("demo/web_demo.py", "clipzss_web_demo_safety")
    app = web_demo.load(
        web_demo.get_parser().parse_args(["--model-folder", str(folder), "--vocab", "a,b"])
    )
    for request in range(5):
        overlay, _, status = app.segment(app.examples[0], f"thing {request}, other {request}")
        assert overlay is not None, status
    assert snapshot(folder) == before


# -- tools/check_teacher.py --------------------------------------------------------------------------
def test_the_teacher_check_adds_its_report_beside_a_users_files_and_replaces_it_only_when_told(
    tmp_path, capsys
):
    """Its report goes beside the user's files; a second run is refused (nothing touched) until
    --overwrite, which replaces the report only."""
    from clipzss_d2.miniworld import generate_world, register_miniworld
    from tests.helpers import MINIWORLD_FULL_CONFIG

    generate_world(str(tmp_path / "mw"), seed=0, counts={"train": 2, "tune": 0, "test": 1},
                   workers=1)  # fmt: skip
    register_miniworld(str(tmp_path / "mw"))
    tool = load_script("tools/check_teacher.py", "clipzss_check_teacher_safety")
    out = tmp_path / "mine"
    before = plant(out)
    argv = ["--config-file", MINIWORLD_FULL_CONFIG, "--num-images", "2", "--num-val-images", "1",
            "--num-pictures", "1", "--lambdas", "0.9", "--window-sets", "2,4,6", "--output",
            str(out), "MODEL.CLIPZSS.CLIP.PRETRAINED", "none", "MODEL.CLIPZSS.TEXT.CACHE_DIR", "",
            "DATALOADER.NUM_WORKERS", "0"]  # fmt: skip
    try:
        assert tool.main(argv) == 0, capsys.readouterr().err
        first = snapshot(out)
        assert {k: v for k, v in first.items() if k in before} == before
        assert set(first) - set(before) == {
            "teacher_check.md", "teacher_check.json", "teacher_check.png", "teacher_zero_shot",
            "teacher_zero_shot/gzss_per_class_iou.json",
        }  # fmt: skip
        capsys.readouterr()
        assert tool.main(argv) == 2
        assert "pass --overwrite to replace it" in one_line(capsys.readouterr().err)
        assert snapshot(out) == first
        assert tool.main([*argv[:-6], "--overwrite", *argv[-6:]]) == 0
        assert set(snapshot(out)) == set(first)
        assert {k: v for k, v in snapshot(out).items() if k in before} == before
    finally:
        register_miniworld()
