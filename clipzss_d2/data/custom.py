"""A user's own zero-shot dataset: one call, or one YAML/JSON file named in the config.

    import clipzss_d2
    clipzss_d2.register_zeroshot_sem_seg(
        "pets_train", "pets/images/train", "pets/labels/train",
        classes=["cat", "dog", "rabbit"], unseen=["rabbit"], label_encoding="palette")
    # COCO-style JSON (instances, stuff or panoptic): classes from its `categories`
    clipzss_d2.register_zeroshot_sem_seg(
        "pets_val", "pets/images/val", "pets/annotations/val.json", unseen=["rabbit"])
    # a dataset already in detectron2's catalog (register_coco_instances / _panoptic)
    clipzss_d2.register_zeroshot_from_detectron2("pets_zs_train", "pets_coco_train", ["rabbit"])

or a dataset file (datasets/README.md, "Your own dataset") listed in `DATASETS.CUSTOM`, which
registers `<name>_<split>` for each split. Registration reads nothing from disk; the first load
of a dataset (detectron2's DatasetCatalog.get, before training starts) checks every image/label
pair and every label value and stops with one message listing what is wrong (custom_checks.py).
"""

import json
import os
from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from . import coco_json, coco_sem_seg
from .coco_rasterise import RasterRules
from .coco_sem_seg import CocoSource
from .custom_checks import (
    CustomDatasetError,
    check_classes,
    checked_records,
    forget_checked,
    keep_checked,
    load_checked_pairs,
)
from .datasets import EVALUATOR_TYPE
from .label_io import (
    LabelEncoding,
    LabelEncodingError,
    ignore_value,
    register_label_encoding,
    unregister_label_encoding,
)

__all__ = [
    "CustomDatasetError",
    "read_dataset_file",
    "register_custom_datasets",
    "register_dataset_file",
    "register_zeroshot_from_detectron2",
    "register_zeroshot_sem_seg",
]


def register_zeroshot_sem_seg(
    name: str,
    image_root: str,
    label_root: str,
    classes: Sequence[str] | None = None,
    unseen: Sequence[str] = (),
    *,
    label_encoding=None,
    prompts=None,
    colors=None,
    image_ext: str | None = None,
    label_ext: str = ".png",
    check_labels: bool = True,
    panoptic_root: str | None = None,
    rules=None,
    cache_dir: str | None = None,
) -> None:
    """Register a zero-shot semantic segmentation dataset of images + label files.

    label_root: a folder of label PNGs, or a COCO-style JSON file (instances with polygons or
        RLE, COCO-Stuff stuff JSON, or panoptic JSON with its PNGs in `panoptic_root`, default:
        the JSON's path without .json); see coco_json.py and `rules`.
    classes: class names; index = class id after decoding (see `label_encoding`). With a JSON
        file: default the `categories` names sorted by id; a given list is matched by name.
    unseen: names from `classes` held out of training (zero-shot protocol); [] = open vocabulary.
    label_encoding: how the files store the ids (`LabelEncoding`, a dict of its fields, or a
        format name): e.g. {"offset": 1, "void": [0]} for 1-based ids with 0 = unlabelled,
        "palette" for palette PNGs, {"void": [65535]} for 16-bit ids, {"format": "color",
        "colors": [...]} for RGB colour labels. Default: ids 0..N-1, 255 = unlabelled.
    prompts: names given to CLIP (a mapping class -> prompt, or a list); "a|b" = synonyms.
    image_ext: extension of the images (default: any of .jpg .jpeg .png .bmp .tif .webp).
    check_labels: False skips decoding every image and label when the dataset is first loaded
        (sizes and files are still checked from the headers); for very large, already verified
        datasets.
    rules: JSON only: how instances become a semantic map (`coco_rasterise.RasterRules` or a
        dict of overlap / crowd / unannotated / unknown_categories).
    cache_dir: JSON only: where the rasterised maps are written (default
        `coco_sem_seg.default_cache_dir()`: $CLIPZSS_CACHE_DIR or ~/.cache/clipzss/sem_seg).
    """
    if str(label_root).lower().endswith(".json"):
        if label_encoding is not None or image_ext is not None or label_ext != ".png":
            raise CustomDatasetError(
                f"Dataset {name}: label_encoding, image_ext and label_ext are for label PNG "
                f"folders; a COCO JSON names its images and encodes its own labels."
            )
        source = CocoSource(str(label_root), image_root, panoptic_root)
        _register_coco(name, source, classes, unseen, prompts, colors, rules, cache_dir,
                       check_labels)  # fmt: skip
        return
    if panoptic_root is not None or rules is not None or cache_dir is not None:
        raise CustomDatasetError(
            f"Dataset {name}: panoptic_root, rules and cache_dir are for COCO JSON annotations; "
            f"{label_root} is a folder of label PNGs."
        )
    if classes is None:
        raise CustomDatasetError(
            f"Dataset {name}: give `classes` (index = class id) for a folder of label PNGs."
        )
    classes, unseen, prompt_names, colors = check_classes(name, classes, unseen, prompts, colors)
    try:
        encoding = LabelEncoding.create(len(classes), label_encoding)
    except LabelEncodingError as e:
        raise CustomDatasetError(f"Dataset {name}: {e}") from None
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    forget_checked(name)
    _signatures.pop(name, None)
    _pending.pop(name, None)
    unregister_label_encoding(name)
    register_label_encoding(label_root, encoding, name)
    args = (name, image_root, label_root, encoding, classes, image_ext, label_ext, check_labels)
    DatasetCatalog.register(name, lambda: load_checked_pairs(*args))
    _set_metadata(
        name, classes, prompt_names, unseen, colors, image_root,
        sem_seg_root=label_root, label_encoding=encoding.to_dict(),
    )  # fmt: skip


