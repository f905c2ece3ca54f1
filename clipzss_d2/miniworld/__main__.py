"""`python -m clipzss_d2.miniworld {generate,train-teacher,probe-teacher} ...`.

A dispatcher rather than `-m clipzss_d2.miniworld.generate`: importing `clipzss_d2` already imports
those modules (dataset registration), and runpy warns when asked to re-run a loaded module.
"""

import sys

from ..entry import run_main
from .generate import main as generate_main
from .look_alikes import main as probe_teacher_main
from .train_teacher import main as train_teacher_main

COMMANDS = {
    "generate": generate_main,
    "train-teacher": train_teacher_main,
    "probe-teacher": probe_teacher_main,
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(
            f"usage: python -m clipzss_d2.miniworld {{{names}}} [options]  (--help after a command)",
            file=sys.stderr,
        )
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return run_main(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
