"""Fault injection: what can go wrong on a request, drawn reproducibly, and the answer it gives."""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from agent.sandbox.answers import Request, Response, api_error, html_answer, storage_error

_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class Faults:
    """What can go wrong, per request. Rates are probabilities from 0.0 to 1.0.

    Faults apply to `/v2/*` and `/oauth2/token`, in this order, each with its own draw: drop, HTML
    502, 429, 500, trickle, commit-then-fail. Storage downloads (`/_storage/*`) get the latency and
    their own: 503, drop, short body, long body, endless body, trickle. Replace or mutate
    `Sandbox.faults` at any time; each request reads it once.
    """

    latency_seconds: float = 0.0  # added before answering every request (API and storage)
    storage_latency_seconds: float | None = None  # for storage downloads instead, when set (0: downloads free)
    error_rate: float = 0.0  # a 500 with a JSON:API body
    rate_limit_rate: float = 0.0  # a 429 with header `Retry-After: <retry_after_seconds>`
    retry_after_seconds: float = 0.2
    drop_rate: float = 0.0  # the connection is closed without any response
    commit_then_fail_rate: float = 0.0  # the work is done, then a 500 or a drop (50/50)
    html_error_rate: float = 0.0  # a 502 with an HTML body, as from a proxy
    trickle_rate: float = 0.0  # the answer's body comes one byte a second, as through a stalled proxy
    storage_error_rate: float = 0.0  # a download answers 503 SlowDown (with Retry-After), as storage under load
    storage_drop_rate: float = 0.0  # a download's connection is closed without any response
    short_body_rate: float = 0.0  # a download's body is half the file (a truncated object), Content-Length agreeing
    long_body_rate: float = 0.0  # a download's body has bytes after the file, Content-Length agreeing
    endless_body_rate: float = 0.0  # a download's body never ends (chunked)


class FaultDice:
    """Draws each request's fault from one random generator, so a `seed` replays the same faults."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, faults: Faults, *, storage: bool = False) -> str | None:
        """Draw this request's fault, if any: drop, html, rate_limit, error, trickle, commit_then_*;
        for a storage download: storage_error, storage_drop, short_body, long_body, endless_body, trickle."""
        with self._lock:
            rng = self._rng
            for name in _STORAGE_FAULTS if storage else _API_FAULTS:
                rate = getattr(faults, f"{name}_rate")
                if rate > 0 and rng.random() < rate:
                    return name
            if not storage and faults.commit_then_fail_rate > 0 and rng.random() < faults.commit_then_fail_rate:
                return rng.choice(("commit_then_error", "commit_then_drop"))
        return None


# Named as their rates are (`<name>_rate`), in the order they are drawn.
_API_FAULTS = ("drop", "html_error", "rate_limit", "error", "trickle")
_STORAGE_FAULTS = ("storage_error", "storage_drop", "short_body", "long_body", "endless_body", "trickle")
SPOILERS = frozenset({"trickle", "short_body", "long_body", "endless_body"})  # faults that alter the real answer
TRICKLE_SECONDS = 1.0  # between two bytes of a trickled answer


def fault_response(req: Request, fault: str, faults: Faults) -> Response | None:
    """The answer a drawn fault gives (without `commit_then_`); None drops the connection."""
    if fault in ("drop", "storage_drop"):
        return None
    if fault == "html_error":
        return html_answer(502, _BAD_GATEWAY_PAGE)
    if fault == "storage_error":
        slow_down = storage_error(req, 503, "SlowDown", "Please reduce your request rate.")
        slow_down.headers["Retry-After"] = f"{faults.retry_after_seconds:g}"
        return slow_down
    if fault == "rate_limit":
        retry_after = {"Retry-After": f"{faults.retry_after_seconds:g}"}
        return api_error(req, 429, "too_many_requests", "Rate limit exceeded, retry later", headers=retry_after)
    return api_error(req, 500, "internal_server_error", "Something went wrong on our side")


def spoil(response: Response, fault: str | None) -> Response:
    """The real answer, altered by a fault in `SPOILERS` (a body fault only touches a 200)."""
    if fault == "trickle":
        return dataclasses.replace(response, body=b"", stream=_trickle(response.body))
    if fault is None or response.status != 200:
        return response
    if fault == "short_body":
        return dataclasses.replace(response, body=response.body[:len(response.body) // 2])
    if fault == "long_body":
        return dataclasses.replace(response, body=response.body + b"\0" * 1024)
    endless = itertools.chain([response.body], itertools.repeat(b"\0" * 65536))
    return dataclasses.replace(response, body=b"", stream=endless)


def _trickle(body: bytes) -> Iterator[bytes]:
    for index in range(len(body)):
        if index:
            time.sleep(TRICKLE_SECONDS)
        yield body[index:index + 1]
