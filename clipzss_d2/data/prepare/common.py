"""Shared machinery of the dataset prepare scripts.

A conversion is a list of jobs (one output PNG each) and a per-job function that returns the label
map or raises `LabelRejected` with a reason (the per-file readers and checks that do so are in
labels.py). `run_jobs` skips outputs that already exist (writes are atomic, so an existing file is
a finished one), runs the rest in a process pool with a progress bar, and collects a summary.
Problems with the input *as a whole* (missing folders, lists, files) raise `PrepareError` before
any work starts; problems with one file reject that file and the run goes on, so one bad download
is reported together with all the others.
"""

import argparse
import collections
import contextlib
import functools
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ...errors import UserInputError
from ...utils.io import atomic_write_path
from ...utils.io import datasets_root as default_root
from ...utils.progress import progress

IGNORE = 255
# Exit statuses of the prepare CLIs.
EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT = 0, 1, 2


class PrepareError(UserInputError):
    """The input as a whole cannot be converted; the message says what is wrong and what to do."""


class LabelRejected(Exception):
    """One label file cannot be converted; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Job:
    key: str  # image id, used in messages
    dst: str  # output PNG
    src: str | None = None  # label source file
    image: str | None = None  # image whose size the label must match
    payload: Any = None  # source data passed in memory (e.g. decoded from a JSON)


@dataclass
class Summary:
    title: str
    out_dir: str
    written: int = 0
    skipped: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    stale: int = 0  # PNGs in out_dir that no job produces (left by a run with another list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def report(self, max_reasons: int = 20) -> str:
        lines = [
            f"{self.title}: {self.written} written, {self.skipped} skipped (already done), "
            f"{len(self.rejected)} rejected -> {self.out_dir}"
        ]
        for key, reason in sorted(self.rejected)[:max_reasons]:
            lines.append(f"  rejected {key}: {reason}")
        if len(self.rejected) > max_reasons:
            lines.append(f"  ... and {len(self.rejected) - max_reasons} more rejected files")
        if self.stale:
            lines.append(
                f"  note: {self.stale} other PNG(s) in {self.out_dir} are not in this run's list "
                f"(left by an earlier run with another list?); the dataset loader reads every PNG "
                f"there, so delete the folder and run again if they do not belong"
            )
        return "\n".join(lines)


# ---- input checks --------------------------------------------------------------------------


def require_dir(path: str, what: str, hint: str) -> str:
    if not os.path.isdir(path):
        raise PrepareError(f"{what} not found: {path}\n  {hint}")
    return path


def require_file(path: str, what: str, hint: str) -> str:
    if not os.path.isfile(path):
        raise PrepareError(f"{what} not found: {path}\n  {hint}")
    return path


def read_text_lines(path: str, what: str, hint: str = "") -> list[str]:
    """The lines of a text file the user gives (id lists, labels.txt); not UTF-8 text or not
    readable is a PrepareError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise PrepareError(
            f"{what} {path} is not UTF-8 text (byte {e.start}): is it the right file?"
            + (f"\n  {hint}" if hint else "")
        ) from None
    except OSError as e:
        raise PrepareError(f"{what} {path} cannot be read ({e.strerror}).") from None


def read_id_list(path: str, what: str, hint: str) -> list[str]:
    """Image ids of a split list: one per line; "/JPEGImages/x.jpg /Seg.../x.png" lines give x."""
    require_file(path, what, hint)
    ids = []
    for line in read_text_lines(path, what, hint):
        tokens = line.split()
        if tokens:
            ids.append(os.path.splitext(os.path.basename(tokens[0]))[0])
    if not ids:
        raise PrepareError(f"{what} is empty: {path}\n  {hint}")
    counts = collections.Counter(ids)
    if len(counts) != len(ids):
        dup = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise PrepareError(f"{what} lists some ids twice ({', '.join(dup)}): {path}\n  {hint}")
    return ids


def check_sources_exist(
    jobs: Sequence[Job], hint: str, origin: str = "listed for conversion"
) -> None:
    """Every job's source and image must exist before any work starts."""
    missing = []
    for job in jobs:
        for path in (job.src, job.image):
            if path is not None and not os.path.isfile(path):
                missing.append(path)
    if missing:
        shown = "\n    ".join(missing[:10])
        more = f"\n    ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise PrepareError(
            f"{len(missing)} input file(s) {origin} do not exist:\n    {shown}{more}\n  {hint}"
        )


# ---- writing and running -----------------------------------------------------------------------


def write_label_png(label: np.ndarray, dst: str) -> None:
    """Single-channel 8-bit (16-bit for uint16 ids) PNG, written under a temporary name and
    renamed when complete."""
    assert label.dtype in (np.uint8, np.uint16) and label.ndim == 2
    with atomic_write_path(dst) as tmp:
        Image.fromarray(label).save(tmp, format="PNG")


