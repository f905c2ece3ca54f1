"""Build open_clip models from a name and a `pretrained` tag or local file, failing fast offline.

open_clip retries a missing download for about a minute and then raises an HTTP-internals error;
users of this project often train on clusters without internet, so we resolve the weights file
ourselves first and raise one clear error that names the config key to set instead.
"""

import contextlib
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch

from ..checkpoint import is_torchscript_archive, read_weights_file
from ..errors import UserInputError

logger = logging.getLogger(__name__)

# Tiny CLIP architectures used by tests and the miniature world live beside the package, so
# `MODEL.CLIPZSS.CLIP.MODEL_NAME` can name them like any built-in open_clip model.
CUSTOM_CONFIG_DIR = Path(__file__).resolve().parent.parent / "clip_configs"
open_clip.add_model_config(CUSTOM_CONFIG_DIR)

RANDOM_INIT_TAGS = ("", "none", "random")
RANDOM_WEIGHTS_SEED = 0  # what a CLIP built without weights is drawn from (create_clip_model)
# What open_clip builds as the image tower of a text-only model, then dropped: building the real
# one (and loading its weights) only to encode class names would cost its memory and time.
VISION_STUB = {"image_size": 1, "patch_size": 1, "width": 8, "head_width": 8, "layers": 1}
ACTIVATIONS = ("auto", "quick_gelu", "gelu")
ACTIVATION_KEY = "MODEL.CLIPZSS.CLIP.ACTIVATION"


