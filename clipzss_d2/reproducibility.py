"""Deterministic mode (cfg.DETERMINISTIC): same seed, same model; a resumed run equals an
uninterrupted one.

What makes a run depend on more than its seed, and what this module does about it:
- The training data stream. detectron2's loader draws augmentations from each worker's global
  RNGs (so results depend on NUM_WORKERS and on which worker got which image), groups images by
  aspect ratio through a buffer, and on resume starts the sampler again from its first index.
  Here sample number p of the run is image `perm_e[p % n]` (one seeded permutation per epoch
  e = p // n), mapped with Python / numpy / torch RNGs seeded from (SEED, p) and isolated from the
  training RNGs; iteration i of rank r takes positions i*B + r*B/W ... i*B + (r+1)*B/W - 1. The
  stream is a function of (SEED, position) only: independent of workers, of the number of
  processes (ranks split the same global batch) and of restarts (a resumed run starts at its
  iteration's position).
- RNG states (Python, numpy, torch CPU and CUDA) of every process and the GLM bank are saved in
  checkpoints and restored on resume (`RNGStates`, `GLMBankState`).
- Kernels: torch.use_deterministic_algorithms(True, warn_only=True), cuDNN deterministic and not
  benchmarking, CUBLAS_WORKSPACE_CONFIG=:4096:8. On the CPU the reductions torch uses depend on
  the thread count: compare runs with the same OMP_NUM_THREADS / torch.get_num_threads().
"""

from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.engine import HookBase
from detectron2.utils import comm

from .errors import UserInputError

logger = logging.getLogger(__name__)


def enable_deterministic_kernels() -> None:
    """Ask torch for deterministic kernels (warn where a CUDA op has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def check_deterministic_config(cfg) -> None:
    if cfg.SEED < 0:
        raise UserInputError(
            "DETERMINISTIC True needs a fixed seed: add SEED 0 (or any seed >= 0)."
        )
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise UserInputError(
            f"DETERMINISTIC True supports DATALOADER.SAMPLER_TRAIN TrainingSampler only, got "
            f"{cfg.DATALOADER.SAMPLER_TRAIN}."
        )


def _derived_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


@contextlib.contextmanager
def isolated_rng(seed: int):
    """Seed Python, numpy and torch (CPU) RNGs for a block, then put their states back."""
    # the legacy global numpy RNG on purpose: it is what detectron2's augmentations draw from
    py, npy = random.getstate(), np.random.get_state()  # noqa: NPY002
    cpu = torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002
        torch.random.set_rng_state(cpu)


class PositionDataset(torch.utils.data.Dataset):
    """Sample number `position` of the run: a fixed image, mapped with RNGs seeded by it."""

    def __init__(self, dataset_dicts, mapper, seed: int):
        self.dicts = list(dataset_dicts)
        self.mapper = mapper
        self.seed = int(seed)
        self._epoch, self._order = None, None

    def order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_derived_seed(self.seed, 1, epoch))
            self._epoch, self._order = epoch, torch.randperm(len(self.dicts), generator=g).tolist()
        return self._order

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, position: int):
        epoch, offset = divmod(int(position), len(self.dicts))
        with isolated_rng(_derived_seed(self.seed, 2, position)):
            return self.mapper(self.dicts[self.order(epoch)[offset]])


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Positions of this rank's share of each global batch, from iteration `start_iter` on."""

    def __init__(self, global_batch: int, rank: int = 0, world_size: int = 1, start_iter: int = 0):
        if global_batch % world_size:
            raise UserInputError(
                f"SOLVER.IMS_PER_BATCH ({global_batch}) must be divisible by the number of "
                f"processes ({world_size})."
            )
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.start_iter = start_iter  # set by the trainer on resume, before iteration starts

    def __iter__(self):
        per_rank = self.global_batch // self.world_size
        it = self.start_iter
        while True:
            first = it * self.global_batch + self.rank * per_rank
            yield list(range(first, first + per_rank))
            it += 1


def build_deterministic_train_loader(cfg, mapper):
    """Training loader whose batches depend on (SEED, iteration, rank / world size) only."""
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        proposal_files=None,
    )
    sampler = GlobalBatchSampler(cfg.SOLVER.IMS_PER_BATCH, comm.get_rank(), comm.get_world_size())
    return torch.utils.data.DataLoader(
        PositionDataset(dicts, mapper, cfg.SEED),
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
        # workers' own seeds come from this generator, not from the training RNG stream
        generator=torch.Generator().manual_seed(_derived_seed(cfg.SEED, 3)),
    )


# -- checkpointed state ---------------------------------------------------------------------------
def capture_rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": list(np.random.get_state()),  # noqa: NPY002  (detectron2 augmentations)
        "torch": torch.random.get_rng_state(),
    }
    state["numpy"][1] = torch.from_numpy(state["numpy"][1].astype(np.int64))  # weights_only-safe
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    keys = np.asarray(keys, dtype=np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, gauss))  # noqa: NPY002
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


class RNGStates:
    """Checkpointable RNG states of every process (gathered by `GatherRNGStates`)."""

    def __init__(self):
        self.per_rank = None

    def state_dict(self):
        return {"per_rank": self.per_rank or [capture_rng_state()]}

    def load_state_dict(self, state):
        per_rank = state["per_rank"]
        if len(per_rank) != comm.get_world_size():
            logger.warning(
                "RNG states were saved by %d processes, resumed with %d: not restored (random "
                "draws of the resumed run will differ from an uninterrupted one).",
                len(per_rank),
                comm.get_world_size(),
            )
            return
        restore_rng_state(per_rank[comm.get_rank()])


class GatherRNGStates(HookBase):
    """On every process, before the checkpointer saves, collect all processes' RNG states."""

    def __init__(self, rng: RNGStates, period: int, max_iter: int):
        self.rng, self.period, self.max_iter = rng, period, max_iter

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.max_iter - 1:
            state = capture_rng_state()
            self.rng.per_rank = comm.all_gather(state) if comm.get_world_size() > 1 else [state]


class GLMBankState:
    """Checkpointable FIFO bank of the GLM (identical on every process: it holds global batches)."""

    def __init__(self, model: torch.nn.Module):
        from .modeling.training.glm import GlobalLearningModule

        self.modules = [m for m in model.modules() if isinstance(m, GlobalLearningModule)]

    def state_dict(self):
        return {
            "banks": [
                {
                    "bank": m.bank.detach().clone(),
                    "ptr": m.bank_ptr.clone(),
                    "count": m.bank_count.clone(),
                }
                for m in self.modules
            ]
        }

    def load_state_dict(self, state):
        for m, saved in zip(self.modules, state["banks"]):
            if saved["bank"].shape != m.bank.shape:
                logger.warning("GLM bank of another size in the checkpoint: not restored.")
                continue
            m.bank.copy_(saved["bank"])
            m.bank_ptr.copy_(saved["ptr"])
            m.bank_count.copy_(saved["count"])
