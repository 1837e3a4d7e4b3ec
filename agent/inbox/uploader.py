"""Send a batch, read each item's outcome, file each file away, record it in the ledger.

Order of operations is what makes a crash harmless: claim (rename) → hash → record the attempt →
send → record the outcome → move the file. Killed anywhere, the next start finds the file claimed
or still in the inbox, and the ledger tells whether its content already became an invoice.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent.base import beneath
from agent.base.events import fields
from agent.base.errors import (CredentialsError, FolderError, HTMLAnswerError, KeyWindowPassed, PermissionDenied, QontoError,
                               RequestRejected)
from agent.base.fingerprint import idempotency_key, sha256_stream
from agent.base.text import printable
from agent.base.times import iso
from agent.config import Config
from agent.inbox.filing import Claim, Filing
from agent.inbox.hold import Hold
from agent.inbox.prepare import Back, Prepared, prepare
from agent.inbox.reasons import Refusal
from agent.inbox.reconcile import Reconciler
from agent.inbox.rules import Rules
from agent.inbox.settle import Ready, Refused
from agent.inbox.trouble import LEDGER, FolderTrouble
from agent.qonto.bulk import UploadItem, after_refusal, named_items
from agent.qonto.client import QontoClient
from agent.state.ledger import AttemptOutcome, Ledger

log = logging.getLogger(__name__)

UPLOADS_IN_FLIGHT = 2  # one batch's round trip overlaps the next one's, within Qonto's rate limits


@dataclass
class Outcome:
    """What one pass over a batch did; `retry` holds the files released for a later attempt."""

    uploaded: list[tuple[str, str]] = field(default_factory=list)  # (file name, invoice id)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retry: list[Hold] = field(default_factory=list)
    paused: QontoError | None = None


class Uploader:
    def __init__(self, config: Config, client: QontoClient, ledger: Ledger, filing: Filing) -> None:
        self.config, self.client, self.ledger, self.filing = config, client, ledger, filing
        self.rules = Rules(config.inbox.path, config.inbox.patterns, config.inbox.recursive)
        self._take_attempts: dict[Path, int] = {}  # files that could not be claimed, and how often
        self.trouble = FolderTrouble()  # done/ or error/ refusing every write pauses uploads
        self.on_error: Callable[[str, str, str], None] | None = None  # told (name, reason, hint) of a file in error/
        self.reconciler = Reconciler(client, ledger, filing.own, config.qonto.idempotency_window_seconds)
        self._travelling = threading.Semaphore(UPLOADS_IN_FLIGHT)  # batches prepared meanwhile wait here

    # --- the two entry points -------------------------------------------------------------------

    def refuse(self, refused: Refused) -> Hold | None:
        """A file that can never go as it is: into error/ with a sidecar, unsent (a Hold if it
        cannot even be taken now)."""
        try:
            claim = self.filing.claim(refused.path, time.time())
        except OSError as exc:
            return self._cannot_take(refused.path, time.time(), exc)
        if claim is None:
            return None
        self._refuse(claim, refused.size, refused.refusal)
        return None

    def send(self, batch: list[Ready], *, force: bool = False) -> Outcome:
        """Claim the files of a batch and upload them; files already claimed go through `send_claims`."""
        outcome = Outcome()
        claims = []
        for ready in batch:
            try:
                claim = self.filing.claim(ready.path, ready.dropped_at, ready.identity)
            except OSError as exc:  # this file's trouble (a name too long, another device): it waits
                outcome.retry.append(self._cannot_take(ready.path, ready.dropped_at, exc))
                continue
            if claim is not None:
                claims.append(claim)
        return self.send_claims(claims, force=force, outcome=outcome)

    def send_claims(self, claims: list[Claim], *, force: bool = False, outcome: Outcome | None = None) -> Outcome:
        """Check, snapshot and send claimed files: every claim passes the same checks (`prepare`)."""
        outcome = outcome or Outcome()
        prepared: list[Prepared] = []
        try:
            for claim in claims:
                ready = prepare(claim, self.filing.own, self.rules, force=force, salt=f"{time.time():.6f}")
                if isinstance(ready, Prepared):
                    prepared.append(ready)
                elif isinstance(ready, Back):
                    log.info("%s: not sent now (%s); it goes back to the inbox to settle again", claim.name, ready.why,
                             extra=_fields(claim, "waiting", None, None, reason=ready.why))
                    self._back(claim, ready.why, outcome)
                elif isinstance(ready, Refusal):
                    self._refuse(claim, 0, ready)
                    outcome.failed.append(claim.name)
            self._send_prepared(prepared, force, outcome)
        except FolderError as exc:  # the ledger's disk is full: what it could not record stays claimed, unsent
            self.trouble.refused(LEDGER, exc)
        else:
            if claims:
                self.trouble.worked(LEDGER)
        finally:
            for item in prepared:
                item.close()
        return outcome

    def _send_prepared(self, prepared: list[Prepared], force: bool, outcome: Outcome) -> None:
        to_send: dict[str, Prepared] = {}
        twins: list[Prepared] = []
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

    # --- duplicates and reconciliation ------------------------------------------------------------

    def _settled_before(self, item: Prepared, force: bool, outcome: Outcome) -> bool:
        """True when this file is not to be sent now: its content is already an invoice (the file is
        then filed as done), or whether it is cannot be known yet (the file then waits)."""
        if force:
            return False
        try:
            known = self.reconciler.already(item)
        except (QontoError, OSError) as exc:  # OSError: no room in the claim folder for a candidate's bytes
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            outcome.retry.append(self._release(item, f"waiting to retry: could not check whether an earlier "
                                                     f"attempt reached Qonto ({why})"))
            return True
        if known is None:
            return False
        if self._file_sent(item, outcome):
            log.info("%s: %s; filed in done/ without sending it again (use `qonto-agent upload --force FILE` to "
                     "send it anyway)", item.claim.name, known.words,
                     extra=_fields(item.claim, "already_uploaded", item.sha256, item.key, invoice_id=known.invoice_id,
                                   reason=known.words))
            outcome.duplicates.append((item.claim.name, known.invoice_id))
        return True

    # --- sending --------------------------------------------------------------------------------

    def _upload(self, items: list[Prepared], outcome: Outcome) -> None:
        for item in items:
            self.ledger.begin_attempt(item.sha256, item.key, item.claim.label, item.size, item.claim.dropped_at)
        # Qonto's idempotency-key window started with the first attempt of each item.
        first = min(self.ledger.lookup(item.sha256).first_attempt_at or time.time() for item in items)
        uploads = [UploadItem(item.claim.path, item.key, item.claim.label, item.kind.content_type, item.snapshot)
                   for item in items]
        started = time.monotonic()
        try:
            with self._travelling:
                results = self.client.upload_bulk(uploads, resend_until=first + self.reconciler.key_margin)
        except KeyWindowPassed:  # a long outage or a paused process: look before sending again
            for item in items:
                self.ledger.finish_attempt(item.sha256, AttemptOutcome.FAILED, "key window")
            again = [item for item in items if not self._settled_before(item, False, outcome)]
            if again:
                self._upload(again, outcome)
            return
        except (CredentialsError, PermissionDenied, HTMLAnswerError) as exc:
            for item in items:
                self.ledger.finish_attempt(item.sha256, AttemptOutcome.FAILED, exc.__class__.__name__)
                outcome.retry.append(self._release(item, f"paused: {exc}"))
            outcome.paused = exc
            return
        except RequestRejected as exc:  # refused as a whole: file the items it names, send the rest again
            refused, resend = after_refusal(len(items), named_items(uploads, exc.pointers))
            errors = [{"code": exc.code or f"http_{exc.status}", "detail": exc.detail or str(exc)}]
            for i in refused:
                self._reject(items[i], errors, outcome, _since(started))
            for part in resend:
                self._upload([items[i] for i in part], outcome)
            return
        except QontoError as exc:  # transient after the client's own retries
            for item in items:
                self.ledger.finish_attempt(item.sha256, AttemptOutcome.FAILED, "transient")
                outcome.retry.append(self._release(item, f"waiting to retry: {exc}"))
            log.warning("upload of %d file(s) failed for now (%s); they stay in the inbox and will be retried",
                        len(items), exc)
            return

        duration = _since(started)
        by_key = {item.key: item for item in items}
        for result in results:
            item = by_key[result.item.idempotency_key]
            if result.outcome == "created" and result.invoice:
                invoice_id = result.invoice["id"]
                self.ledger.record_uploaded(item.sha256, invoice_id)
                self._file_sent(item, outcome)
                outcome.uploaded.append((item.claim.name, invoice_id))
                log.info("uploaded %s as invoice %s", item.claim.name, invoice_id,
                         extra=_fields(item.claim, "uploaded", item.sha256, item.key, invoice_id=invoice_id,
                                       duration_seconds=duration))
            elif result.outcome == "rejected":
                self._reject(item, [{"code": e.get("code"), "detail": e.get("detail")} for e in result.errors],
                             outcome, duration)
            else:
                self.ledger.finish_attempt(item.sha256, AttemptOutcome.UNKNOWN)
                detail = "; ".join(str(e.get("detail") or e.get("code")) for e in result.errors) or "no answer"
                outcome.retry.append(self._release(item, f"waiting to retry: Qonto gave no clear answer ({detail})"))

    def _reject(self, item: Prepared, errors: list[dict], outcome: Outcome, duration: float) -> None:
        hint = ("Qonto refused this file as an invoice: check that it opens and is a PDF, PNG or JPEG "
                "under 10 MB, then move it back into the inbox to try again.")
        self.ledger.record_rejected(item.sha256, errors, hint)
        self._to_error(item.claim, item.sha256, item.key, errors, hint,
                       _fields(item.claim, "rejected", item.sha256, item.key, duration_seconds=duration))
        outcome.failed.append(item.claim.name)

    def _refuse(self, claim: Claim, size: int, refusal: Refusal) -> None:
        """Into error/ unsent, with the refusal's words and the file's SHA-256 in the sidecar and the ledger."""
        sha = _sha_of(claim, self.filing.own) if refusal.code != "unreadable" else None
        key = idempotency_key(sha) if sha else None
        errors = [{"code": refusal.code, "detail": refusal.detail}]
        self.ledger.record_local_error(sha, key, claim.label, size, errors, refusal.hint)
        self._to_error(claim, sha, key, errors, refusal.hint, _fields(claim, "refused", sha, key))

    def _to_error(self, claim: Claim, sha: str | None, key: str | None, errors: list[dict], hint: str,
                  extra: dict) -> None:
        """Into error/ with its sidecar; `extra` (the log fields) says whether Qonto or the agent refused it."""
        sidecar = {"file": claim.label, "sha256": sha, "idempotency_key": key, "errors": errors,
                   "failed_at": iso(time.time()), "hint": hint}
        try:
            target = self.filing.to_error(claim, sidecar)
        except OSError as exc:
            self._cannot_file(claim, "error/", exc)
            return
        self.trouble.worked("error/")
        reason = "; ".join(str(e.get("detail") or e.get("code")) for e in errors)
        extra["fields"]["reason"] = reason
        log.warning("rejected %s: %s. %s (see %s)", claim.name, reason, hint, target.name + ".error.json", extra=extra)
        if self.on_error:
            self.on_error(target.name, reason, hint)

    def _file_sent(self, item: Prepared, outcome: Outcome) -> bool:
        """File a sent (or already uploaded) file in done/; if the original changed after it was
        copied, done/ gets the bytes Qonto holds, and the changed file goes back to settle again.
        False when done/ did not take it (it waits in the claim folder)."""
        try:
            if not item.changed():
                filed = self.filing.to_done(item.claim)
                self.trouble.worked("done/")
                if filed.name != item.claim.name:
                    log.info("%s is filed in done/ as %s (that name was taken there, or too long)",
                             item.claim.name, filed.name)
                return True
            filed = self.filing.file_snapshot(item.claim, item.snapshot)
        except OSError as exc:
            self._cannot_file(item.claim, "done/", exc)
            return False
        self.trouble.worked("done/")
        log.warning("%s changed while it was being uploaded: the version Qonto received is filed as %s, and the "
                    "changed file goes back to the inbox to be uploaded once it settles", item.claim.name, filed.name)
        self._back(item.claim, "it changed while it was being uploaded", outcome)
        return True

    def _back(self, claim: Claim, why: str, outcome: Outcome) -> None:
        """Put a claim back in the inbox to settle again from the start (no back-off: nothing failed)."""
        path = self._give_back(claim)
        if path is not None:
            outcome.retry.append(Hold(path, time.monotonic(), why, claim.dropped_at))

    def _release(self, item: Prepared, why: str) -> Hold:
        """Put the file back in the inbox, held back by the back-off for its number of attempts."""
        known = self.ledger.lookup(item.sha256)
        path = self._give_back(item.claim) or item.claim.path
        log.info("%s waits in the inbox: %s", item.claim.name, why, extra=_fields(item.claim, "waiting", item.sha256,
                                                                                 item.key, reason=why))
        return Hold.after_attempts(path, known.attempts if known else 1, why, item.claim.dropped_at)

    def _give_back(self, claim: Claim) -> Path | None:
        """Release a claim; if the inbox refuses it, it stays claimed and is tried again at the next rescan."""
        try:
            return self.filing.release(claim)
        except OSError as exc:
            log.warning("%s could not be put back in the inbox (%s); it waits in %s and is tried again at the "
                        "next rescan", claim.name, exc.strerror or exc, self.filing.processing)
            return None

    def _cannot_file(self, claim: Claim, folder: str, exc: OSError) -> None:
        """The file waits in the claim folder; a folder refusing every write pauses uploads too."""
        if self.trouble.failed(folder, exc):
            log.info("%s waits in the claim folder until %s can be written", claim.name, folder)
        else:
            log.warning("%s could not be filed in %s (%s); it waits in the claim folder and is filed at the next "
                        "rescan", claim.name, folder, exc.strerror or exc)

    def _cannot_take(self, path: Path, dropped_at: float, exc: OSError) -> Hold:
        """A file that cannot be claimed stays where it is, with the reason, under a growing back-off."""
        self._take_attempts[path] = attempts = self._take_attempts.get(path, 0) + 1
        why = _TAKE_TROUBLE.get(exc.errno, "it could not be taken ({})").format(exc.strerror or exc)
        log.warning("%s stays in the inbox: %s", path.name, why,
                    extra=fields("upload", "waiting", file=printable(str(path.relative_to(self.config.inbox.path))),
                                 reason=why))
        return Hold.after_attempts(path, attempts, f"waiting to retry: {why}", dropped_at)


_TAKE_TROUBLE = {
    errno.EXDEV: "it is on another disk or share mounted inside the inbox: move it into the inbox itself",
    errno.ENAMETOOLONG: "its name or folder path is too long: shorten it or move it higher up",
    errno.EACCES: "the inbox cannot be written ({}): let the user running qonto-agent write it",
    errno.EROFS: "the inbox is read-only ({}): make it writable",
    errno.ENOSPC: "the disk is full ({}): free some space",
}


def _fields(claim: Claim, outcome: str, sha: str | None, key: str | None, **values: object) -> dict:
    """A file's log fields (`base.events`): its path in the inbox, SHA-256 and idempotency key."""
    return fields("upload", outcome, file=printable(str(claim.rel)), sha256=sha, idempotency_key=key, **values)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _sha_of(claim: Claim, own: Path) -> str | None:
    """The SHA-256 of a claimed file for its sidecar, read without following links; None if unreadable."""
    try:
        fd, _ = beneath.open_file(own, claim.path.relative_to(own))
    except OSError:
        return None
    with open(fd, "rb", buffering=0) as fh:
        try:
            return sha256_stream(fh)
        except OSError:
            return None
