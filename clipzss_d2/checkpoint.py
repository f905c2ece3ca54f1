"""Checkpoint files that cannot run code when read, and that are never left half-written.

detectron2's DetectionCheckpointer unpickles `.pkl` (its model-zoo format) with plain pickle,
so a weights file from a stranger can run any command. `SafeCheckpointer` reads `.pkl` with an
unpickler that builds only what model-zoo files hold (dicts, lists, strings, numbers, numpy
arrays) and every other file with `torch.load(weights_only=True)`; whatever else a file holds is
refused with one line naming the file. Saves go to a temporary file renamed into place, and
`last_checkpoint` is rewritten only after the checkpoint itself is complete.

`load_student_weights` is the deployment loader (predictor, model folder): weights that do not
fit the config's student are an error, where detectron2 only warns.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .errors import UserInputError
from .utils.io import atomic_write_path, atomic_write_text
from .utils.weights import resolve_model_weights

logger = logging.getLogger(__name__)
# Parameters the deployed student needs; other entries (GLM/PLM training modules) may be absent.
STUDENT_PREFIXES = ("backbone.", "embedding_head.", "log_logit_scale")


class UnsafeCheckpointError(UserInputError, pickle.UnpicklingError):
    """A weights file would import or call something a checkpoint never needs."""


class CheckpointFormatError(UserInputError, ValueError):
    """A weights file cannot be read, or does not hold a checkpoint's structure."""


class IncompatibleWeightsError(UserInputError, ValueError):
    """MODEL.WEIGHTS does not hold the student that the config builds."""


# What detectron2 / Detectron / Caffe2 model-zoo pickles reference (Python 2 and 3 protocols,
# numpy 1 and 2 module names). All of them only build arrays, dtypes, scalars or bytes.
_PKL_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("collections", "OrderedDict"),
    ("__builtin__", "set"),
    ("builtins", "set"),
}


class _ModelZooUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in _PKL_ALLOWED:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.path} is not a plain weights file: it asks to load {module}.{name}, which "
            f"could run code. Refused; use weights from a source you trust, or convert them to "
            f"a .pth state dict."
        )


def skip_imagenet_init_for_trained_student(cfg) -> None:
    """With MODEL.WEIGHTS holding a trained student, building it need not fetch (or, offline,
    fail on) the backbone's ImageNet weights. Edits a defrosted cfg in place."""
    if cfg.MODEL.WEIGHTS:
        cfg.MODEL.TIMM.PRETRAINED = ""
        cfg.MODEL.SWIN.PRETRAINED = ""


def load_pkl_safely(path: str):
    """Unpickle a model-zoo `.pkl` building only containers, numbers, strings and numpy arrays."""
    with PathManager.open(path, "rb") as f:
        data = f.read()
    try:
        return _ModelZooUnpickler(io.BytesIO(data), path).load()
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        raise CheckpointFormatError(
            f"{path} could not be read as a .pkl weights file ({type(e).__name__}: {e})."
        ) from None


def torch_load_safely(path: str):
    """torch.load with weights_only=True; torch's paragraph on failure becomes one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found and "global" not in str(e).lower():  # junk bytes, not a hostile pickle
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            raise CheckpointFormatError(
                f"{path} could not be read as a PyTorch checkpoint: corrupt, truncated or another "
                f"format ({detail.group(1).strip() if detail else _first_line(e)})."
            ) from None
        detail = f"it asks to load {found.group(1)}" if found else "it holds Python objects"
        raise UnsafeCheckpointError(
            f"{path} is not a plain weights file: {detail}, which could run code. Refused; use "
            f"weights from a source you trust, or re-save only the state dict."
        ) from None
    except Exception as e:  # not a zip / legacy torch file, truncated, ...
        raise CheckpointFormatError(
            f"{path} could not be read as a PyTorch checkpoint: corrupt, truncated or another "
            f"format ({_first_line(e)})."
        ) from None


# -- TorchScript archives (OpenAI's CLIP .pt files) ------------------------------------------------
# The storage classes a TorchScript archive's data.pkl names for its tensors.
_STORAGE_DTYPES = {
    f"{name}Storage": dtype
    for name, dtype in (
        ("Float", torch.float32), ("Half", torch.float16), ("BFloat16", torch.bfloat16),
        ("Double", torch.float64), ("Long", torch.int64), ("Int", torch.int32),
        ("Short", torch.int16), ("Char", torch.int8), ("Byte", torch.uint8), ("Bool", torch.bool),
    )
}  # fmt: skip


def is_torchscript_archive(path: str) -> bool:
    """A zip written by torch.jit.save (it holds constants.pkl beside data.pkl)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class _ScriptObject:
    """Stands for every ``__torch__.*`` module of the archive: only its attributes are kept,
    none of its code is imported or run."""

    def __setstate__(self, state):
        self.__dict__["attributes"] = state if isinstance(state, dict) else {}


