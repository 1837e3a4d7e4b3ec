"""A local Qonto-compatible API, for `qonto-agent demo`, the test suite and users' own checks.

The sandbox serves the part of Qonto's API that qonto-agent uses (as described in the project's
Qonto API facts, qonto-api.md) over real HTTP, with Qonto's quirks reproduced on purpose:

- API key (`Authorization: <login>:<secret_key>`) and OAuth 2.0 bearer auth, with an OAuth token
  endpoint whose refresh tokens rotate (the old one keeps working for 60 seconds).
- An optional staging token: without the `X-Qonto-Staging-Token` header the answer is a 302 to an
  HTML login page, like Qonto's own sandbox. `html_mode` answers every request with an HTML page
  (what a wrong `base_url` looks like).
- `POST /v2/supplier_invoices/bulk`: multipart parsed and grouped Rails-style (so fields sent in
  the wrong order are mis-paired, as on Qonto), at most 20 items, 10 MB per file, 15 MB per
  request, per-item errors inside an HTTP 200, idempotency keys remembered for
  `key_window_seconds` after a successful creation.
- Invoices are "analysed" `analysis_delay_seconds` after creation: supplier, number, amount and
  dates get filled and `updated_at` moves. This happens lazily, at the start of every request and
  of every inspection call, so the sandbox needs no background thread.
- `GET /v2/supplier_invoices` with filters, sorting and pagination (`per_page` defaults to 1 when
  absent, as in some spec versions), and a switch to refuse sorting by `updated_at`.
- `GET /v2/attachments/{id}` hands out pre-signed storage URLs under `/_storage/` that expire,
  refuse an `Authorization` header and answer S3-like XML errors.
- Fault injection (`Faults`): latency, 500, 429 with `Retry-After`, dropped connections, HTML 502
  pages and "commit then fail" (the work is done, the answer is lost).

Everything is stdlib. The inspection methods (`invoices()`, `request_log()`, `count()`, ...) are
thread-safe and return copies, so tests can look at what clients did. Example::

    with Sandbox(seed=1, analysis_delay_seconds=0.1) as sandbox:
        ids = sandbox.seed(5)
        answer = requests.get(f"{sandbox.base_url}/v2/supplier_invoices?per_page=100",
                              headers={"Authorization": "sandbox-org:sandbox-secret-key"})
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from email.message import Message
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape

from agent.samples import page_pdf

MAX_ITEMS = 20
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_REQUEST_BYTES = 15 * 1024 * 1024
MAX_PER_PAGE = 100
REFRESH_GRACE_SECONDS = 60.0
REFRESH_TOKEN_TTL_SECONDS = 90 * 24 * 3600.0
OAUTH_SCOPE = "supplier_invoice.write supplier_invoice.read attachment.read organization.read offline_access"
LEGAL_NAME = "Sandbox Company SAS"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_ITEM_FIELD = re.compile(r"supplier_invoices\[\]\[([^\]]+)\]")
_FILENAME_PARAM = re.compile(r';\s*filename=(?:"((?:\\"|[^"])*)"|([^\s;"]+))', re.IGNORECASE)
_MAGIC = ((b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
_SORTABLE = ("created_at", "updated_at")
_TIMESTAMP_FILTERS = ("updated_at", "created_at")

_SUPPLIERS = (
    "Acme Fournitures SARL",
    "Bureau Vallée",
    "OVHcloud",
    "Électricité de France",
    "Papeterie Dupont & Fils",
    "Transports Martin",
    "Café Lumière",
    "Müller Logistik GmbH",
)
_SEED_STATUSES = ("to_review", "to_review", "to_approve", "to_pay", "paid", "archived")
# File names users really produce; the mirror must cope with every one of them.
_ODD_NAMES = (
    "facture été 2026.pdf",
    "scans/2026/../INV 7.pdf",
    "..pdf",
    "reçu: n°12?.pdf",
    "日本語の請求書.pdf",
)

_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in - Qonto</title></head>"
    b"<body><h1>Sign in to Qonto</h1><form method=\"post\" action=\"/login\">"
    b"<input name=\"email\"><input name=\"password\" type=\"password\"><button>Sign in</button>"
    b"</form></body></html>\n"
)
_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


# --------------------------------------------------------------------------------------------
# Public data types


@dataclass
class Faults:
    """What can go wrong, per request. Rates are probabilities from 0.0 to 1.0.

    Faults apply to `/v2/*` and `/oauth2/token`; storage downloads (`/_storage/*`) only get the
    latency. The checks run in this order, each with its own draw: drop, HTML 502, 429, 500,
    commit-then-fail. Replace or mutate `Sandbox.faults` at any time; each request reads it once.
    """

    latency_seconds: float = 0.0  # added before answering every request (API and storage)
    error_rate: float = 0.0  # a 500 with a JSON:API body
    rate_limit_rate: float = 0.0  # a 429 with header `Retry-After: <retry_after_seconds>`
    retry_after_seconds: float = 0.2
    drop_rate: float = 0.0  # the connection is closed without any response
    commit_then_fail_rate: float = 0.0  # the work is done, then a 500 or a drop (50/50)
    html_error_rate: float = 0.0  # a 502 with an HTML body, as from a proxy


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox received, as tests want to see it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    status: int | None  # None when the connection was dropped
    authorization: bool  # an Authorization header was present
    items: int  # bulk uploads: number of grouped items, else 0
    body_bytes: int
    started_at: float  # time.monotonic() when the request arrived
    finished_at: float  # time.monotonic() when its answer was ready (just before it was sent)
    idempotency_keys: tuple[str, ...] = ()  # bulk uploads: the items' keys, in order


# --------------------------------------------------------------------------------------------
# Internal data types


@dataclass
class _Request:
    """A request as read off the wire; bulk uploads annotate `items` and `idempotency_keys`."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: HTTPMessage
    body: bytes
    trace_id: str
    items: int = 0
    idempotency_keys: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """The scheme and host the client used to reach us, for links we hand back."""
        return f"http://{self.headers.get('Host', 'localhost')}"


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _FilePart:
    filename: str
    data: bytes


