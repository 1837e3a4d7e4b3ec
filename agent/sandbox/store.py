"""The organization's invoices, attachments and idempotency keys, kept in memory: what the sandbox
remembers between requests. The list endpoint's query is read in `listing.py`."""

from __future__ import annotations

import copy
import hashlib
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.samples import page_pdf
from agent.sandbox import invoices as shapes
from agent.sandbox.listing import ListQuery, parse_rfc3339, sort_key
from agent.sandbox.multipart import FilePart

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_SEED_STATUSES = ("to_review", "to_review", "to_approve", "to_pay", "paid", "archived")
# File names users really produce; the mirror must cope with every one of them.
_ODD_NAMES = (
    "facture été 2026.pdf",
    "scans/2026/../INV 7.pdf",
    "..pdf",
    "reçu: n°12?.pdf",
    "日本語の請求書.pdf",
)


@dataclass(frozen=True)
class Item:
    """One grouped bulk item after the checks that need no shared state."""

    key: str | None
    file: FilePart | None
    attachment_id: str | None
    content_type: str | None
    error: tuple[str, str] | None  # (code, detail)


@dataclass(frozen=True)
class Attachment:
    """A stored file: what `GET /v2/attachments/{id}` describes and storage serves."""

    id: str
    created_at: str
    file_name: str
    content_type: str
    size: int
    sha256: str
    data: bytes | None  # None when the sandbox keeps no file contents


@dataclass(frozen=True)
class _KeyEntry:
    """An idempotency key's successful creation, replayed while the key window lasts."""

    invoice_id: str
    answer: dict[str, Any]  # the invoice as first answered: what a replay returns
    created: float  # time.monotonic() of the creation


def _format_ms(ms: int) -> str:
    """Epoch milliseconds → RFC 3339 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_ms(moment: datetime) -> int:
    """A datetime (naive means UTC) as epoch milliseconds, the unit the clock and seeding count in."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _item_error(code: str, detail: str, key: str | None) -> dict[str, Any]:
    """A bulk item error; the pointer names the item's idempotency key when there is one."""
    pointer = f"/supplier_invoices/idempotency_key/{key}/file" if key else "/supplier_invoices/idempotency_key"
    return {"code": code, "detail": detail, "source": {"pointer": pointer}}


