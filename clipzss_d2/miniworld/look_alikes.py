"""Does the teacher tell each unseen class from its seen look-alikes? Zero-shot on dataset crops.

The probe of issue 24's part 2: the world's files (the images and label maps a student trains on,
read through detectron2's dataset catalog), one crop per thing instance (a connected component of
its label, centred in a square of twice its larger side, as objects sit in the teacher's own
training images) and per stuff region (the largest square window that is at least STUFF_PURITY of
one stuff class), resized to the teacher's input size, embedded by the teacher's CLS token and
named among the classes of the same kind with the prompt the teacher's probes use.

Reported per unseen class: its share of correct crops among all names of its kind, and the
balanced two-way accuracy against the seen look-alike the world declares (world.LOOK_ALIKES), the
seen class nearest in the teacher's text space, and the hardest seen class of its kind: the mean of
"u crops nearer u's name than s's" and "s crops nearer s's name than u's". Plus the confusion of
each kind (rows: truth, columns: prediction).

    python -m clipzss_d2.miniworld probe-teacher [--teacher PATH] [--split tune] [--json]
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from ..data.label_io import read_label_map
from ..errors import UserInputError
from ..modeling.clip_loading import create_clip_model
from . import register_miniworld
from . import world as W
from .teacher_config import DEFAULT_TEACHER_PATH, MODEL_NAME, TeacherConfig, model_image_size
from .teacher_data import Batches
from .teacher_eval import encode_names, image_tokens

# A thing's crop is this many times its larger side (objects of the teacher's training images
# span 0.2-0.6 of the image: radius 0.1-0.3).
CROP_SCALE = 2.0
MIN_THING_PIXELS = 40
STUFF_WINDOW = 48
STUFF_PURITY = 0.9


def _square(cx: float, cy: float, side: float, h: int, w: int) -> tuple[int, int, int, int]:
    """A square of `side` centred at (cx, cy), shrunk to fit the image and shifted inside it."""
    side = int(round(min(side, h, w)))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return x0, y0, x0 + side, y0 + side


def crop_boxes(label: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(class id, (x0, y0, x1, y1)) of every thing instance and stuff region worth a crop."""
    h, w = label.shape
    boxes = []
    for cid in np.unique(label):
        if cid == W.IGNORE_LABEL:
            continue
        mask = (label == cid).astype(np.uint8)
        if W.CLASSES[cid] in W.THINGS:
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for x, y, bw, bh, area in stats[1:n]:
                if area >= MIN_THING_PIXELS:
                    side = CROP_SCALE * max(bw, bh)
                    boxes.append((int(cid), _square(x + bw / 2, y + bh / 2, side, h, w)))
        else:
            side = min(STUFF_WINDOW, h, w)
            # pixels of the class in the side x side window whose top-left corner is (y, x)
            ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            count = ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]
            y, x = np.unravel_index(np.argmax(count), count.shape)
            if count[y, x] >= STUFF_PURITY * side * side:
                boxes.append((int(cid), (int(x), int(y), int(x) + side, int(y) + side)))
    return boxes


def dataset_crops(dataset_name: str, size: int, max_images: int | None = None):
    """Crops (N x size x size x 3 uint8 RGB) and their class ids from a registered dataset."""
    crops, ids = [], []
    for record in DatasetCatalog.get(dataset_name)[:max_images]:
        image = read_image(record["file_name"], format="RGB")
        label = read_label_map(record["sem_seg_file_name"])
        for cid, (x0, y0, x1, y1) in crop_boxes(label):
            crop = image[y0:y1, x0:x1]
            interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
            crops.append(cv2.resize(crop, (size, size), interpolation=interp))
            ids.append(cid)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(crops), np.array(ids)


def _two_way(sims: np.ndarray, truth: np.ndarray, a: int, b: int) -> float | None:
    """Balanced accuracy of naming crops of class a or b with one of those two names (None
    unless both have crops)."""
    accs = []
    for mine, other in ((a, b), (b, a)):
        sel = truth == mine
        if not sel.any():
            return None
        accs.append(float((sims[sel, mine] > sims[sel, other]).mean()))
    return float(np.mean(accs))


