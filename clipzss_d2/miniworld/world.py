"""The miniature world: classes, scene sampling, rendering and captions.

Everything a scene shows comes from one `Scene` description. The label map and the image are
painted from the same masks (one binary mask per object, painted in the same order), so label ids
match what is drawn pixel for pixel, and occlusion is the painter's order in both.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Objects ("things") and background textures ("stuff"); index in CLASSES = label id.
THINGS = (
    "disc",
    "ring",
    "square",
    "bar",
    "triangle",
    "cross",
    "star",
    "diamond",
    "heart",
    "crescent",
    "arrow",
)
STUFF = ("grass", "sand", "water", "snow", "brick")
CLASSES = THINGS + STUFF
# Held out in the zero-shot protocol: three things and one stuff, each with a seen look-alike
# (star/cross, diamond/square, crescent/ring, snow/sand) so transfer is not a colour trick.
UNSEEN = ("star", "diamond", "crescent", "snow")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
IGNORE_LABEL = 255
# Bump whenever a change alters what a seed renders (invalidates generated worlds and teachers).
WORLD_VERSION = 1

# Typical hue (degrees), saturation and value of each thing: hues about 30 degrees apart, as a
# tiny CLIP trained for minutes on a CPU learns colour long before shape. Objects jitter around
# these or, with WorldParams.alt_colour_prob, take any colour (then only shape tells).
THING_HSV = {
    "disc": (0, 0.85, 0.9),
    "ring": (28, 0.9, 1.0),
    "triangle": (58, 0.9, 1.0),
    "crescent": (40, 0.85, 0.6),
    "cross": (88, 0.8, 0.9),
    "arrow": (135, 0.75, 0.55),
    "diamond": (180, 0.85, 0.9),
    "square": (222, 0.8, 0.9),
    "bar": (268, 0.65, 0.8),
    "star": (300, 0.75, 0.95),
    "heart": (335, 0.65, 1.0),
}
# Mean RGB of each stuff texture (0..1); the textures add structure around these.
STUFF_RGB = {
    "grass": (0.28, 0.55, 0.18),
    "sand": (0.86, 0.76, 0.52),
    "water": (0.16, 0.38, 0.72),
    "snow": (0.92, 0.94, 0.97),
    "brick": (0.62, 0.25, 0.18),
}


def class_colors() -> list[list[int]]:
    """Display colours (stuff_colors) taken from each class's typical look."""
    colors = []
    for name in CLASSES:
        if name in THING_HSV:
            h, s, v = THING_HSV[name]
            rgb = colorsys.hsv_to_rgb(h / 360.0, s, v)
        else:
            rgb = STUFF_RGB[name]
        colors.append([int(round(255 * c)) for c in rgb])
    return colors


# ---------------------------------------------------------------------------------------------
# Shapes: polygons in unit coordinates (radius about 1), y pointing down like image rows.


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


def shape_mask(
    kind: str, cx: float, cy: float, radius: float, angle: float, size: int
) -> np.ndarray:
    """Boolean mask of one shape on a size x size canvas; the one source of both pixels and labels."""
    mask = np.zeros((size, size), np.uint8)
    for pts, sign in SHAPES[kind]:
        _fill(mask, transform_points(pts, cx, cy, radius, angle), 1 if sign > 0 else 0)
    return mask.astype(bool)


# ---------------------------------------------------------------------------------------------
# Scene description


