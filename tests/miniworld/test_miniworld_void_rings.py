"""MiniWorld's void rings (VOC's void boundary): label 255 on the pixels within `void_ring_width`
px (Chebyshev distance) of each named object's *visible* outline, on both sides; the image is
untouched, clutter gets no ring of its own, and the image border is no outline.

The expected rings are computed here from the object masks with scipy's chessboard distance
transform, independently of the renderer's OpenCV morphology.
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from clipzss_d2.miniworld import render as R
from clipzss_d2.miniworld import shapes as S
from clipzss_d2.miniworld import world as W

H, Wd = 60, 80  # a landscape canvas: rows and columns must not be swapped anywhere
GRASS = W.CLASS_ID["grass"]


def ring_of(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` (Chebyshev) of the other side of `mask`'s outline, inside the
    image: outside pixels near the mask and mask pixels near a non-mask pixel."""
    if not mask.any():
        return np.zeros_like(mask)
    outside = ~mask & (ndimage.distance_transform_cdt(~mask, metric="chessboard") <= width)
    if mask.all():
        return outside
    inside = mask & (ndimage.distance_transform_cdt(mask, metric="chessboard") <= width)
    return outside | inside


def thing(name, cx, cy, radius, angle=0.0, rgb=(0.9, 0.1, 0.1)):
    return W.ThingSpec(name=name, cx=cx, cy=cy, radius=radius, angle=angle, rgb=rgb)


def scene(things, width=1, **nuisances):
    return W.Scene(H, Wd, [W.StuffRegion("grass")], things, void_ring_width=width, **nuisances)


def render(sc, seed=0):
    return R.render_scene(sc, np.random.default_rng(seed))


NUISANCES = {"light": (0.15, 0.7), "noise": 6.0, "blur": True, "gains": (1.05, 0.95, 1.0)}


@pytest.mark.parametrize("width", [1, 2])
def test_ring_around_one_disc(width):
    disc = thing("disc", 37.3, 28.6, 16.0)
    rendered = render(scene([disc], width, **NUISANCES))
    plain = render(scene([disc], 0, **NUISANCES))
    mask = S.shape_mask("disc", disc.cx, disc.cy, disc.radius, disc.angle, (H, Wd))
    # without rings the label is the drawn disc on grass
    np.testing.assert_array_equal(plain.label, np.where(mask, W.CLASS_ID["disc"], GRASS))
    ring = ring_of(mask, width)
    assert ring.any() and (mask & ~ring).any()
    # 255 exactly on the ring; the interior keeps its class, the rest is grass
    np.testing.assert_array_equal(rendered.label == 255, ring)
    assert (rendered.label[mask & ~ring] == W.CLASS_ID["disc"]).all()
    assert (rendered.label[~mask & ~ring] == GRASS).all()
    # a ring is about 2 * width px wide around a circle of radius 0.9 * 16: its area says so
    r = 0.9 * disc.radius
    band = math.pi * ((r + width) ** 2 - (r - width) ** 2)
    assert 0.8 * band < ring.sum() < 1.5 * band, (ring.sum(), band)
    # rings touch labels only: the image is the ring-free scene's, pixel for pixel
    np.testing.assert_array_equal(rendered.image, plain.image)
    np.testing.assert_array_equal(rendered.instances, plain.instances)


def test_the_image_border_is_no_outline():
    """An object cut by the image border has no ring along the border (as in VOC)."""
    corner = thing("square", 4.0, 5.0, 12.0)  # covers the top-left corner
    rendered = render(scene([corner]))
    mask = S.shape_mask("square", corner.cx, corner.cy, corner.radius, 0.0, (H, Wd))
    assert mask[0, 0] and mask[0].any() and mask[:, 0].any()
    np.testing.assert_array_equal(rendered.label == 255, ring_of(mask, 1))
    assert rendered.label[0, 0] == W.CLASS_ID["square"]
    assert rendered.label[0, 3] == W.CLASS_ID["square"]  # along the border, away from the edge


