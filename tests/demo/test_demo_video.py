"""demo/demo.py on a video file and the webcam (demo/video_loop.py), and how small images are
drawn (demo/visualization.py); the model and helpers are test_demo.py's."""

import os

import cv2
import numpy as np
import pytest

from tests.demo import test_demo
from tests.demo.test_demo import no_temp_files, rgb, run_demo

tiny = test_demo.tiny  # the same tiny model fixture (module-scoped: built again for this module)


# -- video ----------------------------------------------------------------------------------------
def test_video_file(tiny, capsys, tmp_path):
    source = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI video (no codec)")
    for i in range(4):
        writer.write(rgb(48, 64, seed=i))
    writer.release()
    out = tmp_path / "out"
    code, stdout, err = run_demo(
        tiny, capsys, "--video-input", str(source), "--output", str(out), "--vocab", "a,b,c"
    )
    assert code == 0, err
    assert "Wrote 4 frames" in stdout
    result = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = []
    while True:
        ok, frame = result.read()
        if not ok:
            break
        frames.append(frame.shape)
    result.release()
    assert len(frames) == 4 and len(set(frames)) == 1 and frames[0][0] == 48
    assert frames[0][1] > 64  # legend panel beside the frame
    assert no_temp_files(out)

    code, _, err = run_demo(
        tiny, capsys, "--video-input", str(tmp_path / "gone.mp4"), "--output", str(out)
    )
    assert code == 1 and "gone.mp4: no such file" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(1000))
    code, _, err = run_demo(tiny, capsys, "--video-input", str(broken), "--output", str(out))
    assert code == 1 and "broken.mp4" in err
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]


def test_webcam_that_cannot_be_opened(tiny, capsys, tmp_path):
    probe = cv2.VideoCapture(0)
    present = probe.isOpened()
    probe.release()
    if present:
        pytest.skip("a webcam is attached; this test checks the message when there is none")
    code, _, err = run_demo(tiny, capsys, "--webcam", "--output", str(tmp_path / "cam.mp4"))
    assert code == 1 and "cannot open webcam 0" in err
    assert not (tmp_path / "cam.mp4").exists()


def test_small_images_are_drawn_enlarged_with_exact_labels():
    from visualization import MIN_DISPLAY_SIDE, enlarge_for_display, render

    image = rgb(40, 56)
    labels = np.zeros((40, 56), np.uint8)
    labels[10:20, 5:9] = 1
    big_image, big_labels = enlarge_for_display(image, labels)
    factor = -(-MIN_DISPLAY_SIDE // 40)  # 7: the short side reaches the minimum
    assert (
        big_labels.shape == (40 * factor, 56 * factor) and big_image.shape[:2] == big_labels.shape
    )
    assert np.array_equal(big_labels[::factor, ::factor], labels)  # nearest: no mixed labels
    assert set(np.unique(big_labels)) == {0, 1}
    overlay = render(image, labels, ["a", "b"], [(255, 0, 0), (0, 0, 255)], 255)
    assert overlay.shape[0] == 40 * factor and overlay.shape[1] > 56 * factor
    large = np.zeros((300, 400), np.uint8)
    assert enlarge_for_display(rgb(300, 400), large)[1] is large  # already readable: untouched
