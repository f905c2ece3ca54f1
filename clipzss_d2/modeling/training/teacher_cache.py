"""The teacher cache (MODEL.CLIPZSS.TEACHER.CACHE): the teacher runs once per training image.

An approximation of the method with a name, off in the paper setting. The frozen teacher's
forward dominates the training step of a light student (docs/benchmarks.md#the-teacher-cache);
its output does not change during training, only the crops it is asked about do. So the
teacher runs once per image on a fixed view of the whole image (the mapper's ``teacher_view``:
resized to TEACHER.CACHE_SIZE, no colour jitter), the CLS and patch tokens are kept, and each
later crop gets:

- patch tokens: the cached grid resampled (bilinear) at the crop's token centres, mapped into
  the view by the mapper's ``teacher_view_from_crop`` (scale, shift, flip). Where the crop's
  token grid meets the view's one to one (same scale, whole-token shift), the tokens are the
  teacher's on the view, not on the crop: a token's context is the whole image.
- CLS: the whole view's, so GLM aligns the crop with the image's embedding, not the crop's.
- token_valid: as the teacher on the crop would mark it (patches wholly inside the image).

Entries live in host memory, per process, up to ``max_bytes``; past that, misses are computed
and not stored. With a directory (TEACHER.CACHE_DIR) each entry is also one safetensors file,
named by a digest of the teacher (model, weights, dense mode, dtype), the view size and the
image (path, size, mtime): every process of a multi-GPU run and every later run with the same
teacher reads it, instead of running the teacher for each image once per process. A file that
cannot be read or holds another key is recomputed, never fatal; files are written atomically
and never replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from safetensors import safe_open
from safetensors.torch import save_file

from ...errors import UserInputError
from ...utils.io import atomic_write_path, file_fingerprint
from ...utils.precision import autocast_disabled
from .teacher import CLIPTeacher, TeacherOutput

logger = logging.getLogger(__name__)

VIEW_KEYS = ("teacher_view", "teacher_view_from_crop", "teacher_cache_key")
DISK_FORMAT_VERSION = 1


class TeacherCache:
    """CLS and patch tokens of each training image's view, keyed by file name."""

    def __init__(self, max_bytes: int, cache_dir: str = "", identity: dict | None = None):
        """
        Args:
            max_bytes: host memory the entries may take.
            cache_dir: where entries are also kept on disk ("" = memory only).
            identity: what makes the teacher's answers these ones (model, weights, dense mode,
                view size); part of every disk entry's key.
        """
        self.max_bytes = int(max_bytes)
        self.cache_dir = cache_dir
        self.identity = dict(identity or {})
        self.clear()

    @classmethod
    def from_config(cls, cfg) -> TeacherCache | None:
        t = cfg.MODEL.CLIPZSS.TEACHER
        if not t.CACHE:
            return None
        if t.INPUT_SIZE > 0:
            raise UserInputError(
                "MODEL.CLIPZSS.TEACHER.CACHE and TEACHER.INPUT_SIZE both change what the teacher "
                "sees: set TEACHER.INPUT_SIZE 0 (the cache's view size is TEACHER.CACHE_SIZE)."
            )
        from ...data.dataset_mapper import teacher_view_size

        z = cfg.MODEL.CLIPZSS
        if t.CACHE_DIR and z.CLIP.PRETRAINED.lower() == "none":
            raise UserInputError(
                "MODEL.CLIPZSS.TEACHER.CACHE_DIR with CLIP.PRETRAINED 'none': a random teacher "
                "differs from run to run, so its answers cannot be kept on disk; set "
                "TEACHER.CACHE_DIR '' or give CLIP weights."
            )
        identity = {
            "format": DISK_FORMAT_VERSION,
            "model": z.CLIP.MODEL_NAME,
            "pretrained": z.CLIP.PRETRAINED,
            "weights": file_fingerprint(z.CLIP.PRETRAINED) or "",
            "activation": z.CLIP.ACTIVATION,
            "dense_mode": t.DENSE_MODE,
            "view_size": list(teacher_view_size(cfg)),
        }
        return cls(int(t.CACHE_MAX_GB * 2**30), t.CACHE_DIR, identity)

    def clear(self) -> None:
        """Forget every entry and count held in memory (files on disk stay)."""
        self.bytes = 0
        self.hits = 0  # found in memory
        self.disk_hits = 0  # read from cache_dir
        self.misses = 0  # the teacher ran
        self._entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._warned = set()

    def __len__(self) -> int:
        return len(self._entries)

    @torch.no_grad()
    def __call__(
        self, teacher: CLIPTeacher, batched_inputs, canvas: tuple[int, int], extents: torch.Tensor
    ) -> TeacherOutput:
        """The teacher's output for a batch of crops padded to ``canvas`` (height, width);
        ``extents`` (B x 2) are the crops' image sizes inside it."""
        missing = [k for k in VIEW_KEYS if not batched_inputs or k not in batched_inputs[0]]
        if missing:
            raise UserInputError(
                f"MODEL.CLIPZSS.TEACHER.CACHE needs the training mapper's {missing}: use "
                f"ZeroShotSemSegDatasetMapper(cfg, is_train=True) or set TEACHER.CACHE False."
            )
        device = teacher.clip_mean.device
        misses = self.misses
        with autocast_disabled():
            entries = self._entries_for(teacher, batched_inputs, device)
            out = self._resample(teacher, entries, batched_inputs, canvas, extents, device)
        _log_scalar("teacher_cache/miss_share", (self.misses - misses) / len(batched_inputs))
        return out

    def _entries_for(self, teacher, batched_inputs, device):
        keys = [x["teacher_cache_key"] for x in batched_inputs]
        todo = {}  # key -> index of its first occurrence in the batch
        for i, key in enumerate(keys):
            if key not in self._entries and key not in todo:
                todo[key] = i
        self.hits += len(keys) - len(todo)
        fresh = {}
        for key in list(todo):
            entry = self._read(key, teacher.dtype)
            if entry is not None:
                fresh[key] = entry
                del todo[key]
        self.disk_hits += len(fresh)
        self.misses += len(todo)
        computed = self._run_teacher(teacher, [batched_inputs[i] for i in todo.values()], device)
        for key, entry in zip(todo, computed):
            fresh[key] = entry
            self._write(key, teacher.dtype, entry)
        for key, (cls_embed, tokens) in fresh.items():
            size = (cls_embed.numel() + tokens.numel()) * tokens.element_size()
            if self.bytes + size <= self.max_bytes:
                self._entries[key] = (cls_embed.cpu(), tokens.cpu())
                self.bytes += size
            else:
                self._warn_once(
                    "full",
                    f"Teacher cache full ({self.bytes / 2**30:.2f} GiB, MODEL.CLIPZSS.TEACHER."
                    f"CACHE_MAX_GB): further images are run or read from disk, not kept.",
                )
        out = []
        for key in keys:
            cls_embed, tokens = fresh[key] if key in fresh else self._entries[key]
            out.append((cls_embed.to(device), tokens.to(device)))
        return out

    # -- disk ----------------------------------------------------------------------------------
    def _disk_key(self, key: str, dtype: torch.dtype) -> tuple[str, str] | None:
        """(path, key text) of an entry's file, or None without a cache directory."""
        if not self.cache_dir:
            return None
        text = json.dumps({**self.identity, "dtype": str(dtype), "image": key}, sort_keys=True)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return os.path.join(self.cache_dir, digest[:2], digest + ".safetensors"), text

    def _read(self, key: str, dtype: torch.dtype):
        found = self._disk_key(key, dtype)
        if found is None or not os.path.isfile(found[0]):
            return None
        path, text = found
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                cls_embed, tokens = f.get_tensor("cls"), f.get_tensor("tokens")
        except Exception as e:  # a broken entry is recomputed, never fatal
            self._warn_once(path, f"Ignoring unreadable teacher cache entry {path} ({e}).")
            return None
        ok = (
            meta.get("key") == text
            and cls_embed.ndim == 1
            and tokens.ndim == 3
            and tokens.shape[0] == cls_embed.shape[0]
            and bool(torch.isfinite(tokens).all() and torch.isfinite(cls_embed).all())
        )
        if not ok:
            self._warn_once(path, f"Teacher cache entry {path} is not this image's; recomputing.")
            return None
        return cls_embed, tokens

    def _write(self, key: str, dtype: torch.dtype, entry) -> None:
        found = self._disk_key(key, dtype)
        if found is None or os.path.exists(found[0]):
            return
        path, text = found
        cls_embed, tokens = entry
        tensors = {"cls": cls_embed.contiguous().cpu(), "tokens": tokens.contiguous().cpu()}
        try:
            with atomic_write_path(path) as tmp:
                save_file(tensors, tmp, metadata={"key": text})
        except OSError as e:
            self._warn_once("write", f"Could not write teacher cache entry {path} ({e}).")

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            logger.warning(message)

    @staticmethod
    def _run_teacher(teacher, inputs, device):
        """The teacher on the views, padded into one batch; padding is masked out of its
        attention, so each view's tokens are those of the view alone."""
        if not inputs:
            return []
        views = ImageList.from_tensors([x["teacher_view"].to(device) for x in inputs])
        sizes = torch.tensor(views.image_sizes, dtype=torch.long)
        out = teacher(views.tensor, normalized=False, image_sizes=sizes)
        grids = teacher.token_grids(sizes, *views.tensor.shape[-2:]).tolist()
        # copies: a view would keep the whole padded batch alive in the cache
        return [
            (out.cls_embed[i].clone(), out.patch_embed[i, :, :rows, :cols].clone())
            for i, (rows, cols) in enumerate(grids)
        ]

    @staticmethod
    def _resample(teacher, entries, batched_inputs, canvas, extents, device) -> TeacherOutput:
        ph, pw = teacher.patch_size
        gh, gw = canvas[0] // ph, canvas[1] // pw
        b = len(entries)
        dtype = entries[0][1].dtype
        max_rows = max(t.shape[1] for _, t in entries)
        max_cols = max(t.shape[2] for _, t in entries)
        tokens = entries[0][1].new_zeros(b, entries[0][1].shape[0], max_rows, max_cols)
        for i, (_, t) in enumerate(entries):
            tokens[i, :, : t.shape[1], : t.shape[2]] = t
        sizes = torch.tensor([t.shape[1:] for _, t in entries], dtype=torch.float64)
        maps = torch.stack([x["teacher_view_from_crop"] for x in batched_inputs]).double()
        # crop token centres in crop pixels -> view pixels -> view token units, clamped to the
        # entry's own centres (its edge tokens extend, as border padding would)
        cx = (torch.arange(gw, dtype=torch.float64) + 0.5) * pw
        cy = (torch.arange(gh, dtype=torch.float64) + 0.5) * ph
        u = (maps[:, 0:1] * cx + maps[:, 1:2]) / pw
        v = (maps[:, 2:3] * cy + maps[:, 3:4]) / ph
        u = torch.minimum(u.clamp(min=0.5), sizes[:, 1:2] - 0.5)
        v = torch.minimum(v.clamp(min=0.5), sizes[:, 0:1] - 0.5)
        # grid_sample with align_corners=False: -1 / +1 are the outer edges of the padded grid
        gx = (2 * u / max_cols - 1)[:, None, :].expand(b, gh, gw)
        gy = (2 * v / max_rows - 1)[:, :, None].expand(b, gh, gw)
        grid = torch.stack([gx, gy], dim=-1).to(device=device, dtype=torch.float32)
        patch = F.grid_sample(tokens.float(), grid, mode="bilinear", align_corners=False)
        grids = teacher.token_grids(extents.cpu(), *canvas)
        rows = torch.arange(gh)[None, :, None] < grids[:, 0, None, None]
        cols = torch.arange(gw)[None, None, :] < grids[:, 1, None, None]
        return TeacherOutput(
            cls_embed=torch.stack([c for c, _ in entries]),
            patch_embed=patch.to(dtype),
            token_valid=(rows & cols).to(device),
        )


def _log_scalar(name: str, value: float) -> None:
    """Into the trainer's metrics (TensorBoard, metrics.json) when a trainer is running: the
    share of the batch for which the teacher ran falls to 0 once every image has been seen."""
    try:
        storage = get_event_storage()
    except AssertionError:  # no EventStorage: called outside a trainer (tests, benchmarks)
        return
    storage.put_scalar(name, value)
