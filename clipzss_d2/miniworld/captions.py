"""Web-like captions of a rendered scene: what the teacher learns the class names from."""

from __future__ import annotations

import numpy as np

from .render import Rendered
from .world import CLASS_ID, STUFF, WorldParams

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
