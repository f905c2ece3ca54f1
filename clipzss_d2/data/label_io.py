"""Reading label maps, and decoding the label encodings a dataset declares.

Prepared datasets store contiguous class ids (0..N-1) with 255 = ignore (16-bit PNGs with 65535
= ignore beyond 255 classes) and are read as they are. A user's own dataset can instead declare
how its files encode classes (`LabelEncoding`: palette PNGs, 16-bit ids, an id offset, explicit
values, RGB colours, void values other than 255); `register_label_encoding` ties that encoding
to the dataset's label folder, and `read_label_map` then decodes every file under that folder
into the contiguous form. The training mapper and the evaluator both read labels through
`read_label_map`, so they see the same decoded ids without any file being converted by hand.
(numpy 2 safe: detectron2's own loader calls np.array(copy=False).)
"""

import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..errors import UserInputError

LABEL_MODES = ("L", "P", "I", "I;16")
FORMATS = ("index", "palette", "color")


class LabelEncodingError(UserInputError, ValueError):
    """A declared label encoding is inconsistent, or a label file does not follow it."""


def ignore_value(num_classes: int) -> int:
    """The ignore id of decoded maps: 255, or 65535 when class ids reach 255."""
    return 255 if num_classes <= 255 else 65535


def _rgb(c, what: str) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in c)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise LabelEncodingError(f"{what} {c!r} is not an RGB triple of 0..255 values.")
    return rgb  # type: ignore[return-value]