def test_occluded_object_ring_follows_its_visible_outline():
    """A disc partly under a square and a small disc wholly under it: the rings follow what is
    visible; the hidden parts of the discs' outlines leave no void inside the square."""
    big = thing("disc", 28.0, 30.0, 18.0)
    hidden = thing("heart", 52.0, 30.0, 4.0, rgb=(0.2, 0.9, 0.2))
    square = thing("square", 50.0, 30.0, 14.0, rgb=(0.1, 0.2, 0.9))
    things = [big, hidden, square]
    rendered = render(scene(things, **NUISANCES))
    plain = render(scene(things, 0, **NUISANCES))
    masks = [S.shape_mask(t.name, t.cx, t.cy, t.radius, t.angle, (H, Wd)) for t in things]
    assert (masks[0] & masks[2]).any() and not (masks[1] & ~masks[2]).any()
    visible_big = masks[0] & ~masks[2]
    expected = ring_of(visible_big, 1) | ring_of(masks[2], 1)
    np.testing.assert_array_equal(rendered.label == 255, expected)
    # the disc's full outline would have put void inside the square: the visible one does not
    hidden_outline = ring_of(masks[0], 1) & masks[2] & ~ring_of(masks[2], 1)
    assert hidden_outline.any()
    assert (rendered.label[hidden_outline] == W.CLASS_ID["square"]).all()
    assert not (rendered.label == W.CLASS_ID["heart"]).any()  # wholly hidden: neither class
    assert (rendered.label[masks[1]] == W.CLASS_ID["square"]).all()  # nor ring
    np.testing.assert_array_equal(rendered.image, plain.image)


def test_clutter_is_void_without_a_ring():
    """Clutter is labelled 255 on its own pixels only; the grass around it keeps its label, and a
    named object next to it is ringed along its visible outline as usual."""
    blob = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])
    clutter = W.ThingSpec(name="", cx=20, cy=20, radius=8, angle=0.0, rgb=(0.5,) * 3, polygon=blob)
    disc = thing("disc", 55.0, 35.0, 12.0)
    rendered = render(scene([clutter, disc]))
    clutter_mask = R.thing_mask(clutter, (H, Wd))
    disc_mask = S.shape_mask("disc", disc.cx, disc.cy, disc.radius, 0.0, (H, Wd))
    assert clutter_mask.sum() > 100 and not (clutter_mask & disc_mask).any()
    np.testing.assert_array_equal(rendered.label == 255, clutter_mask | ring_of(disc_mask, 1))
    around = ring_of(clutter_mask, 1) & ~clutter_mask
    assert (rendered.label[around] == GRASS).all()


def test_generated_scenes_have_rings_on_visible_outlines_only():
    """Random scenes of the dataset's distribution (occlusion, clutter, objects cut by the border):
    the stored label is the ring-free label with 255 on the rings of each named object's visible
    pixels; the image does not change."""
    p = W.WorldParams()
    assert p.void_ring_width == 1
    checked, clutter = 0, 0
    for seed in range(60):
        ringed = R.make_sample(np.random.default_rng(seed), p)
        rng = np.random.default_rng(seed)
        sc = dataclasses.replace(W.sample_scene(rng, p), void_ring_width=0)
        plain = R.render_scene(sc, rng)
        np.testing.assert_array_equal(ringed.image, plain.image)
        expected = plain.label.copy()
        for i, t in enumerate(sc.things):
            if t.name:
                expected[ring_of(plain.instances == i, 1)] = 255
        np.testing.assert_array_equal(ringed.label, expected)
        checked += sum(1 for t in sc.things if t.name)
        clutter += sum(
            1 for i, t in enumerate(sc.things) if not t.name and (plain.instances == i).any()
        )
        assert ((plain.label == 255) <= (ringed.label == 255)).all()  # clutter stays void
    assert checked >= 60 and clutter >= 3
