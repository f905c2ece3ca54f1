"""Progress that stays readable wherever it goes: tqdm on a terminal; in a file or a CI log, a
plain line at most every ``interval`` seconds and one at the end, instead of a bar redrawn with
carriage returns thousands of times."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LogProgress:
    """The subset of tqdm's interface this project uses (update, set_postfix, iteration, with)."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it",
                 interval: float = 30.0, stream=None):  # fmt: skip
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream or sys.stderr
        self.n, self.start = 0, time.monotonic()
        self.last = self.start
        self.postfix = ""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and (self.total is None or self.n < self.total):
            self.last = now
            self._line(now)

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def _line(self, now: float) -> None:
        done = (
            f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
            if self.total
            else (f"{self.n} {self.unit}")
        )
        extra = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc}: {done} in {now - self.start:.0f}s{extra}", file=self.stream,
              flush=True)  # fmt: skip

    def close(self) -> None:
        if self.n or self.total:
            self._line(time.monotonic())
            self.total = self.n = 0  # print the closing line once

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", stream=None):
    """tqdm on a terminal; LogProgress when the stream is a file or a pipe."""
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                    mininterval=0.5, file=stream)  # fmt: skip
    return LogProgress(iterable, total=total, desc=desc, unit=unit, stream=stream)
