"""The benchmarks' published class lists and splits, written out literally for the tests.

Kept independent of clipzss_d2.data.classes on purpose: the tests compare the package against
these. Sources: docs/method.md (splits), COCO-Stuff labels.txt, the PASCAL Context 459-label
mapping (SOURCES.md), the VOC devkit.
"""

# VOC value k (1..20) is VOC20[k - 1]; 0 = background, 255 = void.
VOC20 = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC20_UNSEEN = ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]

# COCO-Stuff 171 in COCO-Stuff id order (labels.txt without "unlabeled" and the 11 thing ids
# that have no masks).
COCO_UNUSED = [
    "street sign",
    "hat",
    "shoe",
    "eye glasses",
    "plate",
    "mirror",
    "window",
    "desk",
    "door",
    "blender",
    "hair brush",
]
COCO171 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "banner", "blanket",
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
]  # fmt: skip
COCO171_UNSEEN = [
    "cow",
    "giraffe",
    "suitcase",
    "frisbee",
    "skateboard",
    "carrot",
    "scissors",
    "cardboard",
    "clouds",
    "grass",
    "playingfield",
    "river",
    "road",
    "tree",
    "wall-concrete",
]

# PASCAL Context: 459-label id -> name of the 59 classes; the contiguous id is the rank of the
# name in PC59 (alphabetical).
PC59_BY_459_ID = {
    2: "aeroplane", 9: "bag", 18: "bed", 19: "bedclothes", 22: "bench", 23: "bicycle",
    25: "bird", 31: "boat", 33: "book", 34: "bottle", 44: "building", 45: "bus", 46: "cabinet",
    59: "car", 65: "cat", 68: "ceiling", 72: "chair", 80: "cloth", 85: "computer", 98: "cow",
    104: "cup", 105: "curtain", 113: "dog", 115: "door", 144: "fence", 158: "floor",
    159: "flower", 162: "food", 187: "grass", 189: "ground", 207: "horse", 220: "keyboard",
    232: "light", 258: "motorbike", 259: "mountain", 260: "mouse", 284: "person", 295: "plate",
    296: "platform", 308: "pottedplant", 324: "road", 326: "rock", 347: "sheep", 349: "shelves",
    354: "sidewalk", 355: "sign", 360: "sky", 366: "snow", 368: "sofa", 397: "table",
    415: "track", 416: "train", 420: "tree", 424: "truck", 427: "tvmonitor", 440: "wall",
    445: "water", 454: "window", 458: "wood",
}  # fmt: skip
PC59 = [
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer",
    "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
]  # fmt: skip
PC59_UNSEEN_ZS3 = [
    "aeroplane",
    "bird",
    "boat",
    "cat",
    "cow",
    "fence",
    "keyboard",
    "motorbike",
    "sofa",
    "tvmonitor",
]
PC59_UNSEEN_ZSB = [
    "aeroplane",
    "bed",
    "bedclothes",
    "boat",
    "bottle",
    "car",
    "cloth",
    "cow",
    "keyboard",
    "plate",
]
