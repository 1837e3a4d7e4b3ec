"""The sandbox's endpoints and authentication: what each route answers, given the settings
read at each use and the store of the organization the credentials are for."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from agent.qonto.limits import MAX_FILE_BYTES
from agent.sandbox.answers import (
    HTML_PAGE,
    Request,
    Response,
    api_error,
    html_answer,
    json_answer,
    oauth_error,
    storage_error,
)
from agent.sandbox.multipart import FilePart, group_items, item_key, parse_multipart
from agent.sandbox.orgs import Organizations
from agent.sandbox.settings import SandboxSettings
from agent.sandbox.listing import PARAMETERS as LIST_PARAMETERS, BadParameter, parse_list_query
from agent.sandbox.store import Item, Store

REFRESH_GRACE_SECONDS = 60.0
REFRESH_TOKEN_TTL_SECONDS = 90 * 24 * 3600.0
OAUTH_SCOPE = "supplier_invoice.write supplier_invoice.read attachment.read organization.read offline_access"
LEGAL_NAME = "Sandbox Company SAS"
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def _sniff(data: bytes) -> str | None:
    """The content type given by the magic bytes: PDF (its header within the first 1024 bytes, as
    readers accept it), PNG or JPEG; None for anything else."""
    if b"%PDF-" in data[:1029]:
        return "application/pdf"
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


Handler = Callable[[Request, "re.Match[str]"], Response]


@dataclass(frozen=True)
class Route:
    """One endpoint: its method and path template (`{id}` matches one path segment), who answers,
    the OAuth scope it needs (as the agent's client names it in its 403 hints) and the query
    parameters it reads."""

    method: str
    template: str
    handler: Handler
    scope: str | None = None
    parameters: frozenset[str] = frozenset()
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = re.escape(self.template).replace(r"\{id\}", r"(?P<id>[^/]+)")
        object.__setattr__(self, "pattern", re.compile(pattern))


class Api:
    """Qonto's endpoints over each organization's store: credentials and OAuth tokens, uploads,
    lists, downloads. Bearer tokens are the primary organization's.

    Settings are read at each use, so a test may change them while the sandbox serves.
    """

    def __init__(self, settings: SandboxSettings, organizations: Organizations) -> None:
        self.settings = settings
        self._orgs = organizations
        self._url_key = secrets.token_bytes(32)
        self._auth_lock = threading.Lock()
        self._static_tokens = frozenset(settings.access_tokens)
        self._issued_tokens: dict[str, float] = {}  # access token → expiry (time.monotonic())
        first_refresh = time.monotonic() + REFRESH_TOKEN_TTL_SECONDS
        self._refresh_tokens: dict[str, float] = {settings.refresh_token: first_refresh}
        self.routes: tuple[Route, ...] = (
            Route("POST", "/oauth2/token", self._token),
            Route("GET", "/v2/organization", self._organization, "organization.read"),
            Route("POST", "/v2/supplier_invoices/bulk", self._bulk_upload, "supplier_invoice.write"),
            Route("GET", "/v2/supplier_invoices", self._list_invoices, "supplier_invoice.read", LIST_PARAMETERS),
            Route("GET", "/v2/supplier_invoices/{id}", self._get_invoice, "supplier_invoice.read"),
            Route("GET", "/v2/attachments/{id}", self._get_attachment, "attachment.read"),
            Route("GET", "/_storage/{id}", self._download, None, frozenset({"organization", "expires", "signature"})),
            Route("GET", "/login", self._login_page),
        )

    def authenticate(self, req: Request) -> Response | None:
        """None when the Authorization header is acceptable (naming `req.organization`), else the 401 answer."""
        header = req.headers.get("Authorization")
        if header is None:
            return api_error(req, 401, "unauthorized", "The Authorization header is missing")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            with self._auth_lock:
                expiry = self._issued_tokens.get(token.strip(), 0.0)
            if token.strip() in self._static_tokens or expiry > time.monotonic():
                req.organization = self.settings.login
                return None
            return api_error(req, 401, "unauthorized", "The access token is invalid or expired")
        req.organization = self._orgs.by_api_key(header)
        if req.organization is not None:
            return None
        return api_error(req, 401, "unauthorized", "Invalid login or secret key")

    def permit(self, req: Request, route: Route) -> Response | None:
        """None when the credentials hold the route's scope, else Qonto's 403 `forbidden`."""
        if route.scope is None or route.scope not in set(self.settings.denied_scopes):
            return None
        detail = f"The credentials are not allowed to do this: they lack the {route.scope} scope"
        return api_error(req, 403, "forbidden", detail)

    def _token(self, req: Request, match: re.Match[str]) -> Response:
        """`POST /oauth2/token`, grant_type=refresh_token only; refresh tokens rotate."""
        form = {name: values[-1] for name, values in parse_qs(req.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", "The sandbox supports grant_type=refresh_token only")
        if not (
            hmac.compare_digest(form.get("client_id", "").encode(), self.settings.client_id.encode())
            and hmac.compare_digest(form.get("client_secret", "").encode(), self.settings.client_secret.encode())
        ):
            return oauth_error(401, "invalid_client", "Client authentication failed")
        old = form.get("refresh_token", "")
        now, ttl = time.monotonic(), self.settings.token_ttl_seconds
        with self._auth_lock:
            if self._refresh_tokens.get(old, 0.0) <= now:
                return oauth_error(400, "invalid_grant", "The refresh token is invalid, expired or revoked")
            self._refresh_tokens[old] = min(self._refresh_tokens[old], now + REFRESH_GRACE_SECONDS)
            access, refresh = f"sandbox-at-{uuid.uuid4().hex}", f"sandbox-rt-{uuid.uuid4().hex}"
            self._issued_tokens[access] = now + ttl
            self._refresh_tokens[refresh] = now + REFRESH_TOKEN_TTL_SECONDS
        denied = set(self.settings.denied_scopes)
        payload = {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
            "token_type": "bearer",
            "scope": " ".join(scope for scope in OAUTH_SCOPE.split() if scope not in denied),
        }
        return json_answer(200, payload, {"Cache-Control": "no-store"})

    def _store(self, req: Request) -> Store:
        """The store of the organization the request's credentials are for."""
        return self._orgs.store(req.organization)

    def _organization(self, req: Request, match: re.Match[str]) -> Response:
        login = self._orgs.login(req.organization)
        organization = {
            "id": self._store(req).organization_id,
            "slug": login,
            "legal_name": LEGAL_NAME if login == self.settings.login else f"{login} SAS",
            "locale": "fr",
            "legal_country": "FR",
            "bank_accounts": [],
        }
        return json_answer(200, {"organization": organization})

    def _bulk_upload(self, req: Request, match: re.Match[str]) -> Response:
        """`POST /v2/supplier_invoices/bulk`: 200 with per-item errors once the request as a whole is
        understood; 400 with Qonto's codes and pointers when it is not (over 15 MB, more than 20
        items, an item without key or without file)."""
        if len(req.body) > self.settings.max_request_bytes:
            if self.settings.too_large_413:
                return api_error(req, 413, "request_entity_too_large", "The request is larger than 15 MB")
            return self._bulk_refusal(req, "bad_request", "Request is too large", None)
        try:
            items, top = group_items(parse_multipart(req.headers.get("Content-Type", ""), req.body))
        except ValueError as exc:
            return api_error(req, 400, "invalid", str(exc))
        req.items = len(items)
        req.idempotency_keys = tuple(key for item in items if (key := item_key(item)))
        if not items:
            return api_error(req, 400, "required", "supplier_invoices is required", parameter="supplier_invoices")
        if len(items) > self.settings.max_items:
            detail = f"At most {self.settings.max_items} supplier invoices can be uploaded at once, got {len(items)}"
            return self._bulk_refusal(req, "limit_reached", detail, "/supplier_invoices")
        for fields in items:
            if item_key(fields) is None:
                return self._bulk_refusal(req, "required", "Idempotency key is required", "/idempotency_key")
            if "file" not in fields and "attachment_id" not in fields:
                return self._bulk_refusal(req, "required", "File is required", "/file")
        try:
            meta = json.loads(top["meta"]) if isinstance(top.get("meta"), str) else None
        except ValueError:
            return api_error(req, 400, "invalid", "meta must be a JSON string", parameter="meta")
        source = top.get("source") if isinstance(top.get("source"), str) else None
        checked = [self._check_item(item) for item in items]
        invoices, errors = self._store(req).upload(
            checked, source=source, meta=meta, key_window=self.settings.key_window_seconds, keep_files=self.settings.keep_files
        )
        return json_answer(200, {"supplier_invoices": invoices, "errors": [self._shaped(e) for e in errors]})

    def _bulk_refusal(self, req: Request, code: str, detail: str, pointer: str | None) -> Response:
        """A whole bulk request refused with 400, as Qonto's reference describes it."""
        error: dict[str, Any] = {"code": code, "detail": detail}
        if pointer is not None:
            error["source"] = {"pointer": pointer}
        return json_answer(400, {"errors": [self._shaped(error)], "trace_id": req.trace_id})

    def _shaped(self, error: dict[str, Any]) -> dict[str, Any]:
        """A bulk error in the shape the settings ask for: `source` as a list, `details` for `detail`."""
        shaped = dict(error)
        if self.settings.error_details:
            shaped["details"] = shaped.pop("detail")
        if self.settings.error_source_list and "source" in shaped:
            shaped["source"] = [shaped["source"]]
        return shaped

    def _check_item(self, fields: dict[str, str | FilePart]) -> Item:
        """The checks of one item that need no shared state (size, type, `reject`); the item has a key
        and a file or an attachment id (a request with one that has not is refused as a whole)."""
        key = item_key(fields)
        attachment_id = fields.get("attachment_id")
        attachment_id = attachment_id if isinstance(attachment_id, str) else None
        file = fields.get("file")
        content_type = _sniff(file.data) if isinstance(file, FilePart) else None
        error: tuple[str, str] | None = None
        if file is not None and attachment_id is not None:
            error = ("invalid", "Give either a file or an attachment_id, not both")
        elif attachment_id is not None:
            return Item(key, None, attachment_id, None, None)
        elif isinstance(file, str) or file is None:
            error = ("invalid", "file must be a file part with a filename")
        elif len(file.data) > MAX_FILE_BYTES:
            error = ("invalid", f"file too large: {len(file.data)} bytes, the limit is {MAX_FILE_BYTES} (10 MB)")
        elif content_type is None:
            error = ("invalid", "unsupported file type: only PDF, PNG and JPEG files are accepted")
        elif self.settings.reject is not None and (reason := self.settings.reject(file.filename, file.data)):
            error = ("invalid", reason)
        return Item(key, file if isinstance(file, FilePart) else None, None, content_type, error)

    def _list_invoices(self, req: Request, match: re.Match[str]) -> Response:
        try:
            query = parse_list_query(req.query, sortable_updated_at=self.settings.sortable_updated_at)
        except BadParameter as exc:
            return api_error(req, 400, "invalid", exc.detail, parameter=exc.parameter)
        page, total = self._store(req).list_page(query)
        total_pages = math.ceil(total / query.per_page)
        meta = {
            "current_page": query.page,
            "next_page": query.page + 1 if query.page < total_pages else None,
            "prev_page": query.page - 1 if query.page > 1 else None,
            "total_pages": total_pages,
            "total_count": total,
            "per_page": query.per_page,
        }
        return json_answer(200, {"supplier_invoices": page, "meta": meta})

    def _get_invoice(self, req: Request, match: re.Match[str]) -> Response:
        invoice = self._store(req).invoice(match["id"])
        if invoice is None:
            return api_error(req, 404, "not_found", f"Supplier invoice {match['id']} not found")
        return json_answer(200, {"supplier_invoice": invoice})

    def _get_attachment(self, req: Request, match: re.Match[str]) -> Response:
        attachment = self._store(req).attachment(match["id"])
        if attachment is None:
            return api_error(req, 404, "not_found", f"Attachment {match['id']} not found")
        login = self._orgs.login(req.organization)
        expires = f"{time.time() + self.settings.url_ttl_seconds:.3f}"
        signature = self._sign(login, attachment.id, expires)
        where = urlencode({"organization": login, "expires": expires, "signature": signature})
        url = f"{req.origin}/_storage/{attachment.id}?{where}"
        payload = {
            "id": attachment.id,
            "created_at": attachment.created_at,
            "file_name": attachment.file_name,
            "file_size": str(attachment.size),
            "file_content_type": attachment.content_type,
            "url": url,
            "probative_attachment": {"status": "unavailable"},
        }
        return json_answer(200, {"attachment": payload})

    def _sign(self, login: str, attachment_id: str, expires: str) -> str:
        message = f"{login}\n{attachment_id}\n{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def _download(self, req: Request, match: re.Match[str]) -> Response:
        """`GET /_storage/{id}?organization=&expires=&signature=`: a pre-signed object-storage
        download of one organization's attachment."""
        if "Authorization" in req.headers:
            return storage_error(
                req,
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                "string parameter or the Authorization header should be specified",
            )
        login = req.query.get("organization", [""])[-1]
        expires = req.query.get("expires", [""])[-1]
        signature = req.query.get("signature", [""])[-1]
        if not expires or not signature:
            return storage_error(req, 403, "AccessDenied", "Query-string authentication needs expires and signature")
        if not hmac.compare_digest(signature.encode(), self._sign(login, match["id"], expires).encode()):
            return storage_error(
                req,
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        if float(expires) < time.time():
            return storage_error(req, 403, "AccessDenied", "Request has expired")
        req.organization = login
        attachment = self._store(req).attachment(match["id"])
        if attachment is None or attachment.data is None:
            return storage_error(req, 404, "NoSuchKey", "The specified key does not exist.")
        return Response(200, attachment.data, attachment.content_type)

    def _login_page(self, req: Request, match: re.Match[str]) -> Response:
        return html_answer(200, HTML_PAGE)