@dataclass(frozen=True)
class WorldParams:
    """Everything that shapes the distribution of scenes (saved in the manifest and hashed)."""

    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 3
    empty_prob: float = 0.05  # scenes with stuff only
    min_radius: float = 0.1  # object radius as a fraction of the image side
    max_radius: float = 0.3
    second_stuff_prob: float = 0.5  # a second background texture beyond a wavy boundary
    third_stuff_prob: float = 0.15  # a third texture as a blob
    alt_colour_prob: float = 0.1  # objects painted in an arbitrary colour
    pattern_prob: float = 0.35  # stripes or spots on an object
    border_prob: float = 0.4  # a dark outline inside the object
    clutter_prob: float = 0.15  # an unnamed blob labelled ignore (255)
    max_noise: float = 8.0  # std of pixel noise, 0..255 scale
    blur_prob: float = 0.25
    lighting: float = 0.15  # strength of a linear illumination gradient
    min_visible_pixels: int = 12  # an object less visible than this is not named in captions
    min_stuff_fraction: float = 0.08  # nor a texture covering less of the image than this
    caption_stuff_prob: float = 0.6  # captions with objects mention the background this often
    things: tuple[str, ...] = THINGS
    stuff: tuple[str, ...] = STUFF

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["things"], d["stuff"] = list(self.things), list(self.stuff)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WorldParams:
        d = dict(d)
        for key in ("things", "stuff"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def __post_init__(self):
        unknown = [c for c in self.things if c not in THINGS] + [
            c for c in self.stuff if c not in STUFF
        ]
        if unknown:
            raise ValueError(f"Unknown miniworld classes {unknown}; known: {list(CLASSES)}")
        if not self.stuff:
            raise ValueError("WorldParams.stuff must name at least one background texture.")
        if self.min_objects > self.max_objects or self.min_objects < 0:
            raise ValueError("Need 0 <= min_objects <= max_objects.")
        if self.max_objects > 0 and not self.things:
            raise ValueError("Objects asked for but WorldParams.things is empty.")


@dataclass
class StuffRegion:
    """One background texture; regions are painted in order, later ones on top."""

    name: str
    kind: str = "all"  # all | halfplane (wavy boundary) | blob
    # halfplane: direction, offset from the centre, wave amplitude/period/phase (pixels, radians)
    # blob: centre, radius, number of lobes, lobe amplitude, phase
    params: tuple[float, ...] = ()


@dataclass
class ThingSpec:
    name: str  # a class name, or "" for unlabelled clutter (label 255)
    cx: float
    cy: float
    radius: float
    angle: float
    rgb: tuple[float, float, float]
    pattern: str = "solid"  # solid | stripes | spots
    pattern_angle: float = 0.0
    pattern_period: float = 6.0
    border: bool = False
    shade: float = 0.0  # linear shading across the object
    shade_angle: float = 0.0
    polygon: np.ndarray | None = None  # clutter only: its own outline in unit coordinates
    typical_colour: bool = True  # False: painted in an arbitrary colour (only shape tells)


@dataclass
class Scene:
    size: int
    stuff: list[StuffRegion]
    things: list[ThingSpec] = field(default_factory=list)  # painter's order, clutter included
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    light: tuple[float, float] = (0.0, 0.0)  # strength, direction
    noise: float = 0.0
    blur: bool = False


def _jitter_colour(rng: np.random.Generator, hsv: tuple[float, float, float]) -> tuple:
    h, s, v = hsv
    h = (h + rng.uniform(-9, 9)) % 360
    s = float(np.clip(s * rng.uniform(0.8, 1.12), 0, 1))
    v = float(np.clip(v * rng.uniform(0.75, 1.1), 0, 1))
    return colorsys.hsv_to_rgb(h / 360.0, s, v)


def sample_thing(rng: np.random.Generator, name: str, p: WorldParams) -> ThingSpec:
    size = p.image_size
    typical = rng.random() >= p.alt_colour_prob
    if not typical:
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.45, 1.0))
    else:
        rgb = _jitter_colour(rng, THING_HSV[name])
    u = rng.random()
    pattern = "solid" if u >= p.pattern_prob else ("stripes" if u < p.pattern_prob / 2 else "spots")
    return ThingSpec(
        name=name,
        cx=rng.uniform(0.1, 0.9) * size,
        cy=rng.uniform(0.1, 0.9) * size,
        radius=rng.uniform(p.min_radius, p.max_radius) * size,
        angle=rng.uniform(0, 2 * math.pi),
        rgb=tuple(float(c) for c in rgb),
        pattern=pattern,
        pattern_angle=rng.uniform(0, math.pi),
        pattern_period=rng.uniform(4, 8),
        border=bool(rng.random() < p.border_prob),
        shade=rng.uniform(0, 0.25),
        shade_angle=rng.uniform(0, 2 * math.pi),
        typical_colour=typical,
    )


def sample_clutter(rng: np.random.Generator, p: WorldParams) -> ThingSpec:
    n = int(rng.integers(6, 10))
    a = np.sort(rng.uniform(0, 2 * math.pi, n))
    r = rng.uniform(0.5, 1.0, n)
    grey = rng.uniform(0.25, 0.7)
    rgb = tuple(float(np.clip(grey + rng.uniform(-0.08, 0.08), 0, 1)) for _ in range(3))
    return ThingSpec(
        name="",
        cx=rng.uniform(0.1, 0.9) * p.image_size,
        cy=rng.uniform(0.1, 0.9) * p.image_size,
        radius=rng.uniform(0.07, 0.16) * p.image_size,
        angle=0.0,
        rgb=rgb,
        polygon=np.stack([r * np.cos(a), r * np.sin(a)], 1),
    )


