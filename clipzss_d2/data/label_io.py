"""Reading label maps (numpy 2 safe: detectron2's own loader calls np.array(copy=False))."""

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

LABEL_MODES = ("L", "P", "I", "I;16")


def read_label_map(path: str, dtype=None) -> np.ndarray:
    """A single-channel label PNG as an array of class ids (palette indices, not colours)."""
    with PathManager.open(path, "rb") as f, Image.open(f) as img:
        if img.mode not in LABEL_MODES:
            raise ValueError(
                f"{path} has image mode {img.mode}; label maps must be single-channel "
                f"({', '.join(LABEL_MODES)}). Was the dataset prepared with datasets/prepare_*.py?"
            )
        array = np.asarray(img)
    return array.astype(dtype) if dtype is not None else array.copy()
