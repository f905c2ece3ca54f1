"""Every file a demo.py run will write, checked before the model is loaded or anything is
written: no output may replace an input (image, video, --config-file, --vocab-file), and no two
outputs may be the same file. Paths are compared resolved (os.path.realpath, so symlinked folders
count) and, for files that exist, by identity (os.path.samefile: hard links, case-insensitive
file systems). Existing files that are not inputs (earlier results) are replaced, atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clipzss_d2.errors import UserInputError

KIND_NAMES = {"overlay": "overlay", "label_map": "label map", "json": "JSON", "video": "video"}


@dataclass(frozen=True)
class Planned:
    owner: str  # the input, as the user named it
    kind: str  # "overlay", "label map", "JSON", "video"
    path: str  # where it will be written


def image_outputs(inputs: list[str], paths: dict[str, dict[str, str]], save_label_map: bool):
    """The files process_images will write, in the order it writes them. Inputs that are not
    files (missing, folders) write nothing: they are reported as unreadable."""
    kinds = ("overlay", "label_map", "json") if save_label_map else ("overlay", "json")
    return [
        Planned(path, KIND_NAMES[kind], paths[path][kind])
        for path in inputs
        if os.path.isfile(path)
        for kind in kinds
    ]


def check_outputs(
    output: str,
    planned: list[Planned],
    inputs: list[str],
    *,
    single_file: bool,
    other_inputs: tuple[tuple[str, str | None], ...] = (),
) -> None:
    """UserInputError (one line) if an output would replace an input or another output.

    output: the --output argument, for the messages; single_file: it names the file itself (one
    input) rather than a folder; other_inputs: (flag, path) of the other files the run reads."""
    choose = "choose another output " + ("file name" if single_file else "folder")
    sources = [(f"the input {p}", p) for p in inputs if os.path.isfile(p)]
    sources += [(f"the {flag} {p}", p) for flag, p in other_inputs if p and os.path.isfile(p)]
    source_keys = [(name, p, _keys(p)) for name, p in sources]
    if not single_file and os.path.exists(output) and not os.path.isdir(output):
        raise UserInputError(f"--output {output} is an existing file, not a folder; {choose}")
    seen: dict = {}
    for item in planned:
        if os.path.isdir(item.path):
            raise UserInputError(
                f"--output {output}: {item.owner}'s {item.kind} would be {item.path}, which is a "
                f"folder; {choose}"
            )
        keys = _keys(item.path)
        for name, source, source_key in source_keys:
            if keys & source_key:
                whose = "" if item.owner == source else f" with {item.owner}'s {item.kind}"
                raise UserInputError(f"--output {output} would overwrite {name}{whose}; {choose}")
        for key in keys:
            if key in seen:
                first = seen[key]
                where = item.path if item.path == first.path else f"{item.path} (= {first.path})"
                raise UserInputError(
                    f"outputs collide: {item.owner}'s {item.kind} and {first.owner}'s "
                    f"{first.kind} are both {where}; rename one input"
                )
        for key in keys:
            seen[key] = item


def _keys(path: str) -> set:
    """What identifies the file `path` names: its resolved path, and its inode if it exists."""
    keys: set = {("path", os.path.realpath(path))}
    try:
        st = os.stat(path)
    except OSError:
        return keys
    keys.add(("inode", st.st_dev, st.st_ino))
    return keys
