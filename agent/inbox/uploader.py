"""Send a batch, read each item's outcome, file each file away, record it in the ledger.

Order of operations is what makes a crash harmless: claim (rename) → hash → record the attempt →
send → record the outcome → move the file. Killed anywhere, the next start finds the file claimed
or still in the inbox, and the ledger tells whether its content already became an invoice.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from agent.config import Config
from agent.base.errors import (CredentialsError, HTMLAnswerError, PermissionDenied, QontoError,
                          RequestRejected)
from agent.base.times import iso
from agent.inbox.filing import Claim, Filing
from agent.base.fingerprint import forced_key, idempotency_key, sha256_file
from agent.inbox.hold import Hold
from agent.inbox.settle import Ready, Refused
from agent.qonto.bulk import UploadItem
from agent.qonto.client import QontoClient
from agent.state.ledger import Ledger, Upload

log = logging.getLogger(__name__)

RECONCILE_MARGIN_SECONDS = 300.0  # look for invoices created this long around an unanswered attempt


@dataclass
class Outcome:
    """What one pass over a batch did; `retry` holds the files released for a later attempt."""

    uploaded: list[tuple[str, str]] = field(default_factory=list)  # (file name, invoice id)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retry: list[Hold] = field(default_factory=list)
    paused: QontoError | None = None


@dataclass(frozen=True)
class _Prepared:
    claim: Claim
    sha256: str
    key: str
    size: int


class Uploader:
    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, filing: Filing) -> None:
        self.config = config
        self.client = client
        self.ledger = ledger
        self.filing = filing

    # --- the two entry points -------------------------------------------------------------------

    def refuse(self, refused: Refused) -> None:
        """A file that can never go as it is: into error/ with a sidecar, unsent."""
        claim = self.filing.claim(refused.path, time.time())
        if claim is None:
            return
        sha = key = None
        if refused.code not in ("symlink", "unreadable"):
            try:
                sha = sha256_file(claim.path)
                key = idempotency_key(sha)
            except OSError:
                pass
        errors = [{"code": refused.code, "detail": refused.detail}]
        self.ledger.record_local_error(sha, key, claim.name, refused.size, errors, refused.hint)
        self._to_error(claim, sha, key, errors, refused.hint)

    def send(self, batch: list[Ready], *, force: bool = False) -> Outcome:
        """Claim the files of a batch and upload them; files already claimed go through `send_claims`."""
        claims = [c for c in (self.filing.claim(r.path, r.dropped_at) for r in batch) if c]
        return self.send_claims(claims, force=force)

    def send_claims(self, claims: list[Claim], *, force: bool = False) -> Outcome:
        outcome = Outcome()
        prepared: list[_Prepared] = []
        for claim in claims:
            try:
                size = claim.path.stat().st_size
                sha = sha256_file(claim.path)
            except OSError as exc:
                hint = "Make the file readable by the user running qonto-agent, then move it back into the inbox."
                errors = [{"code": "unreadable", "detail": f"the file could not be read ({exc.strerror or exc})"}]
                self.ledger.record_local_error(None, None, claim.name, 0, errors, hint)
                self._to_error(claim, None, None, errors, hint)
                outcome.failed.append(claim.name)
                continue
            key = forced_key(sha, f"{time.time():.6f}") if force else idempotency_key(sha)
            prepared.append(_Prepared(claim, sha, key, size))

        to_send: dict[str, _Prepared] = {}
        twins: list[_Prepared] = []
        for item in prepared:
            if item.sha256 in to_send:
                twins.append(item)  # the same bytes twice in one batch: send once, then file as duplicate
            elif not self._settled_before(item, force, outcome):
                to_send[item.sha256] = item
        if to_send:
            self._upload(list(to_send.values()), outcome)
        for twin in twins:
            if not self._settled_before(twin, False, outcome):
                outcome.retry.append(self._release(twin, "waiting for its identical twin to be uploaded"))
        return outcome

    # --- duplicates and reconciliation ------------------------------------------------------------

    def _settled_before(self, item: _Prepared, force: bool, outcome: Outcome) -> bool:
        """True when this content is already an invoice (the file is then filed as done)."""
        known = self.ledger.lookup(item.sha256)
        if known is None or force:
            return False
        invoice_id = known.invoice_id if known.outcome == "uploaded" else None
        if known.outcome == "sending" and self._key_expired(known):
            invoice_id = self._reconcile(known, item)
        if not invoice_id:
            return False
        when = datetime.fromtimestamp(known.finished_at or time.time(), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        log.info("%s: already uploaded as invoice %s on %s; filed in done/ without sending it again "
                 "(use `qonto-agent upload --force FILE` to send it anyway)", item.claim.name, invoice_id, when)
        self.filing.to_done(item.claim)
        outcome.duplicates.append((item.claim.name, invoice_id))
        return True

    def _key_expired(self, known: Upload) -> bool:
        window = self.config.qonto.idempotency_window_seconds
        return time.time() - (known.last_attempt_at or 0) > window * 0.8

    def _reconcile(self, known: Upload, item: _Prepared) -> str | None:
        """An attempt never answered and Qonto has forgotten its key: find the invoice it may have made.

        Adopt an invoice created around the attempt with the same file name and size, so a resend
        does not create a twin. Returns its id, recorded as uploaded, or None to send again.
        """
        start = (known.first_attempt_at or known.last_attempt_at or time.time()) - RECONCILE_MARGIN_SECONDS
        end = (known.last_attempt_at or time.time()) + RECONCILE_MARGIN_SECONDS
        try:
            for invoice in self.client.iter_supplier_invoices(created_from=iso(start), created_to=iso(end)):
                if invoice.get("file_name") != item.claim.name or self.ledger.by_invoice(invoice["id"]):
                    continue
                attachment_id = invoice.get("attachment_id")
                if attachment_id and str(self.client.get_attachment(attachment_id).get("file_size")) != str(item.size):
                    continue
                log.info("%s: an earlier attempt without an answer had created invoice %s; adopting it",
                         item.claim.name, invoice["id"])
                self.ledger.record_uploaded(item.sha256, invoice["id"])
                return invoice["id"]
        except QontoError as exc:
            log.warning("%s: could not check whether an unanswered attempt created an invoice (%s); "
                        "sending it again", item.claim.name, exc)
        return None

    # --- sending --------------------------------------------------------------------------------

    def _upload(self, items: list[_Prepared], outcome: Outcome) -> None:
        for item in items:
            self.ledger.begin_attempt(item.sha256, item.key, item.claim.name, item.size, item.claim.dropped_at)
        uploads = [UploadItem(item.claim.path, item.key, item.claim.name,
                              mimetypes.guess_type(item.claim.name)[0] or "application/octet-stream")
                   for item in items]
        try:
            results = self.client.upload_bulk(uploads)
        except (CredentialsError, PermissionDenied, HTMLAnswerError) as exc:
            for item in items:
                self.ledger.finish_attempt(item.sha256, f"failed: {exc.__class__.__name__}")
                outcome.retry.append(self._release(item, f"paused: {exc}"))
            outcome.paused = exc
            return
        except RequestRejected as exc:
            if len(items) > 1:  # one item spoiled the request: halve until it stands alone
                half = len(items) // 2
                self._upload(items[:half], outcome)
                self._upload(items[half:], outcome)
                return
            self._reject(items[0], [{"code": exc.code or f"http_{exc.status}", "detail": exc.detail or str(exc)}],
                         outcome)
            return
        except QontoError as exc:  # transient after the client's own retries
            for item in items:
                self.ledger.finish_attempt(item.sha256, "failed: transient")
                outcome.retry.append(self._release(item, f"waiting to retry: {exc}"))
            log.warning("upload of %d file(s) failed for now (%s); they stay in the inbox and will be retried",
                        len(items), exc)
            return

        by_key = {item.key: item for item in items}
        for result in results:
            item = by_key[result.item.idempotency_key]
            if result.outcome == "created" and result.invoice:
                invoice_id = result.invoice["id"]
                self.ledger.record_uploaded(item.sha256, invoice_id)
                self.filing.to_done(item.claim)
                outcome.uploaded.append((item.claim.name, invoice_id))
                log.info("uploaded %s as invoice %s", item.claim.name, invoice_id)
            elif result.outcome == "rejected":
                self._reject(item, [{"code": e.get("code"), "detail": e.get("detail")} for e in result.errors],
                             outcome)
            else:
                self.ledger.finish_attempt(item.sha256, "unknown")
                detail = "; ".join(str(e.get("detail") or e.get("code")) for e in result.errors) or "no answer"
                outcome.retry.append(self._release(item, f"waiting to retry: Qonto gave no clear answer ({detail})"))

    def _reject(self, item: _Prepared, errors: list[dict], outcome: Outcome) -> None:
        hint = ("Qonto refused this file as an invoice: check that it opens and is a PDF, PNG or JPEG "
                "under 10 MB, then move it back into the inbox to try again.")
        self.ledger.record_rejected(item.sha256, errors, hint)
        self._to_error(item.claim, item.sha256, item.key, errors, hint)
        outcome.failed.append(item.claim.name)

    def _to_error(self, claim: Claim, sha: str | None, key: str | None, errors: list[dict], hint: str) -> None:
        sidecar = {"file": claim.name, "sha256": sha, "idempotency_key": key, "errors": errors,
                   "failed_at": iso(time.time()), "hint": hint}
        target = self.filing.to_error(claim, sidecar)
        reason = "; ".join(str(e.get("detail") or e.get("code")) for e in errors)
        log.warning("rejected %s: %s. %s (see %s)", claim.name, reason, hint, target.name + ".error.json")

    def _release(self, item: _Prepared, why: str) -> Hold:
        """Put the file back in the inbox, held back by the back-off for its number of attempts."""
        known = self.ledger.lookup(item.sha256)
        path = self.filing.release(item.claim) or item.claim.path
        return Hold.after_attempts(path, known.attempts if known else 1, why, item.claim.dropped_at)

