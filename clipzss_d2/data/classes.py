"""Published class lists, seen/unseen splits and CLIP prompt names of the three benchmarks.

Everything here is data copied from the published sources (the splits in docs/method.md, the
datasets' own label files), so that the prepare scripts, the registration and the tests agree on
one table.
"""

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


# ---- ADE20K-150 (SceneParsing / ADEChallengeData2016) -----------------------------------------
# Names of objectInfo150 (index + 1 = value in the annotation PNGs, 0 = "other"), synonyms
# separated by ", " as in the dev kit's objectInfo150.txt. The class name is the first synonym.
ADE150_FULL_NAMES = (
    "wall",
    "building, edifice",
    "sky",
    "floor, flooring",
    "tree",
    "ceiling",
    "road, route",
    "bed",
    "windowpane, window",
    "grass",
    "cabinet",
    "sidewalk, pavement",
    "person, individual, someone, somebody, mortal, soul",
    "earth, ground",
    "door, double door",
    "table",
    "mountain, mount",
    "plant, flora, plant life",
    "curtain, drape, drapery, mantle, pall",
    "chair",
    "car, auto, automobile, machine, motorcar",
    "water",
    "painting, picture",
    "sofa, couch, lounge",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug, carpet, carpeting",
    "field",
    "armchair",
    "seat",
    "fence, fencing",
    "desk",
    "rock, stone",
    "wardrobe, closet, press",
    "lamp",
    "bathtub, bathing tub, bath, tub",
    "railing, rail",
    "cushion",
    "base, pedestal, stand",
    "box",
    "column, pillar",
    "signboard, sign",
    "chest of drawers, chest, bureau, dresser",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace, hearth, open fireplace",
    "refrigerator, icebox",
    "grandstand, covered stand",
    "path",
    "stairs, steps",
    "runway",
    "case, display case, showcase, vitrine",
    "pool table, billiard table, snooker table",
    "pillow",
    "screen door, screen",
    "stairway, staircase",
    "river",
    "bridge, span",
    "bookcase",
    "blind, screen",
    "coffee table, cocktail table",
    "toilet, can, commode, crapper, pot, potty, stool, throne",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove, kitchen stove, range, kitchen range, cooking stove",
    "palm, palm tree",
    "kitchen island",
    "computer, computing machine, computing device, data processor, electronic computer, information processing system",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel, hut, hutch, shack, shanty",
    "bus, autobus, coach, charabanc, double-decker, jitney, motorbus, motorcoach, omnibus, passenger vehicle",
    "towel",
    "light, light source",
    "truck, motortruck",
    "tower",
    "chandelier, pendant, pendent",
    "awning, sunshade, sunblind",
    "streetlight, street lamp",
    "booth, cubicle, stall, kiosk",
    "television, television receiver, television set, tv, tv set, idiot box, boob tube, telly, goggle box",
    "airplane, aeroplane, plane",
    "dirt track",
    "apparel, wearing apparel, dress, clothes",
    "pole",
    "land, ground, soil",
    "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway",
    "ottoman, pouf, pouffe, puff, hassock",
    "bottle",
    "buffet, counter, sideboard",
    "poster, posting, placard, notice, bill, card",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt, conveyor belt, conveyer, conveyor, transporter",
    "canopy",
    "washer, automatic washer, washing machine",
    "plaything, toy",
    "swimming pool, swimming bath, natatorium",
    "stool",
    "barrel, cask",
    "basket, handbasket",
    "waterfall, falls",
    "tent, collapsible shelter",
    "bag",
    "minibike, motorbike",
    "cradle",
    "oven",
    "ball",
    "food, solid food",
    "step, stair",
    "tank, storage tank",
    "trade name, brand name, brand, marque",
    "microwave, microwave oven",
    "pot, flowerpot",
    "animal, animate being, beast, brute, creature, fauna",
    "bicycle, bike, wheel, cycle",
    "lake",
    "dishwasher, dish washer, dishwashing machine",
    "screen, silver screen, projection screen",
    "blanket, cover",
    "sculpture",
    "hood, exhaust hood",
    "sconce",
    "vase",
    "traffic light, traffic signal, stoplight",
    "tray",
    "ashcan, trash can, garbage can, wastebin, ash bin, ash-bin, ashbin, dustbin, trash barrel, trash bin",
    "fan",
    "pier, wharf, wharfage, dock",
    "crt screen",
    "plate",
    "monitor, monitoring device",
    "bulletin board, notice board",
    "shower",
    "radiator",
    "glass, drinking glass",
    "clock",
    "flag",
)
ADE150_CLASSES = tuple(n.split(", ")[0] for n in ADE150_FULL_NAMES)
# A few first synonyms read badly to CLIP; the rest are used as they are.
ADE150_PROMPTS = {
    "windowpane": "window|windowpane",
    "earth": "earth|ground",
    "plant": "plant|flora",
    "palm": "palm tree",
    "streetlight": "street lamp|streetlight",
    "apparel": "clothes|apparel",
    "plaything": "toy",
    "ashcan": "trash can|ashcan",
    "crt screen": "crt screen|computer monitor",
    "minibike": "motorbike|minibike",
}

