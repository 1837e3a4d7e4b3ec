"""How requests travel: urllib3 retries of network failures, 429 and 5xx, each attempt counted by
the rate limiter, and network failures that outlasted the retries turned into a TransientError."""

from __future__ import annotations

import email.utils
import math
import socket
import ssl
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from agent.base.errors import HTMLAnswerError, TransientError
from agent.qonto.ratelimit import RateLimiter

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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
        other=0,  # errors neither of connecting nor of reading, i.e. TLS refused: waiting does not cure them
        allowed_methods=None,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        backoff_jitter=backoff_jitter,
        retry_after_max=retry_after_max,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


class LimitedRetry(Retry):
    """urllib3's Retry, taking a rate-limiter slot before each retry: retries are requests too.

    Also reads `Retry-After` leniently (decimal seconds; an unreadable value falls back to the
    backoff instead of raising).
    """

    def __init__(self, *args: Any, limiter: RateLimiter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = limiter

    @classmethod
    def wrap(cls, retry: Retry, limiter: RateLimiter) -> LimitedRetry:
        """A copy of `retry`'s settings and state that also takes the limiter."""
        limited = cls.__new__(cls)
        limited.__dict__.update(vars(retry))
        limited.limiter = limiter
        return limited

    def new(self, **kwargs: Any) -> LimitedRetry:
        return super().new(limiter=self.limiter, **kwargs)  # urllib3 rebuilds the object per attempt

    def parse_retry_after(self, retry_after: str) -> float:
        seconds = parse_retry_after(retry_after)
        return 0.0 if seconds is None else min(seconds, self.retry_after_max)

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        self.limiter.acquire()


class LimitedAdapter(HTTPAdapter):
    """Takes a rate-limiter slot for each first attempt; `LimitedRetry` takes one per retry."""

    def __init__(self, limiter: RateLimiter, retry: Retry) -> None:
        super().__init__(max_retries=LimitedRetry.wrap(retry, limiter))
        self._limiter = limiter

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self._limiter.acquire()
        return super().send(request, *args, **kwargs)


def limited_session(limiter: RateLimiter, retry: Retry, *, user_agent: str) -> requests.Session:
    """A session whose every attempt, first or retried, waits for the rate limiter and follows `retry`."""
    adapter = LimitedAdapter(limiter, retry)
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


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
        words = _in_words(cause, redact)
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
        first = exc.args[0] if exc.args else None
        inner = next((e for e in (reason, exc.__cause__, first) if isinstance(e, BaseException)), None)
        if inner is None:
            break
        exc = inner
    return exc


def _in_words(cause: BaseException, redact: Callable[[Any], str | None]) -> str:
    """A few words for a network failure: "connection refused", "timed out", "host name not found"."""
    if isinstance(cause, ssl.SSLError):
        return f"TLS: {cause.reason or cause.strerror or cause}"
    if isinstance(cause, socket.gaierror):
        return "host name not found"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
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
