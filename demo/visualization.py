"""Overlay of a label map drawn with detectron2's Visualizer, plus a legend panel.

Visualizer writes class names on the regions; with open vocabularies the names on small regions
are often unreadable, so a legend (colour, name, share of the image) is added beside the image.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image, ImageDraw, ImageFont

UNLABELLED_COLOR = (128, 128, 128)
LEGEND_BACKGROUND = (255, 255, 255)
# Smaller images are drawn enlarged (by a whole factor, labels nearest-neighbour) so that region
# names stay readable; the label map written beside them keeps the input size.
MIN_DISPLAY_SIDE = 256


def class_colors(
    names: Sequence[str], dataset_colors: Sequence[Sequence[int]] | None = None
) -> list[tuple[int, int, int]]:
    """RGB colour per class: the dataset's own colours when given, else detectron2's palette in
    vocabulary order (distinct for the first 74 classes), then colours derived from the name."""
    if dataset_colors is not None and len(dataset_colors) >= len(names):
        return [tuple(int(c) for c in color) for color in dataset_colors[: len(names)]]
    palette = [tuple(int(c) for c in color) for color in colormap(rgb=True, maximum=255)]
    colors = []
    for i, name in enumerate(names):
        if i < len(palette):
            colors.append(palette[i])
        else:
            digest = hashlib.md5(name.encode("utf-8")).digest()
            r, g, b = colorsys.hsv_to_rgb(digest[0] / 255, 0.55 + digest[1] / 600, 0.9)
            colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def draw_overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    unlabelled_id: int,
    alpha: float = 0.5,
) -> np.ndarray:
    """Visualizer.draw_sem_seg with our names and colours; unlabelled pixels left as they are."""
    metadata = Metadata(name="__clipzss_demo")
    metadata.stuff_classes = list(class_names)
    metadata.stuff_colors = [list(c) for c in colors]
    vis_labels = labels.astype(np.int64)
    vis_labels[labels == unlabelled_id] = len(class_names)  # draw_sem_seg skips ids >= K
    vis = Visualizer(image_rgb, metadata, scale=1.0, instance_mode=ColorMode.IMAGE)
    return vis.draw_sem_seg(vis_labels, alpha=alpha).get_image()


def legend_panel(
    entries: Sequence[tuple[str, tuple[int, int, int], float]],
    height: int,
    font_size: int,
    width: int | None = None,
    min_rows: int = 0,
) -> np.ndarray:
    """A white panel listing (name, colour, fraction) rows, largest first.

    As many rows as fit in `height` (at least `min_rows`, growing the panel); the rest is
    summarised as "+ N more".
    """
    font = _font(font_size)
    row = int(font_size * 1.6)
    pad = max(4, font_size // 2)
    swatch = font_size
    texts = [f"{name}  {100 * frac:.1f}%" for name, _, frac in entries]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([measure.textlength(t, font=font) for t in texts] + [font_size * 6])
    if width is None:
        width = int(pad * 3 + swatch + text_w)
    rows = max(1, (height - 2 * pad) // row, min(min_rows, len(entries)))
    shown, more = list(zip(entries, texts)), 0
    if len(shown) > rows:
        more = len(shown) - (rows - 1)
        shown = shown[: rows - 1]
    panel_h = max(height, 2 * pad + row * rows)
    panel = Image.new("RGB", (width, panel_h), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(panel)
    y = pad
    for (_, color, _), text in shown:
        top = y + (row - swatch) // 2
        draw.rectangle([pad, top, pad + swatch, top + swatch], fill=tuple(color), outline=(0, 0, 0))
        draw.text((2 * pad + swatch, y + (row - font_size) // 2), text, fill=(0, 0, 0), font=font)
        y += row
    if more:
        draw.text((pad, y + (row - font_size) // 2), f"+ {more} more", fill=(0, 0, 0), font=font)
    return np.asarray(panel)


def legend_font_size(image_height: int) -> int:
    return int(np.clip(round(image_height / 28), 11, 32))


def enlarge_for_display(
    image_rgb: np.ndarray, labels: np.ndarray, min_side: int = MIN_DISPLAY_SIDE
) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    factor = -(-min_side // max(1, min(h, w)))
    if factor <= 1:
        return image_rgb, labels
    size = (w * factor, h * factor)
    image = cv2.resize(image_rgb, size, interpolation=cv2.INTER_LINEAR)
    return image, labels.repeat(factor, axis=0).repeat(factor, axis=1)


def render(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    unlabelled_id: int,
    legend: bool = True,
    legend_width: int | None = None,
    fit_height: bool = False,
    alpha: float = 0.5,
    min_side: int = MIN_DISPLAY_SIDE,
    caption: str | None = None,
) -> np.ndarray:
    """Overlay (RGB uint8) with a legend of the classes present, to the right of the image.

    A legend longer than the image extends it downwards (up to 12 rows) unless fit_height; pass
    `legend_width` and fit_height=True for video frames, which must all have one size.
    `caption`: a line written in a band above it all (what predicted, when not a student).
    """
    drawing = _render(
        image_rgb, labels, class_names, colors, unlabelled_id, legend, legend_width, fit_height,
        alpha, min_side,
    )  # fmt: skip
    return drawing if caption is None else add_caption(drawing, caption)


def add_caption(image_rgb: np.ndarray, text: str) -> np.ndarray:
    """`image_rgb` with a white band above holding `text` (same width; the band's height
    depends on the image's width only, so video frames of one size stay one size)."""
    width = image_rgb.shape[1]
    size = int(np.clip(round(width / 40), 11, 32))
    band = Image.new("RGB", (width, int(size * 1.8)), LEGEND_BACKGROUND)
    ImageDraw.Draw(band).text((size // 2, size // 3), text, fill=(0, 0, 0), font=_font(size))
    return np.concatenate([np.asarray(band), image_rgb], axis=0)


def _render(
    image_rgb, labels, class_names, colors, unlabelled_id, legend, legend_width, fit_height,
    alpha, min_side,
) -> np.ndarray:  # fmt: skip
    image_rgb, labels = enlarge_for_display(image_rgb, labels, min_side)
    overlay = draw_overlay(image_rgb, labels, class_names, colors, unlabelled_id, alpha)
    if not legend:
        return overlay
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    entries = []
    for i in order:
        label, frac = int(ids[i]), counts[i] / labels.size
        if label == unlabelled_id:
            entries.append(("unlabelled", UNLABELLED_COLOR, frac))
        else:
            entries.append((class_names[label], colors[label], frac))
    height = overlay.shape[0]
    min_rows = 0 if fit_height else 12
    panel = legend_panel(entries, height, legend_font_size(height), legend_width, min_rows)
    if panel.shape[0] > height:  # a long legend beside a short image: extend the image
        grown = np.full((panel.shape[0], overlay.shape[1], 3), 255, np.uint8)
        grown[:height] = overlay
        overlay = grown
    return np.concatenate([overlay, panel], axis=1)
