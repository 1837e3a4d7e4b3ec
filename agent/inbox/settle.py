"""Settle: decide when each watched file is complete, and what is wrong with the ones that never will be.

A file is ready when, reached without following any link, it is an ordinary file with one name,
unchanged (device, inode, size, mtime) for `settle_seconds` on the monotonic clock, not held open
by a writer (inotify's close-after-write, where the OS tells), and whole by its structure
(`content.judge`). An old modification time never shortens the wait: copies keep old mtimes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.base import beneath
from agent.base.beneath import Identity
from agent.base.text import printable
from agent.inbox import reasons
from agent.inbox.content import State, judge
from agent.inbox.hold import Hold
from agent.inbox.reasons import Refusal, Unaccepted

log = logging.getLogger(__name__)

SLOW_LOOK_SECONDS = 1.0
LOOKS_PER_POLL = 1000  # a poll returns after this many looks: a backlog's first batches leave while the rest are read
_UNFINISHED = (State.WRITING, State.EMPTY)  # how often an unfinished or unaccepted file is looked at again


@dataclass(frozen=True, slots=True)
class Ready:
    """A complete file, ready to be claimed and sent: `identity` is what was judged."""

    path: Path
    size: int
    dropped_at: float  # wall clock when the agent first saw it
    identity: Identity | None = None


@dataclass(frozen=True)
class Refused:
    """A quiet file that can never be uploaded as it is: goes to error/ with a hint."""

    path: Path
    size: int
    refusal: Refusal

    @property
    def code(self) -> str:
        return self.refusal.code


class FirstSeen(Protocol):
    """Where the age of an unfinished file is kept, so it survives restarts and `upload` passes."""

    def first_seen(self, rel: str, inode: int, now: float) -> float: ...
    def forget_seen(self, rel: str) -> None: ...


@dataclass(slots=True)
class _Seen:
    identity: Identity | None
    quiet_since: float  # monotonic: when this identity was first observed
    look_at: float  # monotonic: its next look (an event brings it forward)
    first_seen: float  # wall clock: when the agent first saw the file
    state: State | None = None  # content judged for this identity
    refusal: Refusal | None = None  # it could not even be read
    unfinished_since: float | None = None  # monotonic start of the unfinished clock (carried age included)
    writer_open: float | None = None  # monotonic: a write was seen while it is open
    opens: int = 0  # opens minus closes seen (inotify): a writer may share the file with readers
    unaccepted: Unaccepted | None = None
    hold_until: float = 0.0  # monotonic: not before (retry backoff, credentials pause)
    hold_reason: str = ""


@dataclass
class Settler:
    """Decides when each watched file is complete, and what is wrong with the ones that never will be.

    Each file is looked at when it is due (a heap of due times), not at every poll: a backlog of
    50,000 files costs nothing while it waits for its settle time. `changed` collects the files
    whose line in `status` may differ, for the pipeline to publish only those.
    """

    root: Path
    settle_seconds: float
    incomplete_after_seconds: float = 3600.0
    ages: FirstSeen | None = None
    files: dict[Path, _Seen] = field(default_factory=dict)
    changed: set[Path] = field(default_factory=set)
    _left: dict[Path, Unaccepted] = field(default_factory=dict)  # files left aside, while they stay so
    _due: list[tuple[float, int, Path]] = field(default_factory=list)  # (when, order, path); stale ones skipped
    _order: itertools.count = field(default_factory=itertools.count)

    def track(self, path: Path) -> None:
        if path not in self.files:
            now = time.monotonic()
            self.files[path] = _Seen(None, now, now, time.time())
            self._push(path, now)

    def event(self, path: Path, kind: str | None) -> None:
        """A hint that `path` changed; `kind` is what the OS says a program did to it (native events).

        A write marks a writer; it is gone once every open seen is closed again, so a `touch` or a
        reader closing the file meanwhile does not end a scanner's pause. Opens and closes of files
        not tracked (our own reads after a file is ready) say nothing, nor does a name already gone
        that is not tracked (our own claim's rename).
        """
        if path not in self.files and (kind in ("opened", "closed", "closed_no_write") or not os.path.lexists(path)):
            return
        self.track(path)
        seen = self.files[path]
        if kind == "opened":
            seen.opens += 1
        elif kind == "modified":
            seen.opens = max(seen.opens, 1)  # its open may predate the watch
            seen.writer_open = seen.writer_open or time.monotonic()
        elif kind in ("closed", "closed_no_write"):
            seen.opens = max(0, seen.opens - 1)
            if seen.opens == 0:
                seen.writer_open = None
        seen.look_at = time.monotonic()
        self._push(path, seen.look_at)

    def hold(self, hold: Hold) -> None:
        """Keep a file (back in the inbox after an attempt, or paused) from being offered until the hold ends."""
        self.track(hold.path)
        seen = self.files[hold.path]
        seen.hold_until = hold.until
        seen.hold_reason = hold.reason
        if hold.first_seen is not None:
            seen.first_seen = min(seen.first_seen, hold.first_seen)
        self._push(hold.path, hold.until)

    def lift(self, prefix: str) -> None:
        """End the holds whose reason begins with `prefix` (a pause that is over)."""
        now = time.monotonic()
        for path, seen in self.files.items():
            if seen.hold_until and seen.hold_reason.startswith(prefix):
                seen.hold_until = 0.0
                self._push(path, now)

    def poll(self) -> tuple[list[Ready], list[Refused]]:
        """Look at the tracked files that are due; return those now ready and those refused. It
        stops after LOOKS_PER_POLL looks: the rest are looked at by the next poll."""
        ready: list[Ready] = []
        refused: list[Refused] = []
        now = time.monotonic()
        looked: dict[Path, None] = {}  # in order: the next look keeps it
        while self._due and self._due[0][0] <= now and len(looked) < LOOKS_PER_POLL:
            path = heapq.heappop(self._due)[2]
            seen = self.files.get(path)
            if seen is None or path in looked or max(seen.hold_until, seen.look_at) > now:
                continue  # gone, looked at already, or a stale entry: a later one stands for its next look
            looked[path] = None
            verdict = self._look(path, seen, now)
            if isinstance(verdict, Ready):
                ready.append(verdict)
            elif isinstance(verdict, Refused):
                refused.append(verdict)
            if verdict is not None:
                self._forget(path)
        for path in looked:
            if path in self.files:
                seen = self.files[path]
                self._push(path, max(seen.hold_until, seen.look_at))
        return ready, refused

    def _push(self, path: Path, when: float) -> None:
        """The file is due at `when`: a look then, and its line in `status` may change."""
        heapq.heappush(self._due, (when, next(self._order), path))
        self.changed.add(path)

    def _look(self, path: Path, seen: _Seen, now: float) -> Ready | Refused | bool | None:
        """Ready, Refused, True (gone: forget it) or None (keep watching)."""
        rel = path.relative_to(self.root)
        try:
            st = beneath.lstat(self.root, rel)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if not beneath.is_link_error(exc):
                log.debug("cannot look at %s: %s", rel, exc)
                return True
            st = None  # a folder on the way is a link
        seen.unaccepted = _unaccepted(st)
        if seen.unaccepted:
            self._left[path] = seen.unaccepted
            seen.quiet_since, seen.hold_until = now, now + SLOW_LOOK_SECONDS
            return None
        self._left.pop(path, None)
        identity = Identity.of(st)
        if identity != seen.identity:
            seen.identity, seen.quiet_since, seen.state, seen.refusal = identity, now, None, None
            seen.look_at = now + self.settle_seconds  # unchanged then, it is quiet (an event looks sooner)
            return None
        if seen.writer_open is not None and now - seen.writer_open < self.incomplete_after_seconds:
            seen.look_at = now + SLOW_LOOK_SECONDS  # its writer's close is an event: looked at then
            return None  # a scanner pausing between pages still holds the file open
        if now - seen.quiet_since < self.settle_seconds:
            seen.look_at = seen.quiet_since + self.settle_seconds
            return None
        if seen.state is None and seen.refusal is None and not self._judge(rel, seen):
            seen.quiet_since, seen.look_at = now, now + self.settle_seconds
            return None  # it changed while being read: look again once it is quiet
        if seen.refusal is not None:
            return Refused(path, identity.size, seen.refusal)
        if seen.state is State.COMPLETE:
            return Ready(path, identity.size, seen.first_seen, identity)
        if seen.state in _UNFINISHED:  # empty too: a writer may not have written its first byte yet
            return self._unfinished(path, rel, seen, now)
        assert seen.state is not None
        return Refused(path, identity.size, reasons.refusal(seen.state, identity.size))

    def _judge(self, rel: Path, seen: _Seen) -> bool:
        """Judge the content of the identity seen; False when the file changed meanwhile. A file
        that cannot be opened or read (no permission, a bad sector) is refused as unreadable."""
        try:
            fd, st = beneath.open_file(self.root, rel)
            try:
                if Identity.of(st) != seen.identity:
                    return False
                judged = judge(fd, st.st_size)
            finally:
                os.close(fd)
        except OSError as exc:
            if beneath.is_link_error(exc) or isinstance(exc, FileNotFoundError):
                return False
            seen.refusal = reasons.unreadable(exc.strerror or str(exc))
            return True
        seen.state = judged.state
        log.debug("%s: %s (%s)", rel, judged.state, judged.why)
        return True

    def _unfinished(self, path: Path, rel: Path, seen: _Seen, now: float) -> Refused | None:
        """An unfinished file waits; after `incomplete_after_seconds` since first seen, it is refused."""
        if seen.unfinished_since is None:
            carried = 0.0
            if self.ages is not None and seen.identity is not None:
                wall = time.time()
                carried = max(0.0, wall - self.ages.first_seen(printable(str(rel)), seen.identity.ino, wall))
            seen.unfinished_since = now - carried
        seen.hold_until = now + SLOW_LOOK_SECONDS
        if now - seen.unfinished_since < self.incomplete_after_seconds:
            return None
        assert seen.identity is not None
        if seen.state is State.EMPTY:
            return Refused(path, 0, reasons.refusal(State.EMPTY, 0))
        return Refused(path, seen.identity.size, reasons.incomplete(self.incomplete_after_seconds))

    def _forget(self, path: Path) -> None:
        seen = self.files.pop(path)
        self._left.pop(path, None)
        self.changed.add(path)
        if self.ages is not None and seen.unfinished_since is not None:
            self.ages.forget_seen(printable(str(path.relative_to(self.root))))

    def settling(self) -> bool:
        """Some file may become ready soon (not held back, unfinished or left aside)."""
        now = time.monotonic()
        return any(_may_be_ready_soon(seen, now) for seen in self.files.values())

    def settling_count(self) -> int:
        """How many files may become ready soon: what a pass that has sent nothing yet waits on."""
        now = time.monotonic()
        return sum(1 for seen in self.files.values() if _may_be_ready_soon(seen, now))

    def next_check(self) -> float | None:
        """Seconds until a tracked file is due for a look (0: some are already; None: nothing is tracked)."""
        while self._due and self._due[0][2] not in self.files:
            heapq.heappop(self._due)  # forgotten since
        return max(0.0, self._due[0][0] - time.monotonic()) if self._due else None

    def unaccepted(self) -> dict[Path, Unaccepted]:
        return dict(self._left)

    def reason(self, path: Path) -> tuple[float, str] | None:
        """(first seen, why it waits) of a tracked file for `status`; None for one left aside or not tracked."""
        seen = self.files.get(path)
        if seen is None or seen.unaccepted:
            return None
        if seen.state in _UNFINISHED:
            return seen.first_seen, reasons.UNFINISHED
        if seen.hold_until > time.monotonic():
            return seen.first_seen, seen.hold_reason
        return seen.first_seen, reasons.WRITER_OPEN if seen.writer_open is not None else reasons.SETTLING

    def pending(self) -> list[tuple[Path, float, str]]:
        """(path, first seen, why it waits) for `status`; files left aside are listed by `unaccepted`."""
        return [(path, *row) for path in self.files if (row := self.reason(path)) is not None]


def _unaccepted(st: os.stat_result | None) -> Unaccepted | None:
    if st is None or stat.S_ISLNK(st.st_mode):
        return Unaccepted.LINK
    if not stat.S_ISREG(st.st_mode):
        return Unaccepted.NOT_A_FILE
    if st.st_nlink > 1:
        return Unaccepted.HARD_LINK
    return None


def _may_be_ready_soon(seen: _Seen, now: float) -> bool:
    return seen.hold_until <= now and seen.state not in _UNFINISHED and seen.unaccepted is None
