"""demo/demo.py never writes over its inputs, nor two results to one file (demo/output_plan.py):
such runs are refused with one line and exit status 2 before the model is loaded, and every file
that was there is left byte for byte as it was. The model and helpers are test_demo.py's."""

import json
import os
import re
import subprocess
import sys

import cv2
import pytest

from tests.demo import test_demo
from tests.demo.test_demo import DEMO, args_for, rgb, run_demo, write_image

tiny = test_demo.tiny  # the same tiny model fixture (module-scoped: built again for this module)


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder` (links included, as what they point to) and its bytes."""
    files = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            files[rel] = os.readlink(path) if os.path.islink(path) else open(path, "rb").read()
    return files


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def refused(tiny, capsys, tmp_path, *args) -> str:
    """Run the demo in tmp_path (relative paths, as a user types them); it must refuse, leave
    every file as it was and create none. The error line."""
    before = snapshot(tmp_path)
    code, _, err = run_demo(tiny, capsys, *args)
    assert code == 2, err
    assert snapshot(tmp_path) == before
    return one_line(err)


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    write_image(tmp_path / "photos" / "a.png", rgb(seed=1))
    write_image(tmp_path / "photos" / "b.png", rgb(seed=2))
    return tmp_path


def test_output_folder_holding_the_inputs(tiny, capsys, photos):
    line = refused(tiny, capsys, photos, "--input", "photos/*.png", "--output", "photos/")
    assert line == (
        "demo.py: error: --output photos/ would overwrite the input photos/a.png; "
        "choose another output folder"
    )


def test_output_file_named_like_the_input(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "b.jpg", rgb())
    line = refused(tiny, capsys, tmp_path, "--input", "b.jpg", "--output", "b.jpg")
    assert line == (
        "demo.py: error: --output b.jpg would overwrite the input b.jpg; "
        "choose another output file name"
    )


@pytest.mark.parametrize("link", ["symlinked_folder", "hard_link"])
def test_output_reaching_an_input_through_a_link(tiny, capsys, photos, link):
    if link == "symlinked_folder":
        os.symlink("photos", photos / "link")
        output, choose = "link", "folder"
    else:
        os.link(photos / "photos" / "a.png", photos / "h.png")
        output, choose = "h.png", "file name"
    line = refused(tiny, capsys, photos, "--input", "photos/a.png", "--output", output)
    assert line == (
        f"demo.py: error: --output {output} would overwrite the input photos/a.png; "
        f"choose another output {choose}"
    )


@pytest.mark.parametrize("output", ["clips/v.mp4", "clips"])
def test_video_output_over_the_video(tiny, capsys, tmp_path, monkeypatch, output):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    writer = cv2.VideoWriter("clips/v.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video (no codec)")
    for i in range(3):
        writer.write(rgb(48, 64, seed=i))
    writer.release()
    line = refused(tiny, capsys, tmp_path, "--video-input", "clips/v.mp4", "--output", output)
    choose = "file name" if output.endswith(".mp4") else "folder"
    assert line == (
        f"demo.py: error: --output {output} would overwrite the input clips/v.mp4; "
        f"choose another output {choose}"
    )


def test_label_map_of_one_input_is_the_overlay_of_another(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.png", rgb(seed=1))
    write_image(tmp_path / "a_labels.jpg", rgb(seed=2))
    args = ["--input", "a.png", "a_labels.jpg", "--output", "photos_out", "--save-label-map"]
    line = refused(tiny, capsys, tmp_path, *args)
    assert line == (
        "demo.py: error: outputs collide: a_labels.jpg's overlay and a.png's label map are both "
        "photos_out/a_labels.png; rename one input"
    )
    assert not (tmp_path / "photos_out").exists()


def test_vocabulary_file_is_an_input_too(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.png", rgb())
    (tmp_path / "res.json").write_text("cat\ndog\n")
    args = ["--input", "a.png", "--output", "res.png", "--vocab-file", "res.json"]
    line = refused(tiny, capsys, tmp_path, *args)
    assert line == (
        "demo.py: error: --output res.png would overwrite the --vocab-file res.json with a.png's "
        "JSON; choose another output file name"
    )


def test_results_beside_the_inputs_and_a_rerun(tiny, capsys, tmp_path, monkeypatch):
    """Outputs in the inputs' folder are fine when they are other files, and a second run
    replaces the first run's results, as before; a.jpg and a_labels.jpg only collide with
    --save-label-map."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    write_image(tmp_path / "photos" / "a.jpg", rgb(seed=1))
    write_image(tmp_path / "photos" / "a_labels.jpg", rgb(seed=2))
    inputs = snapshot(tmp_path)
    for _ in range(2):
        code, stdout, err = run_demo(
            tiny, capsys, "--input", "photos/*.jpg", "--output", "photos", "--vocab", "a,b"
        )
        assert code == 0, err
        assert "Wrote results for 2 of 2 images" in stdout
        files = snapshot(tmp_path)
        assert {k: files[k] for k in inputs} == inputs
        assert sorted(files) == sorted(
            [*inputs, *(f"photos/{n}" for n in ("a.png", "a.json", "a_labels.png"))]
            + ["photos/a_labels.json"]
        )
    assert json.loads((tmp_path / "photos" / "a.json").read_text())["overlay"] == "a.png"


def test_refusal_from_the_command_line(tiny, photos):
    """The line and the status a shell sees (one real process: each costs a torch import)."""
    before = snapshot(photos)
    argv = args_for(tiny, "--input", "photos/*.png", "--output", "photos/", "--vocab", "a,b")
    run = subprocess.run(
        [sys.executable, str(DEMO), *argv],
        cwd=photos,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    # torch's glog-style start-up notes (e.g. "W1129 ... No CUDA runtime is found") are not ours
    err = "\n".join(
        line for line in run.stderr.splitlines() if not re.match(r"[IW]\d{4} \d\d:\d\d:\d\d", line)
    )
    assert run.returncode == 2, run.stderr
    assert one_line(err) == (
        "demo.py: error: --output photos/ would overwrite the input photos/a.png; "
        "choose another output folder"
    )
    assert snapshot(photos) == before
