"""How requests travel: each attempt waits for its budget (the API's rate limiter, or a bound on
downloads at once), lasts no longer than its deadline, and is retried on network failures, 429
and 5xx with backoff; each retry is said in one sentence. Network failures that outlast the
retries become a TransientError, and no answer is read past its size cap."""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import math
import random
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from agent.base.errors import HTMLAnswerError, KeyWindowPassed, TransientError
from agent.qonto.deadline import Deadline, DeadlineAdapter, deadline_seconds
from agent.qonto.ratelimit import RateLimiter

log = logging.getLogger("agent.qonto")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures worth another attempt in a moment, but for a TLS failure (a wrong certificate or a
# plain-http server does not heal in seconds).
NETWORK_FAILURES = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
CHUNK = 1 << 16

T = TypeVar("T")

# Wall-clock time after which no attempt of the current request may leave (see `resend_deadline`).
_RESEND_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("resend_deadline", default=None)


@contextmanager
def resend_deadline(deadline: float) -> Iterator[None]:
    """No attempt of the requests made inside leaves after `deadline` (wall clock, `time.time()`).

    Checked right before each attempt, after any rate-limit or retry wait: wall-clock time also
    counts the time a process spent stopped (SIGSTOP, a laptop lid) that a monotonic clock may not.
    """
    token = _RESEND_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _RESEND_DEADLINE.reset(token)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently an attempt is repeated: network errors, 429 and 5xx, any method
    (bulk items carry idempotency keys, so even the upload POST is safe to repeat).

    With the defaults the backoff sleeps sum to about 30 s and honoured `Retry-After` waits to at
    most 100 s. Tests pass tiny values.
    """

    total: int = 5
    connect: int | None = None  # retries of a connection that cannot be made (None: as `total`)
    backoff_factor: float = 1.0
    backoff_max: float = 20.0
    backoff_jitter: float = 1.0
    retry_after_max: float = 20.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `retry` (from 1): `Retry-After` when given, else exponential."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        backoff = min(self.backoff_max, self.backoff_factor * 2 ** (retry - 1))
        return backoff + random.uniform(0, self.backoff_jitter)


@dataclass(frozen=True)
class _Again:
    """An attempt that should be repeated: why, and after how long."""

    why: str
    wait: float


class Transport:
    """One service's way of sending: its session, budget, deadlines and retries.

    `who` names the service in sentences ("Qonto", "the attachment storage"). `limiter` is a rate
    budget (each attempt takes a slot); `concurrency` bounds attempts in flight at once instead.
    """

    def __init__(
        self,
        who: str,
        *,
        timeout: float,
        retry: RetryPolicy,
        redact: Callable[[Any], str | None],
        user_agent: str,
        pool_size: int,
        limiter: RateLimiter | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.who = who
        self._timeout = timeout
        self._retry = retry
        self._redact = redact
        self._limiter = limiter
        self._in_flight = threading.BoundedSemaphore(concurrency) if concurrency else None
        adapter = DeadlineAdapter(pool_maxsize=pool_size)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def close(self) -> None:
        """Close the connections. The rate limiter is its owner's to close (it may be shared)."""
        self.session.close()

    def call(self, method: str, url: str, read: Callable[[requests.Response], T], *,
             urgent: bool = False, size: int = 0, setting: str | None = None, **kwargs: Any) -> T:
        """Send until an answer is final, and hand it to `read` within the attempt's deadline.

        An attempt has `deadline_seconds(timeout, size)` in all, `size` being the bytes expected
        to travel. Running out of it ends the call at once, without a retry: a server that slow
        is tried again later, not in a few seconds. The last answer of a retried status is
        handed to `read` too, so the caller says what it means. `urgent` goes first in the budget.
        `setting` names the configuration key `url` comes from (see `network_errors`).
        """
        seconds = deadline_seconds(self._timeout, size)
        retry = 1
        while isinstance(outcome := self._attempt(method, url, read, urgent, seconds, retry, setting, **kwargs),
                         _Again):
            log.info("%s %s; retry %d of %d in %s", self.who, outcome.why, retry, self._retry.total,
                     _seconds(outcome.wait))
            time.sleep(outcome.wait)
            retry += 1
        return outcome

    def _attempt(self, method: str, url: str, read: Callable[[requests.Response], T], urgent: bool,
                 seconds: float, retry: int, setting: str | None, **kwargs: Any) -> T | _Again:
        final = retry > self._retry.total
        body = kwargs.get("data")
        if hasattr(body, "seek"):
            body.seek(0)  # a streamed body sent again starts over
        with self._slot(urgent), network_errors(url, self._redact, setting), Deadline(seconds) as deadline, \
                self._too_slow(deadline):
            try:
                started = time.monotonic()
                response = self.session.request(method, url, timeout=self._timeout, stream=True, **kwargs)
                log.debug("%s %s -> %d in %.0f ms, trace id %s", method, urlsplit(url).path, response.status_code,
                          (time.monotonic() - started) * 1000, response.headers.get("X-Tyk-Trace-Id", "-"))
                with response:
                    status = response.status_code
                    if final or status not in RETRY_STATUSES:
                        return read(response)
                    retry_after = parse_retry_after(response.headers.get("Retry-After", ""))
                    why = f"answered {status}{' (rate limited)' if status == 429 else ''}"
                    return _Again(why, self._retry.delay(retry, retry_after))
            except NETWORK_FAILURES as exc:
                if (final or deadline.expired or isinstance(exc, requests.exceptions.SSLError)
                        or (self._retry.connect is not None and retry > self._retry.connect and _not_connected(exc))):
                    raise
                return _Again(f"did not answer ({_in_words(exc, self._redact)})", self._retry.delay(retry))

    @contextmanager
    def _slot(self, urgent: bool) -> Iterator[None]:
        if self._limiter is not None:
            self._limiter.acquire(urgent)
        with self._in_flight if self._in_flight is not None else contextlib.nullcontext():
            deadline = _RESEND_DEADLINE.get()
            if deadline is not None and time.time() > deadline:
                raise KeyWindowPassed("the idempotency key of an earlier attempt may have expired at Qonto; "
                                      "checking whether that attempt created the invoice before sending again")
            yield

    @contextmanager
    def _too_slow(self, deadline: Deadline) -> Iterator[None]:
        """Whatever failed once the deadline passed failed because of it: say so."""
        try:
            yield
        except Exception:
            if deadline.expired:
                raise TransientError(
                    f"{self.who} did not finish answering within {round(deadline.seconds, 1):g} s "
                    "(a stalled or very slow connection): it will be tried again later") from None
            raise


def read_capped(response: requests.Response, cap: int, who: str) -> requests.Response:
    """Read the whole body, refusing one over `cap` bytes before holding more than that in memory.

    The body is kept where requests keeps a read body, so `.json()` and friends work as usual.
    """
    announced = content_length(response)
    if announced is not None and announced > cap:
        raise _too_large(who, cap)
    body = bytearray()
    for chunk in response.iter_content(CHUNK):
        body += chunk
        if len(body) > cap:
            raise _too_large(who, cap)
    response._content = bytes(body)  # requests' own cache of a read body
    return response


def _too_large(who: str, cap: int) -> TransientError:
    return TransientError(f"{who} sent an answer larger than {cap // (1024 * 1024)} MB: it was refused "
                          "(no more than that is read); it will be tried again later")


def content_length(response: requests.Response) -> int | None:
    """The body's announced length in bytes, when it says how many bytes we will read (not for a
    compressed body, which is counted after decompression)."""
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _not_connected(exc: Exception) -> bool:
    """No connection could be made (refused, unreachable, timed out connecting): nothing was sent."""
    return isinstance(exc, requests.ConnectTimeout) or isinstance(_innermost(exc), (ConnectionRefusedError,
                                                                                   NewConnectionError))


def _seconds(wait: float) -> str:
    return f"{wait:.1f} s" if wait < 10 else f"{wait:.0f} s"


@contextmanager
def network_errors(url: str, redact: Callable[[Any], str | None], setting: str | None = None) -> Iterator[None]:
    """Network failures that outlasted the retries, said in a few words naming only the host.

    They are a TransientError, except a TLS failure (other than a cut connection) on the way to a
    URL that comes from the configuration (`setting`): https to a server that speaks plain http,
    or a certificate that is not trusted, is not cured by waiting, so it is a configuration error.
    """
    try:
        yield
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        cause = _innermost(exc)
        words = _in_words(exc, redact)
        if setting and isinstance(cause, ssl.SSLError) and not isinstance(cause, _CUT_TLS):
            raise HTMLAnswerError(
                f"the secure (TLS) connection to {where} failed ({words}): check `[qonto] {setting}` "
                "(https:// needs a server that speaks TLS; the local sandbox speaks http://)") from None
        raise TransientError(f"no answer from {where} ({words}): it will be tried again later",
                             detail=f"no answer from {where}: {words}") from None


_CUT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError)  # the connection was cut: the network, not the address


