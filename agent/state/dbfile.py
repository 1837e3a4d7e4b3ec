"""The ledger as a file: opening errors said as sentences, an older agent's ledger adopted, and
the check that the file a running agent writes is still the one other commands read."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agent.base.errors import FolderError, LedgerBusy, LedgerError

log = logging.getLogger("agent.state.ledger")

BUSY_TIMEOUT_SECONDS = 30.0  # how long one statement waits for another process's lock


def check_same_file(path: Path, expected: tuple[int, int]) -> None:
    """Raise LedgerError when `path` is gone or is no longer the file (device, inode) `expected`."""
    try:
        now = identity(path)
    except FileNotFoundError:
        raise LedgerError(
            f"the ledger {path} was deleted while the agent was running: stopping, because what it "
            "records would be lost; start the agent again (it starts a new, empty ledger) and keep other "
            "programs (cleaners, backups restoring files) away from the state folder") from None
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path} ({exc.strerror}): stopping; check the state "
                          "folder's disk and permissions, then start the agent again") from None
    if now != expected:
        raise LedgerError(
            f"the ledger {path} was replaced by another file while the agent was running: stopping, "
            "so the two do not disagree; start the agent again to use the new file")


def adopt(previous: Path, path: Path) -> None:
    """Copy an older agent's ledger (and its OAuth token file) to `path`, atomically: SQLite's backup
    API into a temporary file, then a rename. The old file is left where it was."""
    tmp = path.with_name(f".{path.name}.adopting")
    with translated(previous):
        source = sqlite3.connect(f"{previous.absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            target = sqlite3.connect(str(tmp))
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    os.replace(tmp, path)
    tokens, new_tokens = previous.with_suffix(".oauth.json"), path.with_suffix(".oauth.json")
    if tokens.exists() and not new_tokens.exists():
        fd = os.open(new_tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(tokens.read_bytes())
    log.info("moved to one ledger per configuration: copied %s to %s (the old file is no longer used)",
             previous, path)


def identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def folder_error(path: Path, exc: OSError) -> LedgerError:
    return LedgerError(
        f"cannot create or write the state folder {path.parent} ({exc.strerror or exc}): create it and make it "
        "writable by the user running the agent, or set `[state] path` to a file in a folder it can write")


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """SQLite's errors as sentences: locked too long, its disk full (a FolderError: work pauses
    until space is freed), not a database, cannot open or write."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "database or disk is full" in text:
            raise FolderError.of(f"the ledger ({path})", OSError(errno.ENOSPC, text)) from None
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            raise LedgerBusy(
                f"the ledger {path} stayed locked by another process for more than "
                f"{BUSY_TIMEOUT_SECONDS:.0f} s: find the program holding it (e.g. `fuser {path}`) and "
                "close it; the agent tries again") from None
        if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in text or "readonly" in text
                                                         or "disk I/O" in text):
            raise LedgerError(
                f"cannot open or write the ledger {path} ({text}): make it and its folder writable by the "
                "user running the agent, or set `[state] path` to a file in a folder it can write") from None
        if type(exc) is not sqlite3.DatabaseError:  # a bug in a statement (integrity, syntax...), not the file
            raise
        raise LedgerError(
            f"the ledger {path} is not a valid database ({text}): move it aside (e.g. rename it to "
            f"{path.name}.broken) and run the command again, which starts a new, empty ledger; content uploaded "
            "in the last 30 minutes is recognised by Qonto's idempotency keys, older content may be sent again, "
            "so check Qonto for duplicates") from None
