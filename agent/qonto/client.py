"""The Qonto API client: one method per endpoint the agent uses.

It knows HTTP and nothing about folders. Two transports carry the requests, each with its own
budget: the API's, whose every attempt (retries too) counts against Qonto's rate limit, uploads
first; and the attachment storage's, whose pre-signed downloads are another host's business and
only bounded in number at once. Every exchange has a deadline and every answer a size cap.
Failures surface as the `agent.errors` hierarchy, whose messages never contain a secret.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import quote

import requests

from agent import __version__
from agent.base.errors import (
    AttachmentURLExpired,
    CredentialsError,
    NeedsPerson,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    TransientError,
)
from agent.base.times import rfc3339
from agent.config import MAX_CONCURRENCY, QontoConfig, check_credentials
from agent.qonto import limits
from agent.qonto.answers import attachment_link, check_download, error_info, is_html, json_object, not_the_api
from agent.qonto.auth import NoAuth, OAuthTokens, QontoAuth, TokenStore, api_refused_hint, refresh_refused_hint
from agent.qonto.bulk import ItemResult, UploadItem, check_batch, check_whole, map_results
from agent.qonto.download import announced_size, save_exact
from agent.qonto.listing import InvoiceList, Page
from agent.qonto.multipart import bulk_body
from agent.qonto.pause import CredentialsPause, LastRefusal, PersonPause
from agent.qonto.ratelimit import RateLimiter
from agent.qonto.transport import RetryPolicy, Transport, parse_retry_after, read_capped, resend_deadline

log = logging.getLogger("agent.qonto")

# Endpoints Qonto always serves: a 404 on one of them means a wrong `base_url`, not a missing thing.
ALWAYS_THERE = frozenset({"/v2/organization", "/v2/supplier_invoices", "/v2/supplier_invoices/bulk"})
FRESH_LINK_TRIES = 3  # times an expired attachment link is replaced before giving up


def api_budget(config: QontoConfig) -> RateLimiter:
    """The API's budget from the configuration: its limits, in windows every process using the same
    `rate_limit_file` shares (Qonto counts per IP address), or this process's own when it is unset."""
    return RateLimiter([(config.max_requests_per_10s, 10.0), (config.max_requests_per_10min, 600.0)],
                       shared=config.rate_limit_file if config.rate_limit_file != Path() else None)


