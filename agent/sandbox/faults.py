"""Fault injection: what can go wrong on a request, drawn reproducibly, and the answer it gives."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from agent.sandbox.answers import Request, Response, api_error, html_answer

_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class Faults:
    """What can go wrong, per request. Rates are probabilities from 0.0 to 1.0.

    Faults apply to `/v2/*` and `/oauth2/token`; storage downloads (`/_storage/*`) only get the
    latency. The checks run in this order, each with its own draw: drop, HTML 502, 429, 500,
    commit-then-fail. Replace or mutate `Sandbox.faults` at any time; each request reads it once.
    """

    latency_seconds: float = 0.0  # added before answering every request (API and storage)
    error_rate: float = 0.0  # a 500 with a JSON:API body
    rate_limit_rate: float = 0.0  # a 429 with header `Retry-After: <retry_after_seconds>`
    retry_after_seconds: float = 0.2
    drop_rate: float = 0.0  # the connection is closed without any response
    commit_then_fail_rate: float = 0.0  # the work is done, then a 500 or a drop (50/50)
    html_error_rate: float = 0.0  # a 502 with an HTML body, as from a proxy


class FaultDice:
    """Draws each request's fault from one random generator, so a `seed` replays the same faults."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, faults: Faults) -> str | None:
        """Draw this request's fault, if any: drop, html, rate_limit, error, commit_then_*."""
        with self._lock:
            rng = self._rng
            for name, rate in (
                ("drop", faults.drop_rate),
                ("html", faults.html_error_rate),
                ("rate_limit", faults.rate_limit_rate),
                ("error", faults.error_rate),
            ):
                if rate > 0 and rng.random() < rate:
                    return name
            if faults.commit_then_fail_rate > 0 and rng.random() < faults.commit_then_fail_rate:
                return rng.choice(("commit_then_error", "commit_then_drop"))
        return None


def fault_response(req: Request, fault: str, faults: Faults) -> Response | None:
    """The answer a drawn fault gives (without `commit_then_`); None drops the connection."""
    if fault == "drop":
        return None
    if fault == "html":
        return html_answer(502, _BAD_GATEWAY_PAGE)
    if fault == "rate_limit":
        retry_after = {"Retry-After": f"{faults.retry_after_seconds:g}"}
        return api_error(req, 429, "too_many_requests", "Rate limit exceeded, retry later", headers=retry_after)
    return api_error(req, 500, "internal_server_error", "Something went wrong on our side")
