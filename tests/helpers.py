"""Tiny configs, toy data and the repository's paths, shared by the tests (CPU, random weights)."""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.checkpoint import SafeCheckpointer

ROOT = Path(__file__).resolve().parent.parent
# Real dataset samples live beside the checkout in this project's workspace; users' clones lack
# them, so tests that need them (the `shared_data` fixture) skip; CI sets
# CLIPZSS_REQUIRE_SHARED_DATA=1 so that they fail instead.
SHARED_DATA = Path(os.environ.get("CLIPZSS_SHARED_DATA", ROOT.parent / "shared" / "data"))
CONFIGS = ROOT / "configs"
BASE_CONFIG = str(CONFIGS / "Base-CLIPZSS.yaml")
VOC_CONFIG = str(CONFIGS / "voc.yaml")
MINIWORLD_FULL_CONFIG = str(CONFIGS / "miniworld" / "full.yaml")
TINY_CLIP = "ClipZSS-Tiny-Test"  # the CLIP of tests/configs/tiny.yaml
TOY_CLASSES = ["red square", "green square", "blue square", "yellow square"]
TOY_UNSEEN = ["yellow square"]
TOY_COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 40)]

TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def _as_opts(tree: dict, prefix: str = "") -> list:
    """A nested config mapping as detectron2's flat KEY VALUE list (lists stay lists)."""
    opts = []
    for key, value in tree.items():
        if isinstance(value, dict):
            opts += _as_opts(value, f"{prefix}{key}.")
        else:
            opts += [f"{prefix}{key}", list(value) if isinstance(value, list) else value]
    return opts


# The tiny student (tests/configs/tiny.yaml) as opts, laid over any dataset or student config.
TINY_MODEL_OPTS = _as_opts(yaml.safe_load(TINY_CONFIG.read_text()))


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


def miniworld_model_cfg(*opts):
    """configs/miniworld/full.yaml with a random miniature CLIP (no trained teacher needed)."""
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(MINIWORLD_FULL_CONFIG)
    cfg.merge_from_list(
        ["MODEL.CLIPZSS.CLIP.PRETRAINED", "none", "MODEL.CLIPZSS.TEXT.CACHE_DIR", ""] + list(opts)
    )
    return cfg


def record_plm_inputs(model) -> dict:
    """Wrap ``model.plm.forward`` so each call stores the teacher output and the seen
    classifier it was given (keys "teacher", "text_seen") in the returned dict."""
    seen = {}
    real = model.plm.forward

    def watch(dense, labels, text_seen, teacher, scale, valid):
        seen["teacher"], seen["text_seen"] = teacher, text_seen
        return real(dense, labels, text_seen, teacher, scale, valid)

    model.plm.forward = watch
    return seen


def training_step_with_plm_inputs(cfg, records):
    """One training step of a model built from ``cfg`` on the mapped ``records`` (seeded);
    returns the batch, the PLM inputs ``record_plm_inputs`` stored, the model and the losses."""
    from clipzss_d2.data import ZeroShotSemSegDatasetMapper

    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    np.random.seed(0)  # noqa: NPY002
    batch = [mapper(r) for r in records]
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    seen = record_plm_inputs(model)
    losses = model(batch)
    return batch, seen, model, losses


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


def load_script(relative_path: str, name: str | None = None) -> ModuleType:
    """Import a command-line script (train_net.py, demo/demo.py, tools/*.py) as a fresh module."""
    path = ROOT / relative_path
    name = name or "clipzss_script_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_checkpoint(folder: Path, cfg, name: str = "model") -> Path:
    """A random student of `cfg` (seed 0) saved as `{name}.pth` beside its `config.yaml`."""
    torch.manual_seed(0)
    SafeCheckpointer(build_model(cfg), save_dir=str(folder)).save(name)
    (folder / "config.yaml").write_text(cfg.dump())
    return folder / f"{name}.pth"


class RunsACommand:
    """Pickles into a call of os.system that creates `marker`: a hostile file's payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
