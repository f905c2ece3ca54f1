"""demo.py on a video file or the webcam: every frame segmented and drawn at one size, written
to a video file (atomically) or shown in a window."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
from image_io import EXIT_INPUT_ERRORS, EXIT_OK, PROG, InputError
from segmenter import Segmenter
from visualization import legend_font_size

from clipzss_d2.errors import UserInputError
from clipzss_d2.utils.io import atomic_write_path
from clipzss_d2.utils.progress import progress

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}  # both available in opencv-python(-headless)


def run_video(segmenter: Segmenter, video: str, output: str) -> int:
    """--video-input: the exit status (1 when the video cannot be read)."""
    if not os.path.isfile(video):
        print(f"{PROG}: error: --video-input {video}: no such file", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    output = video_output_path(output, video)
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        print(f"{PROG}: error: {video}: OpenCV cannot open this video", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    try:
        frames = process_video(segmenter, capture, output, os.path.basename(video), total)
    except InputError as e:
        print(f"{PROG}: error: {video}: {e}", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    finally:
        capture.release()
    print(f"Wrote {frames} frames to {output}")
    return EXIT_OK


def run_webcam(segmenter: Segmenter, output: str | None) -> int:
    """--webcam: frames until Ctrl-C (or Esc / q in the window); the exit status."""
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        print(f"{PROG}: error: cannot open webcam 0", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    if output:
        ext = os.path.splitext(output)[1].lower()
        output = output if ext in VIDEO_CODECS else os.path.join(output, "webcam.mp4")
    try:
        frames = process_video(segmenter, capture, output, "webcam", until_interrupt=True)
    finally:
        capture.release()
        if output is None:
            cv2.destroyAllWindows()
    if output:
        print(f"Wrote {frames} frames to {output}")
    return EXIT_OK


def process_video(
    segmenter: Segmenter, capture, output: str | None, title: str, total=0, until_interrupt=False
) -> int:
    """Overlay every frame; write them to `output` (atomically) or show them in a window.

    until_interrupt: Ctrl-C ends the stream normally (webcam) instead of aborting.
    """
    if output is None:
        return _frames(segmenter, capture, None, title, total, until_interrupt)
    with atomic_write_path(output) as tmp:
        frames = _frames(segmenter, capture, (tmp, output), title, total, until_interrupt)
        if frames == 0:
            raise InputError("no frame could be read (corrupt file or unsupported codec)")
    return frames


def _frames(segmenter: Segmenter, capture, target, title, total, until_interrupt) -> int:
    frames, writer, legend_width = 0, None, None
    try:
        with progress(total=total or None, unit="frame", desc=title) as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(frame[:, :, ::-1])
                if legend_width is None:  # fixed for the whole stream: frames keep one size
                    legend_width = 12 * legend_font_size(rgb.shape[0]) + 40
                vis = segmenter.draw(rgb, segmenter.predict(rgb), legend_width, fit=True)
                vis = np.ascontiguousarray(vis[:, :, ::-1])
                if target is None:
                    if not show(title, vis):
                        break
                else:
                    if writer is None:
                        writer = open_writer(target[0], target[1], capture, vis.shape)
                    writer.write(vis)
                frames += 1
                bar.update()
    except KeyboardInterrupt:
        if not until_interrupt:
            raise
    finally:
        if writer is not None:
            writer.release()
    return frames


def open_writer(tmp: str, output: str, capture, shape) -> cv2.VideoWriter:
    ext = os.path.splitext(output)[1].lower()
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else 25.0
    fourcc = VIDEO_CODECS[ext]
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise UserInputError(
            f"OpenCV cannot write {ext} video with codec {fourcc} on this machine. Try another "
            f"--output extension ({', '.join(VIDEO_CODECS)})."
        )
    return writer


def show(title: str, frame_bgr: np.ndarray) -> bool:
    """Show a frame; False when the user pressed Esc or q."""
    try:
        cv2.imshow(title, frame_bgr)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as e:
        raise UserInputError(
            f"Cannot open a window ({e.err.strip() if hasattr(e, 'err') else e}); this OpenCV "
            f"build may have no GUI (opencv-python-headless). Pass --output FILE.mp4 instead."
        ) from None
    return key not in (27, ord("q"))


def video_output_path(output: str, video: str) -> str:
    ext = os.path.splitext(output)[1].lower()
    if ext in VIDEO_CODECS:
        return output
    if ext:
        raise UserInputError(
            f"--output {output}: video output must end with {' or '.join(VIDEO_CODECS)}, or be a "
            f"folder."
        )
    return os.path.join(output, Path(video).stem + ".mp4")