def _innermost(exc: BaseException) -> BaseException:
    """The error under requests' and urllib3's wrappers (a refused connection, a TLS alert, a timeout)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        reason = getattr(exc, "reason", None)
        inner = next((e for e in (reason, exc.__cause__, *exc.args) if isinstance(e, BaseException)), None)
        if inner is None:
            break
        exc = inner
    return exc


def _in_words(exc: BaseException, redact: Callable[[Any], str | None]) -> str:
    """A few words for a network failure, without its URL, for a retry's sentence and the final
    error alike: "no answer within the timeout", "connection refused", "host name not found"."""
    if isinstance(exc, requests.ConnectTimeout):
        return "no connection within the timeout"
    if isinstance(exc, requests.Timeout) or isinstance(exc.args[0] if exc.args else None, ReadTimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer broke off"
    cause = _innermost(exc)
    if isinstance(cause, ssl.SSLError):
        return f"TLS: {cause.reason or cause.strerror or cause}"
    if isinstance(cause, socket.gaierror):
        return "host name not found"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    if isinstance(cause, ConnectionError):  # closed without a word (http.client's RemoteDisconnected)
        return "the connection failed"
    return f"{type(cause).__name__}: {redact(cause)}"


def parse_retry_after(value: str) -> float | None:
    """Seconds from a Retry-After value (seconds, decimals allowed, or an HTTP date), None if unreadable."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