def _run_one(job: Job, convert: Callable[[Job], np.ndarray]) -> tuple[str, str, str]:
    try:
        label = convert(job)
    except LabelRejected as e:
        return "rejected", job.key, e.reason
    write_label_png(label, job.dst)
    return "written", job.key, ""


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def run_jobs(
    jobs: Iterable[Job],
    convert: Callable[[Job], np.ndarray],
    *,
    title: str,
    out_dir: str,
    workers: int = 1,
    overwrite: bool = False,
) -> Summary:
    """Convert every job whose output is missing (all of them with `overwrite`).

    `convert` must be a module-level function (it is sent to worker processes).
    """
    summary = Summary(title=title, out_dir=out_dir)
    jobs = list(jobs)
    todo = []
    if os.path.isdir(out_dir):
        expected = {os.path.basename(job.dst) for job in jobs}
        summary.stale = sum(
            1
            for f in os.listdir(out_dir)
            if f.endswith(".png") and not f.startswith(".") and f not in expected
        )
    for job in jobs:
        if not overwrite and os.path.isfile(job.dst):
            summary.skipped += 1
        else:
            todo.append(job)
    os.makedirs(out_dir, exist_ok=True)
    _remove_own_temp_files(out_dir, {os.path.basename(job.dst) for job in jobs})
    run = functools.partial(_run_one, convert=convert)
    with progress_bar(len(todo), title) as bar:
        if workers > 1 and len(todo) > 1:
            chunk = max(1, min(32, len(todo) // (workers * 8)))
            # spawn: forking after tqdm's monitor thread and cv2's pool have started can hang
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(todo))) as pool:
                results = pool.imap_unordered(run, todo, chunksize=chunk)
                _collect(results, summary, bar)
        else:
            _collect(map(run, todo), summary, bar)
    return summary


# atomic_write_path (utils/io.py) writes `name` as ".tmp-<name>-<random><ext>", then renames it
_ATOMIC_TEMP = re.compile(r"\.tmp-(?P<target>.+)-[a-z0-9_]+(?P<ext>\.[^.]+)")


def _remove_own_temp_files(out_dir: str, outputs: set[str]) -> None:
    """Delete the temporary files that a killed run (SIGKILL, power loss) left while writing one
    of `outputs`; an interrupted or failed write removes its own. Any other entry, whatever its
    name (a user's ".tmp-notes" or ".tmp-dir/"), is left alone."""
    for name in os.listdir(out_dir):
        m = _ATOMIC_TEMP.fullmatch(name)
        path = os.path.join(out_dir, name)
        if m and m["target"] in outputs and m["target"].endswith(m["ext"]) and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def run_splits(
    splits: dict[str, tuple[list[Job], str, str]],
    convert: Callable[[Job], np.ndarray],
    *,
    name: str,
    title: str,
    workers: int = 1,
    overwrite: bool = False,
    log=print,
) -> list[Summary]:
    """`run_jobs` for each split of {split: (jobs, output folder, description)}, in order, after
    logging "<name> <description>"; the summary of a split is titled "<title> <split>"."""
    summaries = []
    for split, (jobs, out_dir, desc) in splits.items():
        log(f"{name} {desc}")
        summaries.append(
            run_jobs(
                jobs,
                convert,
                title=f"{title} {split}",
                out_dir=out_dir,
                workers=workers,
                overwrite=overwrite,
            )
        )
    return summaries


def progress_bar(total: int, desc: str, stream=None):
    """tqdm on a terminal; periodic plain lines when stderr is a file or a CI log."""
    return progress(total=total, desc=desc, unit="img", stream=stream)


def png_label_jobs(src_dir: str, images: str, out_dir: str, hint: str, what: str):
    """One Job per PNG label file in `src_dir` (image: same stem + .jpg in `images`, output:
    same name in `out_dir`), after checking that the sources exist."""
    names = sorted(f for f in os.listdir(src_dir) if f.endswith(".png") and not f.startswith("."))
    if not names:
        raise PrepareError(f"No PNG {what} in {src_dir}.\n  {hint}")
    jobs = [
        Job(
            key=os.path.splitext(f)[0],
            src=os.path.join(src_dir, f),
            image=os.path.join(images, os.path.splitext(f)[0] + ".jpg"),
            dst=os.path.join(out_dir, f),
        )
        for f in names
    ]
    check_sources_exist(jobs, hint)
    return jobs


def _collect(results, summary: Summary, bar) -> None:
    for status, key, reason in results:
        if status == "written":
            summary.written += 1
        else:
            summary.rejected.append((key, reason))
        bar.update(1)


# ---- CLI helpers -----------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default=default_root(),
        help="dataset root (default: $DETECTRON2_DATASETS or ./datasets; now %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="worker processes (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="convert again even where the output file exists (default: skip finished files)",
    )


def run_cli(prepare: Callable[[], list[Summary]], root: str) -> int:
    """Run a prepare function: print its summaries; bad input -> message and exit status 2."""
    try:
        summaries = prepare()
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished files are kept and no partial file is left; run the same "
            "command again to continue.",
            file=sys.stderr,
        )
        return 130
    except PrepareError as e:
        print(
            f"error: {e}\n  (dataset root: {os.path.abspath(root)}; set it with --root or "
            f"$DETECTRON2_DATASETS)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    print("\nSummary", flush=True)
    for s in summaries:
        print(s.report(), flush=True)
    if all(s.ok for s in summaries):
        return EXIT_OK
    print(
        "\nSome files were rejected (reasons above). Their outputs were not written; fix or "
        "re-download those files and run the same command again (finished files are skipped).",
        file=sys.stderr,
    )
    return EXIT_REJECTED
