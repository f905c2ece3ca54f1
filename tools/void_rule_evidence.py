#!/usr/bin/env python
"""Which VOC pixels receive pseudo labels under PLM's label-fusion rules: the evidence behind
PLM.SEEN_HALO_RADIUS in configs/voc.yaml (docs/method.md#the-void-halo).

VOC marks a ~5 px void ring (value 255) around every object. In the zero-shot protocol those
pixels are ignored like unseen objects and background, so PLM may give them pseudo labels; around
a seen object that trains the object's edge away from its own class. This tool runs the real
fusion code (``fuse_labels``) on the original VOC label maps at several training scales, with
the best pseudo regions a teacher could give at patch resolution (each 16 px patch takes the
majority ground-truth value of its pixels: an upper bound on CLIP's clustering, independent of
CLIP weights), and reports the share of pixels that receive a pseudo label:
  void near seen: void pixels within 8 px (x scale) of a seen-labelled pixel (the rings to spare);
  unseen / background: pixels of unseen objects and of background (the area PLM is for).

    python tools/void_rule_evidence.py [--voc ../shared/data/voc/VOC2012] [--output table.md]
"""

import argparse
import glob
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from clipzss_d2.data.classes import VOC20_CLASSES, VOC20_UNSEEN  # noqa: E402
from clipzss_d2.entry import run_main  # noqa: E402
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.modeling.training.plm.pseudo_labels import fuse_labels  # noqa: E402

PATCH = 16
SCALES = (0.75, 1.5, 2.5)  # VOC's configs resize 375 px sides to 256..1024 px: 0.7-2.7x
RULES = (
    ("none (the method as published)", 1.0, 0),
    ("REGION_MAX_SEEN_FRACTION 0.5", 0.5, 0),
    ("SEEN_HALO_RADIUS 4", 1.0, 4),
    ("SEEN_HALO_RADIUS 8", 1.0, 8),
    ("SEEN_HALO_RADIUS 12", 1.0, 12),
    ("SEEN_HALO_RADIUS 8 + FRACTION 0.5", 0.5, 8),
)


def oracle_regions(values: torch.Tensor) -> torch.Tensor:
    """Patch grid of region ids: the majority non-void VOC value (0..20) of each patch."""
    onehot = F.one_hot(values.masked_fill(values == 255, 21), 22)[..., :21]
    counts = F.avg_pool2d(onehot.permute(2, 0, 1)[None].float(), PATCH, PATCH)[0]
    region = counts.argmax(0)
    return region.masked_fill(counts.sum(0) == 0, -1)


def shares(files, scale: float, fraction: float, radius: int) -> dict[str, float]:
    unseen_values = torch.tensor([VOC20_CLASSES.index(c) + 1 for c in VOC20_UNSEEN])
    seen_values = [v for v in range(1, 21) if v not in unseen_values.tolist()]
    hits = {"void near seen": [0, 0], "unseen": [0, 0], "background": [0, 0]}
    for path in files:
        values = torch.from_numpy(np.array(Image.open(path)).astype(np.int64))
        values = F.interpolate(values[None, None].float(), scale_factor=scale, mode="nearest")
        values = values[0, 0].long()
        h, w = (values.shape[0] // PATCH) * PATCH, (values.shape[1] // PATCH) * PATCH
        values = values[:h, :w]
        labels = torch.full_like(values, 255)  # the mapper's seen-index space
        for index, v in enumerate(seen_values):
            labels[values == v] = index
        fused = fuse_labels(
            labels[None],
            oracle_regions(values)[None],
            len(seen_values),
            num_regions=21,
            max_seen_fraction=fraction,
            seen_halo_radius=radius,
        ).labels[0]
        pseudo = (fused >= len(seen_values)) & (fused != 255)
        r = round(8 * scale)
        seen = (labels != 255).float()[None, None]
        near = F.max_pool2d(seen, 2 * r + 1, stride=1, padding=r)[0, 0] > 0
        masks = {
            "void near seen": (values == 255) & near,
            "unseen": torch.isin(values, unseen_values),
            "background": values == 0,
        }
        for key, mask in masks.items():
            hits[key][0] += int((pseudo & mask).sum())
            hits[key][1] += int(mask.sum())
    return {k: 100.0 * a / max(b, 1) for k, (a, b) in hits.items()}


def main(argv=None) -> int:
    return run_main(run, argv)


def run(argv) -> int:
    default = os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "voc", "VOC2012"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc", default=default, help="VOC2012 folder (SegmentationClass/*.png)")
    parser.add_argument("--output", default="", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.voc, "SegmentationClass", "*.png")))
    if not files:
        raise UserInputError(f"no label maps in {args.voc}/SegmentationClass")
    header = "| rule | " + " | ".join(
        f"{k} @{s}x" for s in SCALES for k in ("void near seen", "unseen", "background")
    )
    lines = [
        f"% of pixels given a pseudo label, {len(files)} VOC label maps, oracle 16 px regions",
        "",
        header + " |",
        "|---|" + "---:|" * (3 * len(SCALES)),
    ]
    for name, fraction, radius in RULES:
        cells = []
        for scale in SCALES:
            cells += [f"{v:.1f}" for v in shares(files, scale, fraction, radius).values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