class QontoClient:
    """The Qonto API, one method per endpoint the agent uses. Thread-safe; use as a context manager.

    `token_store` keeps rotated OAuth tokens between starts (without one they last as long as the
    client). `retry` replaces `RetryPolicy()`. `limiter`, the API's budget, may be shared by clients
    in one process (its maker closes it); by default the client makes its own (`api_budget`).
    `credentials_pause` is the (first, longest) pause after a 401, during which calls fail at once.
    """

    def __init__(
        self,
        config: QontoConfig,
        *,
        token_store: TokenStore | None = None,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        credentials_pause: tuple[float, float] = (60.0, 3600.0),
    ) -> None:
        check_credentials(config)
        self._config = config
        self._own_limiter = api_budget(config) if limiter is None else None
        common = dict(timeout=config.timeout_seconds, retry=retry or RetryPolicy(), redact=self._redact,
                      user_agent=f"qonto-agent/{__version__}")
        self._http = Transport("Qonto", limiter=limiter or self._own_limiter, pool_size=MAX_CONCURRENCY + 2, **common)
        self._storage = Transport("the attachment storage", concurrency=limits.STORAGE_CONCURRENCY,
                                  pool_size=limits.STORAGE_CONCURRENCY, **common)
        self._brake = CredentialsPause(*credentials_pause)
        self._refusal = LastRefusal()
        self._list = InvoiceList(lambda params: self._api("GET", "/v2/supplier_invoices", params=params,
                                                          action="listing supplier invoices",
                                                          scope="supplier_invoice.read"))
        self._oauth = OAuthTokens(config, token_store, self._request_token) if config.auth_mode == "oauth" else None
        api_key = f"{config.login}:{config.secret_key}"
        self._auth = QontoAuth(self._oauth.header if self._oauth else lambda: api_key, config.staging_token)
        self._token_auth = QontoAuth(None, config.staging_token)

    def __enter__(self) -> QontoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def pause_for(self) -> float:
        """Seconds before a refusal that needs a person (401, 403, a web page) is worth trying again:
        what is left of the credentials pause after a 401, else as long as a first 401 would wait."""
        return self._brake.remaining() or self._brake.first

    def person_pause(self) -> PersonPause | None:
        """The latest refusal that needs a person and until when it pauses, while it lasts (for `status`)."""
        return self._refusal.current()

    @property
    def session_headers(self) -> Mapping[str, str]:
        """The headers every request carries; credentials are never among them (they go per request)."""
        return self._http.session.headers

    def close(self) -> None:
        if self._own_limiter is not None:
            self._own_limiter.close()  # first: requests waiting for their turn give up rather than send
        self._http.close()
        self._storage.close()

    # --- endpoints ---------------------------------------------------------------------------

    def get_organization(self) -> dict:
        """The organization the credentials belong to: the cheapest proof that they work."""
        return self._get_member("/v2/organization", "organization",
                                action="reading the organization", scope="organization.read")

    def upload_bulk(
        self, items: Sequence[UploadItem], *, source: str = "integration", meta: dict | None = None,
        resend_until: float | None = None,
    ) -> list[ItemResult]:
        """Upload up to 20 files in one request; one result per item, in the order of `items`.

        Qonto answers 200 with created invoices and per-item errors, mapped back to the items as
        `bulk.map_results` says. "unknown" is safe to resend with the same key while Qonto still
        knows it: no attempt leaves after `resend_until` (wall clock; KeyWindowPassed instead).

        A request refused as a whole (a 400, or a 200 saying `limit_reached`) raises RequestRejected,
        whose `pointers` may name the item at fault (`bulk.named_items`).
        Raises ValueError for more than 20 items or a repeated key, OSError if a file cannot be read.
        """
        check_batch(items)
        if not items:
            return []
        body, content_type = bulk_body(items, source, meta)
        window = resend_deadline(resend_until) if resend_until is not None else contextlib.nullcontext()
        with body, window:
            answer = self._api("POST", "/v2/supplier_invoices/bulk", data=body, size=len(body), urgent=True,
                               headers={"Content-Type": content_type},
                               action="the invoice upload", scope="supplier_invoice.write")
        check_whole(answer, self._redact)
        return map_results(items, answer)

    def iter_pages(
        self,
        *,
        updated_from: datetime | str | None = None,
        updated_to: datetime | str | None = None,
        created_from: datetime | str | None = None,
        created_to: datetime | str | None = None,
    ) -> Iterator[Page]:
        """The supplier invoices matching the filters, page after page, oldest update first.

        A page is requested only when the previous one was consumed, so the caller does its
        per-page work between them. Datetimes are sent as RFC 3339 UTC (naive ones are taken as
        UTC); strings are sent as they are.
        """
        bounds = {"updated_at_from": updated_from, "updated_at_to": updated_to,
                  "created_at_from": created_from, "created_at_to": created_to}
        filters = {f"filter[{name}]": rfc3339(value) for name, value in bounds.items() if value is not None}
        return self._list.pages(filters)

    def iter_supplier_invoices(self, **filters: datetime | str | None) -> Iterator[dict]:
        """Every supplier invoice matching the filters of `iter_pages`, for callers that need no pages."""
        for page in self.iter_pages(**filters):
            yield from page.invoices

    def get_supplier_invoice(self, invoice_id: str) -> dict:
        return self._get_member(f"/v2/supplier_invoices/{quote(invoice_id, safe='')}", "supplier_invoice",
                                action=f"reading invoice {invoice_id}", scope="supplier_invoice.read")

    def get_attachment(self, attachment_id: str) -> dict:
        """The attachment object, with a download `url` valid for 30 minutes."""
        return self._get_member(f"/v2/attachments/{quote(attachment_id, safe='')}", "attachment",
                                action=f"reading attachment {attachment_id}", scope="attachment.read")

    def download(self, url: str, dest: Path, size: int | None = None) -> str:
        """Stream a pre-signed link into `dest` (the caller's temporary name); return its SHA-256.

        No Authorization header: pre-signed storage refuses a second authentication. Memory use is
        constant, and the storage's budget is used, not Qonto's. A body of another length than
        `size` (the attachment's `file_size`) raises TransientError: see `download.save_exact`.
        On failure `dest` may hold a partial file.
        """
        def save(response: requests.Response) -> str:
            check_download(response)
            return save_exact(response, dest, size)

        return self._storage.call("GET", url, save, size=size or 0, auth=NoAuth())

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
                return attachment, self.download(attachment_link(attachment), dest, announced_size(attachment))
            except AttachmentURLExpired:
                log.debug("attachment %s: link expired, fetching a fresh one", attachment_id)
                attachment = self.get_attachment(attachment_id)
        return attachment, self.download(attachment_link(attachment), dest, announced_size(attachment))

    # --- requests and answers ----------------------------------------------------------------

    def _get_member(self, path: str, key: str, *, action: str, scope: str) -> dict:
        answer = self._api("GET", path, action=action, scope=scope)
        member = answer.get(key)
        if not isinstance(member, dict):
            raise not_the_api(self._config.api_root, "base_url", f"JSON without `{key}`")
        return member

    def _api(self, method: str, path: str, *, action: str, scope: str, **kwargs: Any) -> dict:
        """One API call: the credentials brake, a fresh token, auth, one 401 recovery, errors mapped."""
        self._brake.check()
        kwargs["headers"] = {"Accept": "application/json", **kwargs.get("headers", {})}
        url = self._config.api_root + path
        try:
            if self._oauth:
                self._oauth.ensure_fresh()
            response = self._send(method, url, auth=self._auth, allow_redirects=False, setting="base_url", **kwargs)
            if (response.status_code == 401 and self._oauth
                    and self._oauth.recover(response.request.headers.get("Authorization", ""))):
                response = self._send(method, url, auth=self._auth, allow_redirects=False, setting="base_url",
                                      **kwargs)
            return self._answer(response, action=action, scope=scope,
                                endpoint=path if path in ALWAYS_THERE else None)
        except NeedsPerson as exc:
            self._refusal.note(str(exc), self.pause_for())
            raise

    def _request_token(self, refresh_token: str) -> dict:
        """POST the refresh grant to the token endpoint; a refusal is a credentials error."""
        config = self._config
        form = {"grant_type": "refresh_token", "client_id": config.client_id,
                "client_secret": config.client_secret, "refresh_token": refresh_token}
        response = self._send("POST", config.token_url, data=form, auth=self._token_auth, allow_redirects=False,
                              headers={"Accept": "application/json"}, urgent=True,  # every request waits for it
                              setting="token_url")
        if response.status_code in (400, 401):
            raise self._refused(response, refresh_refused_hint(response.status_code))
        answer = self._answer(response, action="the OAuth token refresh", scope="offline_access",
                              root=config.token_url, setting="token_url")
        if not isinstance(answer.get("access_token"), str):
            raise not_the_api(config.token_url, "token_url", "JSON without `access_token`")
        return answer

    def _send(self, method: str, url: str, *, setting: str | None = None, **kwargs: Any) -> requests.Response:
        """One call to the API (or the token endpoint), its answer read whole up to the size cap.
        `setting` names the configuration key the URL comes from (TLS refused there is its fault)."""
        return self._http.call(method, url, lambda response: read_capped(response, limits.MAX_ANSWER_BYTES, "Qonto"),
                               setting=setting, **kwargs)

    def _answer(
        self, response: requests.Response, *, action: str, scope: str,
        root: str | None = None, setting: str = "base_url", endpoint: str | None = None,
    ) -> dict:
        """The JSON body of a successful answer, or the error that says what to do about it.
        `endpoint` is a path Qonto always serves: a 404 there means the address is wrong."""
        status = response.status_code
        body = json_object(response)
        info = error_info(response, body, self._redact)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After", ""))
            raise RateLimited(f"Qonto is rate limiting {action} (429): it will be tried again later",
                              retry_after=retry_after, **info)
        if status >= 500:
            raise TransientError(f"Qonto could not handle {action} ({status}): it will be tried again later", **info)
        if status == 413:
            raise RequestRejected(f"Qonto refused {action} as too large (413): send fewer or smaller files", **info)
        if 300 <= status < 400 or body is None:
            what = "a redirect" if 300 <= status < 400 else "a web page" if is_html(response) else "something not JSON"
            raise not_the_api(root or self._config.api_root, setting, what, **info)
        if status == 404 and endpoint:
            raise not_the_api(root or self._config.api_root, setting, f"404 Not Found for {endpoint}",
                              staging_hint=False, **info)
        if status == 401:
            raise self._refused(response, api_refused_hint(self._oauth is not None))
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
        return CredentialsError(hint, **error_info(response, json_object(response), self._redact))

    def _redact(self, text: Any) -> str | None:
        """Text from the server or the network, with any of our secrets masked: it may be shown."""
        if text is None:
            return None
        text = str(text)
        secrets = self._config.secrets() + (self._oauth.secrets() if self._oauth else [])
        for secret in secrets:
            text = text.replace(secret, "[redacted]")
        return text
