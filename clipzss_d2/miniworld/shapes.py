"""Object outlines: unit polygons and the masks that paint both the pixels and the labels."""

from __future__ import annotations

import math

import cv2
import numpy as np


def _regular(n: int, radius: float = 1.0, start: float = -math.pi / 2) -> np.ndarray:
    a = start + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    a = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _heart(n: int = 48) -> np.ndarray:
    t = 2 * math.pi * np.arange(n) / n
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.abs(pts).max()


def _cross(w: float = 0.3) -> np.ndarray:
    return np.array(
        [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ],
        dtype=np.float64,
    )


_DISC = _regular(40)
# Each shape: list of (polygon, +1 to fill / -1 to cut out), applied in order.
SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "disc": [(0.9 * _DISC, 1)],
    "ring": [(_DISC, 1), (0.58 * _DISC, -1)],
    "square": [(np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), 1)],
    "bar": [(np.array([(-1.0, -0.27), (1.0, -0.27), (1.0, 0.27), (-1.0, 0.27)]), 1)],
    "triangle": [(1.1 * _regular(3) + np.array([0.0, 0.15]), 1)],
    "cross": [(_cross(), 1)],
    "star": [(_star(), 1)],
    "diamond": [(np.array([(0.0, -1.0), (0.58, 0.0), (0.0, 1.0), (-0.58, 0.0)]), 1)],
    "heart": [(_heart(), 1)],
    "crescent": [(_DISC, 1), (0.82 * _DISC + np.array([0.42, -0.1]), -1)],
    "arrow": [
        (
            np.array(
                [
                    (-1.0, -0.22),
                    (0.15, -0.22),
                    (0.15, -0.62),
                    (1.0, 0.0),
                    (0.15, 0.62),
                    (0.15, 0.22),
                    (-1.0, 0.22),
                ]
            ),
            1,
        )
    ],
}
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision: vertices placed to 1/16 pixel


def _fill(mask: np.ndarray, pts: np.ndarray, value: int) -> None:
    fixed = np.round(pts * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], value, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)


def transform_points(
    pts: np.ndarray, cx: float, cy: float, radius: float, angle: float
) -> np.ndarray:
    """Unit-shape vertices -> pixel coordinates (rotate, scale, translate)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    # pixel centres sit at integer coordinates, as in cv2's fillPoly
    return pts @ rot * radius + np.array([cx, cy])


def polygon_mask(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of one polygon given in pixel coordinates, on a canvas of `shape` (H, W)."""
    mask = np.zeros(shape, np.uint8)
    _fill(mask, pts, 1)
    return mask.astype(bool)


def shape_mask(
    kind: str, cx: float, cy: float, radius: float, angle: float, shape: tuple[int, int]
) -> np.ndarray:
    """Boolean mask of one shape on a canvas of `shape` (H, W); the one source of both pixels
    and labels."""
    mask = np.zeros(shape, np.uint8)
    for pts, sign in SHAPES[kind]:
        _fill(mask, transform_points(pts, cx, cy, radius, angle), 1 if sign > 0 else 0)
    return mask.astype(bool)
