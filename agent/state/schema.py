"""The ledger's tables, created when missing at every open (`CREATE ... IF NOT EXISTS`), so an
older ledger gains a new table or index by itself; `migrations` changes what that cannot."""

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    sha256          TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    size            INTEGER NOT NULL,
    dropped_at      REAL,
    outcome         TEXT NOT NULL,      -- sending | uploaded | rejected
    invoice_id      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    last_attempt_at REAL,
    finished_at     REAL,
    errors          TEXT,               -- JSON list of {code, detail}
    hint            TEXT
);
CREATE INDEX IF NOT EXISTS uploads_invoice ON uploads(invoice_id);
CREATE INDEX IF NOT EXISTS uploads_finished ON uploads(outcome, finished_at);
CREATE TABLE IF NOT EXISTS attempts (
    sha256     TEXT NOT NULL,
    started_at REAL NOT NULL,
    outcome    TEXT,                    -- created | rejected | unknown | failed; NULL while in flight
    reason     TEXT                     -- why it failed (ledgers before 2026-12 kept "failed: <why>" in outcome)
);
CREATE TABLE IF NOT EXISTS pending (
    file   TEXT PRIMARY KEY,
    since  REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sightings (
    file       TEXT PRIMARY KEY,        -- relative to the inbox
    inode      INTEGER NOT NULL,
    first_seen REAL NOT NULL            -- wall clock: when an unfinished file was first seen
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mirror (
    invoice_id        TEXT PRIMARY KEY,
    stem              TEXT NOT NULL,
    updated_at        TEXT,
    attachment_id     TEXT,
    attachment_sha256 TEXT,
    file              TEXT,
    row               TEXT NOT NULL      -- JSON of the invoices.csv row
);
CREATE INDEX IF NOT EXISTS mirror_content ON mirror(attachment_sha256);
"""


def migrations(db: sqlite3.Connection) -> list[str]:
    """The statements an older ledger needs: ledgers written before attempts had a `reason` column
    get it, and their "failed: <why>" outcomes are split into outcome 'failed' and the reason."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
    if "reason" in columns:
        return []
    return ["ALTER TABLE attempts ADD COLUMN reason TEXT",
            "UPDATE attempts SET outcome = 'failed', reason = NULLIF(TRIM(SUBSTR(outcome, 8)), '') "
            "WHERE outcome LIKE 'failed:%'"]
