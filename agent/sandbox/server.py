"""A local Qonto-compatible API, for `qonto-agent demo`, the test suite and users' own checks.

The sandbox serves the part of Qonto's API that qonto-agent uses (as described in the project's
Qonto API facts, qonto-api.md) over real HTTP, with Qonto's quirks reproduced on purpose:

- API key (`Authorization: <login>:<secret_key>`) and OAuth 2.0 bearer auth, with an OAuth token
  endpoint whose refresh tokens rotate (the old one keeps working for 60 seconds).
- An optional staging token: without the `X-Qonto-Staging-Token` header the answer is a 302 to an
  HTML login page, like Qonto's own sandbox. `html_mode` answers every request with an HTML page
  (what a wrong `base_url` looks like).
- `POST /v2/supplier_invoices/bulk`: multipart parsed and grouped Rails-style (so fields sent in
  the wrong order are mis-paired, as on Qonto), 10 MB per file, per-item errors inside an HTTP
  200, idempotency keys remembered for `key_window_seconds` after a successful creation. Whole-
  request failures answer 400 with the codes and pointers of Qonto's reference: more than 20
  items (`limit_reached`), an item without key or file (`required`), over 15 MB (`bad_request`;
  `too_large_413` answers 413 as a proxy may). `error_source_list` and `error_details` give the
  errors the other shape Qonto's published examples show (`source` a list, `details`).
- Invoices are "analysed" `analysis_delay_seconds` after creation: supplier, number, amount and
  dates get filled and `updated_at` moves. This happens lazily, at the start of every request and
  of every inspection call, so the sandbox needs no background thread.
- Invoices shaped as Qonto's 2026 reference shows them (`source_type` `direct_upload`, `email` or
  `e_invoicing`, `source` a string, `is_einvoice`, amounts, approvals, matched transactions,
  credit notes and e-invoicing events as nested arrays and objects).
- `GET /v2/supplier_invoices` with filters, the reference's sort fields plus `updated_at` (nulls
  last ascending, first descending) and pagination (`per_page` defaults to 1 when absent, as in
  some spec versions), and a switch to refuse sorting by `updated_at`. Other query parameters are
  ignored, as the reference says nothing of them; the request log shows them.
- `denied_scopes`: the endpoints needing one of these OAuth scopes answer 403 `forbidden`.
- Several organizations (`organizations`, `add_organization()`), each with its own API key,
  invoices, attachments and idempotency keys (`orgs.py`); bearer tokens are the primary's.
- Qonto's per-IP rate limit (`ip_rate_limits`, off by default): `/v2/` requests above the rate,
  401s included, answer 429 `too_many_requests` with `Retry-After` (`iplimit.py`).
- `GET /v2/attachments/{id}` hands out pre-signed storage URLs under `/_storage/` that expire,
  refuse an `Authorization` header and answer S3-like XML errors.
- Fault injection (`Faults`): latency, 500, 429 with `Retry-After`, dropped connections, HTML 502
  pages, "commit then fail" (the work is done, the answer is lost), answers trickling one byte a
  second, and storage downloads that answer 503 or whose body is short, long or endless.

Everything is stdlib. The inspection methods (`invoices()`, `request_log()`, `count()`,
`counts()`, ...) are thread-safe and return copies, so tests can look at what clients did; the
same view is served read-only at `GET /_sandbox/requests` and `GET /_sandbox/counts`, without
any secret (see `log.py`). Example::

    with Sandbox(seed=1, analysis_delay_seconds=0.1) as sandbox:
        ids = sandbox.seed(5)
        answer = requests.get(f"{sandbox.base_url}/v2/supplier_invoices?per_page=100",
                              headers={"Authorization": "sandbox-org:sandbox-secret-key"})
"""

from __future__ import annotations

import dataclasses
import hmac
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.sandbox.answers import HTML_PAGE, Request, Response, api_error, html_answer
from agent.sandbox.api import Api
from agent.sandbox.faults import SPOILERS, FaultDice, fault_response, spoil
from agent.sandbox.http import Server
from agent.sandbox.iplimit import IpRateLimit
from agent.sandbox.log import RequestLog, RequestRecord
from agent.sandbox.orgs import Organizations
from agent.sandbox.settings import SandboxSettings
from agent.sandbox.store import to_ms
from agent.sandbox.view import PREFIX as VIEW_PREFIX, view

_SETTINGS = frozenset(settings_field.name for settings_field in dataclasses.fields(SandboxSettings))


