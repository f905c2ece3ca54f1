"""The miniature world: classes, the parameters of its scene distribution, and scene sampling.

Everything a scene shows comes from one `Scene` description; `render.py` paints the image and the
label map from the same masks, `captions.py` describes it for the teacher, `shapes.py` holds the
object outlines.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass, field

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
LOOK_ALIKES = {"star": "cross", "diamond": "square", "crescent": "ring", "snow": "sand"}
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
IGNORE_LABEL = 255
# Bump whenever a change alters what a seed renders (invalidates generated worlds and teachers).
WORLD_VERSION = 2  # 2: VOC-like sizes and aspect ratios, void rings, up to 4 objects

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
# Scene description


@dataclass(frozen=True)
class WorldParams:
    """Everything that shapes the distribution of scenes (saved in the manifest and hashed).

    The defaults are the stored dataset's: VOC-like images (short side 72-120 px, long side up
    to 1.6x, landscape more often, so the standard multi-scale resize + crop pads a VOC-like share
    of training crops) and VOC's void ring (label 255 on a band around every object's visible
    outline; the image is untouched). The teacher renders square images of its input size without
    rings (`square`).
    """

    min_short_side: int = 72
    max_short_side: int = 120
    max_aspect: float = 1.6  # long side / short side, uniform in [1, max_aspect]
    portrait_prob: float = 0.3
    min_objects: int = 1
    max_objects: int = 4
    empty_prob: float = 0.05  # scenes with stuff only
    min_radius: float = 0.1  # object radius as a fraction of the image's short side
    max_radius: float = 0.3
    second_stuff_prob: float = 0.5  # a second background texture beyond a wavy boundary
    third_stuff_prob: float = 0.15  # a third texture as a blob
    alt_colour_prob: float = 0.1  # objects painted in an arbitrary colour
    pattern_prob: float = 0.35  # stripes or spots on an object
    border_prob: float = 0.4  # a dark outline inside the object
    clutter_prob: float = 0.15  # an unnamed blob labelled ignore (255)
    void_ring_width: int = 1  # px on each side of an object's visible outline; 0 = no ring
    max_noise: float = 8.0  # std of pixel noise, 0..255 scale
    blur_prob: float = 0.25
    lighting: float = 0.15  # strength of a linear illumination gradient
    min_visible_pixels: int = 12  # an object less visible than this is not named in captions
    min_stuff_fraction: float = 0.08  # nor a texture covering less of the image than this
    caption_stuff_prob: float = 0.6  # captions with objects mention the background this often
    things: tuple[str, ...] = THINGS
    stuff: tuple[str, ...] = STUFF

    def square(self, size: int) -> WorldParams:
        """The same scenes on a size x size canvas without void rings (the teacher's images)."""
        return dataclasses.replace(
            self, min_short_side=size, max_short_side=size, max_aspect=1.0, void_ring_width=0
        )

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
        if not 0 <= self.min_short_side <= self.max_short_side:
            raise ValueError("Need 0 <= min_short_side <= max_short_side.")
        if self.max_aspect < 1:
            raise ValueError("max_aspect is long side / short side: it must be >= 1.")


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
    height: int
    width: int
    stuff: list[StuffRegion]
    things: list[ThingSpec] = field(default_factory=list)  # painter's order, clutter included
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    light: tuple[float, float] = (0.0, 0.0)  # strength, direction
    noise: float = 0.0
    blur: bool = False
    void_ring_width: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def _jitter_colour(rng: np.random.Generator, hsv: tuple[float, float, float]) -> tuple:
    h, s, v = hsv
    h = (h + rng.uniform(-9, 9)) % 360
    s = float(np.clip(s * rng.uniform(0.8, 1.12), 0, 1))
    v = float(np.clip(v * rng.uniform(0.75, 1.1), 0, 1))
    return colorsys.hsv_to_rgb(h / 360.0, s, v)


def sample_canvas(rng: np.random.Generator, p: WorldParams) -> tuple[int, int]:
    """(height, width) of one image: short side, aspect ratio and orientation as in WorldParams."""
    short = int(rng.integers(p.min_short_side, p.max_short_side + 1))
    long = int(round(short * rng.uniform(1.0, p.max_aspect)))
    return (long, short) if rng.random() < p.portrait_prob else (short, long)


def sample_thing(rng: np.random.Generator, name: str, p: WorldParams, height: int, width: int):
    short = min(height, width)
    typical = rng.random() >= p.alt_colour_prob
    if not typical:
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.45, 1.0))
    else:
        rgb = _jitter_colour(rng, THING_HSV[name])
    u = rng.random()
    pattern = "solid" if u >= p.pattern_prob else ("stripes" if u < p.pattern_prob / 2 else "spots")
    return ThingSpec(
        name=name,
        cx=rng.uniform(0.1, 0.9) * width,
        cy=rng.uniform(0.1, 0.9) * height,
        radius=rng.uniform(p.min_radius, p.max_radius) * short,
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


def sample_clutter(rng: np.random.Generator, height: int, width: int) -> ThingSpec:
    n = int(rng.integers(6, 10))
    a = np.sort(rng.uniform(0, 2 * math.pi, n))
    r = rng.uniform(0.5, 1.0, n)
    grey = rng.uniform(0.25, 0.7)
    rgb = tuple(float(np.clip(grey + rng.uniform(-0.08, 0.08), 0, 1)) for _ in range(3))
    return ThingSpec(
        name="",
        cx=rng.uniform(0.1, 0.9) * width,
        cy=rng.uniform(0.1, 0.9) * height,
        radius=rng.uniform(0.07, 0.16) * min(height, width),
        angle=0.0,
        rgb=rgb,
        polygon=np.stack([r * np.cos(a), r * np.sin(a)], 1),
    )


def sample_scene(rng: np.random.Generator, p: WorldParams) -> Scene:
    height, width = sample_canvas(rng, p)
    short = min(height, width)
    stuff_names = list(rng.permutation(len(p.stuff)))
    regions = [StuffRegion(p.stuff[stuff_names[0]])]
    if len(p.stuff) > 1 and rng.random() < p.second_stuff_prob:
        regions.append(
            StuffRegion(
                p.stuff[stuff_names[1]],
                "halfplane",
                (
                    rng.uniform(0, 2 * math.pi),
                    rng.uniform(-0.3, 0.3) * short,
                    rng.uniform(0, 0.08) * short,
                    rng.uniform(0.3, 1.0) * short,
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
                        rng.uniform(0.2, 0.8) * width,
                        rng.uniform(0.2, 0.8) * height,
                        rng.uniform(0.15, 0.3) * short,
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
            name = p.things[int(rng.integers(len(p.things)))]
            things.append(sample_thing(rng, name, p, height, width))
    if rng.random() < p.clutter_prob:
        things.insert(int(rng.integers(len(things) + 1)), sample_clutter(rng, height, width))
    return Scene(
        height=height,
        width=width,
        stuff=regions,
        things=things,
        gains=tuple(float(g) for g in rng.uniform(0.92, 1.08, 3)),
        light=(rng.uniform(0, p.lighting), rng.uniform(0, 2 * math.pi)),
        noise=rng.uniform(0, p.max_noise),
        blur=bool(rng.random() < p.blur_prob),
        void_ring_width=p.void_ring_width,
    )
