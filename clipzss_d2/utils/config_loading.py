"""Read a config file and overrides the way every entry point should: no code, one-line errors.

detectron2's `merge_from_file` falls back to `yaml.unsafe_load` (which can run Python named in
the file) when safe loading fails; configs come from strangers as often as weights do, so the
entry points load with `allow_unsafe=False`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import yaml

from ..errors import UserInputError

CONFIG_ERRORS = (KeyError, ValueError, AssertionError, TypeError, AttributeError)
logger = logging.getLogger(__name__)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"")
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def merge_config_file(cfg, config_file: str, option: str = "--config-file"):
    """Merge `config_file` into `cfg`; a missing or malformed file is a UserInputError naming
    the command-line `option` that gave it."""
    if not os.path.isfile(config_file):
        raise UserInputError(f"{option} {config_file}: no such file.")
    try:
        cfg.merge_from_file(config_file, allow_unsafe=False)
    except FileNotFoundError as e:  # a _BASE_ the file names (relative to the file's folder)
        raise UserInputError(
            f"{option} {config_file} names a _BASE_ config that does not exist: {e.filename}."
        ) from None
    except OSError as e:
        raise UserInputError(f"{option} {config_file} cannot be read ({_one_line(e)}).") from None
    except UnicodeDecodeError as e:
        raise UserInputError(
            f"{option} {config_file} is not UTF-8 text ({_one_line(e)}): is it a config YAML?"
        ) from None
    except yaml.YAMLError as e:
        raise UserInputError(
            f"{option} {config_file} is not a valid config YAML ({_one_line(e)}); Python "
            f"tags (!!python/...) are refused."
        ) from None
    except CONFIG_ERRORS as e:
        raise UserInputError(f"{option} {config_file}: {_one_line(e)}.") from None
    return cfg


def merge_overrides(cfg, opts: Sequence[str], opts_name: str = "overrides"):
    """Merge KEY VALUE `opts` into `cfg`; an odd count or an unknown key is a UserInputError."""
    opts = list(opts)
    if len(opts) % 2:
        raise UserInputError(
            f"Config {opts_name} come in KEY VALUE pairs; got {len(opts)} words "
            f"({' '.join(map(str, opts))})."
        )
    try:
        cfg.merge_from_list(opts)
    except CONFIG_ERRORS as e:
        raise UserInputError(f"Config {opts_name}: {_one_line(e)}.") from None
    return cfg


def merge_config(cfg, config_file: str, opts: Sequence[str] = (), opts_name: str = "overrides"):
    """Merge `config_file` then the KEY VALUE `opts` into `cfg`; user mistakes raise
    UserInputError naming the file or the override."""
    merge_config_file(cfg, config_file)
    return merge_overrides(cfg, opts, opts_name)


def check_device(cfg):
    """MODEL.DEVICE must name a device torch knows ("cpu", "cuda", "cuda:1", ...)."""
    try:
        torch.device(cfg.MODEL.DEVICE)
    except (RuntimeError, TypeError) as e:
        raise UserInputError(
            f"MODEL.DEVICE {cfg.MODEL.DEVICE!r} is not a device torch knows "
            f"({_one_line(e).split(' device type at start')[0]}): use cpu, cuda or cuda:N."
        ) from None
    return cfg


def use_cpu_without_gpu(cfg):
    """Inference commands run on the CPU when the config asks for CUDA and there is none."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(
            "MODEL.DEVICE=%s but no GPU is available: running on the CPU.", cfg.MODEL.DEVICE
        )
        cfg.MODEL.DEVICE = "cpu"
    return cfg
