"""Incremental sync of Qonto supplier invoices into the outbox: list pages → fetch → write → index.

Three parts, each knowing as little as it can (the vdirsyncer way):
- `invoice_stem`, `attachment_ext`, `csv_row`: pure functions from API objects to names and rows.
  Names from the API are untrusted, so everything that becomes a path goes through them.
- `Outbox`: the folder readers see. Every file appears complete or not at all (temporary dot-name,
  fsync, rename), and nothing outside the folder can ever be written.
- `sync`: the loop. It knows the client's interface, not HTTP: list the window `[cursor - overlap,
  now]`, hand each changed invoice to a small thread pool that downloads its attachment (URLs
  expire after 30 minutes, so they are fetched right before use) and writes its JSON, then save the
  cursor only if every invoice of the window made it. Invoices the agent uploaded lately that the
  window missed (Qonto's analysis moved them past its end) are fetched by id, so an upload shows
  in the outbox at the sync that follows it.

Crash safety comes from the order of operations: attachment file → JSON → ledger entry → (end of
window) CSV → cursor. Killed anywhere, the next sync re-lists the same window, skips what the
ledger and the folder already show as done, and adopts an attachment file already in place
instead of downloading it again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from agent.base import profile
from agent.base.errors import (AgentError, ConfigError, CredentialsError, FolderError, HTMLAnswerError,
                               PermissionDenied, RequestRejected)
from agent.base.events import fields
from agent.base.files import ProcessLock
from agent.base.fingerprint import sha256_file
from agent.base.times import iso, rfc3339_ms as rfc3339
from agent.base.verdict import Verdict
from agent.config import Config, parse_timestamp
from agent.outbox.folder import Outbox
from agent.outbox.index import CSV_NAME, csv_row, write_index
from agent.outbox.names import attachment_ext, invoice_stem, strip_urls
from agent.qonto.download import announced_size
from agent.state.ledger import Ledger, MirrorEntry, UploadOutcome

if TYPE_CHECKING:  # the loop needs only the client's interface, not its module
    from agent.qonto.client import QontoClient

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)  # re-list a little of the last window: clock skew, inclusive bounds
MAX_LISTINGS = 3  # passes over one window when the list changes under our feet while paging
RECENT_UPLOADS_SECONDS = 86400.0  # uploads this recent that the listing missed are fetched by id
# Errors that make every further request pointless: stop the sync at once (a FolderError is a ConfigError).
FATAL = (CredentialsError, PermissionDenied, HTMLAnswerError, ConfigError)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SyncReport:
    """What one sync did. `cursor` is the cursor after it (advanced only when `complete`)."""

    listed: int
    written: int  # JSON files (re)written
    downloaded: int  # attachment files downloaded
    unchanged: int
    failed: int
    cursor: str | None
    complete: bool
    failed_ids: tuple[str, ...] = ()
    seconds: float = 0.0
    permanent_failures: int = 0  # failures Qonto will answer the same way next time (e.g. a 404)

    @property
    def verdict(self) -> Verdict:
        """Done; some invoice failed for good; or the window is left for the next sync."""
        if self.complete:
            return Verdict.DONE
        return Verdict.FAILED if self.permanent_failures else Verdict.LATER



def sync(config: Config, client: QontoClient, ledger: Ledger, *, full: bool = False,
         progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> SyncReport:
    """One pass over the outbox window; see the module docstring.

    `cancel` (set by `run` on SIGTERM) stops listing and starting downloads; what is written stays,
    and the cursor stays put, so the next sync finishes the window.

    Raises the client's CredentialsError/PermissionDenied (nothing more can succeed) and the
    listing's own errors (nothing is known about the rest of the window); invoices that fail one
    by one are counted in the report instead, and keep the cursor where it was.
    """
    config.state.path.parent.mkdir(parents=True, exist_ok=True)
    lock = ProcessLock(config.state.path.with_name(config.state.path.name + ".sync-lock"))
    locked = lock.acquire(blocking=False)
    if not locked:
        log.info("another sync of this outbox is running: waiting for it to finish")
        locked = lock.acquire(blocking=True)
    if not locked:  # a file system without locks, or a Windows lock wait that timed out
        log.warning("could not lock %s: syncing anyway, but leaving temporary files alone", lock.path)
    try:
        return _Sync(config, client, ledger, progress, cancel).run(full, clean=locked)
    except OSError as exc:  # the outbox refusing every write is a pause, said in words, not a crash
        trouble = FolderError.of(_outbox_words(config), exc)
        if trouble is None:
            raise
        raise trouble from exc
    finally:
        lock.release()


def _outbox_words(config: Config) -> str:
    return f"the outbox ({config.outbox.path})"


def _log_report(report: SyncReport) -> None:
    """The pass's one line, with its counts as fields for `--log-format json`."""
    log.info("synced %d invoices (%d written, %d attachments downloaded, %d unchanged, %d failed) in %.1fs; %s",
             report.listed, report.written, report.downloaded, report.unchanged, report.failed,
             report.seconds, f"cursor {report.cursor}" if report.complete else
             "cursor not advanced: the next sync covers this window again",
             extra=fields("sync", "synced" if report.complete else "incomplete", listed=report.listed,
                          written=report.written, downloaded=report.downloaded, unchanged=report.unchanged,
                          failed=report.failed, cursor=report.cursor, duration_seconds=report.seconds))


