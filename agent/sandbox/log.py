"""The sandbox's request log: what clients did, for tests to inspect after the fact."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from agent.sandbox.answers import Request


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox received, as tests want to see it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    status: int | None  # None when the connection was dropped
    authorization: bool  # an Authorization header was present
    items: int  # bulk uploads: number of grouped items, else 0
    body_bytes: int
    started_at: float  # time.monotonic() when the request arrived
    finished_at: float  # time.monotonic() when its answer was ready (just before it was sent)
    idempotency_keys: tuple[str, ...] = ()  # bulk uploads: the items' keys, in order


class RequestLog:
    """Every request received, oldest first; thread-safe, read as copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def record(self, req: Request, status: int | None, started: float) -> None:
        """Log a request once its answer is ready (None: the connection is dropped)."""
        record = RequestRecord(
            method=req.method,
            path=req.path,
            query=req.query,
            status=status,
            authorization="Authorization" in req.headers,
            items=req.items,
            body_bytes=len(req.body),
            started_at=started,
            finished_at=time.monotonic(),
            idempotency_keys=req.idempotency_keys,
        )
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        """A copy of the log."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every request logged so far."""
        with self._lock:
            self._records.clear()