class _TorchScriptUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module, name):
        if module.startswith("__torch__.") or module == "__torch__":
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise UnsafeCheckpointError(
            f"{self.path} is a TorchScript archive that asks to load {module}.{name}, which a "
            f"weights file never needs. Refused; use open_clip's state-dict weights instead."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self.path}: unexpected tensor reference {pid!r}.")
        _, dtype, key, _, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise CheckpointFormatError(f"{self.path}: unexpected storage type {dtype!r}.")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        storage = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else None
        if storage is None:
            storage = torch.UntypedStorage(0)
        if len(raw) < numel * dtype.itemsize:
            raise CheckpointFormatError(f"{self.path}: tensor data {key} is truncated.")
        # torch.load hands _rebuild_tensor_v2 the same (internal) typed wrapper
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)


def read_torchscript_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's modules, by dotted name, read from its
    data.pkl without torch.jit.load: its code is never imported nor run. Holds the parameters
    and buffers (what ``ScriptModule.state_dict()`` gives) and plain tensor attributes too."""
    try:
        with zipfile.ZipFile(path) as archive:
            (data_name,) = [n for n in archive.namelist() if n.count("/") == 1 and
                            n.endswith("/data.pkl")]  # fmt: skip
            prefix = data_name.split("/")[0]
            root = _TorchScriptUnpickler(archive.read(data_name), archive, prefix, path).load()
    except UserInputError:
        raise
    except Exception as e:  # a damaged zip, a missing entry, a pickle error
        raise CheckpointFormatError(
            f"{path} could not be read as a TorchScript archive ({_first_line(e)})."
        ) from None
    state: dict[str, torch.Tensor] = {}
    stack = [("", root)]
    while stack:  # iterative: a hostile archive may nest modules deeply
        name, obj = stack.pop()
        for key, value in getattr(obj, "attributes", {}).items():
            full = f"{name}{key}"
            if isinstance(value, torch.Tensor):
                state[full] = value
            elif isinstance(value, _ScriptObject):
                stack.append((f"{full}.", value))
    if not state:
        raise CheckpointFormatError(f"{path} is a TorchScript archive without any tensor.")
    return state


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file a user names, by name, read without running any code:
    ``.safetensors``, a TorchScript archive (``read_torchscript_state_dict``) or a ``torch.save``
    file (``torch_load_safely``); a ``{"state_dict": ...}`` wrapper and DDP's ``module.`` prefix
    are removed. Anything else is a one-line CheckpointFormatError."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as e:
            raise CheckpointFormatError(
                f"{path} could not be read as a safetensors file ({_first_line(e)})."
            ) from None
    elif is_torchscript_archive(path):
        state = read_torchscript_state_dict(path)
    else:
        state = torch_load_safely(path)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not (
        isinstance(state, Mapping)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CheckpointFormatError(
            f"{path} holds no named tensors (a state dict): it is not a weights file."
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def check_checkpoint_structure(checkpoint, path: str) -> None:
    """A checkpoint is a dict whose "model" maps parameter names to tensors or numeric arrays."""
    model = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    bad = None
    if not isinstance(model, Mapping):
        bad = f"a {type(checkpoint).__name__}" + (
            f" whose 'model' entry is a {type(model).__name__}"
            if isinstance(checkpoint, Mapping)
            else ""
        )
    else:
        for key, value in model.items():
            ok = isinstance(value, torch.Tensor) or (
                isinstance(value, np.ndarray | np.generic) and value.dtype != object
            )
            if not isinstance(key, str) or not ok:
                bad = f"entry {key!r} of its 'model' dict is a {type(value).__name__}"
                break
    if bad is not None:
        raise CheckpointFormatError(
            f"{path} does not hold model weights ({bad}); expected a checkpoint saved by "
            f"detectron2 / this project (a dict of tensors under 'model') or a state dict."
        )


class SafeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that runs no code from the files it reads and saves atomically."""

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            data = load_pkl_safely(filename)
            if not isinstance(data, Mapping):
                raise CheckpointFormatError(
                    f"{filename} does not hold model weights (a {type(data).__name__})."
                )
            if "model" in data and "__author__" in data:
                self.logger.info("Reading a file from '%s'", data["__author__"])
            else:  # Caffe2 / Detectron1 model zoo, as DetectionCheckpointer reads it
                data = data.get("blobs", data)
                if isinstance(data, Mapping):
                    data = {k: v for k, v in data.items() if not str(k).endswith("_momentum")}
                data = {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
            check_checkpoint_structure(data, filename)
            return data
        if filename.endswith(".pyth"):  # pycls: DetectionCheckpointer's branch, loaded safely
            data = torch_load_safely(filename)
            if not isinstance(data, Mapping) or not isinstance(data.get("model_state"), Mapping):
                raise CheckpointFormatError(
                    f"{filename}: pycls checkpoints (.pyth) must hold a 'model_state' dict."
                )
            state = {
                k: v
                for k, v in data["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            data = {"model": state, "__author__": "pycls", "matching_heuristics": True}
            check_checkpoint_structure(data, filename)
            return data
        loaded = super()._load_file(filename)  # -> self._torch_load, then the URL query logic
        check_checkpoint_structure(loaded, filename)
        return loaded

    def _torch_load(self, f):
        loaded = torch_load_safely(f)
        if not isinstance(loaded, Mapping):
            raise CheckpointFormatError(
                f"{f} does not hold model weights (a {type(loaded).__name__}); expected a "
                f"checkpoint saved by detectron2 / this project or a state dict."
            )
        return loaded

    # -- saving -----------------------------------------------------------------------------------
    def save(self, name: str, **kwargs) -> None:
        """fvcore's save, written to a temporary file renamed into place, then tagged."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        with atomic_write_path(save_file) as tmp:
            with open(tmp, "wb") as f:
                torch.save(data, f)
                f.flush()
                os.fsync(f.fileno())
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)


# -- deployment: the student alone ---------------------------------------------------------------
class _StudentCheckpointer(SafeCheckpointer):
    """SafeCheckpointer that refuses weights not matching the model (detectron2 only warns)."""

    def __init__(self, model, config_name: str, weights: str):
        super().__init__(model)
        self.config_name = config_name
        self.weights = weights

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except CheckpointFormatError as e:  # one line naming the file already
            raise IncompatibleWeightsError(str(e)) from None
        except UserInputError:  # e.g. a file that would run code
            raise
        except Exception as e:  # pickle, zip and torch errors all mean "not a checkpoint"
            raise IncompatibleWeightsError(
                f"MODEL.WEIGHTS = {self.weights!r} could not be read as a checkpoint "
                f"({type(e).__name__}: {e})."
            ) from e

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        hint = (
            f"MODEL.WEIGHTS = {self.weights!r} does not fit the model built from {self.config_name}"
        )
        if incompatible.incorrect_shapes:
            key, ckpt_shape, model_shape = incompatible.incorrect_shapes[0]
            raise IncompatibleWeightsError(
                f"{hint}: {len(incompatible.incorrect_shapes)} tensors have other shapes, e.g. "
                f"{key}: {tuple(ckpt_shape)} in the checkpoint vs {tuple(model_shape)} in the "
                f"model. The weights were trained with a different config (backbone depth or "
                f"width, head channels, MODEL.CLIPZSS.EMBED_DIM ...): pass the config file they "
                f"were trained with."
            )
        missing = [k for k in incompatible.missing_keys if k.startswith(STUDENT_PREFIXES)]
        if missing:
            raise IncompatibleWeightsError(
                f"{hint}: {len(missing)} student weights are missing from the checkpoint, e.g. "
                f"{missing[:3]}. Is it a trained CLIP-ZSS model (not a backbone-only "
                f"initialisation such as detectron2's R-103.pkl)?"
            )
        # Training-only modules (GLM, PLM synthesizer) do not matter here, present or not.
        for kind, keys in (
            ("unused checkpoint entries", incompatible.unexpected_keys),
            ("training-only model entries absent from the checkpoint", incompatible.missing_keys),
        ):
            if keys:
                logger.info("Ignoring %d %s (e.g. %s).", len(keys), kind, keys[:3])
                keys.clear()
        return incompatible


def load_student_weights(
    model: torch.nn.Module, weights: str, config_name: str = "the config"
) -> dict:
    """Load MODEL.WEIGHTS into `model`, refusing files that do not hold this config's student.

    Returns the checkpoint's other entries (e.g. "iteration"; {} for empty MODEL.WEIGHTS)."""
    if not weights:
        logger.warning("MODEL.WEIGHTS is empty: the student has RANDOM weights.")
        return {}
    path = resolve_model_weights(weights)
    return _StudentCheckpointer(model, config_name, weights).load(path, checkpointables=[])
