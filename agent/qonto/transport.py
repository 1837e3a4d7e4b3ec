"""How requests travel: urllib3 retries of network failures, 429 and 5xx, each attempt counted by
the rate limiter, and network failures that outlasted the retries turned into a TransientError."""

from __future__ import annotations

import contextvars
import email.utils
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from agent.base.errors import KeyWindowPassed, TransientError
from agent.qonto.ratelimit import RateLimiter

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

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


def _before_attempt(limiter: RateLimiter) -> None:
    limiter.acquire()
    deadline = _RESEND_DEADLINE.get()
    if deadline is not None and time.time() > deadline:
        raise KeyWindowPassed("the idempotency key of an earlier attempt may have expired at Qonto; "
                              "checking whether that attempt created the invoice before sending again")


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
        _before_attempt(self.limiter)


class LimitedAdapter(HTTPAdapter):
    """Takes a rate-limiter slot for each first attempt; `LimitedRetry` takes one per retry."""

    def __init__(self, limiter: RateLimiter, retry: Retry) -> None:
        super().__init__(max_retries=LimitedRetry.wrap(retry, limiter))
        self._limiter = limiter

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        _before_attempt(self._limiter)
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
def network_errors(url: str, redact: Callable[[Any], str | None]) -> Iterator[None]:
    """Network failures that outlasted the retries become a TransientError naming only the host."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        cause = exc.args[0] if exc.args else exc
        reason = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real reason
        raise TransientError(
            f"no answer from {urlsplit(url).hostname} ({type(reason).__name__}: {redact(reason)}): "
            "it will be tried again later") from None


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
