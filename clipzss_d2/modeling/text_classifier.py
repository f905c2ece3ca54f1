"""CLIP text embeddings of class names: the student's classifier weights.

Embeddings are cached twice: in memory per class string, and on disk per (model, weights,
templates, class list) in a safetensors file, so a deployed model with a warm cache runs with no
CLIP weights at all. The CLIP text tower itself is loaded lazily, only on a cache miss.
"""

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserInputError
from ..utils.io import atomic_write_path, file_fingerprint
from ..utils.precision import without_autocast
from ..vocabulary import VocabularyError, split_synonyms
from .clip_loading import create_clip_model
from .segments import segment_means

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = "1"

# ViLD's 14 prompts (Gu et al., 2021), the usual choice for segmentation vocabularies.
VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "single": ("a photo of a {}.",),
    "vild": VILD_TEMPLATES,
    # CLIP's 80 ImageNet prompts, taken from open_clip rather than copied.
    "imagenet": tuple(t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES),
}


def get_templates(name: str) -> tuple[str, ...]:
    if name not in TEMPLATE_SETS:
        raise ValueError(
            f"Unknown template set '{name}' (MODEL.CLIPZSS.TEXT.TEMPLATES); "
            f"choose one of {sorted(TEMPLATE_SETS)}."
        )
    return TEMPLATE_SETS[name]


