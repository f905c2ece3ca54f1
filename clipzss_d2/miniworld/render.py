"""Rendering a `Scene`: textures, objects, void rings and photometric nuisances.

The label map and the image are painted from the same masks (one binary mask per object, in the
same order), so label ids match what is drawn pixel for pixel, and occlusion is the painter's
order in both.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .shapes import polygon_mask, shape_mask, transform_points
from .world import (
    CLASS_ID,
    IGNORE_LABEL,
    STUFF_RGB,
    Scene,
    StuffRegion,
    ThingSpec,
    WorldParams,
    sample_scene,
)


@functools.lru_cache(maxsize=32)
def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False  # shared between calls
    return xs, ys


def region_mask(region: StuffRegion, shape: tuple[int, int]) -> np.ndarray:
    if region.kind == "all":
        return np.ones(shape, bool)
    xs, ys = _grid(shape)
    x, y = xs - (shape[1] - 1) / 2, ys - (shape[0] - 1) / 2
    if region.kind == "halfplane":
        theta, offset, amp, period, phase = region.params
        u = x * math.cos(theta) + y * math.sin(theta)
        v = -x * math.sin(theta) + y * math.cos(theta)
        return u > offset + amp * np.sin(2 * math.pi * v / period + phase)
    if region.kind == "blob":
        cx, cy, r, lobes, amp, phase = region.params
        dx, dy = xs - cx, ys - cy
        radius = r * (1 + amp * np.sin(lobes * np.arctan2(dy, dx) + phase))
        return dx * dx + dy * dy < radius * radius
    raise ValueError(f"Unknown stuff region kind {region.kind!r}")


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, ksize=(0, 0), sy=None
) -> np.ndarray:
    n = rng.standard_normal(shape, dtype=np.float32)
    n = cv2.GaussianBlur(n, ksize, sigmaX=sigma, sigmaY=sigma if sy is None else sy)
    return n / (n.std() + 1e-6)


def stuff_texture(name: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 float texture (0..1) with the structure typical of `name`."""
    base = np.array(STUFF_RGB[name], np.float32) * rng.uniform(0.88, 1.1, 3).astype(np.float32)
    xs, ys = _grid(shape)
    a = rng.uniform(0, 2 * math.pi)
    u = xs * math.cos(a) + ys * math.sin(a)
    v = -xs * math.sin(a) + ys * math.cos(a)
    if name == "grass":  # vertical blades: noise stretched along y, darker tufts
        blades = _smooth_noise(rng, shape, 0.6, sy=3.0)
        tufts = _smooth_noise(rng, shape, 6.0)
        shade = 1 + 0.22 * blades + 0.1 * tufts
        tex = base * shade[..., None]
    elif name == "sand":  # fine grain and wind ripples
        period = rng.uniform(6, 11)
        ripple = np.sin(2 * math.pi * u / period + 1.5 * np.sin(2 * math.pi * v / (3 * period)))
        grain = rng.standard_normal(shape, dtype=np.float32)
        tex = base * (1 + 0.06 * ripple + 0.05 * grain)[..., None]
    elif name == "water":  # two wave trains and bright crests
        p1, p2 = rng.uniform(8, 16), rng.uniform(5, 10)
        w = np.sin(2 * math.pi * u / p1) + 0.6 * np.sin(2 * math.pi * (0.6 * u + 0.8 * v) / p2)
        crest = np.clip(w - 1.1, 0, None)
        tex = base * (1 + 0.1 * w)[..., None] + 0.35 * crest[..., None]
    elif name == "snow":  # smooth drifts, bluish shadows, sparkles
        drift = _smooth_noise(rng, shape, 7.0)
        sparkle = (rng.random(shape) < 0.015).astype(np.float32)
        tex = base * (1 + 0.04 * drift)[..., None]
        tex = tex - np.array([0.035, 0.015, 0.0], np.float32) * np.clip(-drift, 0, None)[..., None]
        tex = tex + 0.08 * sparkle[..., None]
    elif name == "brick":  # running-bond bricks with mortar joints
        bw, bh = rng.uniform(11, 17), rng.uniform(5.5, 8)
        x0, y0 = rng.uniform(0, bw), rng.uniform(0, bh)
        row = np.floor((ys + y0) / bh)
        xo = xs + x0 + (row % 2) * bw / 2
        col = np.floor(xo / bw)
        table = rng.uniform(0.8, 1.15, 64).astype(np.float32)
        brick_shade = table[((row * 7 + col * 13) % 64).astype(np.int64)]
        mortar = (((ys + y0) % bh) < 1.2) | ((xo % bw) < 1.2)
        tex = base * brick_shade[..., None]
        tex[mortar] = np.array([0.72, 0.7, 0.66], np.float32) * rng.uniform(0.9, 1.1)
        tex = tex * (1 + 0.04 * rng.standard_normal(shape, dtype=np.float32))[..., None]
    else:
        raise ValueError(f"No texture for {name!r}")
    return tex.astype(np.float32)