def _tiny_pdf(text: str, size: int, rng: random.Random) -> bytes:
    """A valid one-page PDF showing `text`, padded with random comment lines to about `size` bytes."""
    padding = b"".join(b"% " + rng.randbytes(32).hex().encode() + b"\n" for _ in range(max(0, size - 700) // 67))
    return page_pdf([(72, 720, 14, text)], padding)


class _Clock:
    """Issues timestamps in epoch milliseconds, each strictly later than any issued or observed."""

    def __init__(self) -> None:
        self._last_ms = 0

    def next(self, at: float | None = None) -> str:
        """A distinct millisecond, never ahead of the wall clock, as a real server's would be: a
        client that lists up to "now" must see every update made before it asked. `at` (epoch
        seconds, past) stamps an update that happened then, or as soon after it as is still free."""
        if at is not None and int(at * 1000) > self._last_ms:
            self._last_ms = int(at * 1000)
            return _format_ms(self._last_ms)
        now_ms = int(time.time() * 1000)
        while now_ms <= self._last_ms:
            time.sleep(0.0005)
            now_ms = int(time.time() * 1000)
        self._last_ms = now_ms
        return _format_ms(now_ms)

    def observe(self, ms: int) -> None:
        """Never issue a time at or before `ms` (seeded invoices carry their own times)."""
        self._last_ms = max(self._last_ms, ms)


class Store:
    """The organization's invoices, attachments and idempotency keys, all behind `self.lock`."""

    def __init__(self, rng: random.Random) -> None:
        self.lock = threading.RLock()
        self._rng = rng
        self._clock = _Clock()
        self.organization_id = self.new_id()
        self._invoices: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, Attachment] = {}
        self._keys: dict[str, _KeyEntry] = {}
        self._unanalysed: dict[str, float] = {}  # invoice id → time.monotonic() of creation

    def new_id(self) -> str:
        """A UUID4 drawn from the sandbox's random generator (reproducible with a seed)."""
        with self.lock:
            return shapes.new_id(self._rng)

    # -- analysis ------------------------------------------------------------------------------

    def analyse_due(self, delay: float) -> None:
        """Analyse, in creation order, every invoice created at least `delay` seconds ago, stamped
        when its analysis finished (not when a request noticed it): as at Qonto, where the analysis
        runs on its own, a list up to "now" shows every invoice analysed before it was asked for."""
        with self.lock:
            now = time.monotonic()
            for invoice_id, created in list(self._unanalysed.items()):
                if now - created < delay:
                    break
                del self._unanalysed[invoice_id]
                invoice = self._invoices[invoice_id]
                invoice.update(shapes.analysis(self._rng, invoice["created_at"][:10], einvoice=invoice["is_einvoice"]))
                finished = time.time() - (now - created - delay)
                invoice["analyzed_at"] = invoice["updated_at"] = self._clock.next(at=finished)

    # -- uploads -------------------------------------------------------------------------------

    def upload(
        self, items: list[Item], *, source: str | None, meta: Any, key_window: float, keep_files: bool
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Create or replay each item; return (invoices in item order, item errors)."""
        invoices: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with self.lock:
            for item in items:
                entry = self._keys.get(item.key) if item.key else None
                if entry is not None and time.monotonic() - entry.created < key_window:
                    invoices.append(copy.deepcopy(entry.answer))
                    continue
                error = item.error or self._attachment_error(item)
                if error is not None:
                    errors.append(_item_error(*error, item.key))
                    continue
                invoices.append(self._create(item, source=source, meta=meta, keep_files=keep_files))
        return invoices, errors

    def _attachment_error(self, item: Item) -> tuple[str, str] | None:
        if item.attachment_id is not None and item.attachment_id not in self._attachments:
            return "invalid", f"attachment {item.attachment_id} does not exist"
        return None

    def _create(self, item: Item, *, source: str | None, meta: Any, keep_files: bool) -> dict[str, Any]:
        """Create one invoice (and its attachment) for a checked item; remember its key."""
        now = self._clock.next()
        if item.attachment_id is not None:
            attachment = self._attachments[item.attachment_id]
        else:
            assert item.file is not None and item.content_type is not None
            attachment = self._store_attachment(item.file, item.content_type, now, keep_files)
        invoice = shapes.new_invoice(self.new_id(), self.organization_id, attachment.file_name, attachment.id, now,
                                     source_type=shapes.DIRECT_UPLOAD, source=source or shapes.API_SOURCE)
        invoice["meta"] = copy.deepcopy(meta)
        self._invoices[invoice["id"]] = invoice
        self._unanalysed[invoice["id"]] = time.monotonic()
        answer = copy.deepcopy(invoice)
        assert item.key is not None
        self._keys[item.key] = _KeyEntry(invoice["id"], answer, time.monotonic())
        return copy.deepcopy(answer)

    def _store_attachment(self, file: FilePart, content_type: str, now: str, keep_files: bool) -> Attachment:
        attachment = Attachment(
            id=self.new_id(),
            created_at=now,
            file_name=file.filename,
            content_type=content_type,
            size=len(file.data),
            sha256=hashlib.sha256(file.data).hexdigest(),
            data=file.data if keep_files else None,
        )
        self._attachments[attachment.id] = attachment
        return attachment

    # -- seeding and editing -------------------------------------------------------------------

    def seed(self, n: int, *, without_attachment: float, start: datetime, end: datetime) -> list[str]:
        """Add `n` analysed invoices with `updated_at` spread over [start, end]; return their ids."""
        step_ms = (to_ms(end) - to_ms(start)) / max(n, 1)
        ids = []
        with self.lock:
            previous_ms = 0
            for index in range(n):
                created_ms = to_ms(start) + int(step_ms * (index + self._rng.uniform(0, 0.25)))
                updated_ms = max(created_ms + int(step_ms * self._rng.uniform(0.25, 0.5)), previous_ms + 1)
                previous_ms = updated_ms
                ids.append(self._seed_one(index, created_ms, updated_ms, without_attachment))
            self._clock.observe(previous_ms)
        return ids

    def _seed_one(self, index: int, created_ms: int, updated_ms: int, without_attachment: float) -> str:
        created, updated = _format_ms(created_ms), _format_ms(updated_ms)
        source_type, source = self._rng.choice(shapes.SEED_SOURCES)
        analysis = shapes.analysis(self._rng, created[:10], einvoice=source_type == shapes.E_INVOICING)
        number, amount = analysis["invoice_number"], analysis["total_amount"]["value"]
        name = _ODD_NAMES[index // 7 % len(_ODD_NAMES)] if index % 7 == 6 else f"{number}.pdf"
        attachment_id = None
        if self._rng.random() >= without_attachment:
            text = f"{analysis['supplier_name']} {number} {amount} EUR"
            pdf = _tiny_pdf(text, self._rng.randint(2_000, 30_000), self._rng)
            attachment_id = self._store_attachment(FilePart(name, pdf), "application/pdf", created, True).id
        invoice = shapes.new_invoice(self.new_id(), self.organization_id, name, attachment_id, created,
                                     source_type=source_type, source=source)
        invoice.update(analysis, status=self._rng.choice(_SEED_STATUSES), updated_at=updated, analyzed_at=updated)
        invoice.update(shapes.history(self._rng, invoice, _EPOCH + timedelta(milliseconds=updated_ms), self.new_id))
        self._invoices[invoice["id"]] = invoice
        return invoice["id"]

    def update(self, invoice_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Set fields on an invoice and move its `updated_at` (unless given); raise KeyError if unknown."""
        with self.lock:
            invoice = self._invoices[invoice_id]
            derived = {"available_actions": shapes.available_actions(fields["status"])} if "status" in fields else {}
            invoice.update({"updated_at": self._clock.next(), **derived}, **copy.deepcopy(fields))
            return copy.deepcopy(invoice)


    # -- reading -------------------------------------------------------------------------------

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """A copy of one invoice, or None when unknown."""
        with self.lock:
            invoice = self._invoices.get(invoice_id)
            return copy.deepcopy(invoice) if invoice is not None else None

    def all_invoices(self) -> list[dict[str, Any]]:
        """Copies of every invoice, in creation order."""
        with self.lock:
            return copy.deepcopy(list(self._invoices.values()))

    def invoice_count(self) -> int:
        """How many invoices exist."""
        with self.lock:
            return len(self._invoices)

    def attachment(self, attachment_id: str) -> Attachment | None:
        """One attachment (immutable, so shared), or None when unknown."""
        with self.lock:
            return self._attachments.get(attachment_id)

    def uploads_by_key(self) -> dict[str, str]:
        """Idempotency key → id of the invoice its latest successful creation made."""
        with self.lock:
            return {key: entry.invoice_id for key, entry in self._keys.items()}

    def list_page(self, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
        """The invoices matching `query`, sorted; return (the requested page, total count)."""
        with self.lock:
            matching = [
                (sort_key(invoice, query.sort_field), position, invoice)
                for position, invoice in enumerate(self._invoices.values())
                if self._matches(invoice, query)
            ]
            matching.sort(key=lambda entry: entry[:2], reverse=query.descending)
            first = (query.page - 1) * query.per_page
            page = [copy.deepcopy(invoice) for _, _, invoice in matching[first : first + query.per_page]]
            return page, len(matching)

    @staticmethod
    def _matches(invoice: dict[str, Any], query: ListQuery) -> bool:
        if query.statuses and invoice["status"] not in query.statuses:
            return False
        for name, low, high in query.bounds:
            moment = parse_rfc3339(invoice[name])
            if (low is not None and moment < low) or (high is not None and moment > high):
                return False
        return True
