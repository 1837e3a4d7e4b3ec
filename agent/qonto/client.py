"""The Qonto API client: authentication, retries, bulk upload, listing, attachment downloads.

It knows HTTP and nothing about folders. One `requests.Session` carries every request; urllib3's
`Retry` retries network failures, 429 and 5xx for every method (bulk items carry idempotency keys,
so even the upload POST is safe to repeat), and a `RateLimiter` counts every attempt, retries too.
Failures surface as the `agent.errors` hierarchy, whose messages never contain a secret.
"""

from __future__ import annotations

import bisect
import email.utils
import hashlib
import io
import itertools
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata
from urllib3.util import Retry

from agent import __version__
from agent.base import files as atomic
from agent.config import QontoConfig, check_credentials
from agent.qonto.limits import MAX_ITEMS as MAX_BATCH
from agent.base.errors import (
    AttachmentURLExpired,
    CredentialsError,
    HTMLAnswerError,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    TransientError,
)
from agent.qonto.ratelimit import RateLimiter

log = logging.getLogger("agent.qonto")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REFRESH_MARGIN = 300.0  # refresh an OAuth access token when less than this many seconds remain
REFRESH_COOLDOWN = 60.0  # after a 401, refresh again only if the last refresh is older than this
DEFAULT_TOKEN_LIFETIME = 3600.0  # Qonto's documented `expires_in`, used when an answer omits it
PER_PAGE = 100
SORT_BY = "updated_at:asc"
FALLBACK_SORT_BY = "created_at:asc"  # older API versions cannot sort by updated_at
FRESH_LINK_TRIES = 3  # times an expired attachment link is replaced before giving up
CHUNK = 1 << 16
FILE_FIELD = "supplier_invoices[][file]"
KEY_FIELD = "supplier_invoices[][idempotency_key]"

_POINTER_KEY = re.compile(r"/idempotency_key/([^/]+)")
_TRANSIENT_CODE = re.compile(r"internal|unavailable|timeout|timed_out|too_many|rate_limit|temporar|try_again")
_EXPIRED_LINK = re.compile(rb"expire|accessdenied|access denied", re.IGNORECASE)


@dataclass(frozen=True)
class UploadItem:
    """One file of a bulk upload; its bytes are read when the request is built."""

    path: Path
    idempotency_key: str
    filename: str  # the name Qonto records: the original file name, unicode kept
    content_type: str = "application/pdf"


@dataclass(frozen=True)
class ItemResult:
    """What became of one item: "created" (with its invoice), "rejected" or "unknown" (with errors).

    "unknown" means the answer did not say for sure: resending with the same key is safe.
    """

    item: UploadItem
    outcome: str
    invoice: dict | None
    errors: tuple[dict, ...]