@dataclass(frozen=True)
class _Item:
    """One grouped bulk item after the checks that need no shared state."""

    key: str | None
    file: _FilePart | None
    attachment_id: str | None
    content_type: str | None
    error: tuple[str, str] | None  # (code, detail)


@dataclass(frozen=True)
class _Attachment:
    id: str
    created_at: str
    file_name: str
    content_type: str
    size: int
    sha256: str
    data: bytes | None  # None when the sandbox keeps no file contents


@dataclass(frozen=True)
class _KeyEntry:
    invoice_id: str
    answer: dict[str, Any]  # the invoice as first answered: what a replay returns
    created: float  # time.monotonic() of the creation


@dataclass(frozen=True)
class _ListQuery:
    bounds: tuple[tuple[str, datetime | None, datetime | None], ...]  # (field, from, to)
    statuses: frozenset[str]
    sort_field: str
    descending: bool
    page: int
    per_page: int


class _BadParameter(Exception):
    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Small helpers


def _format_ms(ms: int) -> str:
    """Epoch milliseconds → RFC 3339 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time (offset required); raise ValueError otherwise."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"{text!r} is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))


def _sniff(data: bytes) -> str | None:
    """The content type given by the magic bytes: PDF, PNG or JPEG; None for anything else."""
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return _Response(status, body, headers=headers or {})


def _error(
    req: _Request,
    status: int,
    code: str,
    detail: str,
    *,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
) -> _Response:
    """A JSON:API error answer whose `trace_id` matches the `X-Tyk-Trace-Id` header."""
    error: dict[str, Any] = {"code": code, "detail": detail}
    if parameter is not None:
        error["source"] = {"parameter": parameter}
    return _json(status, {"errors": [error], "trace_id": req.trace_id}, headers)


def _oauth_error(status: int, code: str, description: str) -> _Response:
    """An OAuth 2.0 (RFC 6749) error answer of the token endpoint."""
    return _json(status, {"error": code, "error_description": description}, {"Cache-Control": "no-store"})


def _html(status: int, page: bytes, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, page, "text/html; charset=utf-8", headers or {})


def _storage_error(req: _Request, status: int, code: str, message: str) -> _Response:
    """An S3-like XML error, as object storage answers a refused pre-signed URL."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>"
        f"<RequestId>{req.trace_id}</RequestId></Error>\n"
    )
    return _Response(status, body.encode("utf-8"), "application/xml")


def _item_key(fields: dict[str, str | _FilePart]) -> str | None:
    """A bulk item's idempotency key, or None when it has none."""
    key = fields.get("idempotency_key")
    return key.strip() if isinstance(key, str) and key.strip() else None


def _item_error(code: str, detail: str, key: str | None) -> dict[str, Any]:
    """A bulk item error; the pointer names the item's idempotency key when there is one."""
    pointer = f"/supplier_invoices/idempotency_key/{key}/file" if key else "/supplier_invoices/idempotency_key"
    return {"code": code, "detail": detail, "source": {"pointer": pointer}}