class _Sync:
    """The state of one sync: counters, the pool, and what was already handled in this window."""

    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, progress: ProgressFn | None,
                 cancel: threading.Event | None = None) -> None:
        self.config = config
        self.cancel = cancel
        self.abort = threading.Event()  # set when the sync itself is interrupted (Ctrl-C)
        self.client = client
        self.ledger = ledger
        self.outbox = Outbox(config.outbox.path)
        self.progress = progress
        self.lock = threading.Lock()
        self.done = self.total = 0
        self.written = self.downloaded = self.unchanged = 0
        self.failed: list[str] = []
        self.permanent = 0
        self.fatal: BaseException | None = None
        workers = max(1, config.outbox.concurrency)
        # Bounds memory on huge windows: the listing waits while this many invoices are in flight.
        self.slots = threading.BoundedSemaphore(max(200, 4 * workers))
        # `concurrency` API requests in flight, twice as many threads: one's disk work overlaps another's request.
        self.api_slots = threading.BoundedSemaphore(workers)
        self.pool = ThreadPoolExecutor(2 * workers, thread_name_prefix="mirror",
                                       initializer=profile.enter, initargs=(config.profile,))
        self.inflight: dict[str, Future] = {}

    def run(self, full: bool, clean: bool = True) -> SyncReport:
        started = time.monotonic()
        # Safe only under the sync lock: another sync's temporaries are not stale.
        if clean and (removed := self.outbox.clean_temporaries()):
            log.info("removed %d unfinished temporary file(s) left in the outbox by an interrupted sync", removed)
        old_cursor = self.ledger.cursor()
        updated_from = self._window_start(None if full else old_cursor)
        # Sent as the same string that becomes the cursor. Milliseconds, not seconds: an update
        # earlier in the current second belongs in this window, not only in the next one.
        updated_to = rfc3339(datetime.now(timezone.utc))
        log.debug("sync window: %s → %s", rfc3339(updated_from) if updated_from else "the beginning", updated_to)
        seen: dict[str, Any] = {}
        settled = False
        try:
            for _ in range(MAX_LISTINGS):
                if self._list(updated_from, updated_to, seen):
                    settled = True
                    break
                log.info("the invoice list changed while it was being read: reading the window again "
                         "so that no invoice is missed")
            self._uploaded_since(seen)
        except (KeyboardInterrupt, SystemExit):
            self.abort.set()  # skip what is queued rather than make the person wait for it
            raise
        finally:
            self._drain()
            if self.written or not self.outbox.exists(CSV_NAME):
                write_index(self.outbox, self.ledger)
        if self.fatal is not None:
            raise self.fatal
        complete = settled and not self.failed and not self._stopping()
        cursor = old_cursor
        if complete:
            self.outbox.flush()
            cursor = updated_to
            self.ledger.save_cursor(cursor, iso(time.time()))
        report = SyncReport(listed=len(seen), written=self.written, downloaded=self.downloaded,
                            unchanged=self.unchanged, failed=len(self.failed), cursor=cursor,
                            complete=complete, failed_ids=tuple(self.failed),
                            seconds=round(time.monotonic() - started, 3), permanent_failures=self.permanent)
        _log_report(report)
        return report

    def _window_start(self, cursor: str | None) -> datetime | None:
        """`cursor - overlap`; on a first (or `--full`) sync `[outbox] since`, else everything."""
        if cursor:
            try:
                return parse_timestamp(cursor, "the saved sync cursor") - OVERLAP
            except ConfigError:
                log.warning("the saved sync cursor %r is unreadable: syncing from the start", cursor)
        since = self.config.outbox.since
        return parse_timestamp(since, "`[outbox] since`") if since else None

    def _list(self, updated_from: datetime | None, updated_to: str, seen: dict[str, Any]) -> bool:
        """One pass over the window; True when the list stayed still while it was paged.

        Offset paging shifts when an invoice leaves the window between two pages (it was updated,
        so its `updated_at` is now past `updated_to`): the invoice after it slides onto a page
        already read. A changed `total_count`, or fewer distinct ids than it, reveals that; the
        caller then lists again, which costs only list requests since handled invoices are skipped.
        """
        totals: list[int] = []
        pass_ids: set[str] = set()
        for page in self.client.iter_pages(updated_from=updated_from and rfc3339(updated_from),
                                           updated_to=updated_to):
            for invoice in page.invoices:
                if self._stopping():
                    return True
                invoice_id = str(invoice.get("id"))
                pass_ids.add(invoice_id)
                version = invoice.get("updated_at")
                if invoice_id in seen and seen[invoice_id] == version:
                    continue  # listed twice (a page shift, or a second pass): already handled
                seen[invoice_id] = version
                self._handle(invoice_id, invoice)
            count = page.meta.get("total_count")  # counted once the page's invoices were handed out
            if isinstance(count, int):
                totals.append(count)
                with self.lock:
                    self.total = max(self.total, count, self.done)
        if self._stopping():
            return True
        return len(set(totals)) <= 1 and len(pass_ids) >= (totals[-1] if totals else 0)

    def _uploaded_since(self, seen: dict[str, Any]) -> None:
        """Recent uploads the listing missed (the analysis moved their `updated_at` past this window), by id."""
        for invoice_id in set(self.ledger.not_mirrored(time.time() - RECENT_UPLOADS_SECONDS)) - set(seen):
            if self._stopping():
                return
            try:
                invoice = self.client.get_supplier_invoice(invoice_id)
            except RequestRejected:  # deleted in Qonto since: nothing to mirror
                continue
            seen[invoice_id] = invoice.get("updated_at")
            self._handle(invoice_id, invoice)

    def _handle(self, invoice_id: str, invoice: dict) -> None:
        """Skip an invoice the outbox already has in this version, else queue it for the pool."""
        entry = self.ledger.mirror_entry(invoice_id)
        if self._is_current(entry, invoice):
            with self.lock:
                self.unchanged += 1
            self._tick()
            return
        self.slots.acquire()
        # The same invoice listed again in a newer version waits for the older one to finish, so
        # the newest version is the one left on disk (the pool is FIFO: no deadlock).
        previous = self.inflight.get(invoice_id)
        future = self.pool.submit(self._work, invoice_id, invoice, previous)
        self.inflight[invoice_id] = future

    def _is_current(self, entry: MirrorEntry | None, invoice: Mapping[str, Any]) -> bool:
        if entry is None or entry.updated_at != invoice.get("updated_at"):
            return False
        if not self.outbox.exists(f"{entry.stem}.json"):
            return False
        if invoice.get("attachment_id") and not (entry.file and self.outbox.exists(entry.file)):
            return False
        return entry.attachment_id == invoice.get("attachment_id")

    def _work(self, invoice_id: str, invoice: dict, previous: Future | None) -> None:
        try:
            if previous is not None:
                previous.exception()  # wait; its outcome was counted by its own task
            if not self._stopping():
                self._mirror(invoice_id, invoice)
        except FATAL as exc:
            with self.lock:
                self.fatal = self.fatal or exc
        except Exception as exc:  # one invoice's trouble must not stop the others
            trouble = FolderError.of(_outbox_words(self.config), exc) if isinstance(exc, OSError) else None
            if trouble is not None:  # the outbox's trouble stops them all: nothing more can be written
                with self.lock:
                    self.fatal = self.fatal or trouble
                return
            permanent = exc.permanent if isinstance(exc, AgentError) else not isinstance(exc, OSError)
            with self.lock:
                self.failed.append(invoice_id)
                self.permanent += permanent
            extra = fields("mirror", "failed", invoice_id=invoice_id, reason=str(exc))
            if isinstance(exc, (AgentError, OSError)):
                log.warning("invoice %s not mirrored this time: %s", invoice_id, exc, extra=extra)
            else:
                log.exception("invoice %s not mirrored this time", invoice_id, extra=extra)
        finally:
            self.slots.release()
            self._tick()

    def _mirror(self, invoice_id: str, invoice: dict) -> None:
        """Write one invoice: attachment file first, then the JSON pointing to it, then the ledger."""
        entry = self.ledger.mirror_entry(invoice_id)
        stem = entry.stem if entry else invoice_stem(invoice)
        attachment, file, downloaded = self._attachment(invoice, stem, entry)
        upload = self.ledger.by_invoice(invoice_id)
        source = ({"name": upload.file_name, "dropped_at": iso(upload.dropped_at)}
                  if upload is not None and upload.outcome is UploadOutcome.UPLOADED else None)
        self.outbox.write_json(f"{stem}.json", {
            "supplier_invoice": invoice,
            "attachment": attachment,
            "file": file,
            "source_file": source,
            "synced_at": iso(time.time()),
        })
        if entry and entry.file and entry.file != file:
            self.outbox.remove(entry.file)  # the attachment was removed or changed type
        self.ledger.upsert_mirror(MirrorEntry(invoice_id, stem, invoice.get("updated_at"), invoice.get("attachment_id"),
                                              attachment["sha256"] if attachment else None, file,
                                              csv_row(invoice, file)))
        with self.lock:
            self.written += 1
            self.downloaded += downloaded

    def _attachment(self, invoice: Mapping[str, Any], stem: str, entry: MirrorEntry | None,
                    ) -> tuple[dict | None, str | None, bool]:
        """(attachment object for the JSON, file name, downloaded?) for one invoice.

        Cheapest first: the file this outbox already holds for the same attachment id (known from
        our own JSON, checked by existence and size, not re-hashed); then a complete file already
        at the right name with the right size (left by a sync killed before its JSON was written),
        hashed once; only then a download.
        """
        attachment_id = invoice.get("attachment_id")
        if not attachment_id:
            return None, None, False
        if entry and entry.attachment_id == attachment_id and entry.file:
            known = self._known_attachment(entry)
            if known is not None and self._has_complete(entry.file, known) \
                    and known.get("sha256") == entry.attachment_sha256:
                return known, entry.file, False
        with self.api_slots:
            attachment = self.client.get_attachment(attachment_id)
        file = f"{stem}.{attachment_ext(attachment)}"
        recorded = entry if entry is not None and entry.file == file else None  # what the ledger says is there
        if (recorded is None or recorded.attachment_id == attachment_id) and self._has_complete(file, attachment):
            sha = sha256_file(self.outbox.path(file))
            if recorded is None or recorded.attachment_sha256 in (None, sha):
                return {**strip_urls(attachment), "sha256": sha}, file, False
        temp = self.outbox.temp_path(file)
        try:
            attachment, sha = self.client.download_attachment(attachment_id, temp, attachment=attachment)
            self.outbox.commit(temp, file)
        finally:
            temp.unlink(missing_ok=True)
        return {**strip_urls(attachment), "sha256": sha}, file, True

    def _known_attachment(self, entry: MirrorEntry) -> dict | None:
        """The attachment object this outbox wrote in the invoice's JSON last time, if readable."""
        try:
            data = json.loads(self.outbox.path(f"{entry.stem}.json").read_bytes())
            attachment = data.get("attachment")
            return attachment if isinstance(attachment, dict) else None
        except (OSError, ValueError, AttributeError):
            return None

    def _has_complete(self, file: str, attachment: Mapping[str, Any]) -> bool:
        """A file of the size Qonto announces is in place (it got there by an atomic rename)."""
        size = self.outbox.size(file)
        return size is not None and size == announced_size(attachment)

    def _stopping(self) -> bool:
        return self.fatal is not None or self.abort.is_set() or (self.cancel is not None and self.cancel.is_set())

    def _drain(self) -> None:
        """Wait for every queued invoice; the pool is shut down either way."""
        self.pool.shutdown(wait=True)

    def _tick(self) -> None:
        with self.lock:
            self.done += 1
            self.total = max(self.total, self.done)
            if self.progress is not None:
                self.progress(self.done, self.total)