def sample_scene(rng: np.random.Generator, p: WorldParams) -> Scene:
    size = p.image_size
    stuff_names = list(rng.permutation(len(p.stuff)))
    regions = [StuffRegion(p.stuff[stuff_names[0]])]
    if len(p.stuff) > 1 and rng.random() < p.second_stuff_prob:
        regions.append(
            StuffRegion(
                p.stuff[stuff_names[1]],
                "halfplane",
                (
                    rng.uniform(0, 2 * math.pi),
                    rng.uniform(-0.3, 0.3) * size,
                    rng.uniform(0, 0.08) * size,
                    rng.uniform(0.3, 1.0) * size,
                    rng.uniform(0, 2 * math.pi),
                ),
            )
        )
        if len(p.stuff) > 2 and rng.random() < p.third_stuff_prob:
            regions.append(
                StuffRegion(
                    p.stuff[stuff_names[2]],
                    "blob",
                    (
                        rng.uniform(0.2, 0.8) * size,
                        rng.uniform(0.2, 0.8) * size,
                        rng.uniform(0.15, 0.3) * size,
                        float(rng.integers(2, 5)),
                        rng.uniform(0.1, 0.3),
                        rng.uniform(0, 2 * math.pi),
                    ),
                )
            )
    things: list[ThingSpec] = []
    if p.max_objects > 0 and rng.random() >= p.empty_prob:
        n = int(rng.integers(max(p.min_objects, 1), p.max_objects + 1))
        for _ in range(n):
            things.append(sample_thing(rng, p.things[int(rng.integers(len(p.things)))], p))
    if rng.random() < p.clutter_prob:
        things.insert(int(rng.integers(len(things) + 1)), sample_clutter(rng, p))
    return Scene(
        size=size,
        stuff=regions,
        things=things,
        gains=tuple(float(g) for g in rng.uniform(0.92, 1.08, 3)),
        light=(rng.uniform(0, p.lighting), rng.uniform(0, 2 * math.pi)),
        noise=rng.uniform(0, p.max_noise),
        blur=bool(rng.random() < p.blur_prob),
    )


# ---------------------------------------------------------------------------------------------
# Rendering


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False  # shared between calls
    return xs, ys


def region_mask(region: StuffRegion, size: int) -> np.ndarray:
    if region.kind == "all":
        return np.ones((size, size), bool)
    xs, ys = _grid(size)
    x, y = xs - (size - 1) / 2, ys - (size - 1) / 2
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
    rng: np.random.Generator, size: int, sigma: float, ksize=(0, 0), sy=None
) -> np.ndarray:
    n = rng.standard_normal((size, size), dtype=np.float32)
    n = cv2.GaussianBlur(n, ksize, sigmaX=sigma, sigmaY=sigma if sy is None else sy)
    return n / (n.std() + 1e-6)


