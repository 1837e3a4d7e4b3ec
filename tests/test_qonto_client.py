"""QontoClient: HTTP behaviour against `responses` mocks, and against a real loopback server
where real sockets matter (Retry-After waits, dropped connections, timeouts, rate-limiter
counting, retries said in our words), since `responses` short-cuts the network."""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from agent.config import QontoConfig
from agent import cli
from agent.base.errors import (
    AttachmentURLExpired,
    CredentialsError,
    HTMLAnswerError,
    NeedsPerson,
    PermissionDenied,
    QontoError,
    RateLimited,
    RequestRejected,
    TransientError,
)
from agent.base.times import rfc3339
from agent.qonto.bulk import UploadItem, named_items
from agent.qonto.client import FRESH_LINK_TRIES, QontoClient
from agent.state.tokens import FileTokenStore
from agent.qonto.pause import CredentialsPause
from agent.qonto.transport import RetryPolicy, parse_retry_after
from agent.qonto.ratelimit import RateLimiter

ROOT = "https://api.qonto.test"
TOKEN_URL = "https://oauth.qonto.test/oauth2/token"
SECRET_KEY = "sk-PLANTED-secret-0001"
STAGING = "stg-PLANTED-secret-0002"
ACCESS = "at-PLANTED-secret-0003"
REFRESH = "rt-PLANTED-secret-0004"
CLIENT_SECRET = "cs-PLANTED-secret-0005"
NEW_ACCESS = "at-PLANTED-secret-0006"
NEW_REFRESH = "rt-PLANTED-secret-0007"
SECRETS = (SECRET_KEY, STAGING, ACCESS, REFRESH, CLIENT_SECRET, NEW_ACCESS, NEW_REFRESH)
ORG = {"organization": {"id": "org-1", "slug": "acme", "legal_name": "ACME SAS"}}


def fast_retry(total: int = 3):
    return RetryPolicy(total=total, backoff_factor=0.001, backoff_max=0.01, backoff_jitter=0.001,
                        retry_after_max=1)


def api_key_config(base_url: str = ROOT, **kw) -> QontoConfig:
    values = dict(base_url=base_url, login="acme-1234", secret_key=SECRET_KEY, staging_token=STAGING,
                  timeout_seconds=5)
    return QontoConfig(**{**values, **kw})


def oauth_config(**kw) -> QontoConfig:
    values = dict(base_url=ROOT, access_token=ACCESS, refresh_token=REFRESH, client_id="client-1",
                  client_secret=CLIENT_SECRET, token_url=TOKEN_URL, staging_token=STAGING, timeout_seconds=5)
    return QontoConfig(**{**values, **kw})


def make_client(config: QontoConfig | None = None, **kw) -> QontoClient:
    kw.setdefault("retry", fast_retry())
    return QontoClient(config or api_key_config(), **kw)


def error_body(code: str, detail: str, trace_id: str | None = None, **extra) -> dict:
    body = {"errors": [{"code": code, "detail": detail, **extra}]}
    if trace_id:
        body["trace_id"] = trace_id
    return body


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def client():
    with make_client() as c:
        yield c


@pytest.fixture
def pdfs(tmp_path: Path) -> Callable[..., list[UploadItem]]:
    def make(*names: str) -> list[UploadItem]:
        items = []
        for n, name in enumerate(names):
            path = tmp_path / f"file{n}.pdf"
            path.write_bytes(b"%PDF-1.7 " + name.encode() + b"\n%%EOF\n")
            items.append(UploadItem(path=path, idempotency_key=f"key-{n}", filename=name))
        return items
    return make


def multipart_parts(request, policy=email.policy.default) -> list:
    """The parts of a captured multipart request (anything with `headers` and `body`), parsed as a
    stdlib email-based server would."""
    raw = b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n" + request.body
    return list(BytesParser(policy=policy).parsebytes(raw).walk())[1:]


def field_name(part) -> str:
    return part.get_param("name", header="content-disposition")


# --- a real loopback server for the retry loop on real sockets ---------------------------

@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes


class ScriptedServer:
    """Answers each request with the next scripted action; remembers what it received."""

    def __init__(self) -> None:
        self.actions: deque[Callable[[BaseHTTPRequestHandler], None]] = deque()
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except OSError:
                    pass  # the client gave up on a stalled answer

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.seen.append(Seen(self.command, self.path, dict(self.headers), self.rfile.read(length)))
                server.actions.popleft()(self)

            do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def script(self, *actions) -> None:
        self.actions.extend(actions)


