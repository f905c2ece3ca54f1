"""Per-file reading, checks and id mapping of source label files for the prepare scripts.

Each function raises `LabelRejected` with the reason when one file cannot be converted, so that
`run_jobs` reports it with the others and goes on.
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .common import Job, LabelRejected


def open_label_png(path: str, modes: Sequence[str]) -> np.ndarray:
    """Decode an index PNG fully (a truncated file fails here, not later) and check its mode."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error ...
        raise LabelRejected(
            f"{path} cannot be decoded ({type(e).__name__}: {e}); the file is truncated or "
            f"corrupt: extract it again from the original archive"
        ) from None
    if mode not in modes:
        raise LabelRejected(
            f"{path} has image mode {mode}, expected {' or '.join(modes)} (class indices, one "
            f"channel): a colour rendering of the labels cannot be converted; use the original file"
        )
    return array


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image, read from its header."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception as e:
        raise LabelRejected(
            f"image {path} cannot be read ({type(e).__name__}: {e}); extract it again"
        ) from None
    return h, w


def check_same_size(label: np.ndarray, label_path: str, image_path: str | None) -> None:
    if label.ndim != 2:
        raise LabelRejected(f"{label_path} has shape {label.shape}, expected a 2-D label map")
    if image_path is None:
        return
    h, w = image_size(image_path)
    if label.shape != (h, w):
        raise LabelRejected(
            f"size mismatch: {label_path} is {label.shape[1]}x{label.shape[0]} but image "
            f"{image_path} is {w}x{h} (width x height); the label belongs to another image or "
            f"was resized: extract both from the original archives"
        )


def lookup_table(mapping: dict[int, int], size: int) -> np.ndarray:
    """Dense table value -> output id; -1 marks values that must not occur."""
    lut = np.full(size, -1, dtype=np.int16)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


def apply_lookup(label: np.ndarray, lut: np.ndarray, path: str, expected: str, hint: str = ""):
    """Map every value through `lut`; reject the file if it holds a value the table lacks."""
    if not np.issubdtype(label.dtype, np.integer):
        raise LabelRejected(f"{path} holds {label.dtype} values, expected integer class ids")
    if label.size and int(label.min()) < 0:
        raise LabelRejected(f"{path} holds negative values, expected {expected}")
    present = np.flatnonzero(np.bincount(label.ravel().astype(np.int64)))
    bad = [int(v) for v in present if v >= len(lut) or lut[v] < 0]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise LabelRejected(f"{path} holds values {shown} outside the expected {expected}{hint}")
    return lut[label].astype(np.uint8)


def convert_png_label(
    job: Job, modes: Sequence[str], lut: np.ndarray, expected: str, hint: str = ""
) -> np.ndarray:
    """Decode `job.src` (an index PNG of one of `modes`), check it against its image's size and
    map its values through `lut`: the whole conversion of a dataset whose labels are PNGs."""
    label = open_label_png(job.src, modes)
    check_same_size(label, job.src, job.image)
    return apply_lookup(label, lut, job.src, expected, hint)
