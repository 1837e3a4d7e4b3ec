"""`check` as a doctor: everything a run needs, each problem one sentence with the next step.

The folder checks try what the agent will do (make an entry, remove it) and leave nothing behind;
they run before any request, so a broken set-up is said even without a network. Then Qonto: the
credentials (the organization), one page of supplier invoices, and one attachment when there is one.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sqlite3
import tempfile
from pathlib import Path

from agent.base.errors import CredentialsError, PermissionDenied, QontoError, TransientError
from agent.config import Config
from agent.qonto.client import QontoClient
from agent.qonto.transport import RetryPolicy

log = logging.getLogger(__name__)

LOW_SPACE_BYTES = 200 * 1024 * 1024  # below this a sync of a year of invoices may not fit
INBOX_FOLDERS = ("done", "error", ".processing")


def local_problems(config: Config) -> list[str]:
    """The folder, free-space and ledger problems, each one sentence with the next step."""
    return [*_inbox(config.inbox.path), *_outbox(config.outbox.path), *_ledger(config.state.path)]


def check_retry() -> RetryPolicy:
    """The retry policy of `check`, which a person watches: a connection that cannot be made is
    said at once instead of being tried again for half a minute; 429 and 5xx are still retried."""
    return RetryPolicy(connect=0)


def organization(client: QontoClient, root: str) -> dict:
    """The organization the credentials belong to; when Qonto cannot be reached, one sentence
    that names the address (an HTML page, a 404 or TLS refused already name `base_url`)."""
    try:
        return client.get_organization()
    except TransientError as exc:
        if exc.status is not None or exc.detail is None:  # Qonto answered (429, 5xx), or too slowly: its words
            raise
        raise TransientError(f"could not reach Qonto at {root} ({exc.detail}): check `[qonto] base_url` "
                             "and the network, then run `qonto-agent check` again") from None


def remote_problems(client: QontoClient) -> list[str]:
    """Read access to supplier invoices and attachments. Refused credentials or permissions raise
    (their exit code is 4); other trouble listing or reading is a problem said here."""
    try:
        page = next(iter(client.iter_pages()), None)
    except (CredentialsError, PermissionDenied):
        raise
    except QontoError as exc:
        return [f"could not list supplier invoices ({exc}): check the network and `[qonto] base_url`, "
                "then run `qonto-agent check` again."]
    invoice = next((i for i in (page.invoices if page else []) if i.get("attachment_id")), None)
    if invoice is None:
        return []
    with tempfile.TemporaryDirectory(prefix="qonto-agent-check-") as scratch:
        try:
            client.download_attachment(invoice["attachment_id"], Path(scratch) / "attachment")
        except (CredentialsError, PermissionDenied):
            raise
        except (QontoError, OSError) as exc:
            return [f"could not read the attachment of invoice {invoice.get('id')} ({exc}): check the network, "
                    "then run `qonto-agent check` again."]
    return []


def _probe(folder: Path, *, as_folder: bool = False) -> str | None:
    """Make and remove one hidden entry in `folder`; the reason it failed, or None."""
    entry = folder / f".qonto-agent-check-{secrets.token_hex(6)}"
    try:
        if as_folder:
            entry.mkdir()
            entry.rmdir()
        else:
            fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            entry.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _inbox(inbox: Path) -> list[str]:
    if not inbox.is_dir():
        what = "is a file, not a folder" if inbox.exists() else "does not exist"
        return [f"the inbox {inbox} {what}: create the folder, or check that its share is mounted."]
    try:
        os.listdir(inbox)
    except OSError as exc:
        return [f"cannot read the inbox {inbox} ({exc.strerror}): give the user running the agent read and write "
                "access to it."]
    problems = []
    if (why := _probe(inbox, as_folder=True)) is not None:
        problems.append(f"cannot write in the inbox {inbox} ({why}): give the user running the agent write access "
                        "to it (the agent makes done/, error/ and .processing/ there).")
    for name in INBOX_FOLDERS:
        folder = inbox / name
        if not folder.exists():
            continue
        if folder.is_symlink() or not folder.is_dir():
            problems.append(f"{folder} is a link or a file, not a folder: remove or rename it (the agent "
                            "makes the folder again).")
        elif (why := _probe(folder)) is not None:
            problems.append(f"cannot write in {folder} ({why}): give the user running the agent write access "
                            "to it.")
    return problems


def _outbox(outbox: Path) -> list[str]:
    if outbox.exists() and not outbox.is_dir():
        return [f"the outbox {outbox} is a file, not a folder: move the file away, or set `[outbox] path` to a "
                "folder."]
    where = _nearest_existing(outbox)
    if not where.is_dir():
        return [f"the outbox {outbox} cannot be made ({where} is a file): set `[outbox] path` to a folder you "
                "can write to."]
    if (why := _probe(where)) is not None:
        return [f"cannot write in the outbox {outbox} ({why}): give the user running the agent write access to "
                f"{where}."]
    free = shutil.disk_usage(where).free
    if free < LOW_SPACE_BYTES:
        return [f"only {free / 1024 / 1024:.0f} MB free for the outbox {outbox}: free some space, or set "
                "`[outbox] path` to a larger disk."]
    return []


def _ledger(ledger: Path) -> list[str]:
    if ledger.exists():
        if not ledger.is_file():
            return [f"the ledger {ledger} is not a file: move it away, or set `[state] path` to a file."]
        try:
            db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                db.close()
        except sqlite3.Error as exc:
            return [f"cannot read the ledger {ledger} ({exc}): check its permissions, or move a damaged one away."]
        if not os.access(ledger, os.R_OK | os.W_OK):
            return [f"the ledger {ledger} is not readable and writable: give the user running the agent access "
                    "to it."]
    where = _nearest_existing(ledger.parent)
    if not where.is_dir():
        return [f"the ledger's folder {ledger.parent} cannot be made ({where} is a file): set `[state] path` "
                "under a folder you can write to."]
    if (why := _probe(where)) is not None:
        return [f"cannot write in the ledger's folder {where} ({why}): give the user running the agent write "
                "access to it, or set `[state] path`."]
    return []
