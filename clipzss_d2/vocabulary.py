"""Class vocabularies: parsing what users type (a string, a file, a registered dataset's classes),
the seen/unseen partition in dataset metadata,
and the training vocabulary that the mapper and the model agree on (no dataset registration
here, so the model can use it without importing the data package).

Metadata convention of every dataset registered by this project (see clipzss_d2/data):
  stuff_classes   plain class names, index = contiguous label id
  prompt_names    optional, names fed to CLIP (may differ from stuff_classes, "a|b" = synonyms)
  unseen_classes  names (from stuff_classes) that are unseen in the zero-shot protocol
                  ([] for open-vocabulary evaluation sets)
"""

from collections.abc import Sequence
from dataclasses import dataclass

from detectron2.data import MetadataCatalog

from .errors import UserInputError

SYNONYM_SEPARATOR = "|"


class VocabularyError(UserInputError, ValueError):
    """A vocabulary that cannot be used as given."""


def split_synonyms(entry: str) -> list[str]:
    """'sofa|couch' -> ['sofa', 'couch']; the first name is the display name."""
    names = [n.strip() for n in entry.split(SYNONYM_SEPARATOR)]
    names = [n for n in names if n]
    if not names:
        raise VocabularyError(f"Class entry {entry!r} holds no name.")
    return names


def display_name(entry: str) -> str:
    return split_synonyms(entry)[0]


def parse_vocabulary(spec: str | Sequence[str]) -> list[str]:
    """Normalise a user vocabulary: "cat, sofa|couch" or a list; rejects blanks and duplicates."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise VocabularyError(
                f"Vocabulary item {i + 1} is {type(item).__name__}, expected a name."
            )
        names = [n.strip() for n in item.split(SYNONYM_SEPARATOR) if n.strip()]
        if not names:
            raise VocabularyError(
                f"Vocabulary item {i + 1} is blank. Give class names separated by commas, "
                f'e.g. "cat,sofa|couch,tv".'
            )
        entries.append(SYNONYM_SEPARATOR.join(names))
    if not entries:
        raise VocabularyError('The vocabulary is empty. Give at least one class name, e.g. "cat".')
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        key = display_name(entry).lower()
        if key in seen:
            raise VocabularyError(
                f"Class {display_name(entry)!r} appears twice (items {seen[key] + 1} and {i + 1}). "
                f"Each class must be named once; join synonyms with '|' (e.g. 'sofa|couch')."
            )
        seen[key] = i
    return entries


def prompt_names(metadata) -> list[str]:
    """Names given to CLIP for each contiguous id of a dataset."""
    names = getattr(metadata, "prompt_names", None) or metadata.stuff_classes
    if len(names) != len(metadata.stuff_classes):
        raise VocabularyError(
            f"Dataset {metadata.name}: {len(names)} prompt_names for "
            f"{len(metadata.stuff_classes)} stuff_classes."
        )
    return list(names)


@dataclass
class Vocabulary:
    """A vocabulary as the commands use it: entries for CLIP, names and colours for display."""

    entries: list[str]  # names given to CLIP ("a|b" synonyms)
    class_names: list[str]  # for display
    colors: list | None = None  # a dataset's stuff_colors, when it defines them

    @classmethod
    def of(cls, entries: Sequence[str]) -> "Vocabulary":
        return cls(list(entries), [display_name(e) for e in entries])


def read_vocabulary_file(path: str) -> list[str]:
    """Classes from a text file, one per line ("a|b" synonyms); blank and "#" lines skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        raise UserInputError(f"Vocabulary file {path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(
            f"Vocabulary file {path} cannot be read as UTF-8 text ({e})."
        ) from None
    names = [line for line in lines if line and not line.startswith("#")]
    if not names:
        raise UserInputError(f"Vocabulary file {path} holds no class names.")
    try:
        return parse_vocabulary(names)
    except UserInputError as e:
        raise UserInputError(f"Vocabulary file {path}: {e}") from None


def dataset_vocabulary(name: str) -> Vocabulary:
    """The classes of a registered dataset, read from its metadata (no files on disk needed)."""
    known = sorted(n for n in MetadataCatalog.list() if MetadataCatalog.get(n).get("stuff_classes"))
    if name not in known:
        raise UserInputError(
            f"{name!r} is not a registered dataset with class names. Registered: "
            f"{', '.join(known) if known else 'none'}."
        )
    meta = MetadataCatalog.get(name)
    return Vocabulary(
        entries=parse_vocabulary(prompt_names(meta)),
        class_names=list(meta.stuff_classes),
        colors=meta.get("stuff_colors", None),
    )


def unseen_class_ids(metadata) -> list[int]:
    unseen = list(getattr(metadata, "unseen_classes", []) or [])
    index = {c: i for i, c in enumerate(metadata.stuff_classes)}
    missing = [c for c in unseen if c not in index]
    if missing:
        raise VocabularyError(
            f"Dataset {metadata.name}: unseen classes {missing} not in stuff_classes."
        )
    return sorted(index[c] for c in unseen)


def seen_class_ids(metadata) -> list[int]:
    unseen = set(unseen_class_ids(metadata))
    return [i for i in range(len(metadata.stuff_classes)) if i not in unseen]


class DatasetConfigError(UserInputError, ValueError):
    """The configured datasets cannot be used together (or are not registered)."""


def shared_metadata(dataset_names: Sequence[str]):
    """Metadata of the first dataset, after checking all of them share one labelling."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if not names:
        raise DatasetConfigError("No dataset given: set DATASETS.TRAIN to a registered dataset.")
    metas = []
    for name in names:
        meta = MetadataCatalog.get(name)
        if not meta.get("stuff_classes"):
            raise DatasetConfigError(
                f"Dataset {name!r} has no stuff_classes: is it registered (import clipzss_d2; "
                f"names are listed in datasets/README.md)?"
            )
        metas.append(meta)

    def signature(m):
        return (
            list(m.stuff_classes),
            prompt_names(m),
            sorted(m.get("unseen_classes", []) or []),
            m.get("ignore_label", 255),
        )

    first = signature(metas[0])
    for name, meta in zip(names[1:], metas[1:]):
        if signature(meta) != first:
            raise DatasetConfigError(
                f"Datasets {names[0]!r} and {name!r} differ in classes, prompt names, unseen "
                f"classes or ignore label; datasets trained together must share one class list "
                f"and one seen/unseen split."
            )
    return metas[0]


def get_training_vocabulary(dataset_names: Sequence[str]) -> list[str]:
    """Prompt names of the seen classes, in the order of the training mapper's label ids."""
    meta = shared_metadata(dataset_names)
    names = prompt_names(meta)
    return [names[i] for i in seen_class_ids(meta)]
