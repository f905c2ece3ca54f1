"""Published class lists, seen/unseen splits and CLIP prompt names of the three benchmarks.

Everything here is data copied from the published sources (the splits in docs/method.md, the
datasets' own label files), so that the prepare scripts, the registration and the tests agree on
one table. The long lists of the open-vocabulary evaluation sets (ADE20K-150, Context-459) live
in classes_open_vocab.py and are importable from here too; the colour and prompt helpers that
every dataset uses are at the end.
"""

from .classes_open_vocab import (  # noqa: F401  (re-exported: one import path for every table)
    ADE150_CLASSES,
    ADE150_FULL_NAMES,
    ADE150_PROMPTS,
    PCONTEXT459_CLASSES,
    PCONTEXT459_PROMPTS,
)

# ---- PASCAL VOC 2012: the standard 20 classes; background (0) is ignored --------------------
VOC20_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC20_UNSEEN = ("pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC20_PROMPTS = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor|television",
}

# ---- COCO-Stuff 164k ------------------------------------------------------------------------
# Index = value in stuffthingmaps_trainval2017 PNGs (= COCO category id - 1), names from
# COCO-Stuff's labels.txt. 255 = unlabelled.
COCO_STUFF_182 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window",
    "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush", "banner", "blanket",
    "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light",
    "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
# The 11 thing ids COCO never annotated (map values; none occurs in the maps).
COCO_STUFF_UNUSED_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
# Map value of each of the 171 classes, in contiguous-id order (COCO-Stuff id order).
COCO_STUFF171_VALUES = tuple(v for v in range(182) if v not in COCO_STUFF_UNUSED_VALUES)
COCO_STUFF171_CLASSES = tuple(COCO_STUFF_182[v] for v in COCO_STUFF171_VALUES)
COCO_STUFF171_UNSEEN = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
    "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete",
)  # fmt: skip
# "x-other" is COCO-Stuff's catch-all for x; compound names read as English for CLIP.
COCO_STUFF171_PROMPTS = {
    "tv": "tv|television",
    "building-other": "building",
    "ceiling-other": "ceiling",
    "ceiling-tile": "ceiling tile",
    "desk-stuff": "desk",
    "door-stuff": "door",
    "floor-marble": "marble floor",
    "floor-other": "floor",
    "floor-stone": "stone floor",
    "floor-tile": "tile floor",
    "floor-wood": "wooden floor",
    "food-other": "food",
    "furniture-other": "furniture",
    "ground-other": "ground",
    "mirror-stuff": "mirror",
    "plant-other": "plant",
    "playingfield": "playing field",
    "sky-other": "sky",
    "solid-other": "solid",
    "structural-other": "structure",
    "textile-other": "textile",
    "wall-brick": "brick wall",
    "wall-concrete": "concrete wall",
    "wall-other": "wall",
    "wall-panel": "wall panel",
    "wall-stone": "stone wall",
    "wall-tile": "tile wall",
    "wall-wood": "wooden wall",
    "water-other": "water",
    "waterdrops": "water drops",
    "window-blind": "window blind",
    "window-other": "window",
}

# ---- PASCAL Context-59 ----------------------------------------------------------------------
# 459-label ids (Context labels.txt, 1-based) of the 59 classes; contiguous id = rank in this
# sorted list, which is alphabetical by name. Everything else (and 0 = unlabelled) is ignored.
PCONTEXT59_459_IDS = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113,
    115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326,
    347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip
PCONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate",
    "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water",
    "window", "wood",
)  # fmt: skip
# ZS3Net's split (the default) and the other published 10-class split.
PCONTEXT59_UNSEEN_ZS3 = (
    "aeroplane", "bird", "boat", "cat", "cow", "fence", "keyboard", "motorbike", "sofa",
    "tvmonitor",
)  # fmt: skip
PCONTEXT59_UNSEEN_ZSB = (
    "aeroplane", "bed", "bedclothes", "boat", "bottle", "car", "cloth", "cow", "keyboard", "plate",
)  # fmt: skip
PCONTEXT59_PROMPTS = {
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor|television",
}


def prompt_list(classes, overrides) -> list[str]:
    return [overrides.get(c, c) for c in classes]


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """PASCAL VOC's bit-interleaved colour map (entry 0 = black); reused for every dataset."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return palette


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Colour of contiguous id i = VOC palette entry i+1 (so VOC classes keep their usual colours)."""
    return voc_palette(num_classes + 1)[1:]


assert len(VOC20_CLASSES) == 20
assert len(COCO_STUFF_182) == 182 and len(COCO_STUFF171_CLASSES) == 171
assert len(PCONTEXT59_459_IDS) == 59 and len(PCONTEXT59_CLASSES) == 59
assert list(PCONTEXT59_459_IDS) == sorted(PCONTEXT59_459_IDS)
assert list(PCONTEXT59_CLASSES) == sorted(PCONTEXT59_CLASSES)
assert all(PCONTEXT459_CLASSES[i - 1] == c for i, c in zip(PCONTEXT59_459_IDS, PCONTEXT59_CLASSES))