class TextClassifier:
    """Turns class entries ("sofa|couch" = synonyms) into L2-normalised CLIP text embeddings.

    Not an nn.Module on purpose: the CLIP text tower must never end up in the student's
    state_dict, parameters or DDP wrapper.
    """

    DEVICE_CACHE_SIZE = 8  # vocabularies kept on the device (train, eval, a few demo queries)
    MEMORY_CACHE_SIZE = 8192  # class embeddings kept in memory (a server's requests: bounded)

    def __init__(
        self,
        model_name: str,
        pretrained: str,
        templates: str = "vild",
        cache_dir: str = "",
        chunk_size: int = 256,
        device: str | torch.device = "cpu",
        download_dir: str | None = None,
        activation: str = "auto",
        embed_dim: int | None = None,
    ):
        self.model_name = model_name
        self.embed_dim = embed_dim  # the width a cache must have (MODEL.CLIPZSS.EMBED_DIM)
        self.pretrained = pretrained
        self.activation = activation
        self.template_set = templates
        self.templates = get_templates(templates)
        self.cache_dir = cache_dir
        self.chunk_size = max(1, int(chunk_size))
        self.device = torch.device(device)
        self.download_dir = download_dir or None
        # per-entry embeddings, most recently used last
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.write_cache = True  # False: read the disk cache, never add files (web demo)
        # stacked classifiers already on a device, most recent last: a training step reads the
        # same seen classifier every iteration, and stacking plus a host-to-GPU copy each time
        # is work for nothing
        self._on_device: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._clip = None
        self._tokenizer = None

    @property
    def clip_loaded(self) -> bool:
        """Whether the CLIP text tower has been loaded (tests assert a cache hit avoids it)."""
        return self._clip is not None

    def __call__(self, entries: Sequence[str]) -> torch.Tensor:
        """K x C float32 embeddings on CPU, one per entry, in order."""
        entries = list(entries)
        if not entries:
            raise VocabularyError("Cannot build a classifier for an empty vocabulary.")
        if all(e in self._memory for e in entries):
            result = torch.stack([self._memory[e] for e in entries])
        elif (cached := self._load_disk_cache(entries)) is not None:
            result = cached
        else:
            missing = list(dict.fromkeys(e for e in entries if e not in self._memory))
            encoded = dict(zip(missing, self._encode(missing), strict=True))
            result = torch.stack([encoded.get(e, self._memory.get(e)) for e in entries])
            if self.write_cache:
                self._save_disk_cache(entries, result)
        self._remember(entries, result)
        return result

    def _remember(self, entries: Sequence[str], embeddings: torch.Tensor) -> None:
        for entry, embedding in zip(entries, embeddings, strict=True):
            if entry not in self._memory:  # its own storage: not a view pinning the whole stack
                self._memory[entry] = embedding.clone()
            self._memory.move_to_end(entry)
        while len(self._memory) > self.MEMORY_CACHE_SIZE:
            self._memory.popitem(last=False)

    def on_device(self, entries: Sequence[str], device: torch.device | str) -> torch.Tensor:
        """The K x C classifier of ``__call__`` on ``device``, kept there for the last
        ``DEVICE_CACHE_SIZE`` vocabularies. Read-only: callers must not modify it in place."""
        key = (tuple(entries), str(torch.device(device)))
        if key in self._on_device:
            self._on_device.move_to_end(key)
            return self._on_device[key]
        classifier = self(entries).to(device)
        self._on_device[key] = classifier
        while len(self._on_device) > self.DEVICE_CACHE_SIZE:
            self._on_device.popitem(last=False)
        return classifier

    # -- disk cache --------------------------------------------------------------------------
    def cache_key(self, entries: Sequence[str]) -> dict:
        return {
            "format": CACHE_FORMAT_VERSION,
            "model": self.model_name,
            "pretrained": self.pretrained,
            "activation": self.activation,
            "templates": list(self.templates),
            "classes": list(entries),
        }

    def cache_path(self, entries: Sequence[str]) -> str | None:
        if not self.cache_dir:
            return None
        key = json.dumps(self.cache_key(entries), sort_keys=True)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
        safe_model = self.model_name.replace("/", "-")
        return os.path.join(
            self.cache_dir, f"text_{safe_model}_{self.template_set}_{digest}.safetensors"
        )

    def _load_disk_cache(self, entries: Sequence[str]) -> torch.Tensor | None:
        path = self.cache_path(entries)
        if path is None or not os.path.isfile(path):
            return None
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                embeddings = f.get_tensor("embeddings")
        except Exception as e:  # a corrupt cache is recomputed, never fatal
            logger.warning("Ignoring unreadable text-embedding cache %s (%s).", path, e)
            return None
        if json.loads(meta.get("key", "{}")) != self.cache_key(entries):
            logger.warning(
                "Text-embedding cache %s belongs to another vocabulary; recomputing.", path
            )
            return None
        fingerprint = file_fingerprint(self.pretrained)
        if fingerprint is not None and meta.get("weights_fingerprint") not in (
            None,
            "",
            fingerprint,
        ):
            logger.info(
                "CLIP weights file %s changed since %s was written; recomputing.",
                self.pretrained,
                path,
            )
            return None
        if embeddings.ndim != 2 or embeddings.shape[0] != len(entries):
            logger.warning("Text-embedding cache %s has the wrong shape; recomputing.", path)
            return None
        if self.embed_dim is not None and embeddings.shape[1] != self.embed_dim:
            raise UserInputError(
                f"Text-embedding cache {path} holds {embeddings.shape[1]}-wide embeddings but "
                f"MODEL.CLIPZSS.EMBED_DIM is {self.embed_dim}: it was written for another CLIP; "
                f"set EMBED_DIM to the CLIP's width or point MODEL.CLIPZSS.TEXT.CACHE_DIR "
                f"elsewhere."
            )
        if not bool(torch.isfinite(embeddings).all()):
            logger.warning("Text-embedding cache %s holds non-finite values; recomputing.", path)
            return None
        logger.info("Loaded %d text embeddings from %s", len(entries), path)
        return embeddings.float()

    def _save_disk_cache(self, entries: Sequence[str], embeddings: torch.Tensor) -> None:
        path = self.cache_path(entries)
        if path is None:
            return
        meta = {
            "key": json.dumps(self.cache_key(entries), sort_keys=True),
            "weights_fingerprint": file_fingerprint(self.pretrained) or "",
        }
        try:
            with atomic_write_path(path) as tmp:
                save_file({"embeddings": embeddings.contiguous().cpu()}, tmp, metadata=meta)
        except OSError as e:
            logger.warning("Could not write text-embedding cache %s (%s).", path, e)

    # -- encoding ----------------------------------------------------------------------------
    def _load_clip(self):
        if self._clip is None:
            self._clip = create_clip_model(
                self.model_name,
                self.pretrained,
                activation=self.activation,
                device=self.device,
                cache_dir=self.download_dir,
                text_only=True,
            )
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self._clip, self._tokenizer

    @torch.no_grad()
    @without_autocast  # a cache miss inside an AMP training step must give the fp32 embeddings
    def _encode(self, entries: Sequence[str]) -> torch.Tensor:
        """Template ensemble per synonym (normalise, mean, normalise), then mean over synonyms."""
        model, tokenizer = self._load_clip()
        prompts, synonym_of_prompt, entry_of_synonym = [], [], []
        for entry_idx, entry in enumerate(entries):
            for name in split_synonyms(entry):
                synonym_idx = len(entry_of_synonym)
                entry_of_synonym.append(entry_idx)
                prompts.extend(t.format(name) for t in self.templates)
                synonym_of_prompt.extend([synonym_idx] * len(self.templates))

        chunks = []
        for start in range(0, len(prompts), self.chunk_size):
            tokens = tokenizer(prompts[start : start + self.chunk_size]).to(self.device)
            chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
        prompt_emb = torch.cat(chunks)

        synonym_emb = _segment_mean(prompt_emb, torch.tensor(synonym_of_prompt, device=self.device))
        entry_emb = _segment_mean(
            F.normalize(synonym_emb, dim=-1), torch.tensor(entry_of_synonym, device=self.device)
        )
        return F.normalize(entry_emb, dim=-1).cpu()


def _segment_mean(values: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    num = int(segment_ids.max()) + 1
    return segment_means(values[None], segment_ids[None], num)[0][0].to(values.dtype)


def build_text_classifier(cfg) -> TextClassifier:
    text = cfg.MODEL.CLIPZSS.TEXT
    return TextClassifier(
        model_name=cfg.MODEL.CLIPZSS.CLIP.MODEL_NAME,
        pretrained=cfg.MODEL.CLIPZSS.CLIP.PRETRAINED,
        templates=text.TEMPLATES,
        cache_dir=text.CACHE_DIR,
        chunk_size=text.CHUNK_SIZE,
        device=text.DEVICE or cfg.MODEL.DEVICE,
        download_dir=cfg.MODEL.CLIPZSS.CLIP.DOWNLOAD_DIR or None,
        activation=cfg.MODEL.CLIPZSS.CLIP.ACTIVATION,
        embed_dim=cfg.MODEL.CLIPZSS.EMBED_DIM,
    )
