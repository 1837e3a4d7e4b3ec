"""The SQLite ledger: what was uploaded, what is pending, the sync cursor, the mirror entries.

It knows no HTTP and no folders: the uploader and the mirror tell it facts, `status` reads them.
WAL mode and a busy timeout make it safe for `run`, `status` and a one-off `upload` at once.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from contextlib import contextmanager

from agent.state.dbfile import BUSY_TIMEOUT_SECONDS, adopt, check_same_file, folder_error, identity, translated
from agent.state.schema import SCHEMA, migrations



class UploadOutcome(enum.StrEnum):
    """What became of a piece of content; the values are the strings stored in `uploads.outcome`."""

    SENDING = "sending"  # an attempt left and its answer is not recorded yet
    UPLOADED = "uploaded"
    REJECTED = "rejected"  # by Qonto, or before any request (empty, not a PDF, too large)


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended; the values are the strings stored in `attempts.outcome`."""

    CREATED = "created"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # no answer for this item: safe to resend with the same key
    FAILED = "failed"  # the request failed; `Attempt.reason` says how

    @classmethod
    def parse(cls, text: str) -> tuple[AttemptOutcome, str | None]:
        """(outcome, reason) of a recorded or given text; "failed: <why>" is FAILED with its reason."""
        failed, sep, why = text.partition(":")
        if sep and failed == cls.FAILED:
            return cls.FAILED, why.strip() or None
        return cls(text), None


@dataclass(frozen=True)
class Attempt:
    """One attempt to send a piece of content; `outcome` is None while it is in flight."""

    started_at: float
    outcome: AttemptOutcome | None
    reason: str | None


@dataclass(frozen=True)
class Upload:
    """One piece of content (by SHA-256) and what became of it."""

    sha256: str
    idempotency_key: str
    file_name: str
    size: int
    dropped_at: float | None
    outcome: UploadOutcome
    invoice_id: str | None
    attempts: int
    first_attempt_at: float | None
    last_attempt_at: float | None
    finished_at: float | None
    errors: list[dict]
    hint: str | None


@dataclass(frozen=True)
class Pending:
    file: str
    since: float
    reason: str


@dataclass(frozen=True)
class MirrorEntry:
    """What the outbox holds for one invoice: its stem, the version written, its attachment file."""

    invoice_id: str
    stem: str
    updated_at: str | None
    attachment_id: str | None
    attachment_sha256: str | None
    file: str | None
    row: dict  # the invoices.csv row


@dataclass(frozen=True)
class Heartbeat:
    """`run` says it is alive, how it watches the inbox, and whether it is paused waiting for a
    person (why, and until when), every few seconds (for `status`)."""

    pid: int
    at: float  # wall clock
    mode: str
    why: str
    paused: str | None = None  # what a person must fix; no secret (the client's errors hold none)
    paused_until: float | None = None  # wall clock; None with `paused`: until a person fixes it


_HEARTBEAT, _CURSOR, _LAST_SYNC = "heartbeat", "sync_cursor", "last_sync_at"  # keys of the meta table


def _connect(path: Path) -> sqlite3.Connection:
    """The ledger's one connection: WAL, a busy timeout, its tables made or migrated."""
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        db.executescript(SCHEMA)  # runs its own transaction
        if steps := migrations(db):
            db.execute("BEGIN IMMEDIATE")
            for sql in steps:
                db.execute(sql)
            db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


