"""Check that MODEL.WEIGHTS can be had before training starts, with an error users can act on."""

import os

from detectron2.utils.file_io import PathManager

from ..errors import UserInputError


class WeightsUnavailableError(UserInputError, RuntimeError):
    """MODEL.WEIGHTS names a file that is missing or a URL that cannot be downloaded."""


def resolve_model_weights(path: str, key: str = "MODEL.WEIGHTS") -> str:
    """Local path of `path` (downloading URLs into detectron2's cache); "" means random init."""
    if not path:
        return ""
    if "://" not in path:
        if not os.path.isfile(os.path.expanduser(path)):
            raise WeightsUnavailableError(
                f"{key} = {path!r} does not exist. Give the path of a checkpoint file, or "
                f'{key} "" to start from random initialisation.'
            )
        return os.path.expanduser(path)
    try:
        return PathManager.get_local_path(path)
    except Exception as e:  # urllib, iopath and http errors all mean the same to the user
        raise WeightsUnavailableError(
            f"{key} = {path!r} could not be downloaded ({type(e).__name__}: {e}). On a machine "
            f"without internet access, download it elsewhere and set {key} to the local file, or "
            f'set {key} "" to train from random initialisation.'
        ) from e
