"""A trained model as one folder you can hand to someone: config, student weights, text cache, card.

    model/
      config.yaml        the training config, made deployable (below)
      model.pth          {"model": student state_dict}: backbone, embedding head, logit scale
      text_cache/        CLIP text embeddings of its vocabularies (TextClassifier's own files)
      MODEL_CARD.md      what it was trained on, its seen/unseen split, CLIP, results, how to load

config.yaml is the full merged config with: MODEL.WEIGHTS and MODEL.CLIPZSS.TEXT.CACHE_DIR
relative to the folder (resolved by `load_folder_config`, so the folder can be moved),
MODEL.CLIPZSS.STUDENT_ONLY True, MODEL.CLIPZSS.TEST_VOCABULARY set to the default vocabulary
(the first test set's classes) and DATASETS.TRAIN / TEST / CUSTOM emptied: a deployed model must
not need dataset registration (a custom dataset file would not travel with it); the datasets
are recorded in the model card. Weights and config are read with the project's safe loaders,
the cache is safetensors: loading the folder runs no code from it. The folder is written beside
its destination and renamed into place, so a killed run leaves the previous folder or none.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from detectron2.data import MetadataCatalog

from .checkpoint import STUDENT_PREFIXES
from .config import get_clipzss_cfg
from .errors import UserInputError
from .modeling.clip_alone import refuse_clip_alone
from .modeling.text_classifier import TextClassifier
from .utils.config_loading import merge_config, merge_overrides, use_cpu_without_gpu
from .utils.io import atomic_write_text
from .vocabulary import display_name, parse_vocabulary, prompt_names, unseen_class_ids

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.pth"
TEXT_CACHE_DIR = "text_cache"
CARD_FILE = "MODEL_CARD.md"
HEADLINE_METRICS = ("mIoU(seen)", "mIoU(unseen)", "hIoU", "mIoU", "pAcc")
FOLDER_ENTRIES = frozenset({CONFIG_FILE, WEIGHTS_FILE, TEXT_CACHE_DIR, CARD_FILE})


def check_replaceable(
    folder: str,
    *,
    overwrite: bool = False,
    what: str = "--output",
    remedy: str = "name a new folder, or pass --overwrite to replace it",
) -> None:
    """Writing a model folder replaces `folder`: allowed when it does not exist, is empty, or is
    recognisably a model folder this project wrote (its config and card, nothing but its own
    entries); anything else only with `overwrite`. Never the working folder, one of its
    ancestors, the home folder or the file-system root, whatever `overwrite` says."""
    path = os.path.realpath(folder)
    cwd = os.path.realpath(os.getcwd())
    home = os.path.realpath(os.path.expanduser("~"))
    if path in (cwd, home, os.path.dirname(path)) or cwd.startswith(path.rstrip(os.sep) + os.sep):
        raise UserInputError(
            f"{what} {folder} is the working folder, one of its ancestors, the home folder or "
            f"the root: a model folder replaces its destination, so it is never written there; "
            f"name a new folder."
        )
    if overwrite or not os.path.lexists(folder):
        return
    if os.path.islink(folder) or not os.path.isdir(folder):
        raise UserInputError(f"{what} {folder} exists and is not a folder; {remedy}.")
    entries = set(os.listdir(folder))
    ours = {CONFIG_FILE, CARD_FILE} <= entries <= FOLDER_ENTRIES
    if entries and not ours:
        foreign = sorted(entries - FOLDER_ENTRIES) or sorted(entries)
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserInputError(
            f"{what} {folder} holds files that are not a model folder this project wrote "
            f"({shown}); {remedy}."
        )


class _CacheWriter(TextClassifier):
    """A TextClassifier whose "encoder" is another classifier: asking it for a vocabulary
    writes the source's embeddings (its memory, its disk cache or CLIP, in that order) into
    this classifier's cache directory under exactly the file name and key it reads back."""

    def __init__(self, source: TextClassifier, cache_dir: str):
        super().__init__(
            source.model_name,
            source.pretrained,
            templates=source.template_set,
            cache_dir=cache_dir,
            activation=source.activation,
        )
        self._source = source

    def _encode(self, entries):
        return self._source(entries)


def student_state_dict(model: torch.nn.Module) -> OrderedDict:
    """The student's tensors only: no GLM, PLM synthesizer, teacher, optimizer or scheduler."""
    return OrderedDict(
        (k, v.detach().cpu().clone())
        for k, v in model.state_dict().items()
        if k.startswith(STUDENT_PREFIXES)
    )


def folder_vocabularies(cfg, model) -> OrderedDict:
    """Vocabularies whose text embeddings the folder carries, by what they are."""
    vocabularies = OrderedDict()
    if cfg.MODEL.CLIPZSS.TEST_VOCABULARY:
        vocabularies["MODEL.CLIPZSS.TEST_VOCABULARY"] = parse_vocabulary(
            list(cfg.MODEL.CLIPZSS.TEST_VOCABULARY)
        )
    for name in cfg.DATASETS.TEST:
        vocabularies[name] = parse_vocabulary(prompt_names(MetadataCatalog.get(name)))
    if getattr(model, "train_vocabulary", None):
        vocabularies["training (seen classes)"] = list(model.train_vocabulary)
    return vocabularies