def _set_metadata(name, classes, prompt_names, unseen, colors, image_root, **source) -> None:
    """The metadata every own dataset carries (class list, split, evaluator), plus `source`:
    where its label maps come from (a PNG folder, or a COCO JSON with its rules and cache)."""
    MetadataCatalog.get(name).set(
        stuff_classes=classes,
        prompt_names=prompt_names,
        unseen_classes=unseen,
        stuff_colors=colors,
        ignore_label=ignore_value(len(classes)),
        evaluator_type=EVALUATOR_TYPE,
        image_root=image_root,
        benchmark="custom",
        **source,
    )


def register_zeroshot_from_detectron2(
    name: str,
    source: str,
    unseen: Sequence[str] = (),
    *,
    classes: Sequence[str] | None = None,
    prompts=None,
    colors=None,
    rules=None,
    cache_dir: str | None = None,
    check_images: bool = True,
) -> None:
    """Register `name`, a zero-shot semantic segmentation view of `source`, a dataset registered
    in detectron2's catalog as COCO instances (register_coco_instances) or panoptic
    (register_coco_panoptic, register_coco_panoptic_separated). Its files are read where they
    are (nothing is copied); the maps are rasterised into the cache as for a JSON file."""
    _register_coco(name, coco_sem_seg.source_from_detectron2(source), classes, unseen, prompts,
                   colors, rules, cache_dir, check_images)  # fmt: skip
    MetadataCatalog.get(name).set(detectron2_source=source)


_pending: dict[str, dict] = {}  # name -> the JSON read at registration, handed to the first load
_signatures: dict[str, tuple] = {}  # name -> its registration arguments and annotation file stat


def _signature(source, *args) -> tuple | None:
    try:
        st = os.stat(source.annotation_json)
    except OSError:
        return None
    return (source, st.st_size, st.st_mtime_ns, repr(args))


def _register_coco(name, source, classes, unseen, prompts, colors, rules, cache_dir, check):
    try:
        rules = RasterRules.create(rules)
    except CustomDatasetError as e:
        raise CustomDatasetError(f"Dataset {name}: {e}") from None
    cache_dir = os.path.expanduser(cache_dir) if cache_dir else coco_sem_seg.default_cache_dir()
    signature = _signature(source, classes, unseen, prompts, colors, rules, cache_dir, check)
    if (
        signature is not None
        and _signatures.get(name) == signature
        and name in DatasetCatalog.list()
        and checked_records(name) is not None
    ):  # the same registration again (train_net registers before and after launch): keep the
        return  # checked records rather than read and check a large JSON twice
    given = None if classes is None else list(classes)
    path = source.annotation_json
    data = None
    if given is None:  # the class list is the file's categories: read them now
        data = coco_json.read_annotation_json(path)
        plan = coco_json.plan_classes(path, coco_json.check_categories(path, data), None, rules)
        all_classes, file_prompts = plan.classes, plan.prompts
    else:
        if isinstance(given, str) or not given:
            raise CustomDatasetError(f"Dataset {name}: `classes` must be a non-empty list.")
        extra = [rules.unannotated] if rules.unannotated not in ("ignore", *given) else []
        all_classes, file_prompts = [str(c) for c in given] + extra, None
    if file_prompts is not None:  # the categories' names/synonyms, then the user's prompts
        if isinstance(prompts, dict):
            unknown = [k for k in prompts if k not in all_classes]
            if unknown:
                raise CustomDatasetError(
                    f"Dataset {name}: `prompts` names {unknown}, which are not in the class list."
                )
            prompts = {c: prompts.get(c, p) for c, p in zip(all_classes, file_prompts)}
        elif prompts is None:
            prompts = file_prompts
    all_classes, unseen, prompt_names, colors = check_classes(
        name, all_classes, unseen, prompts, colors
    )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    forget_checked(name)
    unregister_label_encoding(name)
    _pending.pop(name, None)
    _signatures.pop(name, None)
    if data is not None:
        _pending[name] = data

    def load():
        records = checked_records(name)
        if records is not None:
            return records
        records, folder, plan = coco_sem_seg.load_coco_sem_seg(
            name, source, (given,), rules, cache_dir, check, data=_pending.pop(name, None)
        )
        if plan.classes != all_classes:
            raise CustomDatasetError(
                f"Dataset {name}: the categories of {path} changed since it was registered; "
                f"register it again."
            )
        meta = MetadataCatalog.get(name)
        if meta.get("sem_seg_root") != folder:
            meta.sem_seg_root = folder
        if signature is not None:
            _signatures[name] = signature
        return keep_checked(name, records)

    DatasetCatalog.register(name, load)
    _set_metadata(
        name, all_classes, prompt_names, unseen, colors, source.image_root,
        annotation_json=path, panoptic_root=source.panoptic_root,
        raster_rules=rules.to_dict(), label_cache_dir=cache_dir,
    )  # fmt: skip


