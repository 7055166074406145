"""Progress that suits where it goes: a live tqdm bar on a terminal, a few plain lines in a log.

A log (CI, a file, grand-challenge's job log) has no carriage returns to redraw a bar with: tqdm
there writes hundreds of partial lines. ``progress`` gives tqdm when stderr is a terminal, and
otherwise a ``LogProgress`` with the same small interface (iterate, ``update``, ``set_postfix``,
``close``, ``with``) that prints one line every ``LOG_EVERY_PCT`` percent and one at the end; an
inner bar (``nested=True``, say the tiles of one slide under a bar over slides) prints nothing in a
log, since the outer bar's line per item says it all.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LOG_EVERY_PCT = 10  # a log line per this many percent of the total (and one at the end)


def on_terminal() -> bool:
    return sys.stderr.isatty()


class LogProgress:
    """tqdm's interface, as used here, printing a plain line every LOG_EVERY_PCT percent."""

    def __init__(
        self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        disable: bool = False,
    ) -> None:  # fmt: skip
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n, self.postfix, self._said = 0, "", -1
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator:
        assert self.iterable is not None, "LogProgress: nothing to iterate"
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            step = int(100 * self.n / self.total) // LOG_EVERY_PCT
            if step > self._said and self.n < self.total:
                self._said = step
                self._line()

    def close(self) -> None:
        if self._said != 100:
            self._said = 100
            self._line()

    def _line(self) -> None:
        if self.disable:
            return
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f"; {self.postfix}" if self.postfix else ""
        elapsed = time.perf_counter() - self._t0
        print(
            f"{self.desc}: {self.n}{of} {self.unit}{pct} in {elapsed:.0f} s{extra}",
            file=sys.stderr,
            flush=True,
        )


def progress(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
    disable: bool = False, nested: bool = False,
):  # fmt: skip
    """A tqdm bar on a terminal; a ``LogProgress`` otherwise (silent when ``nested``)."""
    if on_terminal():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=not nested)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, disable=disable or nested)


def write(message: str) -> None:
    """A line on stderr that does not break a live bar."""
    if on_terminal():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