def reply(status: int, body: dict | bytes = b"", headers: dict | None = None):
    def act(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    return act


def drop(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection without answering, after reading the whole request."""
    handler.close_connection = True


def stall(seconds: float, then):
    def act(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        then(handler)
    return act


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__([])
        self.count = 0

    def acquire(self, urgent: bool = False) -> None:
        super().acquire(urgent)
        self.count += 1


def test_429_with_retry_after_waits_then_retries(server):
    server.script(reply(429, error_body("too_many_requests", "slow down"), {"Retry-After": "0.3"}),
                  reply(200, ORG))
    with make_client(api_key_config(server.url)) as c:
        started = time.monotonic()
        assert c.get_organization()["slug"] == "acme"
        assert time.monotonic() - started >= 0.3
    assert len(server.seen) == 2


def test_two_500s_then_200_succeeds_and_the_limiter_counts_every_attempt(server):
    server.script(reply(500, error_body("internal_server_error", "oops")), reply(500, b"boom"), reply(200, ORG))
    limiter = CountingLimiter()
    with make_client(api_key_config(server.url), limiter=limiter) as c:
        assert c.get_organization()["id"] == "org-1"
    assert len(server.seen) == 3
    assert limiter.count == 3


def test_a_dropped_connection_on_bulk_is_retried_with_the_same_keys(server, pdfs, caplog):
    items = pdfs("a.pdf", "b.pdf")
    answer = {"supplier_invoices": [{"id": "inv-a", "file_name": "a.pdf"}, {"id": "inv-b", "file_name": "b.pdf"}],
              "errors": []}
    server.script(drop, reply(200, answer))
    limiter = CountingLimiter()
    with make_client(api_key_config(server.url), limiter=limiter) as c, caplog.at_level(logging.DEBUG):
        results = c.upload_bulk(items)
    assert [r.outcome for r in results] == ["created", "created"]
    assert [s.path for s in server.seen] == ["/v2/supplier_invoices/bulk"] * 2
    assert server.seen[0].body == server.seen[1].body
    keys = [part.get_content() for part in multipart_parts(server.seen[1])
            if field_name(part) == "supplier_invoices[][idempotency_key]"]
    assert keys == ["key-0", "key-1"]
    assert limiter.count == 2
    assert server.seen[1].headers["Authorization"] == f"acme-1234:{SECRET_KEY}"
    _secret_free(caplog.text)  # urllib3's own debug lines included


def test_a_read_timeout_is_retried(server):
    server.script(stall(0.6, reply(200, ORG)), reply(200, ORG))
    config = api_key_config(server.url, timeout_seconds=0.2)
    with make_client(config) as c:
        assert c.get_organization()["id"] == "org-1"
    assert len(server.seen) == 2


def test_5xx_that_outlasts_the_retries_is_transient_with_qonto_details(server):
    body = error_body("internal_server_error", "try later", trace_id="trace-500")
    server.script(*[reply(500, body)] * 3)
    with make_client(api_key_config(server.url), retry=fast_retry(total=2)) as c:
        with pytest.raises(TransientError) as caught:
            c.get_organization()
    assert len(server.seen) == 3
    exc = caught.value
    assert (exc.status, exc.code, exc.detail, exc.trace_id) == (500, "internal_server_error", "try later", "trace-500")
    assert "trace-500" in str(exc)


def test_429_that_outlasts_the_retries_is_rate_limited_with_retry_after(server):
    server.script(*[reply(429, error_body("too_many_requests", "slow"), {"Retry-After": "0.05"})] * 3)
    with make_client(api_key_config(server.url), retry=fast_retry(total=2)) as c:
        with pytest.raises(RateLimited) as caught:
            c.get_organization()
    assert caught.value.retry_after == pytest.approx(0.05)
    assert cli.exit_code_for(caught.value) == 3


@pytest.mark.parametrize("value, seconds", [
    ("3", 3.0), ("0.2", 0.2), (" 7 ", 7.0), ("-5", 0.0), ("soon", None), ("", None), ("nan", None),
])
def test_retry_after_values(value, seconds):
    assert parse_retry_after(value) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(when) <= 30


def test_nobody_listening_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with make_client(api_key_config(f"http://127.0.0.1:{port}")) as c:
        with pytest.raises(TransientError, match="no answer from 127.0.0.1"):
            c.get_organization()


# --- authentication and credential errors --------------------------------------------------

def test_api_key_auth_and_staging_token_on_every_api_request(rsps, client):
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    assert client.get_organization() == ORG["organization"]
    headers = rsps.calls[0].request.headers
    assert headers["Authorization"] == f"acme-1234:{SECRET_KEY}"
    assert headers["X-Qonto-Staging-Token"] == STAGING
    assert client.session_headers.get("Authorization") is None  # per request, never session-wide


def test_401_is_not_retried_and_starts_the_brake(rsps, client):
    rsps.get(f"{ROOT}/v2/organization", status=401, json=error_body("unauthorized", "Invalid credentials"))
    with pytest.raises(CredentialsError) as first:
        client.get_organization()
    assert "`[qonto] secret_key`" in str(first.value) and "QONTO_SECRET_KEY" in str(first.value)
    assert cli.exit_code_for(first.value) == 4
    assert len(rsps.calls) == 1

    started = time.monotonic()
    with pytest.raises(CredentialsError, match=r"paused; next try in 60 s"):
        client.get_organization()
    assert time.monotonic() - started < 0.1
    assert len(rsps.calls) == 1  # no request during the pause


@pytest.mark.parametrize("answer, said", [
    (dict(status=401, json=error_body("unauthorized", "Invalid credentials")), "secret key was refused (401)"),
    (dict(status=403, json=error_body("forbidden", "Missing scope")), "`organization.read` permission"),
    (dict(status=200, body="<html>login</html>", content_type="text/html"), "a web page instead of the Qonto API"),
])
def test_a_refusal_that_needs_a_person_is_reported_with_its_pause(rsps, client, answer, said):
    assert client.person_pause() is None
    rsps.get(f"{ROOT}/v2/organization", **answer)
    with pytest.raises(NeedsPerson):
        client.get_organization()
    pause = client.person_pause()
    assert pause is not None and said in pause.reason and SECRET_KEY not in pause.reason
    assert pause.until == pytest.approx(time.time() + 60, abs=5)


def test_the_brake_lifts_after_its_pause(rsps):
    rsps.get(f"{ROOT}/v2/organization", status=401, json=error_body("unauthorized", "no"))
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(credentials_pause=(0.05, 1.0)) as c:
        with pytest.raises(CredentialsError):
            c.get_organization()
        time.sleep(0.06)
        assert c.get_organization()["id"] == "org-1"


def test_the_brake_doubles_up_to_its_maximum_and_resets_on_success():
    now = [0.0]
    brake = CredentialsPause(60.0, 200.0, clock=lambda: now[0])
    pauses = []
    for _ in range(4):
        brake.trip("refused")
        with pytest.raises(CredentialsError) as caught:
            brake.check()
        pauses.append(caught.value.args[0].rsplit("in ", 1)[1])
        now[0] += 1000
    assert pauses == ["60 s", "120 s", "200 s", "200 s"]
    brake.release()
    brake.trip("refused")
    brake.trip("refused")  # a second refusal during the pause does not lengthen it
    with pytest.raises(CredentialsError, match="next try in 60 s"):
        brake.check()


ANY_API_URL = re.compile(re.escape(ROOT) + r"/v2/.*")


@pytest.mark.parametrize("call, scope", [
    (lambda c, items: c.get_organization(), "organization.read"),
    (lambda c, items: c.upload_bulk(items), "supplier_invoice.write"),
    (lambda c, items: list(c.iter_supplier_invoices()), "supplier_invoice.read"),
    (lambda c, items: c.get_supplier_invoice("inv-1"), "supplier_invoice.read"),
    (lambda c, items: c.get_attachment("att-1"), "attachment.read"),
])
def test_403_names_the_scope_and_qonto_detail(client, pdfs, call, scope):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        for method in (responses.GET, responses.POST):
            rsps.add(method, ANY_API_URL, status=403, json=error_body("forbidden", "Missing scope"))
        with pytest.raises(PermissionDenied) as caught:
            call(client, pdfs("a.pdf"))
    assert f"`{scope}`" in str(caught.value)
    assert "Qonto said: Missing scope" in str(caught.value)
    assert (caught.value.status, caught.value.code) == (403, "forbidden")


@pytest.mark.parametrize("status", [400, 404, 422, 413])
def test_whole_request_refusals_are_rejected_with_code_detail_and_trace(rsps, client, status):
    rsps.get(f"{ROOT}/v2/supplier_invoices/inv-1", status=status,
             json=error_body("invalid", "bad thing"), headers={"X-Tyk-Trace-Id": "trace-hdr"})
    with pytest.raises(RequestRejected) as caught:
        client.get_supplier_invoice("inv-1")
    exc = caught.value
    assert (exc.status, exc.code, exc.detail, exc.trace_id) == (status, "invalid", "bad thing", "trace-hdr")
    assert "trace id trace-hdr" in str(exc)
    assert len(rsps.calls) == 1


def test_413_as_a_proxy_web_page_is_still_a_rejection(rsps, client, pdfs):
    rsps.post(f"{ROOT}/v2/supplier_invoices/bulk", status=413, body="<html>Too Large</html>",
              content_type="text/html")
    with pytest.raises(RequestRejected, match="too large"):
        client.upload_bulk(pdfs("a.pdf"))


def test_ids_are_escaped_in_paths(rsps, client):
    rsps.get(f"{ROOT}/v2/attachments/..%2Fx", json={"attachment": {"id": "../x"}})
    assert client.get_attachment("../x") == {"id": "../x"}


@pytest.mark.parametrize("answer", [
    dict(status=200, body="<!doctype html><title>Login</title>", content_type="text/html; charset=utf-8"),
    dict(status=404, body="<html>Not found</html>", content_type="text/html"),
    dict(status=302, headers={"Location": "https://login.example/"}),
    dict(status=200, body="plain text", content_type="text/plain"),
    dict(status=200, json={"something": "else"}),
])
def test_a_web_page_instead_of_the_api_is_a_configuration_error(rsps, client, answer):
    rsps.get(f"{ROOT}/v2/organization", **answer)
    with pytest.raises(HTMLAnswerError) as caught:
        client.get_organization()
    message = str(caught.value)
    assert f"the server at {ROOT} answered with" in message
    assert "`[qonto] base_url`" in message and "`[qonto] staging_token`" in message
    assert "QONTO_STAGING_TOKEN" in message
    assert cli.exit_code_for(caught.value) == 2
    assert len(rsps.calls) == 1  # a redirect is not followed


def test_a_502_web_page_from_a_proxy_is_retried(rsps, client):
    rsps.get(f"{ROOT}/v2/organization", status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    assert client.get_organization()["id"] == "org-1"
    assert len(rsps.calls) == 2


def test_requests_are_logged_at_debug_without_headers(rsps, client, caplog):
    rsps.get(f"{ROOT}/v2/organization", json=ORG, headers={"X-Tyk-Trace-Id": "trace-42"})
    with caplog.at_level(logging.DEBUG, logger="agent.qonto"):
        client.get_organization()
    [record] = [r for r in caplog.records if r.name == "agent.qonto"]
    assert record.levelno == logging.DEBUG
    line = record.getMessage()
    assert line.startswith("GET /v2/organization -> 200 in ") and "trace id trace-42" in line


# --- bulk upload ---------------------------------------------------------------------------

BULK = f"{ROOT}/v2/supplier_invoices/bulk"


def test_the_multipart_body_goes_item_by_item_then_source_and_meta(rsps, client, pdfs):
    items = pdfs("a.pdf", "b.pdf", "c.pdf")
    rsps.post(BULK, json={"supplier_invoices": [], "errors": []})
    client.upload_bulk(items, meta={"batch": 7})
    request = rsps.calls[0].request
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(request)
    assert [field_name(p) for p in parts] == [
        "supplier_invoices[][file]", "supplier_invoices[][idempotency_key]",
    ] * 3 + ["source", "meta"]
    files = parts[0:6:2]
    assert [p.get_filename() for p in files] == ["a.pdf", "b.pdf", "c.pdf"]
    assert [p.get_content_type() for p in files] == ["application/pdf"] * 3
    assert [p.get_payload(decode=True) for p in files] == [i.path.read_bytes() for i in items]
    assert [p.get_content() for p in parts[1:6:2]] == ["key-0", "key-1", "key-2"]
    assert parts[6].get_content() == "integration"
    assert json.loads(parts[7].get_content()) == {"batch": 7}
    assert b"filename*=" not in request.body  # plain ASCII names go exactly as browsers send them


NAMES = ["Facture n°12 – Café Été.pdf", "請求書.pdf", 'Devis "final" back\\slash 100%.pdf', "plain-ascii.pdf"]


def upload_named(rsps, client, tmp_path, name: str):
    path = tmp_path / "x.pdf"
    path.write_bytes(b"%PDF-1.7\n%%EOF\n")
    rsps.post(BULK, json={"supplier_invoices": [{"id": "inv-1", "file_name": name}], "errors": []})
    [result] = client.upload_bulk([UploadItem(path=path, idempotency_key="k", filename=name)])
    assert result.outcome == "created"
    return rsps.calls[0].request


@pytest.mark.parametrize("name", NAMES[:2] + NAMES[3:])
def test_a_stdlib_email_parser_server_gets_the_file_name_back(rsps, client, tmp_path, name):
    """urllib3 writes `filename` as browsers do (raw UTF-8), which email.policy.default reads."""
    request = upload_named(rsps, client, tmp_path, name)
    [file_part] = [p for p in multipart_parts(request) if p.get_filename()]
    assert file_part.get_filename() == name


@pytest.mark.parametrize("name", NAMES)
def test_names_browsers_would_alter_also_get_an_exact_rfc2231_filename_star(rsps, client, tmp_path, name):
    """Rack, Go and Werkzeug prefer `filename*`; it carries quotes, backslashes and % exactly."""
    request = upload_named(rsps, client, tmp_path, name)
    [file_part] = [p for p in multipart_parts(request, email.policy.compat32) if p.get_filename()]
    encoded = [v for k, v in file_part.get_params(header="content-disposition") if isinstance(v, tuple)]
    if name == "plain-ascii.pdf":
        assert encoded == [] and b"filename*=" not in request.body  # exactly as browsers send it
    else:
        assert [email.utils.collapse_rfc2231_value(v) for v in encoded] == [name]


def test_the_plain_filename_parameter_comes_first_in_utf8(rsps, client, tmp_path):
    body = upload_named(rsps, client, tmp_path, "Café.pdf").body
    assert 'filename="Café.pdf"; filename*=UTF-8\'\'Caf%C3%A9.pdf'.encode() in body


def test_errors_land_on_the_items_their_pointer_names(rsps, client, pdfs):
    items = pdfs("a.pdf", "b.pdf", "c.pdf", "d.pdf")
    rsps.post(BULK, json={
        "supplier_invoices": [{"id": "inv-a", "file_name": "a.pdf"}, {"id": "inv-c", "file_name": "c.pdf"}],
        "errors": [
            {"code": "invalid", "detail": "file too large",
             "source": {"pointer": "/supplier_invoices/idempotency_key/key-1/file"}},
            {"code": "internal_server_error", "detail": "retry",
             "source": {"pointer": "/supplier_invoices/idempotency_key/key-3/file"}},
        ],
    })
    results = client.upload_bulk(items)
    assert [r.item for r in results] == items
    assert [r.outcome for r in results] == ["created", "rejected", "created", "unknown"]
    assert results[0].invoice["id"] == "inv-a" and results[2].invoice["id"] == "inv-c"
    assert results[1].errors == ({"code": "invalid", "detail": "file too large"},)
    assert results[3].errors == ({"code": "internal_server_error", "detail": "retry"},)
    assert results[0].errors == () and results[1].invoice is None


def test_errors_without_a_pointer_make_the_unmatched_items_unknown(rsps, client, pdfs):
    items = pdfs("a.pdf", "b.pdf", "c.pdf")
    rsps.post(BULK, json={
        "supplier_invoices": [{"id": "inv-b", "file_name": "b.pdf"}, {"id": "inv-x", "file_name": "renamed.pdf"}],
        "errors": [{"code": "invalid", "detail": "unsupported type"}],
    })
    results = client.upload_bulk(items)
    assert [r.outcome for r in results] == ["unknown", "created", "unknown"]
    assert results[1].invoice["id"] == "inv-b"
    assert results[0].errors == ({"code": "invalid", "detail": "unsupported type"},)


def test_unmatched_names_pair_in_order_only_when_counts_match(rsps, client, pdfs):
    items = pdfs("a.pdf", "b.pdf", "c.pdf")
    rsps.post(BULK, json={"supplier_invoices": [
        {"id": "inv-1", "file_name": "A_renamed.pdf"}, {"id": "inv-2", "file_name": "c.pdf"},
        {"id": "inv-3", "file_name": "B_renamed.pdf"},
    ], "errors": []})
    rsps.post(BULK, json={"supplier_invoices": [{"id": "inv-1", "file_name": "A_renamed.pdf"}], "errors": []})
    results = client.upload_bulk(items)
    assert [(r.outcome, r.invoice["id"]) for r in results] == [
        ("created", "inv-1"), ("created", "inv-3"), ("created", "inv-2")]
    results = client.upload_bulk(items)  # 1 invoice for 3 items, no name matches: nothing is safe
    assert [r.outcome for r in results] == ["unknown"] * 3
    assert results[0].errors[0]["code"] == "unmatched"


def test_ambiguous_names_are_not_matched_by_name(rsps, client, pdfs):
    items = pdfs("scan.pdf", "scan.pdf")
    rsps.post(BULK, json={"supplier_invoices": [{"id": "inv-1", "file_name": "scan.pdf"}],
                          "errors": [{"code": "invalid", "detail": "?"}]})
    assert [r.outcome for r in client.upload_bulk(items)] == ["unknown", "unknown"]


def test_bulk_limits_and_empty_batches(rsps, client, pdfs):
    with pytest.raises(ValueError, match="at most 20"):
        client.upload_bulk(pdfs(*[f"{n}.pdf" for n in range(21)]))
    a, b = pdfs("a.pdf", "b.pdf")
    with pytest.raises(ValueError, match="key-0"):
        client.upload_bulk([a, UploadItem(b.path, a.idempotency_key, b.filename)])
    assert client.upload_bulk([]) == []
    assert len(rsps.calls) == 0


def test_a_whole_bulk_refusal_raises(rsps, client, pdfs):
    rsps.post(BULK, status=400, json=error_body("invalid", "malformed request"))
    with pytest.raises(RequestRejected, match="malformed request"):
        client.upload_bulk(pdfs("a.pdf"))


def test_errors_in_the_2025_shape_list_source_and_details_land_on_their_items(rsps, client, pdfs):
    """Qonto's 2025 examples: `source` a list of objects, the words in `details`, a pointer by position."""
    items = pdfs("a.pdf", "b.pdf", "c.pdf")
    rsps.post(BULK, json={"supplier_invoices": [{"id": "inv-b", "file_name": "b.pdf"}], "errors": [
        {"code": "invalid", "details": "File type is not supported",
         "source": [{"pointer": "/supplier_invoices/0/file"}]},
        {"code": "invalid", "details": ["File is empty"],
         "source": [{"pointer": "/supplier_invoices/idempotency_key/key-2/file"}]},
    ]})
    results = client.upload_bulk(items)
    assert [r.outcome for r in results] == ["rejected", "created", "rejected"]
    assert results[0].errors == ({"code": "invalid", "detail": "File type is not supported"},)
    assert results[2].errors == ({"code": "invalid", "detail": "File is empty"},)


def test_an_error_naming_no_item_belongs_to_the_only_item_without_an_invoice(rsps, client, pdfs):
    rsps.post(BULK, json={"supplier_invoices": [{"id": "inv-a", "file_name": "a.pdf"}],
                          "errors": [{"code": "invalid", "detail": "File is encrypted"}]})
    results = client.upload_bulk(pdfs("a.pdf", "b.pdf"))
    assert [r.outcome for r in results] == ["created", "rejected"]
    assert results[1].errors == ({"code": "invalid", "detail": "File is encrypted"},)


def test_a_whole_bulk_refusal_carries_its_pointers_and_words(rsps, client, pdfs):
    items = pdfs("a.pdf", "b.pdf")
    rsps.post(BULK, status=400, json={"errors": [
        {"code": "required", "details": "File is required", "source": [{"pointer": "/supplier_invoices/1/file"}]}]})
    with pytest.raises(RequestRejected) as caught:
        client.upload_bulk(items)
    assert (caught.value.code, caught.value.detail) == ("required", "File is required")
    assert named_items(items, caught.value.pointers) == [1]
    assert named_items(items, ["/supplier_invoices/idempotency_key/key-0/file", "/supplier_invoices/7/file",
                               "/idempotency_key", "/supplier_invoices"]) == [0]


def test_a_200_that_refuses_the_whole_request_is_a_whole_refusal(rsps, client, pdfs):
    """Qonto's older material lists `limit_reached` among the item errors of a 200."""
    error = {"code": "limit_reached", "detail": "At most 20", "source": {"pointer": "/supplier_invoices"}}
    rsps.post(BULK, json={"supplier_invoices": [], "errors": [error]})
    items = pdfs("a.pdf", "b.pdf")
    with pytest.raises(RequestRejected, match="as a whole; Qonto said: At most 20") as caught:
        client.upload_bulk(items)
    assert caught.value.code == "limit_reached" and named_items(items, caught.value.pointers) == []


def test_a_404_where_qonto_always_answers_is_the_wrong_address(rsps, client, pdfs):
    rsps.post(BULK, status=404, json=error_body("not_found", "No route"))
    with pytest.raises(HTMLAnswerError, match=r"404 Not Found for /v2/supplier_invoices/bulk .*`\[qonto\] base_url`"):
        client.upload_bulk(pdfs("a.pdf"))


# --- listing -------------------------------------------------------------------------------

LIST = f"{ROOT}/v2/supplier_invoices"


def page(n: int, next_page: int | None) -> dict:
    return {"supplier_invoices": [{"id": f"inv-{n}a"}, {"id": f"inv-{n}b"}],
            "meta": {"current_page": n, "next_page": next_page, "per_page": 100}}


def query(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def test_listing_follows_next_page_and_always_asks_for_100(rsps, client):
    for n, nxt in ((1, 2), (2, 3), (3, None)):
        rsps.get(LIST, json=page(n, nxt), match=[responses.matchers.query_param_matcher({"page": str(n)},
                                                                                       strict_match=False)])
    since = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    pages = list(client.iter_pages(updated_from=since, updated_to="2026-02-01T00:00:00Z"))
    ids = [inv["id"] for p in pages for inv in p.invoices]
    metas = [p.meta for p in pages]
    assert ids == ["inv-1a", "inv-1b", "inv-2a", "inv-2b", "inv-3a", "inv-3b"]
    assert [m["current_page"] for m in metas] == [1, 2, 3]
    queries = [query(c) for c in rsps.calls]
    assert [q["page"] for q in queries] == ["1", "2", "3"]
    for q in queries:
        assert q["per_page"] == "100" and q["sort_by"] == "updated_at:asc"
        assert q["filter[updated_at_from]"] == "2026-01-01T00:00:00Z"
        assert q["filter[updated_at_to]"] == "2026-02-01T00:00:00Z"
        assert "filter[created_at_from]" not in q


def test_the_next_page_is_requested_only_after_the_caller_consumed_the_last(rsps, client):
    for n, nxt in ((1, 2), (2, None)):
        rsps.get(LIST, json=page(n, nxt), match=[responses.matchers.query_param_matcher({"page": str(n)},
                                                                                       strict_match=False)])
    events = []
    for listed in client.iter_pages():
        events += [invoice["id"] for invoice in listed.invoices]
        events.append(f"page {listed.meta['current_page']} after {len(rsps.calls)} request(s)")
    assert events == ["inv-1a", "inv-1b", "page 1 after 1 request(s)", "inv-2a", "inv-2b", "page 2 after 2 request(s)"]
    assert [inv["id"] for inv in client.iter_supplier_invoices()] == ["inv-1a", "inv-1b", "inv-2a", "inv-2b"]


def test_a_400_on_sort_by_falls_back_to_created_at_for_good(rsps, client, caplog):
    sort_400 = error_body("invalid_parameter", "sort_by is invalid", source={"parameter": "sort_by"})
    rsps.get(LIST, status=400, json=sort_400,
             match=[responses.matchers.query_param_matcher({"sort_by": "updated_at:asc"}, strict_match=False)])
    rsps.get(LIST, json=page(1, None),
             match=[responses.matchers.query_param_matcher({"sort_by": "created_at:asc"}, strict_match=False)])
    with caplog.at_level(logging.INFO, logger="agent.qonto"):
        assert len(list(client.iter_supplier_invoices())) == 2
        assert len(list(client.iter_supplier_invoices())) == 2
    assert [query(c)["sort_by"] for c in rsps.calls] == ["updated_at:asc", "created_at:asc", "created_at:asc"]
    assert sum("created_at:asc from now on" in r.getMessage() for r in caplog.records) == 1


def test_a_400_that_is_not_about_sorting_is_raised(rsps, client):
    rsps.get(LIST, status=400, json=error_body("invalid", "bad filter"))
    with pytest.raises(RequestRejected, match="bad filter"):
        list(client.iter_supplier_invoices(updated_from="yesterday"))
    with pytest.raises(RequestRejected):
        list(client.iter_supplier_invoices(updated_from="yesterday"))
    assert [query(c)["sort_by"] for c in rsps.calls] == ["updated_at:asc", "created_at:asc"] * 2


@pytest.mark.parametrize("value, expected", [
    (datetime(2026, 1, 1, tzinfo=timezone.utc), "2026-01-01T00:00:00Z"),
    (datetime(2026, 1, 1, 2, 30, tzinfo=timezone(timedelta(hours=2))), "2026-01-01T00:30:00Z"),
    (datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc), "2026-01-01T00:00:00.123456Z"),
    (datetime(2026, 1, 1), "2026-01-01T00:00:00Z"),
    ("2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00+01:00"),
])
def test_timestamps_are_rfc3339_utc(value, expected):
    assert rfc3339(value) == expected


def test_single_invoice(rsps, client):
    rsps.get(f"{LIST}/inv-1", json={"supplier_invoice": {"id": "inv-1", "status": "paid"}})
    assert client.get_supplier_invoice("inv-1") == {"id": "inv-1", "status": "paid"}


# --- attachments ---------------------------------------------------------------------------

STORAGE = "https://storage.test/bucket/att-1.pdf"
EXPIRED_XML = (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
               b"<Message>Request has expired</Message></Error>")


def attachment(url: str, content: bytes = b"%PDF-1.7 abc") -> dict:
    return {"attachment": {"id": "att-1", "file_name": "x.pdf", "file_size": str(len(content)), "url": url}}


def test_download_streams_to_dest_without_authorization(rsps, client, tmp_path):
    content = b"%PDF-1.7 " + os.urandom(300_000)
    rsps.get(STORAGE, body=content, content_type="application/pdf")
    dest = tmp_path / "att.part"
    assert client.download(f"{STORAGE}?X-Amz-Signature=abc", dest) == hashlib.sha256(content).hexdigest()
    assert dest.read_bytes() == content
    headers = rsps.calls[0].request.headers
    assert "Authorization" not in headers and "X-Qonto-Staging-Token" not in headers


def test_download_attachment_refetches_an_expired_link(rsps, client, tmp_path):
    rsps.get(f"{STORAGE}?sig=old", status=403, body=EXPIRED_XML, content_type="application/xml")
    rsps.get(f"{ROOT}/v2/attachments/att-1", json=attachment(f"{STORAGE}?sig=new", b"%PDF-fresh"))
    rsps.get(f"{STORAGE}?sig=new", body=b"%PDF-fresh")
    got, sha = client.download_attachment("att-1", tmp_path / "a.part",
                                          attachment=attachment(f"{STORAGE}?sig=old")["attachment"])
    assert got["url"].endswith("sig=new")
    assert sha == hashlib.sha256(b"%PDF-fresh").hexdigest()
    assert (tmp_path / "a.part").read_bytes() == b"%PDF-fresh"
    api_call = rsps.calls[1].request
    assert api_call.headers["Authorization"] == f"acme-1234:{SECRET_KEY}"
    assert all("Authorization" not in c.request.headers for c in (rsps.calls[0], rsps.calls[2]))


def test_download_attachment_fetches_the_attachment_when_not_given(rsps, client, tmp_path):
    rsps.get(f"{ROOT}/v2/attachments/att-1", json=attachment(STORAGE, b"%PDF-x"))
    rsps.get(STORAGE, body=b"%PDF-x")
    got, sha = client.download_attachment("att-1", tmp_path / "a.part")
    assert got["id"] == "att-1" and sha == hashlib.sha256(b"%PDF-x").hexdigest()


def test_a_link_that_keeps_expiring_gives_up_after_a_few_tries(rsps, client, tmp_path):
    rsps.get(STORAGE, status=400, body=b"<Error><Code>ExpiredToken</Code></Error>")
    rsps.get(f"{ROOT}/v2/attachments/att-1", json=attachment(STORAGE))
    with pytest.raises(AttachmentURLExpired):
        client.download_attachment("att-1", tmp_path / "a.part", attachment={"id": "att-1"})
    assert len([c for c in rsps.calls if c.request.url.startswith(STORAGE)]) == FRESH_LINK_TRIES


def test_other_download_refusals(rsps, client, tmp_path):
    rsps.get(STORAGE, status=404, body=b"<Error><Code>NoSuchKey</Code></Error>")
    with pytest.raises(RequestRejected):
        client.download(STORAGE, tmp_path / "a.part")


# --- OAuth ---------------------------------------------------------------------------------

def token_answer(access=NEW_ACCESS, refresh=NEW_REFRESH) -> dict:
    return {"access_token": access, "refresh_token": refresh, "expires_in": 3600, "token_type": "bearer"}


def write_store(path: Path, expires_at: float | None, access=ACCESS, refresh=REFRESH) -> None:
    path.write_text(json.dumps({"access_token": access, "refresh_token": refresh, "expires_at": expires_at}))


def test_oauth_refreshes_ahead_of_expiry_and_keeps_the_rotated_token(rsps, tmp_path):
    store = tmp_path / "state" / "agent.oauth.json"
    store.parent.mkdir()
    write_store(store, time.time() + 120, refresh="rt-from-store-PLANTED")  # under 5 minutes left
    rsps.post(TOKEN_URL, json=token_answer())
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(), token_store=FileTokenStore(store)) as c:
        c.get_organization()
    token_request, api_request = (call.request for call in rsps.calls)
    assert parse_qs(token_request.body) == {
        "grant_type": ["refresh_token"], "client_id": ["client-1"], "client_secret": [CLIENT_SECRET],
        "refresh_token": ["rt-from-store-PLANTED"]}
    assert token_request.headers["X-Qonto-Staging-Token"] == STAGING
    assert "Authorization" not in token_request.headers
    assert api_request.headers["Authorization"] == f"Bearer {NEW_ACCESS}"
    saved = json.loads(store.read_text())
    assert saved["access_token"] == NEW_ACCESS and saved["refresh_token"] == NEW_REFRESH
    assert saved["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert [p.name for p in store.parent.iterdir()] == [store.name]  # no temporary left behind


class MemoryStore:
    """A TokenStore that keeps what it is given: the client saves through it and writes no file."""

    def __init__(self, tokens: dict | None = None) -> None:
        self.tokens = tokens

    def load(self) -> dict | None:
        return self.tokens

    def save(self, tokens: dict) -> None:
        self.tokens = tokens


def test_rotated_tokens_go_to_the_store_the_caller_passed_in(rsps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = MemoryStore({"access_token": ACCESS, "refresh_token": "rt-remembered", "expires_at": None})
    rsps.post(TOKEN_URL, json=token_answer())
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(), token_store=store) as c:
        c.get_organization()
    assert parse_qs(rsps.calls[0].request.body)["refresh_token"] == ["rt-remembered"]
    assert store.tokens is not None and store.tokens["refresh_token"] == NEW_REFRESH
    assert list(tmp_path.iterdir()) == []


def test_a_fresh_stored_token_is_used_without_refreshing(rsps, tmp_path):
    store = tmp_path / "oauth.json"
    write_store(store, time.time() + 3000, access="at-stored")
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(), token_store=FileTokenStore(store)) as c:
        c.get_organization()
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer at-stored"


def test_unknown_expiry_refreshes_before_the_first_request_then_not_again(rsps, tmp_path):
    rsps.post(TOKEN_URL, json=token_answer())
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    store = tmp_path / "oauth.json"
    with make_client(oauth_config(), token_store=FileTokenStore(store)) as c:
        c.get_organization()
        c.get_organization()
    assert [urlsplit(call.request.url).path for call in rsps.calls] == [
        "/oauth2/token", "/v2/organization", "/v2/organization"]
    assert json.loads(store.read_text())["refresh_token"] == NEW_REFRESH


def test_an_access_token_alone_is_used_as_is(rsps):
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(refresh_token="", client_id="", client_secret="")) as c:
        c.get_organization()
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_an_oauth_401_refreshes_once_and_retries_once(rsps, tmp_path):
    store = tmp_path / "oauth.json"
    write_store(store, time.time() + 3000)
    rsps.get(f"{ROOT}/v2/organization", status=401, json=error_body("unauthorized", "revoked"))
    rsps.post(TOKEN_URL, json=token_answer())
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    rsps.get(f"{ROOT}/v2/organization", status=401, json=error_body("unauthorized", "revoked"))
    with make_client(oauth_config(), token_store=FileTokenStore(store)) as c:
        assert c.get_organization()["id"] == "org-1"
        with pytest.raises(CredentialsError) as caught:  # refreshed under 60 s ago: no second refresh
            c.get_organization()
    assert [urlsplit(call.request.url).path for call in rsps.calls] == [
        "/v2/organization", "/oauth2/token", "/v2/organization", "/v2/organization"]
    assert "`[qonto] access_token`" in str(caught.value) and "QONTO_ACCESS_TOKEN" in str(caught.value)