# ---- dataset files ---------------------------------------------------------------------------

MAX_FILE_BYTES = 1 << 20
FILE_KEYS = {"name", "root", "classes", "classes_file", "unseen", "prompts", "label_encoding",
             "image_ext", "label_ext", "check_labels", "splits", "rules", "cache_dir"}  # fmt: skip
# what a split may give: a PNG folder, a COCO-style JSON, or a dataset in detectron2's catalog
SPLIT_FORMS = (
    ({"images", "labels"}, set()),
    ({"images", "annotations"}, {"panoptic_root"}),
    ({"detectron2"}, set()),
)


def is_inline(path: str) -> bool:
    """A DATASETS.CUSTOM entry that is the dataset file's mapping itself, on one line."""
    return path.lstrip().startswith("{")


def describe(path: str) -> str:
    if is_inline(path):
        short = " ".join(path.split())
        return f"DATASETS.CUSTOM entry {short[:60]}{' ...' if len(short) > 60 else ''}"
    return f"Dataset file {path}"


def read_dataset_file(path: str) -> dict:
    """A dataset file's mapping; `path` may also be the mapping itself in YAML flow style, e.g.
    "{name: shop, unseen: [mug], splits: {train: {detectron2: shop_coco_train}}}"."""
    what = describe(path)
    if is_inline(path):
        text = path
    elif not os.path.isfile(path):
        raise CustomDatasetError(
            f"{what} does not exist (DATASETS.CUSTOM paths are relative to the current directory)."
        )
    if len(path) > MAX_FILE_BYTES or (
        not is_inline(path) and os.path.getsize(path) > MAX_FILE_BYTES
    ):
        raise CustomDatasetError(
            f"{what} is over {MAX_FILE_BYTES // 2**20} MB; a dataset file names "
            f"folders and classes (put long class lists in a classes_file)."
        )
    try:
        if not is_inline(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
        if path.endswith(".json"):
            spec = json.loads(text)
        else:
            import yaml

            # anchors and aliases let a few bytes stand for an exponentially large tree
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
                raise CustomDatasetError(f"{what} uses YAML aliases (*name); write the values out.")
            spec = yaml.safe_load(text)
    except CustomDatasetError:
        raise
    except Exception as e:
        raise CustomDatasetError(f"{what} cannot be parsed: {' '.join(str(e).split())}") from None
    if not isinstance(spec, dict):
        raise CustomDatasetError(f"{what} must hold a mapping (name, classes, splits).")
    unknown = sorted(set(spec) - FILE_KEYS)
    if unknown:
        raise CustomDatasetError(
            f"{what}: unknown key(s) {unknown}; allowed: {', '.join(sorted(FILE_KEYS))}."
        )
    for key in ("name", "splits"):
        if key not in spec:
            raise CustomDatasetError(f"{what} lacks `{key}`.")
    if "classes" in spec and "classes_file" in spec:
        raise CustomDatasetError(
            f"{what} needs exactly one of `classes` (a list) or `classes_file` "
            f"(a text file with one class per line)."
        )
    return spec


def _split_form(path: str, split, folders) -> str:
    if isinstance(folders, dict):
        for i, (required, optional) in enumerate(SPLIT_FORMS):
            if required <= set(folders) <= required | optional:
                return ("png", "json", "detectron2")[i]
    raise CustomDatasetError(
        f"{describe(path)}: split {split!r} must give `images` and `labels` (a folder of label "
        f"PNGs), `images` and `annotations` (a COCO JSON; panoptic: optional `panoptic_root`), or "
        f"`detectron2` (a dataset registered in detectron2's catalog)."
    )


def register_dataset_file(path: str) -> list[str]:
    """Register `<name>_<split>` for each split of a dataset file; returns the names."""
    spec = read_dataset_file(path)
    what = describe(path)
    base = os.getcwd() if is_inline(path) else os.path.dirname(os.path.abspath(path))
    root = os.path.join(base, os.path.expanduser(str(spec.get("root", "."))))

    def resolve(p: str) -> str:
        return os.path.normpath(os.path.join(root, os.path.expanduser(str(p))))

    if "classes_file" in spec:
        classes_path = resolve(spec["classes_file"])
        if not os.path.isfile(classes_path):
            raise CustomDatasetError(f"{what}: classes_file {classes_path} not found.")
        with open(classes_path, encoding="utf-8") as f:
            classes = [line.strip() for line in f if line.strip()]
    else:
        classes = spec.get("classes")
    splits = spec["splits"]
    if not isinstance(splits, dict) or not splits:
        raise CustomDatasetError(
            f"{what}: `splits` must map split names to {{images: ..., labels: ...}}."
        )
    forms = {split: _split_form(path, split, folders) for split, folders in splits.items()}
    if classes is None and "png" in forms.values():
        raise CustomDatasetError(
            f"{what} needs `classes` (a list) or `classes_file` (a text file with one "
            f"class per line); only COCO JSON splits take their classes from `categories`."
        )
    if "png" not in forms.values():
        for key in ("label_encoding", "image_ext", "label_ext"):
            if key in spec:
                raise CustomDatasetError(
                    f"{what}: `{key}` is for label PNG folders; COCO JSON splits "
                    f"encode their own labels."
                )
    elif "rules" in spec or "cache_dir" in spec:
        raise CustomDatasetError(
            f"{what}: `rules` and `cache_dir` are for COCO JSON splits; this file "
            f"has label PNG folders."
        )
    cache_dir = resolve(spec["cache_dir"]) if spec.get("cache_dir") else None
    names = []
    for split, folders in splits.items():
        name = f"{spec['name']}_{split}"
        if name in DatasetCatalog.list() and MetadataCatalog.get(name).get("benchmark") != "custom":
            raise CustomDatasetError(
                f"{what}: {name} is a dataset this project or detectron2 already "
                f"registers; choose another `name`."
            )
        unseen, check = spec.get("unseen") or [], bool(spec.get("check_labels", True))
        if forms[split] == "png":
            register_zeroshot_sem_seg(
                name,
                resolve(folders["images"]),
                resolve(folders["labels"]),
                classes,
                unseen,
                label_encoding=spec.get("label_encoding"),
                prompts=spec.get("prompts"),
                image_ext=spec.get("image_ext"),
                label_ext=spec.get("label_ext", ".png"),
                check_labels=check,
            )
        elif forms[split] == "json":
            panoptic = folders.get("panoptic_root")
            register_zeroshot_sem_seg(
                name,
                resolve(folders["images"]),
                resolve(folders["annotations"]),
                classes,
                unseen,
                prompts=spec.get("prompts"),
                check_labels=check,
                panoptic_root=resolve(panoptic) if panoptic else None,
                rules=spec.get("rules"),
                cache_dir=cache_dir,
            )
        else:
            register_zeroshot_from_detectron2(
                name,
                str(folders["detectron2"]),
                unseen,
                classes=classes,
                prompts=spec.get("prompts"),
                rules=spec.get("rules"),
                cache_dir=cache_dir,
                check_images=check,
            )
        MetadataCatalog.get(name).set(
            dataset_file=path if is_inline(path) else os.path.abspath(path)
        )
        names.append(name)
    lists = {n: MetadataCatalog.get(n).stuff_classes for n in names}
    if len({tuple(v) for v in lists.values()}) > 1:
        shown = "; ".join(f"{n}: {len(v)} classes" for n, v in lists.items())
        raise CustomDatasetError(
            f"{what}: the splits' `categories` give different class lists ({shown}), "
            f"so a class id would mean different things; give `classes` to fix one list."
        )
    return names


def register_custom_datasets(cfg) -> list[str]:
    """Register the dataset files of cfg.DATASETS.CUSTOM and check those the config uses.

    Call after the config is merged, before building the model (train_net's main does). The
    train and test sets among them are loaded (checked) here, so a bad file stops the run before
    training starts rather than at the first evaluation.
    """
    files = list(cfg.DATASETS.get("CUSTOM", []) or [])  # paths, or inline "{name: ...}" specs
    names = []
    for path in files:
        names += register_dataset_file(path)
    used = [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if n in names]
    for name in dict.fromkeys(used):
        DatasetCatalog.get(name)
    return names