@dataclass(frozen=True)
class LabelEncoding:
    """How a dataset's label files store class ids 0..num_classes-1 and "not labelled".

    format: "index" = single-channel PNG values (8-bit, 16-bit or palette indices), "palette" =
        the same but the files must be palette PNGs, "color" = RGB PNGs, one colour per class.
    offset: stored value = class id + offset (1 for COCO- and ADE-style 1-based ids).
    values: the stored value of each class, in class order (for non-contiguous ids); replaces
        offset. "color": `colors` plays this role.
    void: stored values (RGB triples for "color") that mean "not labelled" -> ignore.
    """

    num_classes: int
    format: str = "index"
    offset: int = 0
    values: tuple[int, ...] | None = None
    void: tuple = (255,)
    colors: tuple[tuple[int, int, int], ...] | None = None

    @classmethod
    def create(cls, num_classes: int, spec=None) -> "LabelEncoding":
        """From None, a format name ("palette"), a dict of the fields, or a LabelEncoding."""
        if spec is None:
            return cls(num_classes)
        if isinstance(spec, LabelEncoding):
            spec = {k: v for k, v in asdict(spec).items() if k != "num_classes"}
        if isinstance(spec, str):
            spec = {"format": spec}
        if not isinstance(spec, dict):
            raise LabelEncodingError(
                f"label_encoding must be a format name ({', '.join(FORMATS)}) or a mapping of "
                f"format/offset/values/void/colors, not {type(spec).__name__}."
            )
        unknown = set(spec) - {"format", "offset", "values", "void", "colors"}
        if unknown:
            raise LabelEncodingError(
                f"label_encoding has unknown key(s) {sorted(unknown)}; use format, offset, values, "
                f"void, colors."
            )
        fmt = spec.get("format", "index")
        if fmt not in FORMATS:
            raise LabelEncodingError(
                f"label_encoding format {fmt!r} is unknown; use one of {', '.join(FORMATS)}."
            )
        void = spec.get("void", [(0, 0, 0)] if fmt == "color" else [255])
        void = [void] if isinstance(void, int) else list(void)
        values, colors = spec.get("values"), spec.get("colors")
        if fmt == "color":
            if colors is None or values is not None:
                raise LabelEncodingError(
                    "label_encoding format 'color' needs `colors` (one RGB triple per class, in "
                    "class order) and no `values`."
                )
            colors = tuple(_rgb(c, "label_encoding colour") for c in colors)
            void = tuple(_rgb(c, "label_encoding void colour") for c in void)
        else:
            if colors is not None:
                raise LabelEncodingError(
                    f"label_encoding `colors` needs format 'color' (it is {fmt!r})."
                )
            void = tuple(int(v) for v in void)
            values = None if values is None else tuple(int(v) for v in values)
        return cls(num_classes, fmt, int(spec.get("offset", 0)), values, void, colors)

    def __post_init__(self):
        codes = self.class_codes()
        if len(codes) != self.num_classes:
            what = "colors" if self.format == "color" else "values"
            raise LabelEncodingError(
                f"label_encoding lists {len(codes)} {what} for {self.num_classes} classes; give "
                f"one per class, in class order."
            )
        if len(set(codes)) != len(codes):
            raise LabelEncodingError("label_encoding gives two classes the same stored value.")
        clash = sorted(set(codes) & set(self.void))
        if clash:
            raise LabelEncodingError(
                f"label_encoding value(s) {clash[:5]} are both a class and void; a stored value "
                f"must mean one thing (with offset {self.offset}, classes are stored as "
                f"{self.describe_classes()})."
            )
        if self.format != "color" and min(codes + self.void) < 0:
            raise LabelEncodingError("label_encoding values must be >= 0 (offset too large?).")
        if self.format != "color" and max(codes + self.void) > 65535:
            raise LabelEncodingError("label_encoding values must fit 16 bits (<= 65535).")

    def class_codes(self) -> tuple:
        if self.format == "color":
            return tuple(self.colors or ())
        if self.values is not None:
            return self.values
        return tuple(range(self.offset, self.offset + self.num_classes))

    def describe_classes(self) -> str:
        codes = self.class_codes()
        if self.format == "color":
            return f"{len(codes)} RGB colours"
        if self.values is None:
            return f"values {self.offset}..{self.offset + self.num_classes - 1}"
        return f"the {len(codes)} listed values"

    def is_plain(self) -> bool:
        """Files already hold contiguous ids with the standard ignore value."""
        return (
            self.format == "index"
            and self.class_codes() == tuple(range(self.num_classes))
            and self.void == (ignore_value(self.num_classes),)
        )

    @functools.cached_property
    def _lut(self) -> np.ndarray:
        lut = np.full(65536, -1, dtype=np.int32)
        lut[list(self.class_codes())] = np.arange(self.num_classes)
        lut[list(self.void)] = ignore_value(self.num_classes)
        return lut

    def decode(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        """Stored values -> ids 0..N-1 and `ignore_value(N)`; uint8, or uint16 beyond 255 ids."""
        out_dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        if self.format == "color":
            if array.ndim != 3 or array.shape[2] < 3:
                raise LabelEncodingError(
                    f"{path} has image mode {mode}; label_encoding format 'color' needs RGB PNGs."
                )
            rgb = array[..., :3].astype(np.int64)
            code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            keys = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(self.colors)}
            keys.update(
                {(r << 16) | (g << 8) | b: ignore_value(self.num_classes) for r, g, b in self.void}
            )
            uniq, inverse = np.unique(code, return_inverse=True)
            bad = [int(u) for u in uniq if int(u) not in keys]
            if bad:
                shown = [((u >> 16) & 255, (u >> 8) & 255, u & 255) for u in bad[:5]]
                raise LabelEncodingError(
                    f"{path} holds colours {shown} that are neither a class colour nor void "
                    f"{list(self.void)}: the class list and the label colours disagree; fix "
                    f"label_encoding colors/void or the classes."
                )
            mapped = np.array([keys[int(u)] for u in uniq], dtype=out_dtype)
            return mapped[inverse.reshape(code.shape)]
        if self.format == "palette" and mode != "P":
            raise LabelEncodingError(
                f"{path} has image mode {mode}, but label_encoding says palette PNG (mode P); "
                f"declare format 'index' for grayscale ids or 'color' for RGB colours."
            )
        if array.ndim != 2 or mode not in LABEL_MODES:
            raise LabelEncodingError(
                f"{path} has image mode {mode}; label_encoding format {self.format!r} needs "
                f"single-channel PNGs ({', '.join(LABEL_MODES)}); declare format 'color' with "
                f"one RGB colour per class for colour-coded labels."
            )
        values = array.astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise LabelEncodingError(f"{path} holds values outside 0..65535.")
        mapped = self._lut[values]
        if values.size and mapped.min() < 0:
            bad = np.unique(values[mapped < 0])
            shown = ", ".join(map(str, bad[:10].tolist())) + (" ..." if bad.size > 10 else "")
            raise LabelEncodingError(
                f"{path} holds values {shown}, which are neither a class ({self.num_classes} "
                f"classes stored as {self.describe_classes()}) nor void {list(self.void)}: the "
                f"class list and the label ids disagree; fix the class list or declare "
                f"label_encoding offset/values/void."
            )
        return mapped.astype(out_dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


_encodings: dict[str, tuple[LabelEncoding, str]] = {}
_lock = threading.Lock()


def _folder_key(folder: str) -> str:
    return os.path.join(os.path.realpath(os.path.abspath(folder)), "")


def register_label_encoding(label_root: str, encoding: LabelEncoding, owner: str) -> None:
    """Decode every label file under `label_root` with `encoding` (owner: the dataset name)."""
    key = _folder_key(label_root)
    with _lock:
        previous = _encodings.get(key)
        if previous and previous[1] != owner and previous[0] != encoding:
            raise LabelEncodingError(
                f"Label folder {label_root} is already registered by dataset {previous[1]!r} with "
                f"another label encoding; datasets that share a label folder must declare the same."
            )
        _encodings[key] = (encoding, owner)


def unregister_label_encoding(owner: str) -> None:
    with _lock:
        for key in [k for k, (_, o) in _encodings.items() if o == owner]:
            del _encodings[key]


def encoding_for(path: str) -> LabelEncoding | None:
    """The encoding registered for the deepest label folder holding `path`, if any."""
    if not _encodings:
        return None
    full = os.path.realpath(os.path.abspath(path))
    best = None
    for key, (encoding, _) in _encodings.items():
        if full.startswith(key) and (best is None or len(key) > len(best[0])):
            best = (key, encoding)
    return best[1] if best else None


def read_label_map(path: str, dtype=None, encoding: LabelEncoding | None = None) -> np.ndarray:
    """A label file as an array of class ids (palette indices, not colours).

    Files under a folder with a registered `LabelEncoding` (or given `encoding`) are decoded to
    contiguous ids with ignore 255 (65535 beyond 255 classes).
    """
    encoding = encoding or encoding_for(path)
    with PathManager.open(path, "rb") as f, Image.open(f) as img:
        if encoding is not None:
            if encoding.format == "color" and img.mode not in ("RGB", "RGBA"):
                img = img.convert("RGB")
            array = encoding.decode(np.asarray(img), img.mode, path)
            return array.astype(dtype) if dtype is not None else array
        if img.mode not in LABEL_MODES:
            raise ValueError(
                f"{path} has image mode {img.mode}; label maps must be single-channel "
                f"({', '.join(LABEL_MODES)}). Was the dataset prepared with datasets/prepare_*.py?"
            )
        array = np.asarray(img)
    return array.astype(dtype) if dtype is not None else array.copy()


def label_encodings() -> dict[str, Sequence]:
    """{label folder: (encoding, dataset)}: what `read_label_map` decodes (for messages/tests)."""
    return dict(_encodings)