def thing_mask(t: ThingSpec, shape: tuple[int, int]) -> np.ndarray:
    if t.polygon is not None:
        return polygon_mask(transform_points(t.polygon, t.cx, t.cy, t.radius, t.angle), shape)
    return shape_mask(t.name, t.cx, t.cy, t.radius, t.angle, shape)


def _thing_paint(t: ThingSpec, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Colours of the object's pixels (N x 3), in the order of mask.nonzero()."""
    x, y = xs[mask], ys[mask]
    rgb = np.array(t.rgb, np.float32)
    d = ((x - t.cx) * math.cos(t.shade_angle) + (y - t.cy) * math.sin(t.shade_angle)) / max(
        t.radius, 1.0
    )
    factor = 1 + t.shade * d
    if t.pattern != "solid":
        ca, sa = math.cos(t.pattern_angle), math.sin(t.pattern_angle)
        u, v = x * ca + y * sa, -x * sa + y * ca
        w = 2 * math.pi / t.pattern_period
        if t.pattern == "stripes":
            on = np.sin(w * u) > 0.2
        else:
            on = np.sin(w * u) * np.sin(w * v) > 0.45
        factor = factor * np.where(on, 0.68, 1.0)
    colours = rgb[None, :] * factor[:, None]
    if t.border:
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=1)
        edge = ~inner.astype(bool)[mask]
        colours[edge] *= 0.5
    return colours


@dataclass
class Rendered:
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray  # H x W uint8 class ids, 255 = ignore (clutter, void rings)
    instances: np.ndarray  # H x W int16: index into scene.things, -1 = background
    scene: Scene


def void_rings(instances: np.ndarray, things: list[ThingSpec], width: int) -> np.ndarray:
    """Pixels within `width` px of a named object's visible outline, on either side (VOC's void
    boundary: annotators leave the uncertain band around each object unlabelled)."""
    ring = np.zeros(instances.shape, bool)
    if width <= 0:
        return ring
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    for i, t in enumerate(things):
        if not t.name:
            continue  # clutter is void already
        visible = (instances == i).astype(np.uint8)
        if not visible.any():
            continue
        outside = cv2.dilate(visible, kernel).astype(bool) & ~visible.astype(bool)
        inside = visible.astype(bool) & ~cv2.erode(visible, kernel, borderValue=1).astype(bool)
        ring |= outside | inside
    return ring


def render_scene(scene: Scene, rng: np.random.Generator) -> Rendered:
    """Paint stuff, then things in order; labels are written with the very same masks, then the
    void rings (labels only: they never change a pixel of the image)."""
    shape = scene.shape
    image = np.zeros(shape + (3,), np.float32)
    label = np.zeros(shape, np.uint8)
    instances = np.full(shape, -1, np.int16)
    for region in scene.stuff:
        tex = stuff_texture(region.name, rng, shape)
        if region.kind == "all":
            image[:] = tex
            label[:] = CLASS_ID[region.name]
        else:
            m = region_mask(region, shape)
            image[m] = tex[m]
            label[m] = CLASS_ID[region.name]
    xs, ys = _grid(shape)
    for i, t in enumerate(scene.things):
        m = thing_mask(t, shape)
        if not m.any():
            continue
        image[m] = _thing_paint(t, m, xs, ys)
        label[m] = CLASS_ID[t.name] if t.name else IGNORE_LABEL
        instances[m] = i
    label[void_rings(instances, scene.things, scene.void_ring_width)] = IGNORE_LABEL
    # Photometric nuisances touch the image only; they never move a boundary.
    strength, direction = scene.light
    if strength:
        ramp = (xs * math.cos(direction) + ys * math.sin(direction)) / max(shape)
        image *= (1 + strength * (ramp - ramp.mean()) * 2)[..., None]
    image *= np.array(scene.gains, np.float32)
    if scene.blur:
        image = cv2.GaussianBlur(image, (0, 0), 0.6)
    if scene.noise:
        image += rng.standard_normal(image.shape, dtype=np.float32) * (scene.noise / 255.0)
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Rendered(image, label, instances, scene)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The compression artefacts the stored dataset has, for images generated in memory."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def make_sample(rng: np.random.Generator, p: WorldParams) -> Rendered:
    return render_scene(sample_scene(rng, p), rng)