def retry_policy(
    *,
    total: int = 5,
    backoff_factor: float = 1.0,
    backoff_max: float = 20.0,
    backoff_jitter: float = 1.0,
    retry_after_max: int = 20,
) -> Retry:
    """The retry policy: network errors, 429 and 5xx, any method, bounded to about two minutes.

    With the defaults the backoff sleeps sum to about 30 s and honoured `Retry-After` waits to at
    most 100 s. Tests pass tiny values. The last answer is returned, not raised, so that it can be
    turned into the right error.
    """
    return Retry(
        total=total,
        allowed_methods=None,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        backoff_jitter=backoff_jitter,
        retry_after_max=retry_after_max,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


class QontoClient:
    """The Qonto API, one method per endpoint the agent uses. Thread-safe; use as a context manager.

    `token_store` keeps rotated OAuth tokens between starts. `retry` replaces `retry_policy()`.
    `limiter` defaults to the config's per-10-s and per-10-min limits. `credentials_pause` is the
    (first, longest) pause after a 401, during which calls fail at once without a request.
    """

    def __init__(
        self,
        config: QontoConfig,
        *,
        token_store: Path | None = None,
        retry: Retry | None = None,
        limiter: RateLimiter | None = None,
        credentials_pause: tuple[float, float] = (60.0, 3600.0),
    ) -> None:
        check_credentials(config)
        self._config = config
        if limiter is None:
            limiter = RateLimiter([(config.max_requests_per_10s, 10.0), (config.max_requests_per_10min, 600.0)])
        adapter = _LimitedAdapter(limiter, retry if retry is not None else retry_policy())
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"qonto-agent/{__version__}"
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._brake = _Brake(*credentials_pause)
        self._sort_by = SORT_BY
        self._oauth = _OAuth(config, token_store, self._request_token) if config.auth_mode == "oauth" else None
        api_key = f"{config.login}:{config.secret_key}"
        self._auth = _QontoAuth(self._oauth.header if self._oauth else lambda: api_key, config.staging_token)
        self._token_auth = _QontoAuth(None, config.staging_token)

    def __enter__(self) -> QontoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def paused_for(self) -> float:
        """Seconds before refused credentials are tried again (0 when they were not refused)."""
        return self._brake.remaining()

    def close(self) -> None:
        self._session.close()

    # --- endpoints ---------------------------------------------------------------------------

    def get_organization(self) -> dict:
        """The organization the credentials belong to: the cheapest proof that they work."""
        return self._get_member("/v2/organization", "organization",
                                action="reading the organization", scope="organization.read")

    def upload_bulk(
        self, items: Sequence[UploadItem], *, source: str = "integration", meta: dict | None = None
    ) -> list[ItemResult]:
        """Upload up to 20 files in one request; one result per item, in the order of `items`.

        Qonto answers 200 with created invoices and per-item errors, which are mapped back so:
        1. an error whose `source.pointer` contains `/idempotency_key/<key>` belongs to that item:
           "rejected", or "unknown" when its code looks transient (e.g. `internal_server_error`);
        2. the other items are matched to the returned invoices by `file_name` where that name
           is unique among both those items and those invoices;
        3. the rest are paired in order, but only when exactly as many invoices as items remain
           and no error lacked a pointer;
        4. anything else is "unknown", carrying the pointerless errors if there were any.
        "unknown" is safe to resend with the same key: Qonto returns the invoice it already made.

        Raises ValueError for more than 20 items or a repeated key, OSError if a file cannot be read.
        """
        if len(items) > MAX_BATCH:
            raise ValueError(f"{len(items)} items: Qonto takes at most {MAX_BATCH} per request")
        keys = Counter(item.idempotency_key for item in items)
        if repeated := [key for key, n in keys.items() if n > 1]:
            raise ValueError(f"idempotency keys sent twice in one batch: {', '.join(repeated)}")
        if not items:
            return []
        body, content_type = _bulk_body(items, source, meta)
        with body:
            answer = self._api("POST", "/v2/supplier_invoices/bulk", data=body,
                               headers={"Content-Type": content_type},
                               action="the invoice upload", scope="supplier_invoice.write")
        return _map_results(items, answer)

    def iter_supplier_invoices(
        self,
        *,
        updated_from: datetime | str | None = None,
        updated_to: datetime | str | None = None,
        created_from: datetime | str | None = None,
        created_to: datetime | str | None = None,
        on_page: Callable[[dict], None] | None = None,
    ) -> Iterator[dict]:
        """Every supplier invoice matching the filters, page after page, oldest update first.

        `on_page(meta)` runs after each page's invoices were consumed. Datetimes are sent as
        RFC 3339 UTC (naive ones are taken as UTC); strings are sent as they are.
        """
        bounds = {"updated_at_from": updated_from, "updated_at_to": updated_to,
                  "created_at_from": created_from, "created_at_to": created_to}
        filters = {f"filter[{name}]": _rfc3339(value) for name, value in bounds.items() if value is not None}
        page: int | None = 1
        while page:
            answer = self._list_page(filters, page)
            yield from answer.get("supplier_invoices") or []
            meta = answer.get("meta") or {}
            if on_page:
                on_page(meta)
            next_page = meta.get("next_page")
            page = next_page if isinstance(next_page, int) and next_page > page else None

    def get_supplier_invoice(self, invoice_id: str) -> dict:
        return self._get_member(f"/v2/supplier_invoices/{quote(invoice_id, safe='')}", "supplier_invoice",
                                action=f"reading invoice {invoice_id}", scope="supplier_invoice.read")

    def get_attachment(self, attachment_id: str) -> dict:
        """The attachment object, with a download `url` valid for 30 minutes."""
        return self._get_member(f"/v2/attachments/{quote(attachment_id, safe='')}", "attachment",
                                action=f"reading attachment {attachment_id}", scope="attachment.read")

    def download(self, url: str, dest: Path) -> str:
        """Stream a pre-signed link into `dest` (the caller's temporary name); return its SHA-256.

        No Authorization header: pre-signed storage refuses a second authentication. Memory use is
        constant. On failure `dest` may hold a partial file.
        """
        response = self._send("GET", url, auth=_NoAuth(), stream=True)
        with response:
            _check_download(response)
            digest = hashlib.sha256()
            with _network_errors(url, self._redact), open(dest, "wb") as fh:
                for chunk in response.iter_content(CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
        return digest.hexdigest()

    def download_attachment(
        self, attachment_id: str, dest: Path, *, attachment: dict | None = None
    ) -> tuple[dict, str]:
        """Download an attachment's file, replacing an expired link by a fresh one a few times.

        Uses `attachment`'s link when given (saves a request), else fetches the attachment first.
        Returns the attachment object last used and the file's SHA-256.
        """
        if attachment is None:
            attachment = self.get_attachment(attachment_id)
        for _ in range(FRESH_LINK_TRIES):
            try:
                return attachment, self.download(_link(attachment), dest)
            except AttachmentURLExpired:
                log.debug("attachment %s: link expired, fetching a fresh one", attachment_id)
                attachment = self.get_attachment(attachment_id)
        return attachment, self.download(_link(attachment), dest)

    # --- requests and answers ----------------------------------------------------------------

    def _list_page(self, filters: dict[str, str], page: int) -> dict:
        """One page of the list. A 400 on the first page is retried sorted by creation date: if that
        works, sorting by update date is what the server refused, so the fallback sticks."""
        def fetch(sort_by: str) -> dict:
            params = {**filters, "page": page, "per_page": PER_PAGE, "sort_by": sort_by}
            return self._api("GET", "/v2/supplier_invoices", params=params,
                             action="listing supplier invoices", scope="supplier_invoice.read")

        try:
            return fetch(self._sort_by)
        except RequestRejected as exc:
            if exc.status != 400 or page != 1 or self._sort_by == FALLBACK_SORT_BY:
                raise
        answer = fetch(FALLBACK_SORT_BY)
        self._sort_by = FALLBACK_SORT_BY
        log.info("Qonto refused sort_by=%s; listing with sort_by=%s from now on", SORT_BY, FALLBACK_SORT_BY)
        return answer

    def _get_member(self, path: str, key: str, *, action: str, scope: str) -> dict:
        answer = self._api("GET", path, action=action, scope=scope)
        member = answer.get(key)
        if not isinstance(member, dict):
            raise self._not_the_api(self._config.api_root, "base_url", f"JSON without `{key}`")
        return member

    def _api(self, method: str, path: str, *, action: str, scope: str, **kwargs: Any) -> dict:
        """One API call: the credentials brake, a fresh token, auth, one 401 recovery, errors mapped."""
        self._brake.check()
        if self._oauth:
            self._oauth.ensure_fresh()
        kwargs["headers"] = {"Accept": "application/json", **kwargs.get("headers", {})}
        url = self._config.api_root + path
        response = self._send(method, url, auth=self._auth, allow_redirects=False, **kwargs)
        if (response.status_code == 401 and self._oauth
                and self._oauth.recover(response.request.headers.get("Authorization", ""))):
            response = self._send(method, url, auth=self._auth, allow_redirects=False, **kwargs)
        return self._answer(response, action=action, scope=scope)

    def _request_token(self, refresh_token: str) -> dict:
        """POST the refresh grant to the token endpoint; a refusal is a credentials error."""
        config = self._config
        form = {"grant_type": "refresh_token", "client_id": config.client_id,
                "client_secret": config.client_secret, "refresh_token": refresh_token}
        response = self._send("POST", config.token_url, data=form, auth=self._token_auth, allow_redirects=False,
                              headers={"Accept": "application/json"})
        if response.status_code in (400, 401):
            raise self._refused(response, _refresh_refused_hint(response.status_code))
        answer = self._answer(response, action="the OAuth token refresh", scope="offline_access",
                              root=config.token_url, setting="token_url")
        if not isinstance(answer.get("access_token"), str):
            raise self._not_the_api(config.token_url, "token_url", "JSON without `access_token`")
        return answer

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send with the timeout, turn network failures into TransientError, log without headers."""
        started = time.monotonic()
        if isinstance(kwargs.get("data"), io.IOBase):
            kwargs["data"].seek(0)  # a streamed body sent again (after a token refresh) starts over
        with _network_errors(url, self._redact):
            response = self._session.request(method, url, timeout=self._config.timeout_seconds, **kwargs)
        log.debug("%s %s -> %d in %.0f ms, trace id %s", method, urlsplit(url).path, response.status_code,
                  (time.monotonic() - started) * 1000, response.headers.get("X-Tyk-Trace-Id", "-"))
        return response

    def _answer(
        self, response: requests.Response, *, action: str, scope: str,
        root: str | None = None, setting: str = "base_url",
    ) -> dict:
        """The JSON body of a successful answer, or the error that says what to do about it."""
        status = response.status_code
        body = _json_object(response)
        info = self._error_info(response, body)
        if status == 429:
            retry_after = _parse_retry_after(response.headers.get("Retry-After", ""))
            raise RateLimited(f"Qonto is rate limiting {action} (429): it will be tried again later",
                              retry_after=retry_after, **info)
        if status >= 500:
            raise TransientError(f"Qonto could not handle {action} ({status}): it will be tried again later", **info)
        if status == 413:
            raise RequestRejected(f"Qonto refused {action} as too large (413): send fewer or smaller files", **info)
        if 300 <= status < 400 or body is None:
            what = "a redirect" if 300 <= status < 400 else "a web page" if _is_html(response) else "something not JSON"
            raise self._not_the_api(root or self._config.api_root, setting, what, **info)
        if status == 401:
            raise self._refused(response, self._api_refused_hint())
        self._brake.release()
        said = f"; Qonto said: {info['detail']}" if info["detail"] else ""
        if status == 403:
            raise PermissionDenied(
                f"Qonto refused {action} (403): the credentials need the `{scope}` permission "
                f"(API key: its permissions in Qonto; OAuth: the scopes granted){said}", **info)
        if status >= 400:
            raise RequestRejected(f"Qonto refused {action} ({status}){said}", **info)
        return body

    def _refused(self, response: requests.Response, hint: str) -> CredentialsError:
        """A 401 (or refused refresh): start or lengthen the pause before credentials are tried again."""
        self._brake.trip(hint)
        return CredentialsError(hint, **self._error_info(response, _json_object(response)))

    def _api_refused_hint(self) -> str:
        if self._oauth:
            return ("the OAuth access token was refused (401): check `[qonto] access_token` and "
                    "`[qonto] refresh_token` (or QONTO_ACCESS_TOKEN / QONTO_REFRESH_TOKEN), "
                    "or authorize the agent again")
        return ("the secret key was refused (401): check `[qonto] login` and `[qonto] secret_key` "
                "(or QONTO_LOGIN / QONTO_SECRET_KEY)")

    def _not_the_api(self, root: str, setting: str, what: str, **info: Any) -> HTMLAnswerError:
        return HTMLAnswerError(
            f"the server at {root} answered with {what} instead of the Qonto API: check `[qonto] {setting}`; "
            "for the Qonto sandbox, set `[qonto] staging_token` (or QONTO_STAGING_TOKEN)", **info)

    def _error_info(self, response: requests.Response, body: dict | None) -> dict[str, Any]:
        """Status, Qonto's first error code and detail, and the trace id, for a QontoError.

        JSON:API bodies (`errors`) for the API; OAuth bodies (`error`, `error_description`) for the
        token endpoint.
        """
        body = body or {}
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        return {
            "status": response.status_code,
            "code": self._redact(first.get("code") or body.get("error")),
            "detail": self._redact(first.get("detail") or first.get("title") or body.get("error_description")),
            "trace_id": self._redact(body.get("trace_id") or response.headers.get("X-Tyk-Trace-Id")),
        }

    def _redact(self, text: Any) -> str | None:
        """Text from the server or the network, with any of our secrets masked: it may be shown."""
        if text is None:
            return None
        text = str(text)
        secrets = self._config.secrets() + (self._oauth.secrets() if self._oauth else [])
        for secret in secrets:
            text = text.replace(secret, "[redacted]")
        return text


# --- authentication --------------------------------------------------------------------------

class _QontoAuth(AuthBase):
    """Adds Qonto's headers per request (never session-wide), so pre-signed downloads never get them."""

    def __init__(self, authorization: Callable[[], str] | None, staging_token: str) -> None:
        self._authorization = authorization
        self._staging_token = staging_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._authorization:
            request.headers["Authorization"] = self._authorization()
        if self._staging_token:
            request.headers["X-Qonto-Staging-Token"] = self._staging_token
        return request


class _NoAuth(AuthBase):
    """Explicitly no Authorization, which also keeps requests from adding one from ~/.netrc."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


class _OAuth:
    """OAuth tokens, refreshed before they expire; each rotated refresh token is saved at once,
    because the previous one stops working 60 s later."""

    def __init__(self, config: QontoConfig, store: Path | None, request_token: Callable[[str], dict]) -> None:
        self._can_refresh = bool(config.client_id and config.client_secret)
        self._store = store
        self._request_token = request_token
        self._lock = threading.Lock()
        self._last_refresh: float | None = None
        self._configured = config.refresh_token
        self.access_token, self.refresh_token, self.expires_at = _load_tokens(config, store)

    def header(self) -> str:
        return f"Bearer {self.access_token}"

    def secrets(self) -> list[str]:
        return [t for t in (self.access_token, self.refresh_token) if t]

    def ensure_fresh(self) -> None:
        """Refresh when the token is missing, of unknown age, or has less than 5 minutes left."""
        if self._stale():
            with self._lock:
                if self._stale():
                    self._refresh()

    def recover(self, used_header: str) -> bool:
        """After a 401: True when a retry may help, because the token changed or was just refreshed."""
        with self._lock:
            if used_header != self.header():
                return True  # another thread refreshed meanwhile
            recent = self._last_refresh is not None and time.monotonic() - self._last_refresh < REFRESH_COOLDOWN
            if recent or not self._refreshable:
                return False
            self._refresh()
            return True

    @property
    def _refreshable(self) -> bool:
        return self._can_refresh and bool(self.refresh_token)

    def _stale(self) -> bool:
        if not self._refreshable:
            return False
        return not self.access_token or self.expires_at is None or self.expires_at - time.time() < REFRESH_MARGIN

    def _refresh(self) -> None:
        answer = self._request_token(self.refresh_token)
        self.access_token = answer["access_token"]
        self.refresh_token = answer.get("refresh_token") or self.refresh_token
        self.expires_at = time.time() + float(answer.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        self._last_refresh = time.monotonic()
        log.info("refreshed the OAuth access token; it is valid until %s",
                 datetime.fromtimestamp(self.expires_at, timezone.utc).isoformat(timespec="seconds"))
        if self._store:
            self._save()

    def _save(self) -> None:
        tokens = {"access_token": self.access_token, "refresh_token": self.refresh_token,
                  "expires_at": self.expires_at, "configured": _token_tag(self._configured)}
        try:
            self._store.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(self._store, json.dumps(tokens).encode(), mode=0o600)
            atomic.fsync_dir(self._store.parent)
        except OSError as exc:
            log.error("could not save the rotated OAuth tokens to %s (%s): after a restart the agent "
                      "will need new tokens; check that folder's permissions and free space",
                      self._store, exc.strerror or type(exc).__name__)


def _load_tokens(config: QontoConfig, store: Path | None) -> tuple[str, str, float | None]:
    """The token store's tokens when there is one (they are newer), else the configured ones.

    A store grown from another configured refresh token is stale: the user authorized again and
    put new tokens in the configuration, so those win.
    """
    if store and store.exists():
        try:
            saved = json.loads(store.read_text(encoding="utf-8"))
            if saved.get("configured", _token_tag(config.refresh_token)) != _token_tag(config.refresh_token):
                log.info("the configured OAuth tokens changed since %s was written: using them", store)
                return config.access_token, config.refresh_token, None
            expires_at = saved.get("expires_at")
            return (str(saved.get("access_token") or ""),
                    str(saved.get("refresh_token") or config.refresh_token),
                    float(expires_at) if isinstance(expires_at, (int, float)) else None)
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cannot read the OAuth token store %s (%s): using the configured tokens",
                        store, type(exc).__name__)
    return config.access_token, config.refresh_token, None


def _token_tag(token: str) -> str:
    """A one-way tag of a token, to recognise it later without storing it twice."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _refresh_refused_hint(status: int) -> str:
    return (f"the OAuth refresh token was refused ({status}): check `[qonto] refresh_token`, `client_id` and "
            "`client_secret` (or QONTO_REFRESH_TOKEN / QONTO_CLIENT_ID / QONTO_CLIENT_SECRET), "
            "or authorize the agent again")


class _Brake:
    """After a refusal of the credentials, calls fail at once for a pause that doubles each time
    (up to a maximum) until a call succeeds: Qonto throttles clients that repeat bad credentials."""

    def __init__(self, first: float, longest: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._first = first
        self._longest = longest
        self._clock = clock
        self._lock = threading.Lock()
        self._pause = 0.0
        self._until = 0.0
        self._hint = ""

    def check(self) -> None:
        with self._lock:
            remaining = self._until - self._clock()
            hint = self._hint
        if remaining > 0:
            raise CredentialsError(f"{hint}; paused; next try in {math.ceil(remaining)} s", status=401)

    def trip(self, hint: str) -> None:
        with self._lock:
            now = self._clock()
            if now < self._until:
                return  # concurrent refusals of one pause do not lengthen it
            self._pause = min(self._pause * 2, self._longest) if self._pause else self._first
            self._until = now + self._pause
            self._hint = hint

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())

    def release(self) -> None:
        with self._lock:
            self._pause = 0.0
            self._until = 0.0


# --- transport: retries and the rate limiter -------------------------------------------------

class _LimitedRetry(Retry):
    """urllib3's Retry, taking a rate-limiter slot before each retry: retries are requests too.

    Also reads `Retry-After` leniently (decimal seconds; an unreadable value falls back to the
    backoff instead of raising).
    """

    def __init__(self, *args: Any, limiter: RateLimiter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = limiter

    @classmethod
    def wrap(cls, retry: Retry, limiter: RateLimiter) -> _LimitedRetry:
        """A copy of `retry`'s settings and state that also takes the limiter."""
        limited = cls.__new__(cls)
        limited.__dict__.update(vars(retry))
        limited.limiter = limiter
        return limited

    def new(self, **kwargs: Any) -> _LimitedRetry:
        return super().new(limiter=self.limiter, **kwargs)  # urllib3 rebuilds the object per attempt

    def parse_retry_after(self, retry_after: str) -> float:
        seconds = _parse_retry_after(retry_after)
        return 0.0 if seconds is None else min(seconds, self.retry_after_max)

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        self.limiter.acquire()


class _LimitedAdapter(HTTPAdapter):
    """Takes a rate-limiter slot for each first attempt; `_LimitedRetry` takes one per retry."""

    def __init__(self, limiter: RateLimiter, retry: Retry) -> None:
        super().__init__(max_retries=_LimitedRetry.wrap(retry, limiter))
        self._limiter = limiter

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self._limiter.acquire()
        return super().send(request, *args, **kwargs)


@contextmanager
def _network_errors(url: str, redact: Callable[[Any], str | None]) -> Iterator[None]:
    """Network failures that outlasted the retries become a TransientError naming only the host."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        cause = exc.args[0] if exc.args else exc
        reason = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real reason
        raise TransientError(
            f"no answer from {urlsplit(url).hostname} ({type(reason).__name__}: {redact(reason)}): "
            "it will be tried again later") from None


def _parse_retry_after(value: str) -> float | None:
    """Seconds from a Retry-After value (seconds, decimals allowed, or an HTTP date), None if unreadable."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# --- answers ---------------------------------------------------------------------------------

def _json_object(response: requests.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _is_html(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").lower().startswith("text/html")


def _check_download(response: requests.Response) -> None:
    """Map a refused download: expired link (refetch it), transient trouble, or a plain refusal."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (400, 403) and _EXPIRED_LINK.search(next(response.iter_content(8192), b"")):
        raise AttachmentURLExpired(f"the attachment link was refused as expired ({status}): "
                                   "fetch the attachment again for a fresh link", status=status)
    if status == 429 or status >= 500:
        raise TransientError(f"the attachment storage could not answer ({status}): it will be tried again later",
                             status=status)
    raise RequestRejected(f"the attachment download was refused ({status})", status=status)


def _link(attachment: dict) -> str:
    """The attachment's download link; a missing one is handled like an expired one."""
    url = attachment.get("url")
    if not url:
        raise AttachmentURLExpired("the attachment has no download link: fetch it again for a fresh one")
    return url


def _rfc3339(value: datetime | str) -> str:
    """`2026-01-01T00:00:00Z` for a datetime (naive means UTC); strings pass through unchanged."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


# --- bulk upload -----------------------------------------------------------------------------

def _bulk_body(items: Sequence[UploadItem], source: str, meta: dict | None) -> tuple[_MultipartStream, str]:
    """The multipart body, each item's file then key, item after item, then `source` and `meta`.

    Built by hand because the server groups `supplier_invoices[][x]` fields by order, and
    `requests` would put every `data=` field before every `files=` field. urllib3 encodes the
    framing around a placeholder per file; the files themselves are streamed from disk when sent.
    """
    fields: list[RequestField | tuple[str, str]] = []
    placeholders = []
    for index, item in enumerate(items):
        placeholder = f"\0qonto-agent-file-{index}-{secrets.token_hex(8)}\0".encode()
        placeholders.append(placeholder)
        fields += [_file_field(item, placeholder), (KEY_FIELD, item.idempotency_key)]
    fields.append(("source", source))
    if meta is not None:
        fields.append(("meta", json.dumps(meta)))
    framing, content_type = encode_multipart_formdata(fields)
    segments: list[bytes | Path] = []
    for item, placeholder in zip(items, placeholders):
        before, framing = framing.split(placeholder, 1)
        segments += [before, item.path]
    segments.append(framing)
    return _MultipartStream(segments), content_type


def _file_field(item: UploadItem, data: bytes) -> RequestField:
    """The file part. urllib3 writes the name as browsers do (raw UTF-8, `"` as %22); a name that
    form would alter or that is not plain ASCII also gets an exact RFC 2231 `filename*`."""
    field = RequestField(FILE_FIELD, data, filename=item.filename)
    field.make_multipart(content_type=item.content_type)
    name = item.filename
    if not (name.isascii() and name.isprintable()) or any(c in name for c in '"%\\'):
        field.headers["Content-Disposition"] += f"; filename*=UTF-8''{quote(name, safe='')}"
    return field


class _MultipartStream(io.RawIOBase):
    """A request body made of byte strings and files, read from disk as it is sent.

    Memory stays flat whatever the files' sizes. It has a length (for Content-Length) and can
    seek back to the start, which is how urllib3 rewinds a body to retry a request.
    """

    def __init__(self, segments: list[bytes | Path]) -> None:
        super().__init__()
        sizes = [len(s) if isinstance(s, bytes) else s.stat().st_size for s in segments]
        self._starts = list(itertools.accumulate(sizes, initial=0))  # segment i spans starts[i]:starts[i+1]
        self._segments = segments
        self._pos = 0
        self._open: tuple[int, BinaryIO] | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= len(self):
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        offset, segment = self._pos - self._starts[index], self._segments[index]
        want = min(len(view), self._starts[index + 1] - self._pos)
        if isinstance(segment, bytes):
            view[:want] = segment[offset:offset + want]
            got = want
        else:
            got = self._file(index, segment).readinto(view[:want]) if want else 0
            if got == 0 and want:
                raise OSError(f"{segment.name} got shorter while it was being sent")
        self._pos += got
        return got

    def _file(self, index: int, path: Path) -> BinaryIO:
        """The open file of segment `index`, positioned where the stream is."""
        if self._open is None or self._open[0] != index:
            self._close_file()
            self._open = (index, open(path, "rb"))
        fh = self._open[1]
        if fh.tell() != self._pos - self._starts[index]:
            fh.seek(self._pos - self._starts[index])
        return fh

    def _close_file(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_file()
        super().close()


def _map_results(items: Sequence[UploadItem], answer: dict) -> list[ItemResult]:
    """Per-item outcomes from a bulk answer; the rule is in `QontoClient.upload_bulk`."""
    index_of = {item.idempotency_key: i for i, item in enumerate(items)}
    claimed: dict[int, list[dict]] = {}
    pointerless: list[dict] = []
    for error in _dicts(answer.get("errors")):
        index = index_of.get(_pointer_key(error))
        (pointerless if index is None else claimed.setdefault(index, [])).append(_short_error(error))

    results: dict[int, ItemResult] = {
        i: ItemResult(items[i], "unknown" if any(_looks_transient(e) for e in errs) else "rejected", None,
                      tuple(errs))
        for i, errs in claimed.items()
    }
    open_items = [i for i in range(len(items)) if i not in claimed]
    for i, invoice in _pair_invoices(items, open_items, _dicts(answer.get("supplier_invoices")),
                                     in_order=not pointerless).items():
        results[i] = ItemResult(items[i], "created", invoice, ())
    unmatched = tuple(pointerless) or (
        {"code": "unmatched", "detail": "Qonto's answer did not say what became of this file"},)
    return [results.get(i) or ItemResult(item, "unknown", None, unmatched) for i, item in enumerate(items)]


def _pair_invoices(
    items: Sequence[UploadItem], open_items: list[int], invoices: list[dict], *, in_order: bool
) -> dict[int, dict]:
    """Invoices to item indexes: by a file name unique on both sides, then in order if counts agree."""
    names = Counter(items[i].filename for i in open_items)
    invoice_names = Counter(invoice.get("file_name") for invoice in invoices)
    by_name = {items[i].filename: i for i in open_items}
    paired: dict[int, dict] = {}
    rest: list[dict] = []
    for invoice in invoices:
        name = invoice.get("file_name")
        if names[name] == 1 and invoice_names[name] == 1:
            paired[by_name[name]] = invoice
        else:
            rest.append(invoice)
    rest_items = [i for i in open_items if i not in paired]
    if in_order and len(rest_items) == len(rest):
        paired.update(zip(rest_items, rest))
    return paired


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _pointer_key(error: dict) -> str | None:
    source = error.get("source")
    pointer = source.get("pointer") if isinstance(source, dict) else None
    match = _POINTER_KEY.search(pointer) if isinstance(pointer, str) else None
    return match.group(1) if match else None


def _short_error(error: dict) -> dict:
    return {"code": str(error.get("code") or "unknown"), "detail": str(error.get("detail") or "")}


def _looks_transient(error: dict) -> bool:
    return bool(_TRANSIENT_CODE.search(error["code"].lower()))
