"""Write the miniature world to disk in the layout of a real semantic-segmentation dataset.

    <root>/images/{train,tune,test}/000000.jpg                   RGB JPEG
    <root>/annotations_detectron2/{train,tune,test}/000000.png   uint8 class ids, 255 = ignore
    <root>/manifest.json                                         written last: the world is complete
    <root>/generating.json              while a run writes (removed with the manifest's arrival)

The command only ever deletes files that its own manifest (or generating.json, left by an
interrupted run) lists; it refuses a non-empty folder that holds neither.

Three splits from three random streams: `train` for training, `tune` for every choice of a
hyper-parameter, `test` for the figures that are reported.

Image i of a split depends only on (seed, split, i), so any number of worker processes writes the
same bytes, and a re-run with the same seed and parameters finds the manifest and does nothing.

    python -m clipzss_d2.miniworld generate --root datasets/miniworld --seed 0 \
        --num-train 3000 --num-tune 300 --num-test 500
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import re
import time

import cv2
import numpy as np

from ..errors import UserInputError
from ..utils.io import atomic_write_bytes, atomic_write_text, datasets_root
from . import render as R
from . import world as W

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
IN_PROGRESS = "generating.json"  # the files a run may write, until its manifest is written
FORMAT = "clipzss-miniworld"
IMAGE_DIR = "images"
LABEL_DIR = "annotations_detectron2"
SPLITS = ("train", "tune", "test")
_SPLIT_STREAM = {"train": 0, "tune": 2, "test": 1}  # test keeps version 1's validation stream
DEFAULT_COUNTS = {"train": 3000, "tune": 300, "test": 500}
DEFAULT_JPEG_QUALITY = 90


def default_root() -> str:
    """$CLIPZSS_MINIWORLD_ROOT, else $DETECTRON2_DATASETS/miniworld (default ./datasets)."""
    explicit = os.getenv("CLIPZSS_MINIWORLD_ROOT")
    if explicit:
        return os.path.expanduser(explicit)
    return os.path.join(datasets_root(), "miniworld")


def image_path(root: str, split: str, index: int) -> str:
    return os.path.join(root, IMAGE_DIR, split, f"{index:06d}.jpg")


def label_path(root: str, split: str, index: int) -> str:
    return os.path.join(root, LABEL_DIR, split, f"{index:06d}.png")


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], index]))


def render_item(seed: int, split: str, index: int, params: W.WorldParams) -> R.Rendered:
    """The scene stored as image `index` of `split` (also used by tests to re-derive it)."""
    return R.make_sample(sample_rng(seed, split, index), params)


def _write_range(job: tuple) -> tuple[np.ndarray, list[list[int]]]:
    root, seed, split, start, stop, params_dict, quality = job
    params = W.WorldParams.from_dict(params_dict)
    pixels = np.zeros(256, np.int64)
    sizes = []
    for i in range(start, stop):
        r = render_item(seed, split, i, params)
        ok1, jpg = cv2.imencode(".jpg", r.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        ok2, png = cv2.imencode(".png", r.label)
        if not (ok1 and ok2):
            raise RuntimeError(f"encoding {split} image {i} failed")
        atomic_write_bytes(image_path(root, split, i), jpg.tobytes())
        atomic_write_bytes(label_path(root, split, i), png.tobytes())
        pixels += np.bincount(r.label.ravel(), minlength=256)
        sizes.append(list(r.label.shape))
    return pixels, sizes


def _pool_context():
    """spawn, never fork: the caller has usually started torch/OpenMP, cv2 and tqdm threads,
    and a forked child inherits their locks mid-use (cv2 calls in it then hang forever)."""
    return mp.get_context("spawn")


def _default_workers() -> int:
    """A spawned worker pays ~3 s importing torch, so on 2 cores one process is as fast."""
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(cpus, 8)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already


def world_key(seed: int, counts: dict[str, int], params: W.WorldParams, quality: int) -> dict:
    """What identifies a generated world; a manifest with the same key means nothing to do."""
    return {
        "world_version": W.WORLD_VERSION,
        "seed": seed,
        "counts": {s: int(counts[s]) for s in SPLITS},
        "jpeg_quality": quality,
        "params": params.to_dict(),
    }


def read_manifest(root: str) -> dict | None:
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class WorldExistsError(UserInputError, RuntimeError):
    """A different world already lives at the root; refusing to overwrite it silently."""


class ForeignFolderError(UserInputError):
    """The root holds files this command did not write; it never deletes or mixes with them."""


def _own_json(path: str, fmt: str) -> dict | None:
    """The JSON file at `path` if this command wrote it (its "format" is `fmt`), else None."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == fmt else None


