#!/usr/bin/env python
"""Check the frozen CLIP teacher and PLM's pseudo labels before training, against hidden labels.

Runs the teacher and PLM exactly as a training step does (the training mapper's crops and
padding, CLIPZSS.training_targets, the model's own PLM: PixelLearningModule.pseudo_targets) on
labelled training images, with the unseen classes hidden from PLM as in training; their labels
only score the result, with the probe MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS uses during
training (clipzss_d2.diagnostics), so the figures are the ones training would log. Reports:

- per unseen class, the share of its unlabelled pixels given a pseudo label and the purity of
  the regions that cover it; the share of void pixels and of seen-halo pixels (unlabelled
  pixels within --halo-px of a seen label) that got one; pseudo regions per image;
- the same figures over a sweep of PLM.FUSION_THRESHOLD (lambda) and PLM.WINDOW_SIZES sets
  (K-Means runs once per image and window size; each setting re-fuses), and the setting that
  maximises unseen share x unseen purity, printed as the config line to use;
- the teacher's own dense zero-shot mIoU on DATASETS.TEST[0] (MODEL.META_ARCHITECTURE
  CLIPAlone through the evaluation route of train_net.py --eval-only): the reference a
  student should beat on unseen classes;
- a picture grid: image | ground truth | teacher regions | pseudo labels.

    python tools/check_teacher.py --config-file configs/voc.yaml --num-images 200
    python tools/check_teacher.py --config-file configs/voc.yaml --lambdas 0.8,0.9 \\
        --window-sets "2,4,8;4,8" MODEL.DEVICE cuda

Writes teacher_check.md, teacher_check.json and teacher_check.png to --output (default
OUTPUT_DIR/teacher_check); existing ones are kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import clipzss_d2  # noqa: E402,F401  (registers the datasets and the model)
from clipzss_d2.data import ZeroShotSemSegDatasetMapper, register_custom_datasets  # noqa: E402
from clipzss_d2.diagnostics import PseudoLabelProbe, format_summary, observe_batch  # noqa: E402
from clipzss_d2.entry import add_config_arguments, load_config, run_main  # noqa: E402
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.evaluation import (  # noqa: E402
    build_eval_student,
    build_gzss_evaluator,
    build_gzss_test_loader,
)
from clipzss_d2.evaluation.gzss_evaluation import PER_CLASS_FILE  # noqa: E402
from clipzss_d2.utils.io import atomic_write_path, atomic_write_text  # noqa: E402
from clipzss_d2.utils.progress import progress  # noqa: E402
from clipzss_d2.vocabulary import seen_class_ids, shared_metadata  # noqa: E402

logger = logging.getLogger("clipzss_d2.check_teacher")
PROG = "check_teacher.py"
REPORT_FILES = ("teacher_check.md", "teacher_check.json", "teacher_check.png")
ZERO_SHOT_DIR = "teacher_zero_shot"  # the evaluator's per-class IoU and confusion matrix
CRITERION = (
    "unseen share x unseen purity: of the unlabelled pixels of unseen classes, the share given a "
    "pseudo label, times the purity of the regions whose majority is an unseen class (on a tie, "
    "the config's own setting, else the first in sweep order)"
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, trailing_opts=True)
    parser.add_argument("--num-images", type=int, default=200,
                        help="training images to check (default %(default)s)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=2,
                        help="images per teacher batch (default %(default)s)")  # fmt: skip
    parser.add_argument(
        "--lambdas",
        default="0.5,0.6,0.7,0.75,0.8,0.85,0.9,0.95",
        help="PLM.FUSION_THRESHOLD values of the sweep, comma-separated (the config's is added)",
    )
    parser.add_argument(
        "--window-sets",
        default="2,4,8;2,4;4,8;2,4,8,16",
        help="PLM.WINDOW_SIZES sets of the sweep, ';'-separated (the config's is added)",
    )
    parser.add_argument("--halo-px", type=int, default=8,
                        help="seen-halo band: unlabelled pixels within this many pixels of a "
                        "seen label (default %(default)s)")  # fmt: skip
    parser.add_argument("--num-val-images", type=int, default=300,
                        help="validation images for the teacher's zero-shot mIoU, first in "
                        "dataset order; 0 skips it (default %(default)s)")  # fmt: skip
    parser.add_argument("--num-pictures", type=int, default=4,
                        help="images in the picture grid; 0 writes none (default %(default)s)")  # fmt: skip
    parser.add_argument("--output", help="folder for the report (default OUTPUT_DIR/teacher_check)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    return parser.parse_args(argv)


# -- the sweep ------------------------------------------------------------------------------------
class Setting(NamedTuple):
    windows: tuple[int, ...]
    threshold: float

    @property
    def config_line(self) -> str:
        windows = ", ".join(str(w) for w in self.windows)
        return (
            f"MODEL.CLIPZSS.PLM.FUSION_THRESHOLD {self.threshold:g} "
            f"MODEL.CLIPZSS.PLM.WINDOW_SIZES [{windows}]"
        )


def parse_settings(lambdas: str, window_sets: str, default: Setting) -> list[Setting]:
    """Window sets x lambdas (the config's setting included), in sweep order."""
    try:
        values = sorted({float(v) for v in lambdas.split(",") if v.strip()} | {default.threshold})
        sets = [tuple(int(w) for w in s.split(",") if w.strip()) for s in window_sets.split(";")]
    except ValueError:
        raise UserInputError(
            f"--lambdas {lambdas!r} / --window-sets {window_sets!r}: give numbers, e.g. "
            f'--lambdas 0.8,0.9 --window-sets "2,4,8;4,8".'
        ) from None
    if any(not 0 < v <= 1 for v in values):
        raise UserInputError(f"--lambdas {lambdas!r}: each value must be in (0, 1].")
    sets = [s for s in sets if s]
    if any(min(s) < 1 for s in sets):
        raise UserInputError(f"--window-sets {window_sets!r}: window sizes must be >= 1.")
    sets = list(dict.fromkeys([default.windows, *sets]))
    return [Setting(s, v) for s in sets for v in values]


def score(summary: dict) -> float:
    """The criterion (CRITERION): unseen share x unseen purity; 0 without figures."""
    share, purity = summary["unseen_share"], summary["unseen_purity"]
    return 0.0 if share is None or purity is None else share * purity


class Sweep:
    """One probe per setting; each batch is clustered once per window size and re-fused per
    setting by the model's own PLM (``pseudo_targets``), so every figure is training's."""

    def __init__(self, plm, settings: list[Setting], class_names, unseen_names, ignore, halo_px):
        self.plm = plm
        self.settings = settings
        self.windows = sorted({w for s in settings for w in s.windows})
        self.probes = {
            s: PseudoLabelProbe(class_names, unseen_names, ignore, halo_radius=halo_px)
            for s in settings
        }

    @torch.no_grad()
    def observe(self, inputs, targets, valid, teacher_out, num_seen, grid, keep=None):
        """Count one batch under every setting; returns the ``keep`` setting's PseudoTargets."""
        clusters = dict(zip(self.windows, self.plm.teacher_clusters(teacher_out, self.windows)))
        kept = None
        for setting, probe in self.probes.items():
            out = self.plm.pseudo_targets(
                targets,
                teacher_out,
                valid,
                num_seen,
                grid,
                clusters=[clusters[w] for w in setting.windows],
                threshold=setting.threshold,
            )
            observe_batch(probe, inputs, targets, out.fused.labels, num_seen, valid)
            if setting == keep:
                kept = out
        return kept

    def results(self, default: Setting) -> tuple[list[dict], Setting]:
        rows = []
        for setting, probe in self.probes.items():
            summary = probe.summary()
            rows.append({"windows": list(setting.windows), "threshold": setting.threshold,
                         "score": round(score(summary), 4), "summary": summary})  # fmt: skip
        best_score = max(r["score"] for r in rows)
        tied = [s for s, r in zip(self.probes, rows) if r["score"] == best_score]
        return rows, (default if default in tied else tied[0])


# -- one pass over the training images -----------------------------------------------------------
def training_records(cfg, num_images: int, seed: int) -> tuple[list[dict], int]:
    """`num_images` records of DATASETS.TRAIN drawn with `seed` (all when fewer), in dataset
    order, and how many the datasets hold."""
    records = []
    for name in cfg.DATASETS.TRAIN:
        records += DatasetCatalog.get(name)
    if not records:
        raise UserInputError(f"DATASETS.TRAIN {list(cfg.DATASETS.TRAIN)} holds no images.")
    if num_images >= len(records):
        return records, len(records)
    chosen = sorted(random.Random(seed).sample(range(len(records)), num_images))
    return [records[i] for i in chosen], len(records)


def batches(records, mapper, batch_size: int, seed: int):
    """The training mapper's outputs, `batch_size` at a time; its random crops, scales and
    flips are drawn from numpy's global generator (as detectron2's), seeded here."""
    np.random.seed(seed)  # noqa: NPY002
    for start in range(0, len(records), batch_size):
        yield [mapper(r) for r in records[start : start + batch_size]]


def student_grid(model, shape, cache: dict) -> tuple[int, int]:
    """The student's embedding grid for a padded batch shape (one forward per shape): the
    synthesizer gives no prototype to a pseudo region absent from it."""
    key = tuple(shape)
    if key not in cache:
        with torch.no_grad():
            probe = torch.zeros(1, 3, *key, device=model.device)
            cache[key] = tuple(model.embed(probe).shape[-2:])
    return cache[key]


def check_batch(model, sweep: Sweep, inputs: list[dict], keep: Setting, grids: dict):
    """One training batch as CLIPZSS.losses() sees it (padded targets, real-pixel mask, the
    teacher on the images only), counted under every setting of the sweep."""
    images = model.preprocess_images(inputs)
    targets, extents, valid = model.training_targets(images, inputs)
    teacher_out = model.run_teacher(images, extents)
    grid = None
    if model.plm.synthesizer is not None:
        grid = student_grid(model, images.tensor.shape[-2:], grids)
    num_seen = len(model.train_vocabulary)
    return sweep.observe(inputs, targets, valid, teacher_out, num_seen, grid, keep=keep)


class Picture(NamedTuple):
    image: np.ndarray  # H x W x 3 RGB uint8 (the crop, padding removed)
    truth: np.ndarray  # H x W dataset ids / ignore
    regions: np.ndarray  # H x W teacher region id / -1
    fused: np.ndarray  # H x W seen ids, pseudo ids (>= num seen), ignore


def check_training_images(cfg, model, args, settings, default, seed) -> dict:
    meta = shared_metadata(cfg.DATASETS.TRAIN)
    records, total = training_records(cfg, args.num_images, seed)
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    sweep = Sweep(model.plm, settings, meta.stuff_classes, meta.get("unseen_classes", []), ignore,
                  args.halo_px)  # fmt: skip
    grids, pictures = {}, []
    bar = progress(total=len(records), desc="teacher check", unit="img")
    for inputs in batches(records, mapper, args.batch_size, seed):
        out = check_batch(model, sweep, inputs, default, grids)
        for i, x in enumerate(inputs):
            if len(pictures) < args.num_pictures:
                pictures.append(picture(x, out, i, cfg.INPUT.FORMAT))
        bar.update(len(inputs))
    bar.close()
    rows, best = sweep.results(default)
    return {
        "datasets": list(cfg.DATASETS.TRAIN),
        "images": len(records),
        "dataset_images": total,
        "seed": seed,
        "batch_size": args.batch_size,
        "halo_px": args.halo_px,
        "default": {"windows": list(default.windows), "threshold": default.threshold},
        "sweep": rows,
        "best": {
            "windows": list(best.windows),
            "threshold": best.threshold,
            "config_line": best.config_line,
        },  # fmt: skip
        "criterion": CRITERION,
        "_pictures": pictures,
        "_meta": meta,
        "_num_seen": len(model.train_vocabulary),
    }


def picture(x: dict, out, i: int, image_format: str) -> Picture:
    h, w = x["image_size"]
    image = x["image"][:, :h, :w].permute(1, 2, 0).numpy()
    if image_format == "BGR":
        image = image[..., ::-1]
    labels = out.fused.labels[i]
    regions = F.interpolate(
        out.regions.region_map[i : i + 1, None].float(), size=labels.shape, mode="nearest-exact"
    )[0, 0].long()
    return Picture(
        image=np.ascontiguousarray(image),
        truth=x["hidden_sem_seg"][:h, :w].numpy(),
        regions=regions[:h, :w].cpu().numpy(),
        fused=labels[:h, :w].cpu().numpy(),
    )


# -- the teacher's own zero-shot segmentation -------------------------------------------------------
def teacher_zero_shot(cfg, num_images: int, output: str) -> dict | None:
    """CLIP alone (the teacher's patch tokens x text embeddings) on the first `num_images` of
    DATASETS.TEST[0], through the route of train_net.py --eval-only."""
    if num_images <= 0 or not cfg.DATASETS.TEST:
        return None
    name = cfg.DATASETS.TEST[0]
    records = DatasetCatalog.get(name)
    used = min(num_images, len(records))
    subset = f"{name}__teacher_check_first{used}"
    if subset in DatasetCatalog.list():
        DatasetCatalog.remove(subset)
        MetadataCatalog.remove(subset)
    DatasetCatalog.register(subset, lambda: records[:used])
    MetadataCatalog.get(subset).set(
        **{k: v for k, v in MetadataCatalog.get(name).as_dict().items() if k != "name"}
    )
    alone = cfg.clone()
    alone.defrost()
    alone.MODEL.META_ARCHITECTURE = "CLIPAlone"
    alone.DATASETS.TEST = (subset,)
    alone.freeze()
    try:
        model = build_eval_student(alone)
        res = inference_on_dataset(
            model,
            build_gzss_test_loader(alone, subset),
            build_gzss_evaluator(
                alone, subset, os.path.join(output, ZERO_SHOT_DIR), distributed=False
            ),  # fmt: skip
        )["sem_seg"]
    finally:
        DatasetCatalog.remove(subset)
        MetadataCatalog.remove(subset)
    keys = ("mIoU(seen)", "mIoU(unseen)", "hIoU", "mIoU", "pAcc")
    figures = {k: (None if math.isnan(res[k]) else round(res[k], 2)) for k in keys if k in res}
    per_class = {k.removeprefix("IoU-"): round(v, 2) for k, v in res.items()
                 if k.startswith("IoU-") and not math.isnan(v)}  # fmt: skip
    return {"dataset": name, "images": used, "dataset_images": len(records), **figures,
            "per_class_iou": per_class}  # fmt: skip


# -- report -----------------------------------------------------------------------------------------
def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_report(cfg, config_file: str, check: dict, teacher: dict | None, device: str) -> str:
    d = check["default"]
    default_row = next(r for r in check["sweep"]
                       if r["windows"] == d["windows"] and r["threshold"] == d["threshold"])  # fmt: skip
    s = default_row["summary"]
    drawn = (
        "all of them"
        if check["images"] == check["dataset_images"]
        else f"drawn at random with seed {check['seed']}"
    )
    lines = [
        f"# Teacher check: {config_file}",
        "",
        f"{check['images']} of the {check['dataset_images']} images of {', '.join(check['datasets'])} "
        f"({drawn}), through the training mapper (crops, scales, flips, padding), "
        f"{check['batch_size']} per batch, on {device}. CLIP {cfg.MODEL.CLIPZSS.CLIP.MODEL_NAME} "
        f"({cfg.MODEL.CLIPZSS.CLIP.PRETRAINED}). The unseen classes are hidden from PLM as in "
        "training; their labels only score.",
        "",
        f"## PLM as configured (FUSION_THRESHOLD {d['threshold']:g}, WINDOW_SIZES {d['windows']})",
        "",
        format_summary(s),
        "",
        f"- unseen: share {pct(s['unseen_share'])} %, purity {pct(s['unseen_purity'])} %",
        f"- void pixels given a pseudo label: {pct(s['void_share'])} %",
        f"- seen-halo pixels (unlabelled, within {check['halo_px']} px of a seen label) given one: "
        f"{pct(s['halo_share'])} %",
        f"- pseudo regions per image: {s['regions_per_image']}",
        "",
        "## Sweep",
        "",
        f"Criterion: {check['criterion']}.",
        "",
        "| windows | lambda | score | unseen share % | unseen purity % | void share % | "
        "halo share % | regions / image | " + " | ".join(s["unseen"]) + " |",
        "|---" * (8 + len(s["unseen"])) + "|",
    ]
    for r in check["sweep"]:
        x = r["summary"]
        per = " | ".join(
            f"{pct(x['per_class'][c]['share'])} / {pct(x['per_class'][c]['purity'])}"
            for c in x["unseen"]
        )
        lines.append(
            f"| {','.join(map(str, r['windows']))} | {r['threshold']:g} | {r['score']:.4f} | "
            f"{pct(x['unseen_share'])} | {pct(x['unseen_purity'])} | {pct(x['void_share'])} | "
            f"{pct(x['halo_share'])} | {x['regions_per_image']} | {per} |"
        )
    lines += ["", "Per unseen class: share % / purity %.", "",
              f"Best setting: `{check['best']['config_line']}`", ""]  # fmt: skip
    lines.append("## The teacher's dense zero-shot segmentation")
    lines.append("")
    if teacher is None:
        lines.append("Not run (--num-val-images 0 or no DATASETS.TEST).")
    else:
        lines += [
            f"CLIP alone (MODEL.META_ARCHITECTURE CLIPAlone: patch tokens x text embeddings) on "
            f"the first {teacher['images']} of the {teacher['dataset_images']} images of "
            f"{teacher['dataset']}, evaluated as train_net.py --eval-only: the reference a "
            "student should beat on unseen classes.",
            "",
            "| mIoU(seen) | mIoU(unseen) | hIoU | mIoU | pAcc |",
            "|---|---|---|---|---|",
            "| " + " | ".join(
                "-" if teacher.get(k) is None else f"{teacher[k]:.2f}"
                for k in ("mIoU(seen)", "mIoU(unseen)", "hIoU", "mIoU", "pAcc")
            ) + " |",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def class_colors(meta) -> np.ndarray:
    """256 x 3 RGB table for dataset ids; ignore (255) black."""
    table = np.zeros((256, 3), np.uint8)
    colors = meta.get("stuff_colors", None)
    for k in range(len(meta.stuff_classes)):
        table[k] = colors[k] if colors else np.random.default_rng(k).integers(40, 255, 3)
    return table


def region_colors(ids: np.ndarray) -> np.ndarray:
    """A fixed colour per region id; -1 black."""
    palette = np.random.default_rng(12345).integers(40, 255, (256, 3)).astype(np.uint8)
    out = palette[np.clip(ids, 0, 255) % 256]
    out[ids < 0] = 0
    return out


def picture_grid(pictures: list[Picture], meta, num_seen: int, height: int = 256) -> np.ndarray:
    """Rows of image | ground truth | teacher regions | pseudo labels (seen ids in their class
    colour, pseudo regions in region colours, ignore black), RGB."""
    colors = class_colors(meta)
    seen_to_id = np.full(256, 255, np.int64)
    seen_to_id[:num_seen] = seen_class_ids(meta)
    rows = []
    for p in pictures:
        fused = p.fused.astype(np.int64)
        pseudo = (fused >= num_seen) & (fused != 255)
        panel = colors[seen_to_id[np.clip(fused, 0, 255)]]
        panel[pseudo] = region_colors(p.regions[pseudo])  # a pseudo class is one region
        panels = [p.image, colors[np.clip(p.truth, 0, 255)], region_colors(p.regions), panel]
        w = max(1, round(p.image.shape[1] * height / p.image.shape[0]))
        rows.append(np.concatenate(
            [cv2.resize(np.ascontiguousarray(x), (w, height), interpolation=cv2.INTER_NEAREST)
             for x in panels], axis=1))  # fmt: skip
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


# -- the command --------------------------------------------------------------------------------------
def check_arguments(args) -> None:
    for flag, value, low in (("--num-images", args.num_images, 1), ("--batch-size", args.batch_size, 1),
                             ("--num-val-images", args.num_val_images, 0),
                             ("--num-pictures", args.num_pictures, 0), ("--halo-px", args.halo_px, 0)):  # fmt: skip
        if value < low:
            raise UserInputError(f"{flag} must be at least {low}, got {value}.")


def check_datasets(cfg, num_val_images: int) -> None:
    names = list(cfg.DATASETS.TRAIN) + (list(cfg.DATASETS.TEST[:1]) if num_val_images else [])
    if not cfg.DATASETS.TRAIN:
        raise UserInputError("DATASETS.TRAIN is empty: the check runs on labelled training images.")
    for name in names:
        if name not in DatasetCatalog.list():
            raise UserInputError(
                f"{name} is not a registered dataset (see datasets/README.md, or DATASETS.CUSTOM "
                "for your own)."
            )
        if MetadataCatalog.get(name).get("evaluator_type") != "gzss_sem_seg":
            raise UserInputError(f"{name} is not a clipzss_d2 semantic segmentation dataset.")


def check_output(output: str, overwrite: bool) -> None:
    ours = [*REPORT_FILES, os.path.join(ZERO_SHOT_DIR, PER_CLASS_FILE)]
    existing = [f for f in ours if os.path.exists(os.path.join(output, f))]
    if existing and not overwrite:
        raise UserInputError(
            f"{output} already holds a teacher check ({', '.join(existing)}): pass --overwrite "
            "to replace it, or choose another --output."
        )


def prepare_config(args):
    cfg = load_config(args, cpu_fallback=True)
    z = cfg.MODEL.CLIPZSS
    z.STUDENT_ONLY = False
    z.DIAGNOSTICS.PSEUDO_LABELS = True  # the training mapper adds the hidden labels
    z.DIAGNOSTICS.ORACLE_TEACHER = False  # the real teacher is what is checked
    if not z.PLM.PSEUDO_LABELS:
        logger.warning("MODEL.CLIPZSS.PLM.PSEUDO_LABELS is off in the config; checked as if on.")
        z.PLM.PSEUDO_LABELS = True
    cfg.freeze()
    return cfg


def main(argv=None) -> int:
    return run_main(run, parse_args(argv), prog=PROG)


def run(args) -> int:
    check_arguments(args)
    cfg = prepare_config(args)
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "teacher_check")
    check_output(output, args.overwrite)
    register_custom_datasets(cfg)
    check_datasets(cfg, args.num_val_images)
    p = cfg.MODEL.CLIPZSS.PLM
    default = Setting(tuple(int(w) for w in p.WINDOW_SIZES), float(p.FUSION_THRESHOLD))
    settings = parse_settings(args.lambdas, args.window_sets, default)
    seed = cfg.SEED if cfg.SEED >= 0 else 0

    try:
        model = build_model(cfg)
    except ValueError as e:  # a config value a module refuses (e.g. PLM.KMEANS_METRIC)
        if isinstance(e, UserInputError):
            raise
        raise UserInputError(f"Invalid config ({args.config_file} / overrides): {e}") from None
    model.eval()
    check = check_training_images(cfg, model, args, settings, default, seed)
    del model
    teacher = teacher_zero_shot(cfg, args.num_val_images, output)

    report = format_report(cfg, args.config_file, check, teacher, cfg.MODEL.DEVICE)
    pictures = check.pop("_pictures")
    meta, num_seen = check.pop("_meta"), check.pop("_num_seen")
    results = {"config_file": args.config_file, "opts": list(args.opts),
               "device": cfg.MODEL.DEVICE, "pseudo_labels": check, "teacher_zero_shot": teacher}  # fmt: skip
    os.makedirs(output, exist_ok=True)
    atomic_write_text(os.path.join(output, REPORT_FILES[1]), json.dumps(results, indent=1))
    png = os.path.join(output, REPORT_FILES[2])
    if pictures:
        grid = picture_grid(pictures, meta, num_seen)
        with atomic_write_path(png) as tmp:
            cv2.imwrite(tmp, grid[..., ::-1])
        report += (
            f"\n![image | ground truth | teacher regions | pseudo labels]({REPORT_FILES[2]})\n"
        )
    elif os.path.exists(png):  # an earlier check's pictures, replaced as --overwrite asked
        os.remove(png)
    atomic_write_text(os.path.join(output, REPORT_FILES[0]), report)
    print(report)
    print(f"Use: {check['best']['config_line']}")
    print(f"Written to {output}")
    return 0


if __name__ == "__main__":
    setup_logger(name="clipzss_d2")
    sys.exit(main())
