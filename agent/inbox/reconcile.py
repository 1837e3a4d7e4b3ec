"""Is this content already an invoice in Qonto? Decided by its bytes, never by name or size.

In this order, each answered by SHA-256:
- the ledger: this content was uploaded (or adopted) before;
- the outbox mirror: it records the hash of every attachment in the organization (uploaded by
  anyone, by any means), as fresh as the last sync;
- Qonto itself, when an attempt of ours went unanswered and its first attempt is older than 80% of
  Qonto's idempotency-key window: invoices created around it under the same file name are
  candidates, and one is adopted only when its attachment's bytes hash the same (the mirror's
  recorded hash when it has that attachment, else a download into the claim folder). When none
  does, the key window starts again with the next attempt.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from agent.base.times import iso
from agent.inbox.prepare import Prepared
from agent.qonto.client import QontoClient
from agent.state.ledger import Ledger, Upload, UploadOutcome

log = logging.getLogger(__name__)

RECONCILE_MARGIN_SECONDS = 300.0  # look for invoices created this long around the unanswered attempts
KEY_WINDOW_SHARE = 0.8  # resend with the same key only within this share of Qonto's window


@dataclass(frozen=True)
class Known:
    """The invoice that already holds a file's content, and how that is known, in words."""

    invoice_id: str
    words: str
    mirrored: bool = False  # known from the mirror's hashes: the ledger is told when it is acted on


class Reconciler:
    def __init__(self, client: QontoClient, ledger: Ledger, scratch: Path, key_window_seconds: float) -> None:
        self.client = client
        self.ledger = ledger
        self.scratch = scratch  # a folder of ours (the claim folder) for candidate downloads
        self.key_margin = key_window_seconds * KEY_WINDOW_SHARE

    def already(self, item: Prepared) -> Known | None:
        """The invoice holding this content, or None when it is to be sent (again).

        Raises QontoError when Qonto must be asked and cannot be: the file must not be sent then.
        """
        known, upload = self.credited(item.sha256)
        if known is not None:
            if known.mirrored:
                self.ledger.record_found(item.sha256, item.key, item.claim.label, item.size, item.claim.dropped_at,
                                         known.invoice_id)
            return known
        if not self.asks_qonto(upload):
            return None
        assert upload is not None
        invoice_id = self._find_attempt(upload, item.claim.label)
        if invoice_id is None:
            self.ledger.restart_window(item.sha256)
            log.info("%s: no earlier attempt without an answer had reached Qonto; sending it again", item.claim.name)
            return None
        log.info("%s: an earlier attempt without an answer had created invoice %s (the same bytes); adopting it",
                 item.claim.name, invoice_id)
        self.ledger.record_uploaded(item.sha256, invoice_id)
        return Known(invoice_id, f"uploaded as invoice {invoice_id}")

    def credited(self, sha256: str) -> tuple[Known | None, Upload | None]:
        """Read only (`upload --dry-run` too): the invoice the ledger or the mirror credit with this
        content, and the ledger's row for it (an attempt without an answer may need Qonto asked)."""
        known = self.ledger.lookup(sha256)
        if known is not None and known.outcome is UploadOutcome.UPLOADED and known.invoice_id:
            when = datetime.fromtimestamp(known.finished_at or time.time(), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            return Known(known.invoice_id, f"already uploaded as invoice {known.invoice_id} on {when}"), known
        mirrored = self.ledger.mirror_with_content(sha256)
        if mirrored is not None and self._free_for(mirrored.invoice_id, sha256):
            synced = self.ledger.last_sync_at() or "the last outbox sync"
            return Known(mirrored.invoice_id, f"already in Qonto as invoice {mirrored.invoice_id} (the same bytes, "
                                              f"as of the outbox sync at {synced})", mirrored=True), known
        return None, known

    def asks_qonto(self, upload: Upload | None) -> bool:
        """Whether Qonto must be asked before sending: an attempt of ours went unanswered and Qonto
        may forget its key soon."""
        return upload is not None and upload.outcome is UploadOutcome.SENDING and self.key_expired(upload)

    def key_expired(self, known: Upload) -> bool:
        """Qonto may forget the key soon: the first attempt of this window is older than the margin."""
        return time.time() - (known.first_attempt_at or known.last_attempt_at or 0) > self.key_margin

    def _free_for(self, invoice_id: str, sha256: str) -> bool:
        """The ledger credits this invoice to no other content."""
        credited = self.ledger.by_invoice(invoice_id)
        return credited is None or credited.sha256 == sha256

    def _find_attempt(self, known: Upload, file_name: str) -> str | None:
        start = (known.first_attempt_at or known.last_attempt_at or time.time()) - RECONCILE_MARGIN_SECONDS
        end = time.time() + RECONCILE_MARGIN_SECONDS
        for invoice in self.client.iter_supplier_invoices(created_from=iso(start), created_to=iso(end)):
            invoice_id = invoice.get("id")
            if (invoice_id and invoice.get("attachment_id") and invoice.get("file_name") == file_name
                    and self._free_for(invoice_id, known.sha256) and self._content_of(invoice) == known.sha256):
                return invoice_id
        return None

    def _content_of(self, invoice: dict) -> str:
        """The SHA-256 of an invoice's attachment: recorded by the mirror, else downloaded."""
        attachment_id = str(invoice["attachment_id"])
        entry = self.ledger.mirror_entry(str(invoice["id"]))
        if entry is not None and entry.attachment_id == attachment_id and entry.attachment_sha256:
            return entry.attachment_sha256
        temp = self.scratch / f".candidate-{uuid.uuid4().hex[:8]}"
        try:
            return self.client.download_attachment(attachment_id, temp)[1]
        finally:
            temp.unlink(missing_ok=True)