def test_a_refused_refresh_is_a_credentials_error_and_brakes(rsps):
    rsps.post(TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "expired"})
    with make_client(oauth_config()) as c:
        with pytest.raises(CredentialsError, match="refresh token was refused") as caught:
            c.get_organization()
        assert (caught.value.code, caught.value.detail) == ("invalid_grant", "expired")
        assert "QONTO_REFRESH_TOKEN" in str(caught.value)
        with pytest.raises(CredentialsError, match="paused"):
            c.get_organization()
    assert len(rsps.calls) == 1


def test_a_store_from_earlier_configured_tokens_gives_way_to_new_ones(rsps, tmp_path):
    store = tmp_path / "oauth.json"
    rsps.post(TOKEN_URL, json=token_answer())
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(refresh_token="rt-first-authorization"), token_store=FileTokenStore(store)) as c:
        c.get_organization()  # the store now holds rotated tokens grown from rt-first-authorization
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(refresh_token="rt-first-authorization"), token_store=FileTokenStore(store)) as c:
        c.get_organization()  # same configuration: the rotated, stored token is used
    assert rsps.calls[2].request.headers["Authorization"] == f"Bearer {NEW_ACCESS}"
    rsps.post(TOKEN_URL, json=token_answer(access="at-second", refresh="rt-second-rotated"))
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    with make_client(oauth_config(refresh_token="rt-second-authorization"), token_store=FileTokenStore(store)) as c:
        c.get_organization()  # the user authorized again: the configured token wins over the store
    assert parse_qs(rsps.calls[3].request.body)["refresh_token"] == ["rt-second-authorization"]
    assert json.loads(store.read_text())["refresh_token"] == "rt-second-rotated"