class Ledger:
    """A thread-safe handle on the ledger file (one connection, one lock)."""

    def __init__(self, path: Path, previous: Path | None = None) -> None:
        """Open (creating it when missing) the ledger at `path`; when `path` does not exist and an
        older agent's ledger does at `previous`, it is copied here first (once)."""
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise folder_error(path, exc) from None
        if previous is not None and not path.exists() and previous.exists():
            adopt(previous, path)
        with translated(path):
            self._db = _connect(path)
        self._identity = identity(path)

    def check_same_file(self) -> None:
        """Raise LedgerError when the ledger file was deleted or replaced since it was opened:
        what this process writes from now on would go nowhere another command could read."""
        check_same_file(self.path, self._identity)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:  # e.g. still locked: leave no transaction open for the next call
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock, translated(self.path):
            return self._db.execute(sql, tuple(args)).fetchall()

    # --- uploads -------------------------------------------------------------------------------

    def lookup(self, sha256: str) -> Upload | None:
        rows = self._query("SELECT * FROM uploads WHERE sha256 = ?", (sha256,))
        return _upload(rows[0]) if rows else None

    def by_invoice(self, invoice_id: str) -> Upload | None:
        rows = self._query("SELECT * FROM uploads WHERE invoice_id = ? ORDER BY finished_at DESC LIMIT 1",
                           (invoice_id,))
        return _upload(rows[0]) if rows else None

    def begin_attempt(self, sha256: str, key: str, file_name: str, size: int,
                      dropped_at: float | None, now: float | None = None) -> None:
        """Record, before the request leaves, that this content is being sent with this key."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                """INSERT INTO uploads (sha256, idempotency_key, file_name, size, dropped_at, outcome,
                                        attempts, first_attempt_at, last_attempt_at)
                   VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)
                   ON CONFLICT(sha256) DO UPDATE SET
                       outcome = excluded.outcome, file_name = excluded.file_name, size = excluded.size,
                       dropped_at = COALESCE(uploads.dropped_at, excluded.dropped_at),
                       attempts = uploads.attempts + 1,
                       first_attempt_at = CASE WHEN uploads.outcome = excluded.outcome  -- still sending
                           THEN COALESCE(uploads.first_attempt_at, excluded.first_attempt_at)
                           ELSE excluded.first_attempt_at END,
                       last_attempt_at = excluded.last_attempt_at""",
                (sha256, key, file_name, size, dropped_at, UploadOutcome.SENDING, now, now),
            )
            db.execute("INSERT INTO attempts (sha256, started_at) VALUES (?, ?)", (sha256, now))

    def restart_window(self, sha256: str, now: float | None = None) -> None:
        """No earlier attempt made an invoice: Qonto's key window is counted from now, the moment
        before the next attempt (begin_attempt keeps it while the content is still being sent)."""
        with self._tx() as db:
            db.execute("UPDATE uploads SET first_attempt_at=? WHERE sha256=?",
                       (time.time() if now is None else now, sha256))

    def finish_attempt(self, sha256: str, outcome: AttemptOutcome, reason: str | None = None) -> None:
        """Note how the last attempt ended when it did not settle the content (unknown, failed)."""
        with self._tx() as db:
            _close_attempt(db, sha256, outcome, reason)

    def attempts(self, sha256: str) -> list[Attempt]:
        """Every attempt to send this content, oldest first."""
        rows = self._query("SELECT * FROM attempts WHERE sha256=? ORDER BY rowid", (sha256,))
        return [_attempt(r) for r in rows]

    def record_uploaded(self, sha256: str, invoice_id: str, now: float | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE uploads SET outcome=?, invoice_id=?, finished_at=?, errors=NULL, hint=NULL "
                       "WHERE sha256=?", (UploadOutcome.UPLOADED, invoice_id, time.time() if now is None else now,
                                          sha256))
            _close_attempt(db, sha256, AttemptOutcome.CREATED)

    def record_rejected(self, sha256: str, errors: list[dict], hint: str, now: float | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE uploads SET outcome=?, finished_at=?, errors=?, hint=? WHERE sha256=?",
                       (UploadOutcome.REJECTED, time.time() if now is None else now, json.dumps(errors), hint,
                        sha256))
            _close_attempt(db, sha256, AttemptOutcome.REJECTED)

    def record_local_error(self, sha256: str | None, key: str | None, file_name: str, size: int,
                           errors: list[dict], hint: str) -> None:
        """A file refused before any request (empty, not a PDF, too large): kept for `status`."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                """INSERT INTO uploads (sha256, idempotency_key, file_name, size, outcome, finished_at, errors, hint)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(sha256) DO UPDATE SET outcome=excluded.outcome, finished_at=excluded.finished_at,
                       errors=excluded.errors, hint=excluded.hint, file_name=excluded.file_name""",
                (sha256 or f"local:{file_name}:{now}", key or "", file_name, size, UploadOutcome.REJECTED, now,
                 json.dumps(errors), hint),
            )

    def record_found(self, sha256: str, key: str, file_name: str, size: int, dropped_at: float | None,
                     invoice_id: str) -> None:
        """Content found in Qonto without sending it (the mirror holds it): uploaded, by no attempt."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                """INSERT INTO uploads (sha256, idempotency_key, file_name, size, dropped_at, outcome, invoice_id,
                                        finished_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(sha256) DO UPDATE SET outcome=excluded.outcome, invoice_id=excluded.invoice_id,
                       finished_at=excluded.finished_at, errors=NULL, hint=NULL""",
                (sha256, key, file_name, size, dropped_at, UploadOutcome.UPLOADED, invoice_id, now),
            )

    def not_mirrored(self, since: float, limit: int = 500) -> list[str]:
        """Invoices uploaded since `since` (wall clock) that the outbox does not hold yet."""
        return [r[0] for r in self._query(
            "SELECT invoice_id FROM uploads WHERE outcome=? AND finished_at>=? AND invoice_id NOT IN "
            "(SELECT invoice_id FROM mirror) ORDER BY finished_at DESC LIMIT ?", (UploadOutcome.UPLOADED, since, limit))]

    def recent(self, outcome: UploadOutcome, limit: int = 10) -> list[Upload]:
        rows = self._query("SELECT * FROM uploads WHERE outcome=? ORDER BY finished_at DESC LIMIT ?",
                           (outcome, limit))
        return [_upload(r) for r in rows]

    def count(self, outcome: UploadOutcome) -> int:
        """How many pieces of content ended this way (`status` and the metrics file)."""
        return self._query("SELECT COUNT(*) FROM uploads WHERE outcome=?", (outcome,))[0][0]

    # --- pending files and the heartbeat of `run` ----------------------------------------------

    def set_pending(self, items: Iterable[Pending], gone: Iterable[str] | None = None) -> None:
        """Write the files waiting in the inbox, for `status`: all, or with `gone` what changed (`gone` deleted)."""
        with self._tx() as db:
            if gone is None:
                db.execute("DELETE FROM pending")
            db.executemany("DELETE FROM pending WHERE file=?", [(file,) for file in gone or ()])
            db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?)",
                           [(p.file, p.since, p.reason) for p in items])

    def pending(self) -> list[Pending]:
        return [Pending(r["file"], r["since"], r["reason"])
                for r in self._query("SELECT * FROM pending ORDER BY since")]

    # --- unfinished files: their age survives restarts and `upload` passes ------------------------

    def first_seen(self, rel: str, inode: int, now: float) -> float:
        """When the unfinished file `rel` (this inode) was first seen; `now` if it is new."""
        with self._tx() as db:
            db.execute("""INSERT INTO sightings VALUES (?, ?, ?) ON CONFLICT(file) DO UPDATE
                          SET inode = excluded.inode, first_seen = excluded.first_seen
                          WHERE sightings.inode != excluded.inode""", (rel, inode, now))
            return db.execute("SELECT first_seen FROM sightings WHERE file=?", (rel,)).fetchone()[0]

    def forget_seen(self, rel: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sightings WHERE file=?", (rel,))

    def prune_seen(self, present: Iterable[str]) -> None:
        """Forget the ages of files no longer in the inbox (the table holds only unfinished files)."""
        keep = set(present)
        gone = [(r["file"],) for r in self._query("SELECT file FROM sightings") if r["file"] not in keep]
        if gone:
            with self._tx() as db:
                db.executemany("DELETE FROM sightings WHERE file=?", gone)

    # --- small facts: heartbeat, cursor, last sync ---------------------------------------------

    def beat(self, heartbeat: Heartbeat | None) -> None:
        """Record that `run` is alive (None when it stops)."""
        self._set(_HEARTBEAT, dataclasses.asdict(heartbeat) if heartbeat else None)

    def heartbeat(self) -> Heartbeat | None:
        data = self._get(_HEARTBEAT)
        if not isinstance(data, dict):
            return None
        known = {f.name for f in dataclasses.fields(Heartbeat)}  # a newer agent's extra facts are skipped
        return Heartbeat(**{k: v for k, v in data.items() if k in known})

    def cursor(self) -> str | None:
        """The outbox sync's cursor: every invoice updated before it is in the outbox."""
        return self._get(_CURSOR)

    def save_cursor(self, cursor: str, synced_at: str) -> None:
        """A whole window succeeded: move the cursor and note when."""
        self._set(_CURSOR, cursor)
        self._set(_LAST_SYNC, synced_at)

    def last_sync_at(self) -> str | None:
        return self._get(_LAST_SYNC)

    def _get(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def _set(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # --- mirror entries -------------------------------------------------------------------------

    def mirror_entry(self, invoice_id: str) -> MirrorEntry | None:
        rows = self._query("SELECT * FROM mirror WHERE invoice_id=?", (invoice_id,))
        return _mirror(rows[0]) if rows else None

    def mirror_with_content(self, sha256: str) -> MirrorEntry | None:
        """An invoice whose attachment, as last synced, has exactly these bytes."""
        rows = self._query("SELECT * FROM mirror WHERE attachment_sha256=? ORDER BY invoice_id LIMIT 1", (sha256,))
        return _mirror(rows[0]) if rows else None

    def mirror_entries(self) -> list[MirrorEntry]:
        return [_mirror(r) for r in self._query("SELECT * FROM mirror ORDER BY invoice_id")]

    def upsert_mirror(self, entry: MirrorEntry) -> None:
        """Record what the outbox now holds for `entry.invoice_id`, replacing what it held before."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO mirror VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (entry.invoice_id, entry.stem, entry.updated_at, entry.attachment_id, entry.attachment_sha256,
                        entry.file, json.dumps(entry.row, ensure_ascii=False)))

    def size(self, table: str) -> int:
        """How many rows `pending` (files waiting) or `mirror` (invoices in the outbox) holds."""
        if table not in ("pending", "mirror"):
            raise ValueError(f"no table {table!r} to count")
        return self._query(f"SELECT COUNT(*) FROM {table}")[0][0]


def _close_attempt(db: sqlite3.Connection, sha256: str, outcome: AttemptOutcome, reason: str | None = None) -> None:
    db.execute("UPDATE attempts SET outcome=?, reason=? "
               "WHERE rowid = (SELECT MAX(rowid) FROM attempts WHERE sha256=?)", (outcome, reason, sha256))


def _attempt(row: sqlite3.Row) -> Attempt:
    if row["outcome"] is None:
        return Attempt(row["started_at"], None, row["reason"])
    outcome, said = AttemptOutcome.parse(row["outcome"])  # "failed: <why>" written by an older agent
    return Attempt(row["started_at"], outcome, row["reason"] or said)


def _upload(row: sqlite3.Row) -> Upload:
    data = dict(row)
    data["errors"] = json.loads(data["errors"]) if data["errors"] else []
    data["outcome"] = UploadOutcome(data["outcome"])
    return Upload(**data)


def _mirror(row: sqlite3.Row) -> MirrorEntry:
    return MirrorEntry(**{**dict(row), "row": json.loads(row["row"])})


def seen_at(ledger: Ledger, rel: str, inode: int) -> float | None:
    """Read only (`upload --dry-run`): when the unfinished file `rel` (this inode) was first seen, if it was."""
    rows = ledger._query("SELECT first_seen FROM sightings WHERE file=? AND inode=?", (rel, inode))
    return rows[0][0] if rows else None
