"""Settle: decide when each watched file is complete, and what is wrong with the ones that never will be.

A file is ready when, reached without following any link, it is an ordinary file with one name,
unchanged (device, inode, size, mtime) for `settle_seconds` on the monotonic clock, not held open
by a writer (inotify's close-after-write, where the OS tells), and whole by its structure
(`content.judge`). An old modification time never shortens the wait: copies keep old mtimes.
"""

from __future__ import annotations

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
_UNFINISHED = (State.WRITING, State.EMPTY)  # how often an unfinished or unaccepted file is looked at again


@dataclass(frozen=True)
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


@dataclass
class _Seen:
    identity: Identity | None
    quiet_since: float  # monotonic: when this identity was first observed
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
    """Decides when each watched file is complete, and what is wrong with the ones that never will be."""

    root: Path
    settle_seconds: float
    incomplete_after_seconds: float = 3600.0
    ages: FirstSeen | None = None
    files: dict[Path, _Seen] = field(default_factory=dict)

    def track(self, path: Path) -> None:
        if path not in self.files:
            self.files[path] = _Seen(None, time.monotonic(), time.time())

    def event(self, path: Path, kind: str | None) -> None:
        """A hint that `path` changed; `kind` is what the OS says a program did to it (native events).

        A write marks a writer; it is gone once every open seen is closed again, so a `touch` or a
        reader closing the file meanwhile does not end a scanner's pause. Opens and closes of files
        not tracked (our own reads after a file is ready) say nothing.
        """
        if kind in ("opened", "closed", "closed_no_write") and path not in self.files:
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

    def hold(self, hold: Hold) -> None:
        """Keep a file (back in the inbox after an attempt, or paused) from being offered until the hold ends."""
        self.track(hold.path)
        seen = self.files[hold.path]
        seen.hold_until = hold.until
        seen.hold_reason = hold.reason
        if hold.first_seen is not None:
            seen.first_seen = min(seen.first_seen, hold.first_seen)

    def lift(self, prefix: str) -> None:
        """End the holds whose reason begins with `prefix` (a pause that is over)."""
        for seen in self.files.values():
            if seen.hold_until and seen.hold_reason.startswith(prefix):
                seen.hold_until = 0.0

    def poll(self) -> tuple[list[Ready], list[Refused]]:
        """Look at every tracked file that is due; return those now ready and those refused."""
        ready: list[Ready] = []
        refused: list[Refused] = []
        now = time.monotonic()
        for path, seen in list(self.files.items()):
            if seen.hold_until > now:
                continue
            verdict = self._look(path, seen, now)
            if isinstance(verdict, Ready):
                ready.append(verdict)
            elif isinstance(verdict, Refused):
                refused.append(verdict)
            if verdict is not None:
                self._forget(path)
        return ready, refused

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
            seen.quiet_since, seen.hold_until = now, now + SLOW_LOOK_SECONDS
            return None
        identity = Identity.of(st)
        if identity != seen.identity:
            seen.identity, seen.quiet_since, seen.state, seen.refusal = identity, now, None, None
            return None
        if seen.writer_open is not None and now - seen.writer_open < self.incomplete_after_seconds:
            return None  # a scanner pausing between pages still holds the file open
        if now - seen.quiet_since < self.settle_seconds:
            return None
        if seen.state is None and seen.refusal is None and not self._judge(rel, seen):
            seen.quiet_since = now
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
        """Seconds until a tracked file may change state (None when nothing is tracked)."""
        if not self.files:
            return None
        now = time.monotonic()
        waits = [seen.hold_until - now if seen.hold_until > now else 0.1 for seen in self.files.values()]
        return max(0.05, min(waits))

    def unaccepted(self) -> dict[Path, Unaccepted]:
        return {path: seen.unaccepted for path, seen in self.files.items() if seen.unaccepted}

    def pending(self) -> list[tuple[Path, float, str]]:
        """(path, first seen, why it waits) for `status`; files left aside are listed by `unaccepted`."""
        now = time.monotonic()
        out = []
        for path, seen in self.files.items():
            if seen.unaccepted:
                continue
            if seen.state in _UNFINISHED:
                reason = reasons.UNFINISHED
            elif seen.hold_until > now:
                reason = seen.hold_reason
            elif seen.writer_open is not None:
                reason = reasons.WRITER_OPEN
            else:
                reason = reasons.SETTLING
            out.append((path, seen.first_seen, reason))
        return out


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
