"""How COCO-style annotations become one semantic map per image: the stated rules
(`RasterRules`) and the rasterisers of instances (polygons, RLE) and panoptic PNGs.

Kept apart from the checks (coco_json.py) and the cache (coco_sem_seg.py) so that what a map
holds is decided in this one file; a change here that changes a map must bump
coco_sem_seg.CACHE_VERSION, or old caches would be reused.
"""

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .coco_json import ClassPlan
from .custom_checks import CustomDatasetError
from .label_io import ignore_value

OVERLAP = ("smaller", "later", "earlier")
CROWD = ("ignore", "class", "skip")
UNKNOWN = ("ignore", "skip", "error")


@dataclass(frozen=True)
class RasterRules:
    """How the annotations of one image become one semantic map.

    overlap: which object a pixel covered by several gets: "smaller" (default: the object with
        fewer pixels, so a cup on a table or a person on a bed stays visible), "later" (the
        later annotation in the file, i.e. painting in file order) or "earlier".
    crowd: `iscrowd: 1` regions: "ignore" (default: their pixels are ignored in training and
        evaluation, as COCO's crowd regions are not exact), "class" (painted as their category)
        or "skip" (dropped, as if not annotated). Crowd regions lie under every other object.
    unannotated: pixels no annotation covers: "ignore" (default) or a class name (e.g.
        "background"; appended to the class list if the list does not hold it).
    unknown_categories: annotations whose category is not in the class list (when a class list
        is given): "ignore" (default: their pixels are ignored), "skip" (dropped, as if not
        annotated) or "error".
    """

    overlap: str = "smaller"
    crowd: str = "ignore"
    unannotated: str = "ignore"
    unknown_categories: str = "ignore"

    @classmethod
    def create(cls, spec=None) -> "RasterRules":
        if spec is None:
            return cls()
        if isinstance(spec, RasterRules):
            return spec
        if not isinstance(spec, dict):
            raise CustomDatasetError(
                f"rules must be a mapping of overlap/crowd/unannotated/unknown_categories, not "
                f"{type(spec).__name__}."
            )
        unknown = sorted(set(spec) - set(cls.__dataclass_fields__))
        if unknown:
            raise CustomDatasetError(
                f"rules has unknown key(s) {unknown}; use overlap, crowd, unannotated, "
                f"unknown_categories."
            )
        rules = cls(**{k: str(v) for k, v in spec.items()})
        for key, allowed in (
            ("overlap", OVERLAP),
            ("crowd", CROWD),
            ("unknown_categories", UNKNOWN),
        ):
            if getattr(rules, key) not in allowed:
                raise CustomDatasetError(
                    f"rules {key}: {getattr(rules, key)!r} is unknown; use one of "
                    f"{', '.join(allowed)}."
                )
        if not rules.unannotated:
            raise CustomDatasetError('rules unannotated: give "ignore" or a class name.')
        return rules

    def to_dict(self) -> dict:
        return asdict(self)


# ---- rasterising ----------------------------------------------------------------------------


def _rle(seg, h: int, w: int) -> dict:
    from pycocotools import mask as mask_util

    if isinstance(seg, list):  # polygons: one RLE per part, merged
        return mask_util.merge(mask_util.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_util.frPyObjects(seg, h, w)
    return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}


def rasterise_instances(
    annotations: list[dict], h: int, w: int, plan: ClassPlan, rules: RasterRules
) -> np.ndarray:
    """One semantic map (class ids, the ignore value, or the unannotated value) of an image."""
    from pycocotools import mask as mask_util

    ignore = ignore_value(len(plan.classes))
    dtype = np.uint8 if ignore == 255 else np.uint16
    out = np.full((h, w), plan.unannotated_value, dtype=dtype)
    crowd, objects = [], []
    for order, ann in enumerate(annotations):
        cls = plan.category_to_class[ann["category_id"]]
        if cls < 0:
            if rules.unknown_categories == "skip":
                continue
            cls = ignore
        is_crowd = bool(ann.get("iscrowd", 0))
        if is_crowd:
            if rules.crowd == "skip":
                continue
            if rules.crowd == "ignore":
                cls = ignore
        (crowd if is_crowd else objects).append((order, cls, _rle(ann["segmentation"], h, w)))
    if objects:
        areas = mask_util.area([r for _, _, r in objects])
        if rules.overlap == "smaller":  # paint the largest first, the smallest last (on top)
            keys = [(-int(a), order) for a, (order, _, _) in zip(areas, objects)]
        elif rules.overlap == "earlier":
            keys = [(-order,) for order, _, _ in objects]
        else:
            keys = [(order,) for order, _, _ in objects]
        objects = [o for _, o in sorted(zip(keys, objects), key=lambda t: t[0])]
    for _, cls, rle in crowd + objects:  # crowd regions lie under every object
        # one mask at a time: all at once would take H x W x N bytes (GBs for large photos)
        out[mask_util.decode(rle) > 0] = cls
    return out


def rasterise_panoptic(
    png_path: str, ann: dict, h: int, w: int, plan: ClassPlan, rules: RasterRules
) -> np.ndarray:
    ignore = ignore_value(len(plan.classes))
    with Image.open(png_path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint32)
    if rgb.shape[:2] != (h, w):
        raise CustomDatasetError(
            f"{png_path} is {rgb.shape[1]}x{rgb.shape[0]} but its image is {w}x{h} (image id "
            f"{ann['image_id']})"
        )
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    value = {0: plan.unannotated_value}
    for s in ann["segments_info"]:
        cls = plan.category_to_class[s["category_id"]]
        if cls < 0:
            cls = plan.unannotated_value if rules.unknown_categories == "skip" else ignore
        if s.get("iscrowd", 0):
            cls = {"ignore": ignore, "skip": plan.unannotated_value}.get(rules.crowd, cls)
        value[s["id"]] = cls
    uniq, inverse = np.unique(ids, return_inverse=True)
    unknown = [int(u) for u in uniq if int(u) not in value]
    if unknown:
        raise CustomDatasetError(
            f"{png_path} holds segment id(s) {unknown[:5]} that its `segments_info` does not "
            f"list (image id {ann['image_id']})"
        )
    dtype = np.uint8 if ignore == 255 else np.uint16
    return np.array([value[int(u)] for u in uniq], dtype=dtype)[inverse.reshape(ids.shape)]