def _listed_counts(*records: dict | None) -> dict[str, int]:
    """Per split, how many numbered files (000000 .. count - 1) the records list, at most."""
    out = {s: 0 for s in SPLITS}
    for record in records:
        if not record:
            continue
        listed = record.get("key", {}).get("counts") or record.get("counts") or {}
        for s in SPLITS:
            with contextlib.suppress(TypeError, ValueError):
                out[s] = max(out[s], int(listed.get(s, 0)))
    return out


def generate_world(
    root: str | None = None,
    seed: int = 0,
    counts: dict[str, int] | None = None,
    params: W.WorldParams | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate (or find already generated) the world at `root`; returns its manifest.

    `root` must be new, empty, or a world this command wrote (its manifest.json, or the
    generating.json of an interrupted run): only files those list are ever deleted."""
    root = root or default_root()
    params = params or W.WorldParams()
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    key = world_key(seed, counts, params, jpeg_quality)
    existing = _own_json(os.path.join(root, MANIFEST), FORMAT)
    in_progress = _own_json(os.path.join(root, IN_PROGRESS), FORMAT + "-in-progress")
    if existing is None and in_progress is None and os.path.lexists(root):
        if not os.path.isdir(root) or os.listdir(root):
            raise ForeignFolderError(
                f"{root} is not empty and holds no miniature world written by this command; "
                f"choose an empty or new folder"
            )
    if existing is not None:
        if existing.get("key") == key:
            logger.info("MiniWorld at %s is complete (seed %d); nothing to do.", root, seed)
            if in_progress is not None:  # left by a run stopped after writing the manifest
                os.remove(os.path.join(root, IN_PROGRESS))
            return existing
        if not overwrite:
            raise WorldExistsError(
                f"{root} holds a MiniWorld generated with other settings "
                f"(seed {existing.get('key', {}).get('seed')}, world version "
                f"{existing.get('key', {}).get('world_version')}, counts "
                f"{existing.get('key', {}).get('counts')}). Pass --overwrite to replace it, "
                f"or choose another --root."
            )
    listed = _listed_counts(existing, in_progress)
    # Before anything changes: every file this run or an earlier one of ours may leave behind.
    os.makedirs(root, exist_ok=True)
    record = {
        "format": FORMAT + "-in-progress",
        "counts": {s: max(listed[s], counts[s]) for s in SPLITS},
    }
    atomic_write_text(os.path.join(root, IN_PROGRESS), json.dumps(record, indent=1) + "\n")
    if existing is not None:
        os.remove(os.path.join(root, MANIFEST))  # the world is incomplete until rewritten
    for split in SPLITS:
        os.makedirs(os.path.join(root, IMAGE_DIR, split), exist_ok=True)
        os.makedirs(os.path.join(root, LABEL_DIR, split), exist_ok=True)
        _remove_listed_beyond(root, split, counts[split], record["counts"][split])
    workers = workers if workers is not None else _default_workers()
    chunk = 100
    jobs = [
        (root, seed, split, s, min(s + chunk, counts[split]), params.to_dict(), jpeg_quality)
        for split in SPLITS
        for s in range(0, counts[split], chunk)
    ]
    start = time.time()
    if workers > 1 and len(jobs) > 1:
        with _pool_context().Pool(workers, initializer=_worker_init) as pool:
            results = pool.map(_write_range, jobs)
    else:
        results = [_write_range(j) for j in jobs]
    pixels = {s: np.zeros(256, np.int64) for s in SPLITS}
    sizes: dict[str, list] = {s: [] for s in SPLITS}
    for job, (px, job_sizes) in zip(jobs, results):  # jobs are in index order per split
        pixels[job[2]] += px
        sizes[job[2]] += job_sizes
    seconds = time.time() - start
    manifest = {
        "format": "clipzss-miniworld",
        "key": key,
        "classes": list(W.CLASSES),
        "things": list(W.THINGS),
        "stuff": list(W.STUFF),
        "unseen": list(W.UNSEEN),
        "ignore_label": W.IGNORE_LABEL,
        "image_dir": IMAGE_DIR,
        "label_dir": LABEL_DIR,
        "splits": {
            s: {
                "count": counts[s],
                "class_pixels": {c: int(pixels[s][i]) for i, c in enumerate(W.CLASSES)},
                "ignore_pixels": int(pixels[s][W.IGNORE_LABEL]),
                "sizes": sizes[s],  # (height, width) of each image, in index order
            }
            for s in SPLITS
        },
    }
    # no timing inside: the same seed must give the same bytes, manifest included
    atomic_write_text(os.path.join(root, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    os.remove(os.path.join(root, IN_PROGRESS))
    logger.info(
        "MiniWorld written to %s: %s images in %.1f s (%d workers).",
        root,
        " + ".join(f"{counts[s]} {s}" for s in SPLITS),
        seconds,
        workers,
    )
    return manifest


def _remove_listed_beyond(root: str, split: str, count: int, listed: int) -> None:
    """Drop the files numbered count .. listed - 1, which a manifest of ours lists (an earlier,
    larger world), so the folders hold exactly this world; also the temporary files that a
    killed run left while writing a listed file. Nothing else is touched."""
    for folder, ext in ((IMAGE_DIR, ".jpg"), (LABEL_DIR, ".png")):
        d = os.path.join(root, folder, split)
        for i in range(count, listed):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.remove(os.path.join(d, f"{i:06d}{ext}"))
        own = {f"{i:06d}{ext}" for i in range(listed)}
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if _atomic_temp_target(name) in own and os.path.isfile(path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


# utils.io.atomic_write_path writes `name` as ".tmp-<name>-<random><ext>" before renaming it
_ATOMIC_TEMP = re.compile(r"\.tmp-(?P<target>.+)-[a-z0-9_]+(?P<ext>\.[^.]+)")


def _atomic_temp_target(name: str) -> str | None:
    """The file whose temporary file `name` is (see _ATOMIC_TEMP), else None."""
    m = _ATOMIC_TEMP.fullmatch(name)
    return m["target"] if m and m["target"].endswith(m["ext"]) else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipzss_d2.miniworld generate",
        description="Generate the MiniWorld zero-shot segmentation dataset.",
    )
    parser.add_argument("--root", default=None, help=f"output folder (default {default_root()})")
    parser.add_argument("--seed", type=int, default=0)
    for split in SPLITS:
        parser.add_argument(f"--num-{split}", type=int, default=DEFAULT_COUNTS[split])
    parser.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes (default: 1 on <= 2 cores, else CPU count up to 8)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a world made with other settings"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root or default_root()
    start = time.time()
    manifest = generate_world(
        root,
        seed=args.seed,
        counts={s: getattr(args, f"num_{s}") for s in SPLITS},
        params=W.WorldParams(),
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(f"MiniWorld ready at {root} ({time.time() - start:.1f} s)")
    for split, info in manifest["splits"].items():
        total = sum(info["class_pixels"].values()) + info["ignore_pixels"]
        present = sum(1 for v in info["class_pixels"].values() if v)
        print(
            f"  {split}: {info['count']} images, {present}/{len(W.CLASSES)} classes present, "
            f"{100 * info['ignore_pixels'] / max(total, 1):.1f}% ignore pixels"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