def test_an_unreadable_token_store_falls_back_to_the_configured_tokens(rsps, tmp_path, caplog):
    store = tmp_path / "oauth.json"
    store.write_text("{not json")
    rsps.get(f"{ROOT}/v2/organization", json=ORG)
    config = oauth_config(client_id="", client_secret="", refresh_token="")
    with make_client(config, token_store=FileTokenStore(store)) as c:
        c.get_organization()
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS}"
    assert "cannot read the OAuth token store" in caplog.text


def test_the_token_endpoint_answering_a_web_page_names_token_url(rsps):
    rsps.post(TOKEN_URL, body="<html>login</html>", content_type="text/html")
    with make_client(oauth_config()) as c:
        with pytest.raises(HTMLAnswerError, match=r"`\[qonto\] token_url`"):
            c.get_organization()


# --- no secret anywhere --------------------------------------------------------------------

def _secret_free(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_no_secret_in_any_error_or_log(tmp_path, pdfs, caplog):
    """Plant every secret, trigger every error type, and look for the secrets everywhere."""
    echo = f"bad key {SECRET_KEY} / {STAGING}"  # a server that echoes what it received
    scenarios = [
        (dict(status=401, json=error_body("unauthorized", echo, trace_id=SECRET_KEY)), CredentialsError),
        (dict(status=403, json=error_body("forbidden", echo)), PermissionDenied),
        (dict(status=404, json=error_body(echo, echo)), HTMLAnswerError),  # these endpoints always exist
        (dict(status=422, json=error_body("invalid", echo)), RequestRejected),
        (dict(status=429, json=error_body("too_many_requests", echo)), RateLimited),
        (dict(status=500, json=error_body("internal_server_error", echo)), TransientError),
        (dict(status=200, body=f"<html>{echo}</html>", content_type="text/html"), HTMLAnswerError),
        (dict(status=301, headers={"Location": f"https://x/?{STAGING}"}), HTMLAnswerError),
        (dict(body=requests.ConnectionError(echo)), TransientError),
    ]
    raised: list[QontoError] = []
    with caplog.at_level(logging.DEBUG):
        for answer, expected in scenarios:
            with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, make_client() as c:
                rsps.add(responses.GET, ANY_API_URL, **answer)
                rsps.add(responses.POST, ANY_API_URL, **answer)
                for call in (c.get_organization, lambda: c.upload_bulk(pdfs("a.pdf")), c.get_organization):
                    with pytest.raises(expected) as caught:
                        call()
                    raised.append(caught.value)
        with responses.RequestsMock() as rsps, make_client(oauth_config()) as c:
            rsps.post(TOKEN_URL, status=401, json={"error": "invalid_client",
                                                   "error_description": f"bad {CLIENT_SECRET} {REFRESH}"})
            for _ in range(2):
                with pytest.raises(CredentialsError) as caught:
                    c.get_organization()
                raised.append(caught.value)
        with responses.RequestsMock() as rsps, make_client() as c:
            rsps.get(STORAGE, status=403, body=EXPIRED_XML)
            with pytest.raises(AttachmentURLExpired) as caught:
                c.download(STORAGE, tmp_path / "x")
            raised.append(caught.value)
    assert len(raised) >= len(scenarios) * 3
    for exc in raised:
        _secret_free(f"{exc} {exc!r} {exc.code} {exc.detail} {exc.trace_id}")
    assert "[redacted]" in str(raised[3])  # the echoed secret was masked, not dropped
    _secret_free(caplog.text)
    _secret_free(" ".join(repr(r.args) for r in caplog.records))


# --- two budgets ---------------------------------------------------------------------------

def test_storage_downloads_take_nothing_from_the_api_rate_limit(rsps, tmp_path):
    rsps.get(f"{ROOT}/v2/attachments/att-1", json=attachment(STORAGE, b"%PDF-x"))
    rsps.get(STORAGE, body=b"%PDF-x")
    limiter = CountingLimiter()
    with make_client(limiter=limiter) as c:
        c.download_attachment("att-1", tmp_path / "a.part")
        c.download(STORAGE, tmp_path / "b.part", size=6)
    assert len(rsps.calls) == 3
    assert limiter.count == 1  # the attachment's JSON only


def test_uploads_and_token_refreshes_are_urgent_other_calls_are_not(rsps, pdfs):
    class Recording(RateLimiter):
        def __init__(self) -> None:
            super().__init__([])
            self.calls: list[bool] = []

        def acquire(self, urgent: bool = False) -> None:
            self.calls.append(urgent)

    rsps.post(TOKEN_URL, json=token_answer())
    rsps.post(BULK, json={"supplier_invoices": [{"id": "inv-a", "file_name": "a.pdf"}], "errors": []})
    rsps.get(LIST, json=page(1, None))
    limiter = Recording()
    with make_client(oauth_config(), limiter=limiter) as c:
        c.upload_bulk(pdfs("a.pdf"))
        list(c.iter_supplier_invoices())
    assert limiter.calls == [True, True, False]  # token refresh, upload, listing


# --- retries said in one sentence ------------------------------------------------------------

def test_each_retry_is_one_sentence_without_the_link(server, tmp_path, caplog):
    server.script(reply(503, error_body("unavailable", "busy")), drop, reply(200, ORG),
                  reply(503, b"<Error><Code>SlowDown</Code></Error>"), reply(200, b"%PDF-x"))
    with make_client(api_key_config(server.url)) as c, caplog.at_level(logging.DEBUG, logger="agent.qonto"):
        c.get_organization()
        c.download(f"{server.url}/bucket/a.pdf?X-Amz-Signature=abc&signature=def", tmp_path / "a", size=6)
    ours = [r for r in caplog.records if r.name == "agent.qonto"]
    said = [r.getMessage() for r in ours if r.levelno >= logging.INFO]
    assert [re.sub(r"in [\d.]+ s$", "in N s", line) for line in said] == [
        "Qonto answered 503; retry 1 of 3 in N s",
        "Qonto did not answer (the connection failed); retry 2 of 3 in N s",
        "the attachment storage answered 503; retry 1 of 3 in N s",
    ]
    assert not [r for r in ours if "X-Amz" in r.getMessage() or "signature=" in r.getMessage()]
    # urllib3's own lines are silenced by the agent's logging set-up: see test_secrets.py


def test_a_tls_failure_is_not_retried(server):
    limiter = CountingLimiter()
    with make_client(api_key_config(server.url.replace("http://", "https://")), limiter=limiter) as c:
        with pytest.raises(HTMLAnswerError, match=r"check `\[qonto\] base_url`"):  # not cured by waiting
            c.get_organization()
    assert limiter.count == 1
