"""demo.py on image files: per image the overlay, the optional label map and the JSON summary
(written atomically, the JSON last, so a JSON file means the image is complete), then a report
of the inputs that could not be processed."""

from __future__ import annotations

import json
import os
import sys

from image_io import EXIT_INPUT_ERRORS, EXIT_OK, PROG, InputError, encode, read_image_rgb
from segmenter import Segmenter
from tqdm import tqdm

from clipzss_d2.utils.io import atomic_write_bytes
from clipzss_d2.utils.progress import progress


def process_image(segmenter: Segmenter, path: str, out: dict[str, str], save_label_map: bool):
    """Segment one image file and write its results to the `out` paths; the summary dict."""
    image = read_image_rgb(path)
    result = segmenter.predict(image)
    labels = result.label_map(segmenter.threshold)
    overlay = segmenter.draw(image, result)
    summary = {
        "input": path,
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "vocabulary": result.vocabulary,
        "segmenter": result.segmenter,  # "student", or "CLIP alone (no student)"
        "confidence_threshold": segmenter.threshold,
        "classes": segmenter.fractions(labels, result.unlabelled_id),
        "overlay": os.path.basename(out["overlay"]),
        "label_map": os.path.basename(out["label_map"]) if save_label_map else None,
        "unlabelled_id": result.unlabelled_id,
    }
    atomic_write_bytes(out["overlay"], encode(out["overlay"], overlay[:, :, ::-1]))
    if save_label_map:
        atomic_write_bytes(out["label_map"], encode(out["label_map"], labels))
    atomic_write_bytes(out["json"], (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def process_images(
    segmenter: Segmenter,
    inputs: list[str],
    paths: dict[str, dict[str, str]],
    bad: list[tuple[str, str]],
    output: str,
    save_label_map: bool,
) -> int:
    """Every input in turn (one that cannot be read is skipped and reported); the exit status.
    `bad` holds the arguments already found to name nothing."""
    for path in progress(inputs, unit="image", desc="images"):
        try:
            process_image(segmenter, path, paths[path], save_label_map)
        except InputError as e:
            bad.append((path, str(e)))
            tqdm.write(f"{PROG}: skipped {path}: {e}", file=sys.stderr)
    done = len(inputs) - sum(1 for p, _ in bad if p in paths)
    print(f"Wrote results for {done} of {len(inputs)} images to {output}")
    if bad:
        print(f"{PROG}: {len(bad)} input(s) could not be processed:", file=sys.stderr)
        for path, problem in bad:
            print(f"  {path}: {problem}", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    return EXIT_OK
