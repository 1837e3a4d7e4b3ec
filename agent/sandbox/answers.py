"""Requests as the sandbox reads them and the answers it gives: JSON:API, OAuth, HTML and S3-like
XML errors, each shaped in one place so every endpoint fails the way Qonto (or its storage) does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import Any
from xml.sax.saxutils import escape as xml_escape

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in - Qonto</title></head>"
    b"<body><h1>Sign in to Qonto</h1><form method=\"post\" action=\"/login\">"
    b"<input name=\"email\"><input name=\"password\" type=\"password\"><button>Sign in</button>"
    b"</form></body></html>\n"
)


@dataclass
class Request:
    """A request as read off the wire, from the `client` address. Routing names its `endpoint` (a
    route template such as `/v2/supplier_invoices/{id}`) and the query parameters it `ignored`;
    authentication (or a download's signed URL) names its `organization` (a login); bulk uploads
    annotate `items` and `idempotency_keys`."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: HTTPMessage
    body: bytes
    trace_id: str
    client: str = ""
    organization: str | None = None
    items: int = 0
    idempotency_keys: tuple[str, ...] = ()
    endpoint: str | None = None
    ignored: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """The scheme and host the client used to reach us, for links we hand back."""
        return f"http://{self.headers.get('Host', 'localhost')}"


@dataclass
class Response:
    """An answer to write back: status, body, content type and extra headers; or, with `stream`,
    a body of unknown length sent chunked as it comes (a slow or endless one)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None


def json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (UTF-8, non-ASCII kept as is, as Qonto writes it)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(status, body, headers=headers or {})


def api_error(
    req: Request,
    status: int,
    code: str,
    detail: str,
    *,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON:API error answer whose `trace_id` matches the `X-Tyk-Trace-Id` header."""
    error: dict[str, Any] = {"code": code, "detail": detail}
    if parameter is not None:
        error["source"] = {"parameter": parameter}
    return json_answer(status, {"errors": [error], "trace_id": req.trace_id}, headers)


def oauth_error(status: int, code: str, description: str) -> Response:
    """An OAuth 2.0 (RFC 6749) error answer of the token endpoint."""
    return json_answer(status, {"error": code, "error_description": description}, {"Cache-Control": "no-store"})


def html_answer(status: int, page: bytes, headers: dict[str, str] | None = None) -> Response:
    """An HTML answer: what a login page or a proxy sends instead of JSON."""
    return Response(status, page, "text/html; charset=utf-8", headers or {})


def storage_error(req: Request, status: int, code: str, message: str) -> Response:
    """An S3-like XML error, as object storage answers a refused pre-signed URL."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>"
        f"<RequestId>{req.trace_id}</RequestId></Error>\n"
    )
    return Response(status, body.encode("utf-8"), "application/xml")