def deployable_config(cfg, default_vocabulary: Sequence[str] | None):
    out = cfg.clone()
    out.defrost()
    out.MODEL.WEIGHTS = WEIGHTS_FILE
    out.MODEL.CLIPZSS.STUDENT_ONLY = True
    out.MODEL.CLIPZSS.TEXT.CACHE_DIR = TEXT_CACHE_DIR
    out.MODEL.CLIPZSS.TEST_VOCABULARY = list(default_vocabulary or [])
    out.DATASETS.TRAIN = ()
    out.DATASETS.TEST = ()
    out.DATASETS.CUSTOM = []
    return out


def write_model_folder(
    cfg,
    model,
    folder: str,
    *,
    iteration: int | None = None,
    eval_results: Mapping | None = None,
    source: str = "",
    overwrite: bool = False,
) -> str:
    """Write `folder` from the training config and trained model, replacing an older model
    folder (anything else only with `overwrite`: ``check_replaceable``). CLIP alone is refused:
    a model folder is what the predictor loads as a trained student."""
    refuse_clip_alone(cfg, "a model folder packages a trained student only.")
    check_replaceable(folder, overwrite=overwrite)
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    vocabularies = folder_vocabularies(cfg, model)
    test_vocabularies = [v for k, v in vocabularies.items() if not k.startswith("training")]
    default = test_vocabularies[0] if test_vocabularies else None
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(folder) + "-", dir=parent)
    try:
        atomic_write_text(os.path.join(tmp, CONFIG_FILE), deployable_config(cfg, default).dump())
        weights = os.path.join(tmp, WEIGHTS_FILE)
        with open(weights, "wb") as f:
            torch.save({"model": student_state_dict(model)}, f)
            f.flush()
            os.fsync(f.fileno())
        for entries in vocabularies.values():
            # one writer per vocabulary: a vocabulary already in a writer's memory (the seen
            # classes after the test set's) would be answered from there, not written
            writer = _CacheWriter(model.text_classifier, os.path.join(tmp, TEXT_CACHE_DIR))
            writer(entries)
            if not os.path.isfile(writer.cache_path(entries)):
                raise OSError(f"could not write the text-embedding cache in {tmp}")
        card = model_card(cfg, vocabularies, iteration, eval_results, source)
        atomic_write_text(os.path.join(tmp, CARD_FILE), card)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Wrote the model folder %s", folder)
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_folder(tmp: str, folder: str) -> None:
    """Rename `tmp` onto `folder`; an existing folder is moved aside first, removed after."""
    old = None
    if os.path.lexists(folder):
        old = tempfile.mkdtemp(
            prefix=".old-" + os.path.basename(folder) + "-", dir=os.path.dirname(folder)
        )
        os.replace(folder, old)  # onto the empty folder just made: a name nobody else takes
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_self_contained(config_file: str) -> None:
    """A folder's config.yaml names no other config: `_BASE_` would be read from elsewhere (a
    URL is fetched)."""
    import yaml

    try:
        with open(config_file, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # merge_config reports what is wrong with the file in one line
    if isinstance(raw, dict) and raw.get("_BASE_"):
        raise UserInputError(
            f"{config_file} names _BASE_ {raw['_BASE_']!r}: a model folder's config is "
            f"self-contained and may not read another config; remove the _BASE_ line."
        )


def load_folder_config(folder: str, opts: Sequence[str] = (), opts_name: str = "--opts"):
    """The folder's config with its relative paths made absolute, then `opts` merged."""
    config_file = os.path.join(folder, CONFIG_FILE)
    if not os.path.isdir(folder):
        raise UserInputError(f"--model-folder {folder}: no such folder.")
    if not os.path.isfile(config_file):
        raise UserInputError(
            f"--model-folder {folder} holds no {CONFIG_FILE}: it is not a model folder "
            f"(train_net.py writes one as OUTPUT_DIR/model; tools/make_model_folder.py makes one "
            f"from a checkpoint)."
        )
    _check_self_contained(config_file)
    cfg = merge_config(get_clipzss_cfg(), config_file)
    root = os.path.abspath(folder)
    for node, key, name in (
        (cfg.MODEL, "WEIGHTS", "MODEL.WEIGHTS"),
        (cfg.MODEL.CLIPZSS.TEXT, "CACHE_DIR", "MODEL.CLIPZSS.TEXT.CACHE_DIR"),
    ):
        value = node[key]
        if not value:
            continue
        inside = os.path.realpath(os.path.join(root, value))
        if (
            "://" in value
            or os.path.isabs(os.path.expanduser(value))
            or not (
                inside == os.path.realpath(root)
                or inside.startswith(os.path.realpath(root) + os.sep)
            )
        ):
            raise UserInputError(
                f"{config_file}: {name} is {value!r}, outside the folder; a model folder is "
                f"self-contained (its paths are relative to it): fix the file, or give the path "
                f"with {opts_name} {name} ..."
            )
        node[key] = os.path.join(root, value)
    # after the folder's paths: relative paths in overrides are the user's, as usual
    merge_overrides(cfg, opts, opts_name)
    use_cpu_without_gpu(cfg)
    return cfg


# -- model card -----------------------------------------------------------------------------------
def _dataset_lines(name: str) -> list[str]:
    meta = MetadataCatalog.get(name)
    classes = list(meta.get("stuff_classes", []) or [])
    if not classes:
        return [f"- `{name}`"]
    unseen = {classes[i] for i in unseen_class_ids(meta)}
    seen = [c for c in classes if c not in unseen]
    lines = [f"- `{name}`: {len(classes)} classes, {len(seen)} seen, {len(unseen)} unseen"]
    if unseen:
        lines.append(f"  - seen: {', '.join(seen)}")
        lines.append(f"  - unseen: {', '.join(c for c in classes if c in unseen)}")
    else:
        lines.append(f"  - classes: {', '.join(classes)}")
    return lines


def per_dataset_results(cfg, eval_results: Mapping | None) -> OrderedDict:
    """{dataset: {metric: value}} from what Trainer.test returns (one dataset: not nested)."""
    out = OrderedDict()
    if not eval_results:
        return out
    if "sem_seg" in eval_results and len(cfg.DATASETS.TEST) == 1:
        eval_results = {cfg.DATASETS.TEST[0]: eval_results}
    for name, res in eval_results.items():
        if isinstance(res, Mapping) and isinstance(res.get("sem_seg"), Mapping):
            out[name] = dict(res["sem_seg"])
    return out


def _fmt(value) -> str:
    value = float(value)
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def model_card(cfg, vocabularies, iteration, eval_results, source: str = "") -> str:
    z = cfg.MODEL.CLIPZSS
    lines = ["# CLIP-ZSS model", ""]
    if source:
        lines += [f"Made from `{source}` on {datetime.date.today().isoformat()}.", ""]
    lines += ["## Training", ""]
    lines += ["Trained on:"] + sum((_dataset_lines(n) for n in cfg.DATASETS.TRAIN), [])
    lines += [""]
    its = "unknown" if iteration is None else str(iteration)
    lines += [
        f"- iterations: {its} (SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}, batch "
        f"{cfg.SOLVER.IMS_PER_BATCH}, base LR {cfg.SOLVER.BASE_LR})",
        f"- student: {cfg.MODEL.BACKBONE.NAME} + {z.HEAD_NAME}, embedding dim {z.EMBED_DIM}",
        f"- CLIP: model `{z.CLIP.MODEL_NAME}`, weights `{z.CLIP.PRETRAINED}`, activation "
        f"`{z.CLIP.ACTIVATION}`, prompt templates `{z.TEXT.TEMPLATES}`",
        f"- GLM: {'on' if z.GLM.ENABLED else 'off'}; PLM pseudo labels: "
        f"{'on' if z.PLM.PSEUDO_LABELS else 'off'}, synthesizer: "
        f"{'on' if z.PLM.SYNTHESIZER else 'off'}",
        "",
        "## Evaluation",
        "",
    ]
    results = per_dataset_results(cfg, eval_results)
    if results:
        lines += ["Evaluated on:"] + sum((_dataset_lines(n) for n in results), []) + [""]
        keys = [k for k in HEADLINE_METRICS if any(k in r for r in results.values())]
        lines += ["| dataset | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, res in results.items():
            cells = [_fmt(res[k]) if k in res else "" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "(%, mean over the classes present in the ground truth)", ""]
    else:
        lines += [
            "No evaluation results recorded with this folder (evaluate with "
            "`train_net.py --eval-only`).",
            "",
        ]
    lines += ["## Vocabularies with cached text embeddings", ""]
    lines += [
        "These run with no CLIP weights; any other vocabulary needs the CLIP weights above.",
        "",
    ]
    for what, entries in vocabularies.items():
        names = [display_name(e) for e in entries]
        lines.append(f"- {what} ({len(entries)}): {', '.join(names)}")
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from clipzss_d2.predictor import OpenVocabularyPredictor",
        'predictor = OpenVocabularyPredictor.from_folder("path/to/this/folder")',
        'result = predictor(bgr_image)  # or predictor(bgr_image, vocabulary="cat,sofa|couch")',
        "```",
        "",
        "```",
        "python demo/demo.py --model-folder path/to/this/folder --input photo.jpg --output out/",
        "python tools/export_model.py --model-folder path/to/this/folder --vocab cat,dog "
        "--output exported/",
        "```",
        "",
    ]
    return "\n".join(lines)