def stuff_texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size x 3 float texture (0..1) with the structure typical of `name`."""
    base = np.array(STUFF_RGB[name], np.float32) * rng.uniform(0.88, 1.1, 3).astype(np.float32)
    xs, ys = _grid(size)
    a = rng.uniform(0, 2 * math.pi)
    u = xs * math.cos(a) + ys * math.sin(a)
    v = -xs * math.sin(a) + ys * math.cos(a)
    if name == "grass":  # vertical blades: noise stretched along y, darker tufts
        blades = _smooth_noise(rng, size, 0.6, sy=3.0)
        tufts = _smooth_noise(rng, size, 6.0)
        shade = 1 + 0.22 * blades + 0.1 * tufts
        tex = base * shade[..., None]
    elif name == "sand":  # fine grain and wind ripples
        period = rng.uniform(6, 11)
        ripple = np.sin(2 * math.pi * u / period + 1.5 * np.sin(2 * math.pi * v / (3 * period)))
        grain = rng.standard_normal((size, size), dtype=np.float32)
        tex = base * (1 + 0.06 * ripple + 0.05 * grain)[..., None]
    elif name == "water":  # two wave trains and bright crests
        p1, p2 = rng.uniform(8, 16), rng.uniform(5, 10)
        w = np.sin(2 * math.pi * u / p1) + 0.6 * np.sin(2 * math.pi * (0.6 * u + 0.8 * v) / p2)
        crest = np.clip(w - 1.1, 0, None)
        tex = base * (1 + 0.1 * w)[..., None] + 0.35 * crest[..., None]
    elif name == "snow":  # smooth drifts, bluish shadows, sparkles
        drift = _smooth_noise(rng, size, 7.0)
        sparkle = (rng.random((size, size)) < 0.015).astype(np.float32)
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
        tex = tex * (1 + 0.04 * rng.standard_normal((size, size), dtype=np.float32))[..., None]
    else:
        raise ValueError(f"No texture for {name!r}")
    return tex.astype(np.float32)


def _thing_mask(t: ThingSpec, size: int) -> np.ndarray:
    if t.polygon is not None:
        mask = np.zeros((size, size), np.uint8)
        _fill(mask, transform_points(t.polygon, t.cx, t.cy, t.radius, t.angle), 1)
        return mask.astype(bool)
    return shape_mask(t.name, t.cx, t.cy, t.radius, t.angle, size)


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
    label: np.ndarray  # H x W uint8 class ids, 255 = ignore (clutter)
    instances: np.ndarray  # H x W int16: index into scene.things, -1 = background
    scene: Scene


def render_scene(scene: Scene, rng: np.random.Generator) -> Rendered:
    """Paint stuff, then things in order; labels are written with the very same masks."""
    size = scene.size
    image = np.zeros((size, size, 3), np.float32)
    label = np.zeros((size, size), np.uint8)
    instances = np.full((size, size), -1, np.int16)
    for region in scene.stuff:
        tex = stuff_texture(region.name, rng, size)
        if region.kind == "all":
            image[:] = tex
            label[:] = CLASS_ID[region.name]
        else:
            m = region_mask(region, size)
            image[m] = tex[m]
            label[m] = CLASS_ID[region.name]
    xs, ys = _grid(size)
    for i, t in enumerate(scene.things):
        m = _thing_mask(t, size)
        if not m.any():
            continue
        image[m] = _thing_paint(t, m, xs, ys)
        label[m] = CLASS_ID[t.name] if t.name else IGNORE_LABEL
        instances[m] = i
    # Photometric nuisances touch the image only; they never move a boundary.
    strength, direction = scene.light
    if strength:
        ramp = (xs * math.cos(direction) + ys * math.sin(direction)) / size
        image *= (1 + strength * (ramp - ramp.mean()) * 2)[..., None]
    image *= np.array(scene.gains, np.float32)
    if scene.blur:
        image = cv2.GaussianBlur(image, (0, 0), 0.6)
    if scene.noise:
        image += rng.standard_normal(image.shape, dtype=np.float32) * (scene.noise / 255.0)
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Rendered(image, label, instances, scene)


# ---------------------------------------------------------------------------------------------
# Captions

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
_TEMPLATES = (
    "a photo of {things} on {stuff}.",
    "a photo of {things} on {stuff}.",
    "{things} on {stuff}.",
    "a picture of {things} lying on {stuff}.",
    "there is {things} on {stuff}.",
)
_THINGS_ONLY = ("a photo of {things}.", "{things}.", "a picture of {things}.")
_STUFF_ONLY = ("a photo of {stuff}.", "{stuff}.", "a picture of {stuff}.")


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "x", "sh", "ch")) else "s")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def visible_classes(r: Rendered, p: WorldParams) -> tuple[dict[str, int], list[str]]:
    """Things (name -> visible instance count) and stuff (largest first) that a caption names."""
    counts = np.bincount(r.instances.ravel() + 1, minlength=len(r.scene.things) + 1)[1:]
    things: dict[str, int] = {}
    for t, c in zip(r.scene.things, counts):
        if t.name and c >= p.min_visible_pixels:
            things[t.name] = things.get(t.name, 0) + 1
    area = np.bincount(r.label.ravel(), minlength=256)
    min_area = p.min_stuff_fraction * r.label.size
    stuff = [s for s in STUFF if area[CLASS_ID[s]] >= min_area]
    stuff.sort(key=lambda s: -area[CLASS_ID[s]])
    return things, stuff


def make_caption(r: Rendered, p: WorldParams, rng: np.random.Generator) -> str:
    """A web-like caption naming every visible thing (with counts) and the main textures."""
    things, stuff = visible_classes(r, p)
    if not stuff:  # everything covered by objects: name the largest texture anyway
        area = np.bincount(r.label.ravel(), minlength=256)
        stuff = [max(STUFF, key=lambda s: area[CLASS_ID[s]])]
    stuff_text = _join(stuff[:2])
    if not things:
        return _STUFF_ONLY[int(rng.integers(len(_STUFF_ONLY)))].format(stuff=stuff_text)
    names = list(things)
    order = rng.permutation(len(names))
    parts = []
    for i in order:
        n = things[names[i]]
        parts.append(
            _article(names[i]) if n == 1 else f"{_NUMBERS.get(n, 'many')} {_plural(names[i])}"
        )
    # Web captions often skip the background; without this the text side would lean on stuff.
    templates = _TEMPLATES if rng.random() < p.caption_stuff_prob else _THINGS_ONLY
    template = templates[int(rng.integers(len(templates)))]
    return template.format(things=_join(parts), stuff=stuff_text)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The compression artefacts the stored dataset has, for images generated in memory."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def make_sample(rng: np.random.Generator, p: WorldParams) -> Rendered:
    return render_scene(sample_scene(rng, p), rng)
