"""File writing that never leaves a half-written file behind, and the dataset root."""

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps `path`'s extension (or `suffix`) so libraries that pick a format
    from the extension (PIL, cv2, safetensors) write the right one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ext = suffix if suffix is not None else os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(
        prefix=".tmp-" + os.path.basename(path) + "-", suffix=ext, dir=directory
    )
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def file_fingerprint(path: str | os.PathLike) -> str | None:
    """Size and modification time of a local file (None when it is not one): what the caches
    compare to notice a file replaced under the same name."""
    path = os.path.expanduser(os.fspath(path or ""))
    if not path or not os.path.isfile(path):
        return None
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def datasets_root() -> str:
    """The dataset root: $DETECTRON2_DATASETS with `~` expanded, else ./datasets."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
