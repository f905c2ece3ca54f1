"""The teacher's training data: image-caption batches rendered on the fly, ahead of the step."""

from __future__ import annotations

import numpy as np
import open_clip
import torch

from . import render as R
from . import world as W
from .captions import make_caption
from .teacher_config import STREAM_TRAIN, TeacherConfig


class Batches:
    """Deterministic image-caption batches: batch i depends only on (seed, stream, i)."""

    def __init__(self, model: open_clip.CLIP, cfg: TeacherConfig, stream: int = STREAM_TRAIN):
        self.cfg = cfg = cfg.resolved()
        self.stream = stream
        self.tokenizer = open_clip.get_tokenizer(cfg.model_name)
        pp = open_clip.get_model_preprocess_cfg(model)
        self.mean = torch.tensor(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(pp.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, self.stream, index]))

    def to_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def render(self, index: int, params: W.WorldParams, n: int) -> list[R.Rendered]:
        rng = self.rng(index)
        out = []
        for _ in range(n):
            r = R.make_sample(rng, params)
            if self.cfg.jpeg_quality:
                r.image = R.jpeg_roundtrip(r.image, self.cfg.jpeg_quality)
            out.append(r)
        return out

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(index)
        images, captions = [], []
        for _ in range(self.cfg.batch_size):
            r = R.make_sample(rng, self.cfg.world)
            captions.append(make_caption(r, self.cfg.world, rng))
            img = r.image
            if self.cfg.jpeg_quality:
                img = R.jpeg_roundtrip(img, self.cfg.jpeg_quality)
            images.append(img)
        return self.to_tensor(images), self.tokenizer(captions)


class _StepDataset(torch.utils.data.Dataset):
    """Batch i of the stream as item i, so a loader worker renders ahead of the training step."""

    def __init__(self, batches: Batches, steps: int):
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.batches(index)


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)


def batch_loader(batches: Batches, steps: int, workers: int):
    dataset = _StepDataset(batches, steps)
    if workers <= 0:
        return (dataset[i] for i in range(steps))
    # spawn, not fork: a child forked from a process whose OpenMP/cv2 pools have run can hang in
    # its first cv2 call. Batches depend on the index only, so the weights do not depend on the
    # number of workers.
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        multiprocessing_context="spawn",
        worker_init_fn=_worker_init,
    )
