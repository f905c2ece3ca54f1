"""What the miniature world's CLIP teacher depends on: its config, whose hash names a checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

import open_clip

from ..modeling.clip_loading import CUSTOM_CONFIG_DIR  # noqa: F401  (registers ClipZSS-* configs)
from . import world as W

MODEL_NAME = "ClipZSS-MiniWorld"
DEFAULT_TEACHER_PATH = os.path.join("output", "miniworld", "teacher", "clip_miniworld.pt")
# Independent random streams, so teacher images never coincide with the dataset's images.
STREAM_TRAIN, STREAM_EVAL = 1001, 1002
# Bump when the training code changes in a way the config does not capture (invalidates caches).
TRAINER_VERSION = 2  # 2: QuickGELU


@dataclass(frozen=True)
class TeacherConfig:
    """Everything the trained weights depend on; its hash names a cached checkpoint."""

    model_name: str = MODEL_NAME
    activation: str = "quick_gelu"  # as OpenAI's CLIP; the architecture config does not say it
    # 400 steps with half the patches dropped, chosen on miniworld_tune for the main job's time
    # budget by a rule stated before the figures:
    # docs/notes/2026-11-30-miniworld-record.md#protocol-train-tune-test-and-the-reproducibility-fix
    steps: int = 400
    batch_size: int = 64
    # FLIP's patch dropout (open_clip's PatchDropout, training only): each step sees a random
    # share of the image's patches, so a step costs about that much less; the saved weights and
    # the architecture config are those of the plain model
    patch_dropout: float = 0.5
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    jpeg_quality: int = 90
    # torch threads while training, fixed so that machines of one kind train the same weights
    # (float reductions depend on the thread count); 1 thread takes about twice as long
    threads: int = 2
    # Scenes as in the dataset, square at the model's input size (0 = read it from the model
    # config), without void rings (a caption names objects, not annotation bands).
    world: W.WorldParams = field(default_factory=lambda: W.WorldParams().square(0))

    def resolved(self) -> TeacherConfig:
        """Fill in the image size from the open_clip config so the hash sees the real value."""
        if self.world.max_short_side:
            return self
        size = model_image_size(self.model_name)
        return dataclasses.replace(self, world=self.world.square(size))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["world"] = self.world.to_dict()
        return d

    def fingerprint(self) -> str:
        cfg = self.resolved()
        payload = {
            "trainer_version": TRAINER_VERSION,
            "world_version": W.WORLD_VERSION,
            "config": cfg.to_dict(),
            "model_cfg": open_clip.get_model_config(cfg.model_name),
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def model_image_size(model_name: str) -> int:
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f"Unknown open_clip model config {model_name!r}")
    size = model_cfg["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])
