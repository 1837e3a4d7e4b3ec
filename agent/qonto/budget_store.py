"""Where the rate limiter remembers when recent requests left: in this process, or in a file every
process on the host shares.

Qonto counts requests per IP address, so agents for many organizations on one host spend one
budget. `FileWindows` keeps the send times in a small SQLite file (WAL, a busy timeout, one short
`BEGIN IMMEDIATE` transaction per request) so every process using the same file sees the same
windows; `MemoryWindows` keeps them in this process. Both answer the limiter's two questions
(`Sent`) and record a request only when the limiter's decision says it fits, in the same step.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Protocol, Sequence

log = logging.getLogger("agent.qonto")

BUSY_TIMEOUT_SECONDS = 5.0  # another process's transaction lasts milliseconds: this long means a loaded host
BUSY_RETRY_SECONDS = 0.1  # after a busy timeout, try again this soon, still on the shared budget
BUSY_GIVE_UP_SECONDS = 60.0  # locked this long in a row: something holds it for good; keep an own budget


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class Sent(Protocol):
    """The requests in each window (by its index) as they stand at one instant."""

    def count(self, window: int) -> int:
        """How many requests left within the window."""

    def leaves_in(self, window: int, n: int) -> float:
        """Seconds until the n-th oldest request in the window (from 1) leaves it."""

    def ahead(self) -> int:
        """How many other processes have been waiting for their turn longer than this one."""


Decide = Callable[[Sent], float]  # the wait a request needs; 0 or less: it is sent now


class Windows(Protocol):
    def take(self, decide: Decide) -> float:
        """Run `decide` on the windows as they are now, atomically record a request sent now if it
        returned 0 or less, and return what it returned."""


class MemoryWindows:
    """Send times in this process, one deque per window. Thread-safe; `clock` is injectable for tests."""

    def __init__(self, seconds: Sequence[float], clock: Callable[[], float] = time.monotonic) -> None:
        self._windows = [(float(s), deque[float]()) for s in seconds]
        self._clock = clock
        self._lock = threading.Lock()

    def take(self, decide: Decide) -> float:
        with self._lock:
            now = self._clock()
            for seconds, sent in self._windows:
                while sent and sent[0] + seconds <= now:
                    sent.popleft()
            wait = decide(_MemorySent(self._windows, now))
            if wait <= 0:
                for _, sent in self._windows:
                    sent.append(now)
            return wait


class _MemorySent:
    def __init__(self, windows: list[tuple[float, deque[float]]], now: float) -> None:
        self._windows = windows
        self._now = now

    def count(self, window: int) -> int:
        return len(self._windows[window][1])

    def leaves_in(self, window: int, n: int) -> float:
        seconds, sent = self._windows[window]
        return sent[n - 1] + seconds - self._now

    def ahead(self) -> int:
        return 0  # the threads of one process are the limiter's own business


class FileWindows:
    """Send times in a SQLite file, shared by every process (and thread) that uses the same file.

    Fair: a process that must wait notes since when (`waiting`), and the others' requests wait
    until it has had its turn, instead of it losing every race to whichever process just sent.
    Times are wall-clock (`time.time()`): monotonic clocks of two processes are not comparable
    after a reboot. A time more than the shortest window in the future means the clock was set
    back: it is dropped, so such a jump costs at most one short window's wait, never a stall.
    If the file cannot be opened or written (read-only, a full disk, not a database), one warning
    says so and `fallback` (this process's own budget) takes over: the agent never stops for it.
    """

    def __init__(self, path: Path, seconds: Sequence[float], fallback: Windows,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._seconds = [float(s) for s in seconds]
        self._fallback = fallback
        self._clock = clock
        self._me = uuid.uuid4().hex  # this store's name among the waiters
        self._lock = threading.Lock()  # one connection, one transaction at a time
        self._db: sqlite3.Connection | None = None
        self._given_up = False
        self._busy_since: float | None = None  # when the file was first found locked, in a row
        with self._lock:
            self._use(lambda: None)  # opened now: an unusable file is said at start

    def take(self, decide: Decide) -> float:
        with self._lock:
            wait = self._use(lambda: self._take(self._db, decide))
        return self._fallback.take(decide) if wait is None else wait

    def _use(self, step: Callable[[], float | None]) -> float | None:
        """Open the file if needed and run `step` on it; None once the file is given up (the caller
        uses its own budget). Locked by others past the busy timeout (processes starting together
        on a loaded host): try again in a moment, and give up only after a minute of it."""
        if self._given_up:
            return None
        try:
            if self._db is None:
                self._db = self._open()
            wait = step()
            self._busy_since = None
            return wait if wait is not None else 0.0
        except sqlite3.OperationalError as exc:
            if _busy(exc) and not self._busy_too_long():
                return BUSY_RETRY_SECONDS
            self._give_up(exc)
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)
        return None

    def _busy_too_long(self) -> bool:
        """Whether the file has been locked by others for longer than any transaction should last."""
        now = time.monotonic()
        self._busy_since = self._busy_since or now
        return now - self._busy_since > BUSY_GIVE_UP_SECONDS

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a budget lost with the machine is no loss
            db.execute("CREATE TABLE IF NOT EXISTS sent (at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS sent_at ON sent (at)")
            db.execute("CREATE TABLE IF NOT EXISTS waiting (who TEXT PRIMARY KEY, since REAL NOT NULL, "
                       "until REAL NOT NULL)")  # until: its next look, and a second more: then it is gone
        except BaseException:
            db.close()
            raise
        return db

    def _take(self, db: sqlite3.Connection, decide: Decide) -> float:
        db.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock()
            longest, shortest = max(self._seconds), min(self._seconds)
            db.execute("DELETE FROM sent WHERE at <= ? OR at > ?", (now - longest, now + shortest))
            db.execute("DELETE FROM waiting WHERE until <= ? OR since > ?", (now, now + shortest))
            wait = decide(_FileSent(db, self._seconds, now, self._me))
            if wait <= 0:
                db.execute("INSERT INTO sent (at) VALUES (?)", (now,))
                db.execute("DELETE FROM waiting WHERE who = ?", (self._me,))
            else:
                db.execute("INSERT INTO waiting VALUES (?, ?, ?) "
                           "ON CONFLICT (who) DO UPDATE SET until = excluded.until", (self._me, now, now + wait + 1.0))
            db.execute("COMMIT")
            return wait
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _give_up(self, exc: BaseException) -> None:
        self._given_up = True
        log.warning("The shared rate-limit file %s cannot be used (%s): this process keeps its own budget "
                    "of Qonto's requests instead; check that the file's folder is writable and not full, "
                    "or set `[qonto] rate_limit_file` to a file it can write.", self._path, exc)
        if self._db is not None:
            self._db.close()
            self._db = None


class _FileSent:
    # `at > ?` (a bound a second wider) uses the index; `at + ? > ?` is the exact test MemoryWindows makes.
    _IN = "FROM sent WHERE at > ? AND at + ? > ?"

    def __init__(self, db: sqlite3.Connection, seconds: list[float], now: float, me: str) -> None:
        self._db = db
        self._seconds = seconds
        self._now = now
        self._me = me

    def _bounds(self, window: int) -> tuple[float, float, float]:
        seconds = self._seconds[window]
        return self._now - seconds - 1.0, seconds, self._now

    def count(self, window: int) -> int:
        return self._db.execute(f"SELECT COUNT(*) {self._IN}", self._bounds(window)).fetchone()[0]

    def leaves_in(self, window: int, n: int) -> float:
        at = self._db.execute(f"SELECT at {self._IN} ORDER BY at LIMIT 1 OFFSET ?",
                              (*self._bounds(window), n - 1)).fetchone()[0]
        return at + self._seconds[window] - self._now

    def ahead(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM waiting WHERE who != ? AND since < "
                                "COALESCE((SELECT since FROM waiting WHERE who = ?), ?)",
                                (self._me, self._me, self._now)).fetchone()[0]
