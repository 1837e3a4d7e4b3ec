"""The sandbox's request log: what clients did, for tests (and users' own integration tests) to
inspect after the fact, in Python or over HTTP. It never holds a secret: no header is kept but
whether `Authorization` was there, and query values that authenticate (a pre-signed URL's
signature, a token) are masked."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.sandbox.answers import Request

_MASK = "[redacted]"
_SECRET_PARAMETER = re.compile(r"signature|token|secret|password|credential|^key$|^x-amz-", re.IGNORECASE)


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox received, as tests want to see it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]  # secret values masked
    status: int | None  # None when the connection was dropped
    authorization: bool  # an Authorization header was present
    items: int  # bulk uploads: number of grouped items, else 0
    body_bytes: int
    started_at: float  # time.monotonic() when the request arrived
    finished_at: float  # time.monotonic() when its answer was ready (just before it was sent)
    idempotency_keys: tuple[str, ...] = ()  # bulk uploads: the items' keys, in order
    seq: int = 0  # 1 for the first request the sandbox received, then one more each
    received_at: str = ""  # wall-clock arrival, RFC 3339 UTC
    endpoint: str = ""  # e.g. "GET /v2/supplier_invoices/{id}"; method and path when no route matched
    ignored_parameters: tuple[str, ...] = ()  # query parameters the endpoint does not read
    organization: str | None = None  # the login the credentials (or a download's URL) were for; None if unknown
    client: str = ""  # the client's IP address, as the per-IP rate limit counts it

    def as_json(self) -> dict[str, Any]:
        """The record as `GET /_sandbox/requests` shows it (durations in milliseconds)."""
        shown = asdict(self)
        for clock in ("started_at", "finished_at"):
            del shown[clock]
        shown["duration_ms"] = round((self.finished_at - self.started_at) * 1000, 1)
        return shown


def _masked(query: dict[str, list[str]]) -> dict[str, list[str]]:
    """The query with the values of parameters that authenticate replaced by a mask."""
    return {name: [_MASK] * len(values) if _SECRET_PARAMETER.search(name) else list(values)
            for name, values in query.items()}


class RequestLog:
    """Requests received, oldest first, and counts per endpoint; thread-safe, read as copies.

    With a `limit`, only the latest `limit` records are kept; the counts still cover everything
    since the start or the last `clear()`.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=limit)
        self._counts: Counter[str] = Counter()
        self._seq = 0

    def record(self, req: Request, status: int | None, started: float) -> None:
        """Log a request once its answer is ready (None: the connection is dropped)."""
        endpoint = f"{req.method} {req.endpoint or req.path}"
        finished = time.monotonic()
        received = datetime.now(timezone.utc) - timedelta(seconds=finished - started)
        with self._lock:
            self._seq += 1
            self._records.append(RequestRecord(
                method=req.method,
                path=req.path,
                query=_masked(req.query),
                status=status,
                authorization="Authorization" in req.headers,
                items=req.items,
                body_bytes=len(req.body),
                started_at=started,
                finished_at=finished,
                idempotency_keys=req.idempotency_keys,
                seq=self._seq,
                received_at=received.strftime("%Y-%m-%dT%H:%M:%S.") + f"{received.microsecond // 1000:03d}Z",
                endpoint=endpoint,
                ignored_parameters=req.ignored,
                organization=req.organization,
                client=req.client,
            ))
            self._counts[endpoint] += 1

    def records(self, since: int = 0) -> list[RequestRecord]:
        """A copy of the records kept, those after sequence number `since` only."""
        with self._lock:
            return [record for record in self._records if record.seq > since]

    def last_seq(self) -> int:
        """The sequence number of the latest request received (0 before the first)."""
        with self._lock:
            return self._seq

    def counts(self) -> dict[str, int]:
        """Requests per endpoint ("GET /v2/supplier_invoices": 3, ...), most frequent first."""
        with self._lock:
            return dict(self._counts.most_common())

    def clear(self) -> None:
        """Forget every request logged so far (sequence numbers go on, so `since` stays valid)."""
        with self._lock:
            self._records.clear()
            self._counts.clear()