class Sandbox:
    """A local Qonto-compatible API server with inspection and fault injection for tests.

    Construct, then `start()` (or use it as a context manager); `base_url` is then the API root
    to configure. Credentials: API key `<login>:<secret_key>`, bearer tokens in `access_tokens`
    or issued by `POST /oauth2/token` (client id/secret and a first refresh token as given).
    `organizations` (or `add_organization()`) serves more organizations, each its own API key and
    data; the inspection methods take `organization=<login>` (default: the primary, `login`).
    `ip_rate_limits` ((requests, seconds), ...) answers 429 above that rate per client address.

    Run-time knobs, read at each use: `faults`, `key_window_seconds` (how long an idempotency key
    replays its invoice), `analysis_delay_seconds`, `url_ttl_seconds` (pre-signed URL validity),
    `html_mode`. With `seed`, generated ids, analysis results and fault draws are reproducible.
    `reject(filename, data)` may return a reason to refuse an item as `invalid`.
    `keep_files=False` keeps only the size and SHA-256 of uploaded files (downloads of their
    attachments then answer 404 NoSuchKey); seeded files are always kept. `denied_scopes`
    (e.g. `{"attachment.read"}`) makes the endpoints needing those scopes answer 403 `forbidden`.
    `request_log_limit` keeps only the latest records (the counts still cover everything).
    """

    settings: SandboxSettings

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, settings: SandboxSettings | None = None, **options: Any
    ) -> None:
        """Configure with `settings`, or with its fields as keyword arguments (`seed=1`, ...)."""
        if settings is not None and options:
            raise TypeError("give either settings= or keyword settings, not both")
        self.settings = settings if settings is not None else SandboxSettings(**options)
        self.host, self.port = host, port
        self._faults = FaultDice(self.settings.seed)
        self._orgs = Organizations(self.settings)
        self._api = Api(self.settings, self._orgs)
        self._ip_limit = IpRateLimit()
        self._log = RequestLog(self.settings.request_log_limit)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        """Settings read as attributes (`sandbox.faults`), as they always have been."""
        if name in _SETTINGS:
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        """Settings changed as attributes (`sandbox.url_ttl_seconds = 1.0`) take effect at once."""
        if name in _SETTINGS:
            setattr(self.settings, name, value)
        else:
            object.__setattr__(self, name, value)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Listen (port 0 picks a free one) and serve in a daemon thread; return self."""
        if self._server is None:
            self._server = Server((self.host, self.port), self)
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

    def add_organization(self, login: str, secret_key: str) -> None:
        """Serve one more organization, API key `<login>:<secret_key>`, from now on (empty, like a
        new one); ValueError if the login is taken."""
        self._orgs.add(login, secret_key)

    def invoices(self, organization: str | None = None) -> list[dict[str, Any]]:
        """Every supplier invoice of an organization (a login; None: the primary), in creation
        order, as the API would show it now. The other inspection methods take it too."""
        self._analyse_due()
        return self._orgs.store(organization).all_invoices()

    def invoice_count(self, organization: str | None = None) -> int:
        """How many invoices exist (without analysing any)."""
        return self._orgs.store(organization).invoice_count()

    def invoice(self, invoice_id: str, organization: str | None = None) -> dict[str, Any] | None:
        """One invoice as the API would show it now, or None."""
        self._analyse_due()
        return self._orgs.store(organization).invoice(invoice_id)

    def request_log(self, since: int = 0) -> list[RequestRecord]:
        """Every request received since the start (or the last `reset_log()`), oldest first; with
        `since`, only those whose `seq` is greater."""
        return self._log.records(since)

    @property
    def requests(self) -> list[RequestRecord]:
        """Same as `request_log()`: a copy."""
        return self.request_log()

    def reset_log(self) -> None:
        """Forget the requests logged so far and their counts, so a test counts only what follows."""
        self._log.clear()

    def counts(self) -> dict[str, int]:
        """Requests per endpoint since the start or the last `reset_log()`, most frequent first:
        {"GET /v2/supplier_invoices": 3, "GET /v2/attachments/{id}": 12, ...} (what
        `GET /_sandbox/counts` shows)."""
        return self._log.counts()

    def count(
        self, *, method: str | None = None, path_prefix: str | None = None, status: int | None = None,
        organization: str | None = None,
    ) -> int:
        """How many logged requests match every given criterion (None means any; `organization`
        is the login the request was for)."""
        return sum(
            1
            for record in self.request_log()
            if (method is None or record.method == method)
            and (path_prefix is None or record.path.startswith(path_prefix))
            and (status is None or record.status == status)
            and (organization is None or record.organization == organization)
        )

    def seed(
        self, n: int, *, without_attachment: float = 0.1, start: datetime | None = None,
        organization: str | None = None,
    ) -> list[str]:
        """Add `n` analysed invoices, most with a small PDF attachment; return their ids.

        Their `updated_at` values are distinct, increasing with creation, and spread between
        `start` (default: 30 days ago; a naive datetime means UTC) and now. About
        `without_attachment` of them have no attachment; every seventh has an odd file name.
        """
        now = datetime.now(timezone.utc)
        start = start if start is not None else now - timedelta(days=30)
        if to_ms(start) >= to_ms(now):
            raise ValueError("seed(start=...) must be in the past")
        return self._orgs.store(organization).seed(n, without_attachment=without_attachment, start=start, end=now)

    def update_invoice(self, invoice_id: str, *, organization: str | None = None, **fields: Any) -> dict[str, Any]:
        """Set fields of an invoice (as a person would in Qonto) and move its `updated_at`."""
        self._analyse_due()
        return self._orgs.store(organization).update(invoice_id, fields)

    def attachment_bytes(self, attachment_id: str, organization: str | None = None) -> bytes:
        """The stored bytes of an attachment; KeyError if unknown or not kept."""
        attachment = self._orgs.store(organization).attachment(attachment_id)
        if attachment is None or attachment.data is None:
            raise KeyError(attachment_id)
        return attachment.data

    def attachment_sha256(self, attachment_id: str, organization: str | None = None) -> str:
        """The lowercase hex SHA-256 of an attachment's bytes; KeyError if unknown."""
        attachment = self._orgs.store(organization).attachment(attachment_id)
        if attachment is None:
            raise KeyError(attachment_id)
        return attachment.sha256

    def uploads_by_key(self, organization: str | None = None) -> dict[str, str]:
        """Idempotency key → id of the invoice its latest successful creation made."""
        return self._orgs.store(organization).uploads_by_key()

    def _analyse_due(self) -> None:
        for store in self._orgs.stores():
            store.analyse_due(self.settings.analysis_delay_seconds)

    def respond(self, req: Request) -> Response | None:
        """The answer to a request, or None to drop the connection without answering (for the handler).

        The request view answers before anything else: no latency, fault, staging token or HTML mode.
        """
        if req.path.startswith(VIEW_PREFIX):
            return view(req, self._log)
        # counted as it arrives, as Qonto's edge counts it, not after the latency the answer takes
        refused = self._ip_limit.admit(req.client, self.settings.ip_rate_limits) if req.path.startswith("/v2/") else None
        faults = self.settings.faults
        storage = req.path.startswith("/_storage/")
        latency = faults.storage_latency_seconds if storage and faults.storage_latency_seconds is not None \
            else faults.latency_seconds
        if latency > 0:
            time.sleep(latency)
        self._analyse_due()
        if self.settings.html_mode:
            return html_answer(200, HTML_PAGE)
        if not self._staging_ok(req):
            location = {"Location": f"{req.origin}/login"}
            return html_answer(302, b"<html><body>Redirecting to /login</body></html>\n", location)
        if refused:
            detail = f"Rate limit exceeded for {req.client}, retry in {refused} s"
            return api_error(req, 429, "too_many_requests", detail, headers={"Retry-After": str(refused)})
        faultable = storage or req.path.startswith("/v2/") or req.path == "/oauth2/token"
        fault = self._faults.draw(faults, storage=storage) if faultable else None
        if fault is not None and not fault.startswith("commit") and fault not in SPOILERS:
            return fault_response(req, fault, faults)
        response = self._route(req)
        if fault is not None and fault.startswith("commit"):
            return fault_response(req, fault.removeprefix("commit_then_"), faults)
        return spoil(response, fault)

    def _staging_ok(self, req: Request) -> bool:
        staging_token = self.settings.staging_token
        if staging_token is None or req.path == "/login" or req.path.startswith("/_storage/"):
            return True
        given = req.headers.get("X-Qonto-Staging-Token", "")
        return hmac.compare_digest(given.encode(), staging_token.encode())

    def _route(self, req: Request) -> Response:
        """The route's answer after authentication and the scope check; names the request's
        endpoint and the query parameters it ignores, for the request log."""
        candidates = [(route, match) for route in self._api.routes if (match := route.pattern.fullmatch(req.path))]
        if not candidates:
            return api_error(req, 404, "not_found", f"No route for {req.method} {req.path}")
        route, match = next(((r, m) for r, m in candidates if r.method == req.method), candidates[0])
        req.endpoint = route.template
        if route.method != req.method:
            return api_error(req, 405, "method_not_allowed", f"{req.method} is not allowed on {req.path}")
        req.ignored = tuple(sorted(set(req.query) - route.parameters))
        if req.path.startswith("/v2/") and (refusal := self._api.authenticate(req) or self._api.permit(req, route)):
            return refusal
        return route.handler(req, match)

    def record(self, req: Request, status: int | None, started: float) -> None:
        """Log a request just before its answer goes out (for the handler); looking at the log
        over HTTP is not itself logged."""
        if not req.path.startswith(VIEW_PREFIX):
            self._log.record(req, status, started)
