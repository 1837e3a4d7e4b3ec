"""The progress line `upload` and `sync` show on a terminal: done/total, rate, time left, and what
the pass waits on, drawn by tqdm.

Log lines and the line must not share a row: while it is shown, the handler that writes to the
terminal is swapped for one that goes through `tqdm.write`, which clears the line, writes the log
line whole and draws the line again below it. A log file, JSON logs or a stderr that is not a
terminal (a pipe, a service's journal) get no progress output at all.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

from tqdm import tqdm


def wanted(log_format: str) -> bool:
    """A person watches stderr, and it does not carry JSON a program reads."""
    return sys.stderr.isatty() and log_format != "json"


class Progress:
    """One tqdm line; `show` may be called from several threads."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def show(self, done: int, total: int, why: str = "") -> None:
        """`done` of `total`, and in a few words why the pass is not finished (empty: working)."""
        self.bar.total = max(total, done)
        self.bar.set_postfix_str(why, refresh=False)
        self.bar.update(done - self.bar.n)  # redraws at most every 0.1 s


class _ThroughTqdm(logging.Handler):
    """Writes each record with `tqdm.write`, so a shown bar is cleared first and drawn again after."""

    def __init__(self, replaced: logging.Handler) -> None:
        super().__init__()
        self.setFormatter(replaced.formatter)
        self.filters = replaced.filters[:]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own way of reporting a failed line
            self.handleError(record)


@contextlib.contextmanager
def shown(unit: str, enabled: bool, why: str = "", total: int | None = None) -> Iterator[Progress | None]:
    """A progress line counting `unit`s while in the block (None when not `enabled`), starting with
    `why` and `total` (None: not known yet); log lines meant for the terminal pass above it."""
    if not enabled:
        yield None
        return
    root = logging.getLogger()
    before = root.handlers[:]
    root.handlers[:] = [_ThroughTqdm(h) if _on_terminal(h) else h for h in before]
    try:
        with tqdm(total=total, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True, leave=True,
                  bar_format="{n}/{total}{unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]") as bar:
            bar.set_postfix_str(why)
            yield Progress(bar)
    finally:
        root.handlers[:] = before


def _on_terminal(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
