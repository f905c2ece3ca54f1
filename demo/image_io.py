"""The demo's files: which inputs the arguments name, how an image is read (any format PIL
reads, upright per EXIF), where each result goes and how it is encoded. Shared by demo.py and
web_demo.py, so both read an image the same way."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipzss_d2.errors import UserInputError

try:  # the EXIF handling of detectron2.data.detection_utils.read_image
    from detectron2.data.detection_utils import _apply_exif_orientation
except ImportError:  # pragma: no cover - other detectron2 versions
    _apply_exif_orientation = ImageOps.exif_transpose

PROG = "demo.py"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
EXIT_OK, EXIT_INPUT_ERRORS = 0, 1  # 2 (nothing could run): clipzss_d2.entry.EXIT_USAGE
# Refused before decoding: such images are mistakes or attacks, and would not fit a display.
MIN_SIDE, MAX_SIDE, MAX_ASPECT = 8, 8192, 20


class InputError(Exception):
    """One input (image or video) cannot be processed; the others can."""


def expand_inputs(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files named by the arguments, and (argument, problem) for those that name nothing."""
    files, bad = [], []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
            if matches:
                files.extend(matches)
            else:
                bad.append((pattern, "the pattern matches no file"))
        else:
            files.append(pattern)
    return list(dict.fromkeys(files)), bad


def output_paths(output: str, inputs: list[str]) -> dict[str, dict[str, str]]:
    """Overlay / label map / JSON paths per input; stems shared by several inputs get -2, -3..."""
    single_file = os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS
    if single_file and len(inputs) != 1:
        raise UserInputError(
            f"--output {output} names one image file but {len(inputs)} inputs were given: pass "
            f"a folder instead."
        )
    paths, used = {}, set()
    for path in inputs:
        if single_file:
            overlay = output
        else:
            stem = Path(path).stem
            candidate, k = stem, 1
            while candidate in used:
                k += 1
                candidate = f"{stem}-{k}"
            used.add(candidate)
            overlay = os.path.join(output, candidate + ".png")
        base = os.path.splitext(overlay)[0]
        paths[path] = {
            "overlay": overlay,
            "label_map": base + "_labels.png",
            "json": base + ".json",
        }
    return paths


def read_image_rgb(path: str) -> np.ndarray:
    """H x W x 3 uint8 RGB, upright per EXIF; gray, palette, RGBA, 16-bit and float converted."""
    if not os.path.exists(path):
        raise InputError("no such file")
    if os.path.isdir(path):
        raise InputError("is a folder (use a glob such as 'folder/*.jpg')")
    if os.path.getsize(path) == 0:
        raise InputError("the file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            image = _apply_exif_orientation(image)
            return _pil_to_rgb8(image)
    except Image.DecompressionBombError as e:
        raise InputError(f"the image is too large to read safely ({e})") from None
    except UnidentifiedImageError:
        raise InputError("not an image file that PIL can read (corrupt or unsupported)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated image ({e})") from None


def check_image_size(path: str, max_pixels: int | None = None) -> tuple[int, int]:
    """Refuse absurd sizes from the file header, before the pixels are decoded (web_demo.py's
    uploads; UserInputError, a message on its page). Returns (width, height), (0, 0) for a file
    whose header cannot be read (read_image_rgb then says why)."""
    try:
        with Image.open(path) as header:
            width, height = header.size
    except Exception:  # unreadable: read_image_rgb says why
        return 0, 0
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE or long > MAX_SIDE or long > MAX_ASPECT * short:
        raise UserInputError(
            f"The image is {width} x {height} pixels: the demo takes sides of {MIN_SIDE} to "
            f"{MAX_SIDE} pixels with at most {MAX_ASPECT}:1 between them."
        )
    if max_pixels is not None and width * height > max_pixels:
        raise UserInputError(
            f"The image is {width} x {height} pixels ({width * height / 1e6:.1f} MP): this demo "
            f"takes at most {max_pixels / 1e6:.1f} MP; downscale it first."
        )
    return width, height


def _pil_to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        top = values.max(initial=0)
        if image.mode == "F" and top <= 1.0:
            values = values * 255.0
        elif top > 255:  # 16-bit (or wider) data: rescale the full range instead of clipping
            values = values * (255.0 / (65535.0 if top <= 65535 else top))
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def encode(path: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or ".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    return buf.tobytes()