def _tiny_pdf(text: str, size: int, rng: random.Random) -> bytes:
    """A valid one-page PDF showing `text`, padded with random comment lines to about `size` bytes."""
    padding = b"".join(b"% " + rng.randbytes(32).hex().encode() + b"\n" for _ in range(max(0, size - 700) // 67))
    return page_pdf([(72, 720, 14, text)], padding)


# --------------------------------------------------------------------------------------------
# Multipart


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str | _FilePart]]:
    """The fields of a multipart/form-data body, in arrival order.

    A part with a filename (see `_rack_filename`) becomes a `_FilePart`, any other part a
    string; a part with an empty filename is skipped, as Rack does ("no file selected").
    Raises ValueError when the body is not multipart/form-data.
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("the body must be multipart/form-data with a boundary")
    headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP)
    boundary = headers.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n").get_boundary()
    delimiter = b"--" + (boundary or "").encode("latin-1")
    start = body.find(delimiter)
    if not boundary or start < 0:
        raise ValueError("the multipart body has no part delimited by its boundary")
    # Split on the delimiter lines (fast on megabytes, unlike a full MIME parse); each chunk is
    # "\r\n<headers>\r\n\r\n<data>", and the closing delimiter's chunk starts with "--".
    chunks = body[start + len(delimiter):].split(b"\r\n" + delimiter)
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no blank line after its headers")
        part = headers.parsebytes(head.lstrip(b" \t").removeprefix(b"\r\n") + b"\r\n\r\n")
        parts.append((part, data))
    fields: list[tuple[str, str | _FilePart]] = []
    for part, data in parts:
        disposition = part["content-disposition"]
        name = disposition.params.get("name") if disposition is not None else None
        if not name:
            continue
        filename = _rack_filename(part)
        if filename == "":
            continue
        value = _FilePart(filename, data) if filename is not None else data.decode("utf-8", "replace")
        fields.append((name, value))
    return fields


def _rack_filename(part: Message) -> str | None:
    """A part's file name as Rack (Rails' request parser) reads it; None when it has none.

    Plain `filename="..."` (raw UTF-8 kept) wins over RFC 2231 `filename*=`. Like Rack, the
    name is percent-decoded when every `%` starts a valid escape (so urllib3's `%22` becomes
    `"` again), backslash escapes are removed unless a backslash precedes another character
    (a Windows path), and only the last path component is kept.
    """
    raw = next((str(value) for key, value in part.raw_items() if key.lower() == "content-disposition"), "")
    match = _FILENAME_PARAM.search(raw.encode("ascii", "surrogateescape").decode("utf-8", "replace"))
    if match is None:
        filename = part.get_filename()
        if filename is None:
            return None
    else:
        filename = match.group(1) if match.group(1) is not None else match.group(2)
        if all(re.fullmatch(r"%[0-9a-fA-F]{2}", escape) for escape in re.findall(r"%.?.?", filename)):
            filename = unquote(filename, errors="replace")
        if not re.search(r'\\[^\\"]', filename):
            filename = re.sub(r"\\(.)", r"\1", filename)
    components = re.split(r"[/\\]", filename)
    while len(components) > 1 and not components[-1]:
        components.pop()
    return components[-1]


def _group_items(
    fields: Iterable[tuple[str, str | _FilePart]],
) -> tuple[list[dict[str, str | _FilePart]], dict[str, str | _FilePart]]:
    """Group `supplier_invoices[][x]` fields into items the way Rails does; return (items, top-level).

    A field goes into the last item unless that item already has its key, in which case a new
    item starts. Sending all keys and then all files therefore mis-pairs them, as on Qonto.
    """
    items: list[dict[str, str | _FilePart]] = []
    top: dict[str, str | _FilePart] = {}
    for name, value in fields:
        match = _ITEM_FIELD.fullmatch(name)
        if match is None:
            top[name] = value
            continue
        key = match.group(1)
        if not items or key in items[-1]:
            items.append({})
        items[-1][key] = value
    return items, top


# --------------------------------------------------------------------------------------------
# The data model


class _Clock:
    """Issues timestamps in epoch milliseconds, each strictly later than any issued or observed."""

    def __init__(self) -> None:
        self._last_ms = 0

    def next(self) -> str:
        """A distinct millisecond, never ahead of the wall clock, as a real server's would be: a
        client that lists up to "now" must see every update made before it asked."""
        now_ms = int(time.time() * 1000)
        while now_ms <= self._last_ms:
            time.sleep(0.0005)
            now_ms = int(time.time() * 1000)
        self._last_ms = now_ms
        return _format_ms(now_ms)

    def observe(self, ms: int) -> None:
        self._last_ms = max(self._last_ms, ms)


class _Store:
    """The organization's invoices, attachments and idempotency keys, all behind `self.lock`."""

    def __init__(self, rng: random.Random) -> None:
        self.lock = threading.RLock()
        self._rng = rng
        self._clock = _Clock()
        self.organization_id = self.new_id()
        self._invoices: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, _Attachment] = {}
        self._keys: dict[str, _KeyEntry] = {}
        self._unanalysed: dict[str, float] = {}  # invoice id → time.monotonic() of creation

    def new_id(self) -> str:
        """A UUID4 drawn from the sandbox's random generator (reproducible with a seed)."""
        with self.lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- analysis ------------------------------------------------------------------------------

    def analyse_due(self, delay: float) -> None:
        """Analyse, in creation order, every invoice created at least `delay` seconds ago."""
        with self.lock:
            now = time.monotonic()
            for invoice_id, created in list(self._unanalysed.items()):
                if now - created < delay:
                    break
                del self._unanalysed[invoice_id]
                invoice = self._invoices[invoice_id]
                invoice.update(self._analysis(invoice["created_at"][:10]))
                invoice["analyzed_at"] = invoice["updated_at"] = self._clock.next()

    def _analysis(self, created_day: str) -> dict[str, Any]:
        """What Qonto's analysis reads off an invoice: supplier, number, amount, dates."""
        rng = self._rng
        issued = date.fromisoformat(created_day) - timedelta(days=rng.randint(0, 20))
        cents = rng.randint(500, 500_000)
        return {
            "supplier_name": rng.choice(_SUPPLIERS),
            "invoice_number": f"F-{issued.year}-{rng.randint(1, 99999):05d}",
            "total_amount": {"value": f"{cents // 100}.{cents % 100:02d}", "currency": "EUR"},
            "issue_date": issued.isoformat(),
            "due_date": (issued + timedelta(days=30)).isoformat(),
        }

    # -- uploads -------------------------------------------------------------------------------

    def upload(
        self, items: list[_Item], *, source: str | None, meta: Any, key_window: float, keep_files: bool
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

    def _attachment_error(self, item: _Item) -> tuple[str, str] | None:
        if item.attachment_id is not None and item.attachment_id not in self._attachments:
            return "invalid", f"attachment {item.attachment_id} does not exist"
        return None

    def _create(self, item: _Item, *, source: str | None, meta: Any, keep_files: bool) -> dict[str, Any]:
        """Create one invoice (and its attachment) for a checked item; remember its key."""
        now = self._clock.next()
        if item.attachment_id is not None:
            attachment = self._attachments[item.attachment_id]
        else:
            assert item.file is not None and item.content_type is not None
            attachment = self._store_attachment(item.file, item.content_type, now, keep_files)
        invoice = self._new_invoice(attachment.file_name, attachment.id, now, source_type="api")
        invoice.update(source=source, meta=copy.deepcopy(meta))
        self._invoices[invoice["id"]] = invoice
        self._unanalysed[invoice["id"]] = time.monotonic()
        answer = copy.deepcopy(invoice)
        assert item.key is not None
        self._keys[item.key] = _KeyEntry(invoice["id"], answer, time.monotonic())
        return copy.deepcopy(answer)

    def _store_attachment(self, file: _FilePart, content_type: str, now: str, keep_files: bool) -> _Attachment:
        attachment = _Attachment(
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

    def _new_invoice(
        self, file_name: str, attachment_id: str | None, now: str, *, source_type: str
    ) -> dict[str, Any]:
        """A fresh, not yet analysed invoice, shaped like Qonto's."""
        return {
            "id": self.new_id(),
            "organization_id": self.organization_id,
            "file_name": file_name,
            "status": "to_review",
            "supplier_name": None,
            "invoice_number": None,
            "description": None,
            "total_amount": None,
            "issue_date": None,
            "due_date": None,
            "payment_date": None,
            "scheduled_date": None,
            "iban": None,
            "attachment_id": attachment_id,
            "display_attachment_id": attachment_id,
            "source_type": source_type,
            "source": None,
            "created_at": now,
            "updated_at": now,
            "analyzed_at": None,
            "has_duplicates": False,
            "meta": None,
        }

    # -- seeding and editing -------------------------------------------------------------------

    def seed(self, n: int, *, without_attachment: float, start: datetime, end: datetime) -> list[str]:
        """Add `n` analysed invoices with `updated_at` spread over [start, end]; return their ids."""
        step_ms = (_to_ms(end) - _to_ms(start)) / max(n, 1)
        ids = []
        with self.lock:
            previous_ms = 0
            for index in range(n):
                created_ms = _to_ms(start) + int(step_ms * (index + self._rng.uniform(0, 0.25)))
                updated_ms = max(created_ms + int(step_ms * self._rng.uniform(0.25, 0.5)), previous_ms + 1)
                previous_ms = updated_ms
                ids.append(self._seed_one(index, created_ms, updated_ms, without_attachment))
            self._clock.observe(previous_ms)
        return ids

    def _seed_one(self, index: int, created_ms: int, updated_ms: int, without_attachment: float) -> str:
        created, updated = _format_ms(created_ms), _format_ms(updated_ms)
        analysis = self._analysis(created[:10])
        number, amount = analysis["invoice_number"], analysis["total_amount"]["value"]
        name = _ODD_NAMES[index // 7 % len(_ODD_NAMES)] if index % 7 == 6 else f"{number}.pdf"
        attachment_id = None
        if self._rng.random() >= without_attachment:
            text = f"{analysis['supplier_name']} {number} {amount} EUR"
            pdf = _tiny_pdf(text, self._rng.randint(2_000, 30_000), self._rng)
            attachment_id = self._store_attachment(_FilePart(name, pdf), "application/pdf", created, True).id
        source_type = self._rng.choice(("api", "email", "app"))
        invoice = self._new_invoice(name, attachment_id, created, source_type=source_type)
        status = self._rng.choice(_SEED_STATUSES)
        invoice.update(analysis, status=status, updated_at=updated, analyzed_at=updated)
        self._invoices[invoice["id"]] = invoice
        return invoice["id"]

    def update(self, invoice_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Set fields on an invoice and move its `updated_at` (unless given); raise KeyError if unknown."""
        with self.lock:
            invoice = self._invoices[invoice_id]
            invoice.update({"updated_at": self._clock.next()}, **copy.deepcopy(fields))
            return copy.deepcopy(invoice)

    # -- reading -------------------------------------------------------------------------------

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        with self.lock:
            invoice = self._invoices.get(invoice_id)
            return copy.deepcopy(invoice) if invoice is not None else None

    def all_invoices(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._invoices.values()))

    def invoice_count(self) -> int:
        with self.lock:
            return len(self._invoices)

    def attachment(self, attachment_id: str) -> _Attachment | None:
        with self.lock:
            return self._attachments.get(attachment_id)

    def uploads_by_key(self) -> dict[str, str]:
        with self.lock:
            return {key: entry.invoice_id for key, entry in self._keys.items()}

    def list_page(self, query: _ListQuery) -> tuple[list[dict[str, Any]], int]:
        """The invoices matching `query`, sorted; return (the requested page, total count)."""
        with self.lock:
            matching = [
                (_parse_rfc3339(invoice[query.sort_field]), position, invoice)
                for position, invoice in enumerate(self._invoices.values())
                if self._matches(invoice, query)
            ]
            matching.sort(key=lambda entry: entry[:2], reverse=query.descending)
            first = (query.page - 1) * query.per_page
            page = [copy.deepcopy(invoice) for _, _, invoice in matching[first : first + query.per_page]]
            return page, len(matching)

    @staticmethod
    def _matches(invoice: dict[str, Any], query: _ListQuery) -> bool:
        if query.statuses and invoice["status"] not in query.statuses:
            return False
        for name, low, high in query.bounds:
            moment = _parse_rfc3339(invoice[name])
            if (low is not None and moment < low) or (high is not None and moment > high):
                return False
        return True


def _parse_list_query(query: dict[str, list[str]], *, sortable_updated_at: bool) -> _ListQuery:
    """Read the list endpoint's query parameters; raise _BadParameter on a bad one."""
    bounds = []
    for name in _TIMESTAMP_FILTERS:
        low, high = (_timestamp_parameter(query, f"filter[{name}_{end}]") for end in ("from", "to"))
        if low is not None or high is not None:
            bounds.append((name, low, high))
    statuses = frozenset(query.get("filter[status]", []) + query.get("filter[status][]", []))
    sort_field, descending = _parse_sort(query.get("sort_by", ["created_at:desc"])[-1], sortable_updated_at)
    page = _parse_int(query, "page", default=1, low=1, high=None)
    per_page = _parse_int(query, "per_page", default=1, low=1, high=MAX_PER_PAGE)
    return _ListQuery(tuple(bounds), statuses, sort_field, descending, page, per_page)


def _timestamp_parameter(query: dict[str, list[str]], parameter: str) -> datetime | None:
    values = query.get(parameter)
    if not values or not values[-1]:
        return None
    try:
        return _parse_rfc3339(values[-1])
    except ValueError as exc:
        raise _BadParameter(parameter, str(exc)) from None


def _parse_sort(value: str, sortable_updated_at: bool) -> tuple[str, bool]:
    sort_field, _, direction = value.partition(":")
    allowed = _SORTABLE if sortable_updated_at else ("created_at",)
    if sort_field not in allowed or direction not in ("asc", "desc"):
        choices = ", ".join(f"{name}:asc|desc" for name in allowed)
        raise _BadParameter("sort_by", f"sort_by {value!r} is not supported; use one of {choices}")
    return sort_field, direction == "desc"


def _parse_int(query: dict[str, list[str]], name: str, *, default: int, low: int, high: int | None) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(name, f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _BadParameter(name, f"{name} must be {limit}, not {value}")
    return value


# --------------------------------------------------------------------------------------------
# The sandbox


Route = Callable[[_Request, "re.Match[str]"], _Response]


class Sandbox:
    """A local Qonto-compatible API server with inspection and fault injection for tests.

    Construct, then `start()` (or use it as a context manager); `base_url` is then the API root
    to configure. Credentials: API key `<login>:<secret_key>`, bearer tokens in `access_tokens`
    or issued by `POST /oauth2/token` (client id/secret and a first refresh token as given).

    Run-time knobs, read at each use: `faults`, `key_window_seconds` (how long an idempotency key
    replays its invoice), `analysis_delay_seconds`, `url_ttl_seconds` (pre-signed URL validity),
    `html_mode`. With `seed`, generated ids, analysis results and fault draws are reproducible.
    `reject(filename, data)` may return a reason to refuse an item as `invalid`.
    `keep_files=False` keeps only the size and SHA-256 of uploaded files (downloads of their
    attachments then answer 404 NoSuchKey); seeded files are always kept.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        login: str = "sandbox-org",
        secret_key: str = "sandbox-secret-key",
        access_tokens: Iterable[str] = ("sandbox-access-token",),
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-client-secret",
        refresh_token: str = "sandbox-refresh-token",
        token_ttl_seconds: float = 3600,
        staging_token: str | None = None,
        key_window_seconds: float = 1800.0,
        analysis_delay_seconds: float = 2.0,
        url_ttl_seconds: float = 1800.0,
        sortable_updated_at: bool = True,
        keep_files: bool = True,
        faults: Faults | None = None,
        seed: int | None = None,
        reject: Callable[[str, bytes], str | None] | None = None,
        html_mode: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.login, self.secret_key = login, secret_key
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token = refresh_token  # the first one; each refresh replaces it (rotation)
        self.token_ttl_seconds = token_ttl_seconds
        self.staging_token = staging_token
        self.key_window_seconds = key_window_seconds
        self.analysis_delay_seconds = analysis_delay_seconds
        self.url_ttl_seconds = url_ttl_seconds
        self.sortable_updated_at = sortable_updated_at
        self.keep_files = keep_files
        self.faults = faults if faults is not None else Faults()
        self.reject = reject
        self.html_mode = html_mode
        self._fault_rng = random.Random(seed)
        self._store = _Store(random.Random(seed))
        self._fault_lock = threading.Lock()
        self._url_key = secrets.token_bytes(32)
        self._auth_lock = threading.Lock()
        self._static_tokens = frozenset(access_tokens)
        self._issued_tokens: dict[str, float] = {}  # access token → expiry (time.monotonic())
        self._refresh_tokens: dict[str, float] = {refresh_token: time.monotonic() + REFRESH_TOKEN_TTL_SECONDS}
        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: tuple[tuple[str, re.Pattern[str], Route], ...] = (
            ("POST", re.compile(r"/oauth2/token"), self._token),
            ("GET", re.compile(r"/v2/organization"), self._organization),
            ("POST", re.compile(r"/v2/supplier_invoices/bulk"), self._bulk_upload),
            ("GET", re.compile(r"/v2/supplier_invoices"), self._list_invoices),
            ("GET", re.compile(r"/v2/supplier_invoices/(?P<id>[^/]+)"), self._get_invoice),
            ("GET", re.compile(r"/v2/attachments/(?P<id>[^/]+)"), self._get_attachment),
            ("GET", re.compile(r"/_storage/(?P<id>[^/]+)"), self._download),
            ("GET", re.compile(r"/login"), self._login_page),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Listen (port 0 picks a free one) and serve in a daemon thread; return self."""
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="qonto-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection (clients see the server go away).

        The data stays: `start()` again serves it on the same port, like a server back from an outage.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The API root to configure, e.g. http://127.0.0.1:54321 (valid once started)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self.port}"

    # -- inspection and control (thread-safe, copies) ------------------------------------------

    def invoices(self) -> list[dict[str, Any]]:
        """Every supplier invoice, in creation order, as the API would show it now."""
        self._analyse_due()
        return self._store.all_invoices()

    def invoice_count(self) -> int:
        return self._store.invoice_count()

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """One invoice as the API would show it now, or None."""
        self._analyse_due()
        return self._store.invoice(invoice_id)

    def request_log(self) -> list[RequestRecord]:
        """Every request received since the start (or the last `reset_log()`), oldest first."""
        with self._log_lock:
            return list(self._log)

    @property
    def requests(self) -> list[RequestRecord]:
        """Same as `request_log()`: a copy."""
        return self.request_log()

    def reset_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def count(
        self, *, method: str | None = None, path_prefix: str | None = None, status: int | None = None
    ) -> int:
        """How many logged requests match every given criterion (None means any)."""
        return sum(
            1
            for record in self.request_log()
            if (method is None or record.method == method)
            and (path_prefix is None or record.path.startswith(path_prefix))
            and (status is None or record.status == status)
        )

    def seed(self, n: int, *, without_attachment: float = 0.1, start: datetime | None = None) -> list[str]:
        """Add `n` analysed invoices, most with a small PDF attachment; return their ids.

        Their `updated_at` values are distinct, increasing with creation, and spread between
        `start` (default: 30 days ago; a naive datetime means UTC) and now. About
        `without_attachment` of them have no attachment; every seventh has an odd file name.
        """
        now = datetime.now(timezone.utc)
        start = start if start is not None else now - timedelta(days=30)
        if _to_ms(start) >= _to_ms(now):
            raise ValueError("seed(start=...) must be in the past")
        return self._store.seed(n, without_attachment=without_attachment, start=start, end=now)

    def update_invoice(self, invoice_id: str, **fields: Any) -> dict[str, Any]:
        """Set fields of an invoice (as a person would in Qonto) and move its `updated_at`."""
        self._analyse_due()
        return self._store.update(invoice_id, fields)

    def attachment_bytes(self, attachment_id: str) -> bytes:
        """The stored bytes of an attachment; KeyError if unknown or not kept."""
        attachment = self._store.attachment(attachment_id)
        if attachment is None or attachment.data is None:
            raise KeyError(attachment_id)
        return attachment.data

    def attachment_sha256(self, attachment_id: str) -> str:
        """The lowercase hex SHA-256 of an attachment's bytes; KeyError if unknown."""
        attachment = self._store.attachment(attachment_id)
        if attachment is None:
            raise KeyError(attachment_id)
        return attachment.sha256

    def uploads_by_key(self) -> dict[str, str]:
        """Idempotency key → id of the invoice its latest successful creation made."""
        return self._store.uploads_by_key()

    # -- request processing (called by the handler threads) ------------------------------------

    def _analyse_due(self) -> None:
        self._store.analyse_due(self.analysis_delay_seconds)

    def _respond(self, req: _Request) -> _Response | None:
        """The answer to a request, or None to drop the connection without answering."""
        faults = self.faults
        if faults.latency_seconds > 0:
            time.sleep(faults.latency_seconds)
        self._analyse_due()
        if self.html_mode:
            return _html(200, _HTML_PAGE)
        if not self._staging_ok(req):
            location = {"Location": f"{req.origin}/login"}
            return _html(302, b"<html><body>Redirecting to /login</body></html>\n", location)
        faultable = req.path.startswith("/v2/") or req.path == "/oauth2/token"
        fault = self._draw_fault(faults) if faultable else None
        if fault is not None and not fault.startswith("commit"):
            return self._fault_response(req, fault, faults)
        response = self._route(req)
        if fault is not None:
            return self._fault_response(req, fault.removeprefix("commit_then_"), faults)
        return response

    def _staging_ok(self, req: _Request) -> bool:
        if self.staging_token is None or req.path == "/login" or req.path.startswith("/_storage/"):
            return True
        given = req.headers.get("X-Qonto-Staging-Token", "")
        return hmac.compare_digest(given.encode(), self.staging_token.encode())

    def _draw_fault(self, faults: Faults) -> str | None:
        """Draw this request's fault, if any: drop, html, rate_limit, error, commit_then_*."""
        with self._fault_lock:
            rng = self._fault_rng
            for name, rate in (
                ("drop", faults.drop_rate),
                ("html", faults.html_error_rate),
                ("rate_limit", faults.rate_limit_rate),
                ("error", faults.error_rate),
            ):
                if rate > 0 and rng.random() < rate:
                    return name
            if faults.commit_then_fail_rate > 0 and rng.random() < faults.commit_then_fail_rate:
                return rng.choice(("commit_then_error", "commit_then_drop"))
        return None

    @staticmethod
    def _fault_response(req: _Request, fault: str, faults: Faults) -> _Response | None:
        if fault == "drop":
            return None
        if fault == "html":
            return _html(502, _BAD_GATEWAY_PAGE)
        if fault == "rate_limit":
            retry_after = {"Retry-After": f"{faults.retry_after_seconds:g}"}
            return _error(req, 429, "too_many_requests", "Rate limit exceeded, retry later", headers=retry_after)
        return _error(req, 500, "internal_server_error", "Something went wrong on our side")

    def _route(self, req: _Request) -> _Response:
        path_known = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(req.path)
            if match is None:
                continue
            path_known = True
            if method == req.method:
                if req.path.startswith("/v2/") and (refusal := self._authenticate(req)) is not None:
                    return refusal
                return handler(req, match)
        if path_known:
            return _error(req, 405, "method_not_allowed", f"{req.method} is not allowed on {req.path}")
        return _error(req, 404, "not_found", f"No route for {req.method} {req.path}")

    def _authenticate(self, req: _Request) -> _Response | None:
        """None when the Authorization header is acceptable, else the 401 answer."""
        header = req.headers.get("Authorization")
        if header is None:
            return _error(req, 401, "unauthorized", "The Authorization header is missing")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            with self._auth_lock:
                expiry = self._issued_tokens.get(token.strip(), 0.0)
            if token.strip() in self._static_tokens or expiry > time.monotonic():
                return None
            return _error(req, 401, "unauthorized", "The access token is invalid or expired")
        if hmac.compare_digest(header.encode(), f"{self.login}:{self.secret_key}".encode()):
            return None
        return _error(req, 401, "unauthorized", "Invalid login or secret key")

    # -- endpoints -----------------------------------------------------------------------------

    def _token(self, req: _Request, match: re.Match[str]) -> _Response:
        """`POST /oauth2/token`, grant_type=refresh_token only; refresh tokens rotate."""
        form = {name: values[-1] for name, values in parse_qs(req.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "The sandbox supports grant_type=refresh_token only")
        if not (
            hmac.compare_digest(form.get("client_id", "").encode(), self.client_id.encode())
            and hmac.compare_digest(form.get("client_secret", "").encode(), self.client_secret.encode())
        ):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        old = form.get("refresh_token", "")
        now, ttl = time.monotonic(), self.token_ttl_seconds
        with self._auth_lock:
            if self._refresh_tokens.get(old, 0.0) <= now:
                return _oauth_error(400, "invalid_grant", "The refresh token is invalid, expired or revoked")
            self._refresh_tokens[old] = min(self._refresh_tokens[old], now + REFRESH_GRACE_SECONDS)
            access, refresh = f"sandbox-at-{uuid.uuid4().hex}", f"sandbox-rt-{uuid.uuid4().hex}"
            self._issued_tokens[access] = now + ttl
            self._refresh_tokens[refresh] = now + REFRESH_TOKEN_TTL_SECONDS
        payload = {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
            "token_type": "bearer",
            "scope": OAUTH_SCOPE,
        }
        return _json(200, payload, {"Cache-Control": "no-store"})

    def _organization(self, req: _Request, match: re.Match[str]) -> _Response:
        organization = {
            "id": self._store.organization_id,
            "slug": self.login,
            "legal_name": LEGAL_NAME,
            "locale": "fr",
            "legal_country": "FR",
            "bank_accounts": [],
        }
        return _json(200, {"organization": organization})

    def _bulk_upload(self, req: _Request, match: re.Match[str]) -> _Response:
        """`POST /v2/supplier_invoices/bulk`: always 200 once the request as a whole is understood."""
        if len(req.body) > MAX_REQUEST_BYTES:
            return _error(req, 413, "request_entity_too_large", "The request is larger than 15 MB")
        try:
            items, top = _group_items(_parse_multipart(req.headers.get("Content-Type", ""), req.body))
        except ValueError as exc:
            return _error(req, 400, "invalid", str(exc))
        req.items = len(items)
        req.idempotency_keys = tuple(key for item in items if (key := _item_key(item)))
        if not items:
            return _error(req, 400, "required", "supplier_invoices is required", parameter="supplier_invoices")
        if len(items) > MAX_ITEMS:
            detail = f"At most {MAX_ITEMS} supplier invoices can be uploaded at once, got {len(items)}"
            error = {"code": "limit_reached", "detail": detail, "source": {"pointer": "/supplier_invoices"}}
            return _json(200, {"supplier_invoices": [], "errors": [error]})
        try:
            meta = json.loads(top["meta"]) if isinstance(top.get("meta"), str) else None
        except ValueError:
            return _error(req, 400, "invalid", "meta must be a JSON string", parameter="meta")
        source = top.get("source") if isinstance(top.get("source"), str) else None
        checked = [self._check_item(item) for item in items]
        invoices, errors = self._store.upload(
            checked, source=source, meta=meta, key_window=self.key_window_seconds, keep_files=self.keep_files
        )
        return _json(200, {"supplier_invoices": invoices, "errors": errors})

    def _check_item(self, fields: dict[str, str | _FilePart]) -> _Item:
        """The checks of one item that need no shared state (size, type, `reject`)."""
        key = _item_key(fields)
        attachment_id = fields.get("attachment_id")
        attachment_id = attachment_id if isinstance(attachment_id, str) else None
        file = fields.get("file")
        content_type = _sniff(file.data) if isinstance(file, _FilePart) else None
        error: tuple[str, str] | None = None
        if key is None:
            error = ("required", "idempotency_key is required")
        elif file is not None and attachment_id is not None:
            error = ("invalid", "Give either a file or an attachment_id, not both")
        elif attachment_id is not None:
            return _Item(key, None, attachment_id, None, None)
        elif file is None:
            error = ("required", "file is required")
        elif isinstance(file, str):
            error = ("invalid", "file must be a file part with a filename")
        elif len(file.data) > MAX_FILE_BYTES:
            error = ("invalid", f"file too large: {len(file.data)} bytes, the limit is {MAX_FILE_BYTES} (10 MB)")
        elif content_type is None:
            error = ("invalid", "unsupported file type: only PDF, PNG and JPEG files are accepted")
        elif self.reject is not None and (reason := self.reject(file.filename, file.data)):
            error = ("invalid", reason)
        return _Item(key, file if isinstance(file, _FilePart) else None, None, content_type, error)

    def _list_invoices(self, req: _Request, match: re.Match[str]) -> _Response:
        try:
            query = _parse_list_query(req.query, sortable_updated_at=self.sortable_updated_at)
        except _BadParameter as exc:
            return _error(req, 400, "invalid", exc.detail, parameter=exc.parameter)
        page, total = self._store.list_page(query)
        total_pages = math.ceil(total / query.per_page)
        meta = {
            "current_page": query.page,
            "next_page": query.page + 1 if query.page < total_pages else None,
            "prev_page": query.page - 1 if query.page > 1 else None,
            "total_pages": total_pages,
            "total_count": total,
            "per_page": query.per_page,
        }
        return _json(200, {"supplier_invoices": page, "meta": meta})

    def _get_invoice(self, req: _Request, match: re.Match[str]) -> _Response:
        invoice = self._store.invoice(match["id"])
        if invoice is None:
            return _error(req, 404, "not_found", f"Supplier invoice {match['id']} not found")
        return _json(200, {"supplier_invoice": invoice})

    def _get_attachment(self, req: _Request, match: re.Match[str]) -> _Response:
        attachment = self._store.attachment(match["id"])
        if attachment is None:
            return _error(req, 404, "not_found", f"Attachment {match['id']} not found")
        expires = f"{time.time() + self.url_ttl_seconds:.3f}"
        signature = self._sign(attachment.id, expires)
        url = f"{req.origin}/_storage/{attachment.id}?expires={expires}&signature={signature}"
        payload = {
            "id": attachment.id,
            "created_at": attachment.created_at,
            "file_name": attachment.file_name,
            "file_size": str(attachment.size),
            "file_content_type": attachment.content_type,
            "url": url,
            "probative_attachment": {"status": "unavailable"},
        }
        return _json(200, {"attachment": payload})

    def _sign(self, attachment_id: str, expires: str) -> str:
        return hmac.new(self._url_key, f"{attachment_id}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _download(self, req: _Request, match: re.Match[str]) -> _Response:
        """`GET /_storage/{id}?expires=&signature=`: a pre-signed object-storage download."""
        if "Authorization" in req.headers:
            return _storage_error(
                req,
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                "string parameter or the Authorization header should be specified",
            )
        expires = req.query.get("expires", [""])[-1]
        signature = req.query.get("signature", [""])[-1]
        if not expires or not signature:
            return _storage_error(req, 403, "AccessDenied", "Query-string authentication needs expires and signature")
        if not hmac.compare_digest(signature.encode(), self._sign(match["id"], expires).encode()):
            return _storage_error(
                req,
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        if float(expires) < time.time():
            return _storage_error(req, 403, "AccessDenied", "Request has expired")
        attachment = self._store.attachment(match["id"])
        if attachment is None or attachment.data is None:
            return _storage_error(req, 404, "NoSuchKey", "The specified key does not exist.")
        return _Response(200, attachment.data, attachment.content_type)

    def _login_page(self, req: _Request, match: re.Match[str]) -> _Response:
        return _html(200, _HTML_PAGE)

    def _record(self, req: _Request, status: int | None, started: float) -> None:
        record = RequestRecord(
            method=req.method,
            path=req.path,
            query=req.query,
            status=status,
            authorization="Authorization" in req.headers,
            items=req.items,
            body_bytes=len(req.body),
            started_at=started,
            finished_at=time.monotonic(),
            idempotency_keys=req.idempotency_keys,
        )
        with self._log_lock:
            self._log.append(record)


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Server(ThreadingHTTPServer):
    """One thread per connection; remembers open connections so `stop()` can close them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay silent: a client that went away mid-answer is not the sandbox's problem."""


def _shutdown(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; hands each request to the sandbox and writes its answer."""

    protocol_version = "HTTP/1.1"
    server_version = "qonto-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: tests and `qonto-agent sandbox` read the request log instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        started = time.monotonic()
        sandbox = self.server.sandbox
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query, keep_blank_values=True)
        trace_id = uuid.uuid4().hex
        try:
            body = self._read_body()
        except ValueError:
            request = _Request(self.command, path, query, self.headers, b"", trace_id)
            self.close_connection = True
            response: _Response | None = _error(request, 400, "invalid", "The request body could not be read")
        else:
            request = _Request(self.command, path, query, self.headers, body, trace_id)
            response = self._answer(sandbox, request)
        # Logged before answering: a client that has its answer finds the request in the log.
        sandbox._record(request, response.status if response is not None else None, started)
        if response is None:
            self.close_connection = True
            _shutdown(self.connection)
        else:
            self._write(response, trace_id)

    @staticmethod
    def _answer(sandbox: Sandbox, request: _Request) -> _Response | None:
        try:
            return sandbox._respond(request)
        except Exception as exc:  # a sandbox bug must still produce an answer a client can read
            return _error(request, 500, "internal_server_error", f"Sandbox failure: {exc!r}")

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked); ValueError when it cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(self._read_chunks())
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) != length:
            raise ValueError("the body is shorter than its Content-Length")
        return body

    def _read_chunks(self) -> Iterator[bytes]:
        """The chunks of a chunked body; int() raises ValueError on a malformed size line."""
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0], 16)
            if size == 0:
                break
            yield self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields

    def _write(self, response: _Response, trace_id: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Tyk-Trace-Id", trace_id)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