def look_alike_report(
    model, model_name: str, images: torch.Tensor, truth: np.ndarray, batch_size: int = 256
) -> dict:
    """The figures of the module docstring for CLIP-normalised crops (N x 3 x s x s) of classes
    `truth` (ids in world.CLASSES)."""
    model.eval()
    cls = torch.cat(
        [
            image_tokens(model, images[i : i + batch_size])[0]
            for i in range(0, len(images), batch_size)
        ]
    )
    text = encode_names(model, model_name, W.CLASSES)
    sims = (cls @ text.T).numpy()
    text_cos = (text @ text.T).numpy()
    report: dict = {"num_crops": int(len(truth)), "classes": {}, "confusion": {}}
    for kind, names in (("things", W.THINGS), ("stuff", W.STUFF)):
        ids = np.array([W.CLASS_ID[n] for n in names])
        sel = np.isin(truth, ids)
        pred = ids[sims[sel][:, ids].argmax(1)]
        conf = np.zeros((len(ids), len(ids)), dtype=np.int64)
        np.add.at(conf, (np.searchsorted(ids, truth[sel]), np.searchsorted(ids, pred)), 1)
        report["confusion"][kind] = {"names": list(names), "counts": conf.tolist()}
        seen = [n for n in names if n not in W.UNSEEN]
        for u in (n for n in names if n in W.UNSEEN):
            ui = W.CLASS_ID[u]
            mine = truth[sel] == ui
            nearest = max(seen, key=lambda s: text_cos[ui, W.CLASS_ID[s]])
            pairs = {s: _two_way(sims, truth, ui, W.CLASS_ID[s]) for s in seen}
            measured = {s: v for s, v in pairs.items() if v is not None}
            hardest = min(measured, key=measured.get) if measured else None
            report["classes"][u] = {
                "crops": int(mine.sum()),
                "acc_among_kind": float((pred[mine] == ui).mean()) if mine.any() else None,
                "look_alike": W.LOOK_ALIKES[u],
                "vs_look_alike": pairs[W.LOOK_ALIKES[u]],
                "text_nearest": nearest,
                "text_cos_nearest": float(text_cos[ui, W.CLASS_ID[nearest]]),
                "vs_text_nearest": pairs[nearest],
                "hardest": hardest,
                "vs_hardest": measured.get(hardest),
            }
    return report


def format_report(report: dict) -> str:
    lines = [
        f"{report['num_crops']} crops",
        "",
        "| unseen | crops | acc among its kind | vs look-alike | vs text-nearest (cos) | hardest |",
        "|---|---:|---:|---|---|---|",
    ]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    for u, r in report["classes"].items():
        lines.append(
            f"| {u} | {r['crops']} | {pct(r['acc_among_kind'])} | "
            f"{r['look_alike']} {pct(r['vs_look_alike'])} | "
            f"{r['text_nearest']} {pct(r['vs_text_nearest'])} ({r['text_cos_nearest']:.2f}) | "
            f"{r['hardest'] or '-'} {pct(r['vs_hardest'])} |"
        )
    for kind, c in report["confusion"].items():
        names = c["names"]
        lines += ["", f"{kind}: rows truth, columns prediction", ""]
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for n, row in zip(names, c["counts"]):
            lines.append(f"| {n} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipzss_d2.miniworld probe-teacher", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--teacher", default=DEFAULT_TEACHER_PATH, help="checkpoint (.pt)")
    parser.add_argument(
        "--root", default=None, help="the world's folder (default: the registered one)"
    )
    parser.add_argument("--split", default="tune", choices=("train", "tune", "test"))
    parser.add_argument(
        "--max-images", type=int, default=None, help="the split's first N images (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be at least 1, got {args.max_images}")
    if args.root:
        register_miniworld(args.root)
    model = create_clip_model(
        MODEL_NAME, args.teacher, activation=TeacherConfig.activation, config_key="--teacher"
    )
    crops, truth = dataset_crops(
        f"miniworld_{args.split}", model_image_size(MODEL_NAME), args.max_images
    )
    if not len(truth):
        raise UserInputError(
            f"No object or stuff region of the {args.split} split is large enough to crop; "
            "probe a split with more images."
        )
    images = Batches(model, TeacherConfig()).to_tensor(list(crops))
    report = look_alike_report(model, MODEL_NAME, images, truth)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