# ---- PASCAL Context-459: labels.txt of the official trainval.tar.gz (index + 1 = 459-label id)
PCONTEXT459_CLASSES = (
    "accordion", "aeroplane", "air conditioner", "antenna", "artillery", "ashtray", "atrium",
    "baby carriage", "bag", "ball", "balloon", "bamboo weaving", "barrel", "baseball bat",
    "basket", "basketball backboard", "bathtub", "bed", "bedclothes", "beer", "bell", "bench",
    "bicycle", "binoculars", "bird", "bird cage", "bird feeder", "bird nest", "blackboard",
    "board", "boat", "bone", "book", "bottle", "bottle opener", "bowl", "box", "bracelet", "brick",
    "bridge", "broom", "brush", "bucket", "building", "bus", "cabinet", "cabinet door", "cage",
    "cake", "calculator", "calendar", "camel", "camera", "camera lens", "can", "candle",
    "candle holder", "cap", "car", "card", "cart", "case", "casette recorder", "cash register",
    "cat", "cd", "cd player", "ceiling", "cell phone", "cello", "chain", "chair", "chessboard",
    "chicken", "chopstick", "clip", "clippers", "clock", "closet", "cloth", "clothes tree",
    "coffee", "coffee machine", "comb", "computer", "concrete", "cone", "container",
    "control booth", "controller", "cooker", "copying machine", "coral", "cork", "corkscrew",
    "counter", "court", "cow", "crabstick", "crane", "crate", "cross", "crutch", "cup", "curtain",
    "cushion", "cutting board", "dais", "disc", "disc case", "dishwasher", "dock", "dog",
    "dolphin", "door", "drainer", "dray", "drink dispenser", "drinking machine", "drop", "drug",
    "drum", "drum kit", "duck", "dumbbell", "earphone", "earrings", "egg", "electric fan",
    "electric iron", "electric pot", "electric saw", "electronic keyboard", "engine", "envelope",
    "equipment", "escalator", "exhibition booth", "extinguisher", "eyeglass", "fan", "faucet",
    "fax machine", "fence", "ferris wheel", "fire extinguisher", "fire hydrant", "fire place",
    "fish", "fish tank", "fishbowl", "fishing net", "fishing pole", "flag", "flagstaff", "flame",
    "flashlight", "floor", "flower", "fly", "foam", "food", "footbridge", "forceps", "fork",
    "forklift", "fountain", "fox", "frame", "fridge", "frog", "fruit", "funnel", "furnace",
    "game controller", "game machine", "gas cylinder", "gas hood", "gas stove", "gift box",
    "glass", "glass marble", "globe", "glove", "goal", "grandstand", "grass", "gravestone",
    "ground", "guardrail", "guitar", "gun", "hammer", "hand cart", "handle", "handrail", "hanger",
    "hard disk drive", "hat", "hay", "headphone", "heater", "helicopter", "helmet", "holder",
    "hook", "horse", "horse-drawn carriage", "hot-air balloon", "hydrovalve", "ice",
    "inflator pump", "ipod", "iron", "ironing board", "jar", "kart", "kettle", "key", "keyboard",
    "kitchen range", "kite", "knife", "knife block", "ladder", "ladder truck", "ladle", "laptop",
    "leaves", "lid", "life buoy", "light", "light bulb", "lighter", "line", "lion", "lobster",
    "lock", "machine", "mailbox", "mannequin", "map", "mask", "mat", "match book", "mattress",
    "menu", "metal", "meter box", "microphone", "microwave", "mirror", "missile", "model", "money",
    "monkey", "mop", "motorbike", "mountain", "mouse", "mouse pad", "musical instrument", "napkin",
    "net", "newspaper", "oar", "ornament", "outlet", "oven", "oxygen bottle", "pack", "pan",
    "paper", "paper box", "paper cutter", "parachute", "parasol", "parterre", "patio", "pelage",
    "pen", "pen container", "pencil", "person", "photo", "piano", "picture", "pig", "pillar",
    "pillow", "pipe", "pitcher", "plant", "plastic", "plate", "platform", "player", "playground",
    "pliers", "plume", "poker", "poker chip", "pole", "pool table", "postcard", "poster", "pot",
    "pottedplant", "printer", "projector", "pumpkin", "rabbit", "racket", "radiator", "radio",
    "rail", "rake", "ramp", "range hood", "receiver", "recorder", "recreational machines",
    "remote control", "road", "robot", "rock", "rocket", "rocking horse", "rope", "rug", "ruler",
    "runway", "saddle", "sand", "saw", "scale", "scanner", "scissors", "scoop", "screen",
    "screwdriver", "sculpture", "scythe", "sewer", "sewing machine", "shed", "sheep", "shell",
    "shelves", "shoe", "shopping cart", "shovel", "sidecar", "sidewalk", "sign", "signal light",
    "sink", "skateboard", "ski", "sky", "sled", "slippers", "smoke", "snail", "snake", "snow",
    "snowmobiles", "sofa", "spanner", "spatula", "speaker", "speed bump", "spice container",
    "spoon", "sprayer", "squirrel", "stage", "stair", "stapler", "stick", "sticky note", "stone",
    "stool", "stove", "straw", "stretcher", "sun", "sunglass", "sunshade", "surveillance camera",
    "swan", "sweeper", "swim ring", "swimming pool", "swing", "switch", "table", "tableware",
    "tank", "tap", "tape", "tarp", "telephone", "telephone booth", "tent", "tire", "toaster",
    "toilet", "tong", "tool", "toothbrush", "towel", "toy", "toy car", "track", "train",
    "trampoline", "trash bin", "tray", "tree", "tricycle", "tripod", "trophy", "truck", "tube",
    "turtle", "tvmonitor", "tweezers", "typewriter", "umbrella", "unknown", "vacuum cleaner",
    "vending machine", "video camera", "video game console", "video player", "video tape",
    "violin", "wakeboard", "wall", "wallet", "wardrobe", "washing machine", "watch", "water",
    "water dispenser", "water pipe", "water skate board", "watermelon", "whale", "wharf", "wheel",
    "wheelchair", "window", "window blinds", "wineglass", "wire", "wood", "wool",
)  # fmt: skip
PCONTEXT459_PROMPTS = {"tvmonitor": "tv monitor|television", "pottedplant": "potted plant"}


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
assert len(ADE150_CLASSES) == 150 and len(set(ADE150_CLASSES)) == 150
assert len(PCONTEXT459_CLASSES) == 459 and len(set(PCONTEXT459_CLASSES)) == 459
assert all(PCONTEXT459_CLASSES[i - 1] == c for i, c in zip(PCONTEXT59_459_IDS, PCONTEXT59_CLASSES))
