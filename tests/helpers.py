"""Tiny configs and toy data shared by the tests (CPU, random weights, a few MB)."""

from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from clipzss_d2 import get_clipzss_cfg

BASE_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "Base-CLIPZSS.yaml")
TINY_CLIP = "ClipZSS-Tiny-Test"
TOY_CLASSES = ["red square", "green square", "blue square", "yellow square"]
TOY_UNSEEN = ["yellow square"]
TOY_COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 40)]

# DeepLab ResNet-50 layout with tiny widths, DeepLabV3+ head, tiny CLIP: builds in < 1 s.
TINY_MODEL_OPTS = [
    "MODEL.WEIGHTS",
    "",
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RESNETS.DEPTH",
    50,
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    16,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    32,
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    8,
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.SEM_SEG_HEAD.NORM",
    "BN",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    16,
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS",
    16,
    "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS",
    [8],
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT",
    0.0,
    "MODEL.CLIPZSS.EMBED_DIM",
    32,
    "MODEL.CLIPZSS.CLIP.MODEL_NAME",
    TINY_CLIP,
    "MODEL.CLIPZSS.CLIP.PRETRAINED",
    "none",
    "MODEL.CLIPZSS.TEXT.TEMPLATES",
    "single",
    "MODEL.CLIPZSS.TEXT.CACHE_DIR",
    "",
    "SOLVER.AMP.ENABLED",
    False,
]


def register_toy_dataset(name: str = "clipzss_toy") -> str:
    """Metadata-only toy dataset (4 colour classes, 1 unseen) for model tests."""
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(
            stuff_classes=TOY_CLASSES,
            unseen_classes=TOY_UNSEEN,
            stuff_colors=TOY_COLORS,
            ignore_label=255,
            evaluator_type="gzss_sem_seg",
        )
    return name


def tiny_cfg(config_file: str = BASE_CONFIG, extra_opts=()):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(config_file)
    toy = register_toy_dataset()
    cfg.merge_from_list(TINY_MODEL_OPTS + ["DATASETS.TRAIN", (toy,), "DATASETS.TEST", (toy,)])
    cfg.merge_from_list(list(extra_opts))
    return cfg


def toy_batch(batch_size: int = 2, size: int = 64, seed: int = 0, seen_only: bool = True):
    """Images of coloured squares on grey with labels in training (seen-index) space."""
    g = torch.Generator().manual_seed(seed)
    num_classes = len(TOY_CLASSES) - (len(TOY_UNSEEN) if seen_only else 0)
    batch = []
    for _ in range(batch_size):
        image = torch.full((3, size, size), 128, dtype=torch.uint8)
        label = torch.full((size, size), 255, dtype=torch.long)
        for _ in range(3):
            cls = int(torch.randint(num_classes, (1,), generator=g))
            side = int(torch.randint(size // 4, size // 2, (1,), generator=g))
            y, x = (int(v) for v in torch.randint(0, size - side, (2,), generator=g))
            rgb = TOY_COLORS[cls]
            image[:, y : y + side, x : x + side] = torch.tensor(rgb[::-1], dtype=torch.uint8)[
                :, None, None
            ]
            label[y : y + side, x : x + side] = cls
        batch.append({"image": image, "sem_seg": label, "height": size, "width": size})
    return batch