class CLIPWeightsUnavailableError(UserInputError, RuntimeError):
    """The CLIP weights asked for are neither on disk nor downloadable."""


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_tag_file(pretrained_cfg: dict, cache_dir: str | None) -> str | None:
    """Path of an already-downloaded checkpoint for an open_clip tag, if any."""
    if pretrained_cfg.get("file"):
        return pretrained_cfg["file"] if os.path.isfile(pretrained_cfg["file"]) else None
    hf_hub = pretrained_cfg.get("hf_hub", "")
    if hf_hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            # "org/repo/" means the default file name, "org/repo/file.bin" a given one
            model_id, filename = os.path.split(hf_hub)
            names = [filename] if filename else []
            names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for name in names:
                hit = try_to_load_from_cache(model_id, name, cache_dir=cache_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = pretrained_cfg.get("url", "")
    if url:
        root = cache_dir or os.path.expanduser("~/.cache/clip")
        candidate = os.path.join(root, os.path.basename(url))
        if os.path.isfile(candidate):
            return candidate
    return None


def resolve_pretrained(
    model_name: str,
    pretrained: str,
    cache_dir: str | None = None,
    config_key: str = "MODEL.CLIPZSS.CLIP.PRETRAINED",
) -> str | None:
    """Turn `pretrained` into a local file path (or None for random init) without hanging.

    Accepts an open_clip tag ('openai', 'laion2b_s34b_b88k', ...) or a file path.
    """
    if pretrained is None or pretrained.strip().lower() in RANDOM_INIT_TAGS:
        return None
    expanded = os.path.expanduser(pretrained)
    if os.path.isfile(expanded):
        return expanded
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        looks_like_path = os.sep in pretrained or pretrained.endswith(
            (".pt", ".pth", ".bin", ".safetensors")
        )
        if looks_like_path:
            raise CLIPWeightsUnavailableError(
                f"CLIP weights file '{pretrained}' does not exist. Set {config_key} to an existing "
                f"open_clip checkpoint file, or to an open_clip tag."
            )
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise CLIPWeightsUnavailableError(
            f"'{pretrained}' is neither a file nor a known open_clip tag for '{model_name}'. "
            f"Known tags: {tags or 'none (custom architecture)'}. Set {config_key} to a tag, a "
            f"local checkpoint path, or 'none' for random initialisation."
        )
    cached = _cached_tag_file(tag_cfg, cache_dir)
    if cached:
        return cached
    sources = [s for s in (tag_cfg.get("url", ""),) if s]
    if tag_cfg.get("hf_hub"):
        sources.insert(0, "https://huggingface.co")
    if not any(_reachable(s) for s in sources):
        raise CLIPWeightsUnavailableError(
            f"CLIP weights '{model_name}' / '{pretrained}' are not in the local cache and cannot be "
            f"downloaded (no connection to {', '.join(urlparse(s).hostname for s in sources)}). "
            f"Download the checkpoint on a machine with internet access and set {config_key} to "
            f"its local file path (e.g. {config_key} /path/to/open_clip_pytorch_model.bin)."
        )
    try:
        return open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as e:  # network errors come in many types; report them as one
        raise CLIPWeightsUnavailableError(
            f"Downloading CLIP weights '{model_name}' / '{pretrained}' failed ({type(e).__name__}). "
            f"Set {config_key} to a local checkpoint file instead."
        ) from e


def _is_random(pretrained: str | None) -> bool:
    return pretrained is None or pretrained.strip().lower() in RANDOM_INIT_TAGS


def resolve_activation(model_name: str, pretrained: str, activation: str = "auto"):
    """(quick_gelu, reason): the MLP activation the weights were trained with.

    OpenAI's CLIP weights need QuickGELU whether they come from open_clip's `openai` tag or from
    a local file; open_clip only knows it for its tags, so a file must say it through
    MODEL.CLIPZSS.CLIP.ACTIVATION ("auto" is refused for a file). A tag and an explicit value
    that disagree are an error: that network would silently be the wrong one.
    """
    if activation not in ACTIVATIONS:
        raise CLIPWeightsUnavailableError(
            f"{ACTIVATION_KEY} must be one of {ACTIVATIONS}, got {activation!r}."
        )
    model_cfg = open_clip.get_model_config(model_name) or {}
    arch_quick = bool(model_cfg.get("quick_gelu", False))
    is_file = not _is_random(pretrained) and os.path.isfile(os.path.expanduser(pretrained))
    tag_cfg = {}
    if not (is_file or _is_random(pretrained)):
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    tag_quick = bool(tag_cfg.get("quick_gelu", arch_quick)) if tag_cfg else None
    if activation == "auto":
        if tag_quick is not None:
            return tag_quick, f"open_clip's '{pretrained}' weights of {model_name} were trained so"
        if is_file:
            raise CLIPWeightsUnavailableError(
                f"{ACTIVATION_KEY} is 'auto' but CLIP weights come from the file '{pretrained}', "
                f"which does not say which activation they were trained with. Set "
                f"{ACTIVATION_KEY} quick_gelu for OpenAI's weights, gelu for LAION/DataComp ones."
            )
        return arch_quick, f"the {model_name} architecture's default (random weights)"
    want = activation == "quick_gelu"
    if tag_quick is not None and tag_quick != want:
        need = "quick_gelu" if tag_quick else "gelu"
        raise CLIPWeightsUnavailableError(
            f"{ACTIVATION_KEY} is {activation} but open_clip's '{pretrained}' weights of "
            f"{model_name} were trained with {need}: set {ACTIVATION_KEY} {need} (or auto)."
        )
    return want, f"{ACTIVATION_KEY} = {activation}"


def create_clip_model(
    model_name: str,
    pretrained: str = "openai",
    *,
    activation: str = "auto",
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    config_key: str = "MODEL.CLIPZSS.CLIP.PRETRAINED",
    text_only: bool = False,
) -> open_clip.CLIP:
    """Build a frozen open_clip model in eval mode (fp32; callers cast if they want half).

    activation: "auto" | "quick_gelu" | "gelu" (``resolve_activation``).
    text_only: the text tower alone (``visual`` is None), for encoding class names: the image
        tower is neither built at its size nor given its weights.
    """
    if open_clip.get_model_config(model_name) is None:
        raise ValueError(
            f"Unknown CLIP architecture '{model_name}' (MODEL.CLIPZSS.CLIP.MODEL_NAME). "
            f"Use an open_clip model name such as 'ViT-B-16', or one of this project's "
            f"configs in {CUSTOM_CONFIG_DIR}."
        )
    checkpoint = resolve_pretrained(model_name, pretrained, cache_dir, config_key)
    quick_gelu, why = resolve_activation(model_name, pretrained, activation)
    logger.info(
        "CLIP %s: %s activation (%s).", model_name, "QuickGELU" if quick_gelu else "GELU", why
    )
    # quick_gelu as a constructor argument overrides the architecture config both ways
    kwargs = {"device": device, "cache_dir": cache_dir, "quick_gelu": quick_gelu}
    # Building initialises weights from an RNG before loading the real ones. The global RNG is
    # the training's: drawing from it here would make a run depend on whether its text
    # embeddings were cached (the text tower is built only on a cache miss). Weights are built
    # on the CPU (open_clip moves the model afterwards), so forking the CPU generator suffices;
    # random weights ('none') become one fixed draw, whenever they are first needed.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(RANDOM_WEIGHTS_SEED)
        # big_vision (.npz) weights are loaded by open_clip through the image tower: built in full
        if str(checkpoint).endswith((".npz", ".npy")):  # big_vision (SigLIP) numpy weights
            # open_clip reads them with np.load, pickles off (the one file it reads itself)
            npz = checkpoint
            model = open_clip.create_model(model_name, pretrained=npz, **kwargs)
        elif text_only:
            model = _create_text_tower(model_name, checkpoint, kwargs)
        else:
            with _quiet_random_init_note(checkpoint is not None):
                model = open_clip.create_model(model_name, pretrained=None, **kwargs)
            if checkpoint is not None:
                _load_clip_weights(model, checkpoint, model_name)
        if text_only:
            model.visual = None
    if checkpoint is None:
        logger.warning(
            "CLIP '%s' built with RANDOM weights (pretrained=%r): zero-shot transfer will not work.",
            model_name,
            pretrained,
        )
    model.eval()
    model.requires_grad_(False)
    return model


def _not_random_init_note(record: logging.LogRecord) -> bool:
    return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_note(weights_follow: bool):
    """open_clip warns on the root logger that a model built without weights is random; when
    its weights are loaded right after, the warning would be false."""
    root = logging.getLogger()
    if weights_follow:
        root.addFilter(_not_random_init_note)
    try:
        yield
    finally:
        root.removeFilter(_not_random_init_note)


def _create_text_tower(model_name: str, checkpoint: str | None, kwargs: dict) -> open_clip.CLIP:
    """open_clip's model with a stub image tower, dropped before the checkpoint is loaded;
    its ``visual.*`` weights are skipped, every other weight must fit."""
    with _quiet_random_init_note(checkpoint is not None):
        model = open_clip.create_model(
            model_name, pretrained=None, pretrained_text=False, vision_cfg=VISION_STUB, **kwargs
        )
    model.visual = None
    if checkpoint is not None:
        _load_clip_weights(model, checkpoint, model_name)
    return model


# OpenAI's archives carry these as tensors; open_clip's models keep them as plain attributes
OPENAI_ATTRIBUTES = ("input_resolution", "context_length", "vocab_size")


def _load_clip_weights(model: torch.nn.Module, checkpoint: str, model_name: str) -> None:
    """A CLIP weights file into an open_clip model, read through the project's one loading
    route (checkpoint.read_weights_file: no code runs) and adapted as open_clip's own
    ``load_checkpoint`` adapts it. OpenAI's TorchScript files (``~/.cache/clip/ViT-B-16.pt``)
    use open_clip's names; their other tensor attributes are left out. A text tower (``visual``
    None) skips the image tower's weights. A missing, misshapen or (outside TorchScript)
    unknown weight is refused in one line."""
    from open_clip.factory import (
        convert_state_dict,
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    state = read_weights_file(checkpoint)
    state = convert_state_dict(model, state)  # third-party layouts (open_clip's own detection)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        own_param = getattr(model, key, None)
        if key in state and own_param is not None and own_param.ndim != state[key].ndim:
            state[key] = state[key].reshape(own_param.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state:
        state["logit_bias"] = torch.zeros_like(model.logit_bias)
    if model.visual is not None:
        resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape]
    unexpected = []
    if not is_torchscript_archive(checkpoint):
        unexpected = [
            k for k in state if k not in own and k not in OPENAI_ATTRIBUTES
            and not (model.visual is None and k.startswith("visual."))
        ]  # fmt: skip
    if missing or misshapen or unexpected:
        example = (
            missing[:3]
            or [f"{k}: {tuple(state[k].shape)}" for k in misshapen[:3]]
            or [f"unexpected {k}" for k in unexpected[:3]]
        )
        raise CLIPWeightsUnavailableError(
            f"CLIP weights {checkpoint} do not fit open_clip's {model_name} "
            f"({len(missing)} missing, {len(misshapen)} misshapen, {len(unexpected)} unknown, "
            f"e.g. {example}): set MODEL.CLIPZSS.CLIP.MODEL_NAME to the architecture of the file."
        )
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True)
