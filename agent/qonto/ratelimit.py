"""A client-side rate limiter, so the agent stays under Qonto's per-IP limits instead of meeting 429s.

Qonto counts requests per IP in sliding windows (1,000 per 10 s and 10,000 per 10 min). The limiter
remembers when each recent request left and makes the next one wait until every window has room.

Uploads and the outbox sync share that budget, and a big sync must never stall the inbox, so an
`urgent` request (an upload) goes first: other requests leave a share of every window unused for
it (`reserve`) and, while an urgent request waits, also leave it the next free slot.

The limit is the host's, not one client's: clients in one process may share one limiter, and
limiters in every process given the same `shared` file share its windows (`budget_store.py`).
The reserve holds across processes; the next free slot goes to urgent requests of this process.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from agent.base.errors import TransientError
from agent.qonto.budget_store import FileWindows, MemoryWindows, Sent, Windows

UPLOAD_RESERVE = 0.1  # the share of every window only urgent requests may use


class RateLimiter:
    """Sliding-window limits, e.g. `[(900, 10.0), (9000, 600.0)]`: at most 900 requests in any 10 s, ...

    Thread-safe. Without `shared` the windows live in this process on a monotonic clock, so
    wall-clock jumps neither stall nor burst it; with `shared` they live in that SQLite file, on
    the wall clock, for every process using it (`FileWindows`). `clock` and `sleep` are injectable
    so tests run on a fake clock. `close()` ends every wait, so a stopping agent is not held by
    requests that would wait minutes for their turn.
    """

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        *,
        reserve: float = UPLOAD_RESERVE,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
        shared: Path | None = None,
    ) -> None:
        for count, seconds in limits:
            if count < 1 or seconds <= 0:
                raise ValueError(f"rate limit ({count}, {seconds}) must allow at least 1 request in a positive time")
        if not 0 <= reserve < 1:
            raise ValueError(f"the reserve for urgent requests ({reserve}) must be a share from 0 to under 1")
        # (limit, limit for requests that are not urgent, seconds)
        self._limits = [(count, count - math.floor(count * reserve), float(seconds)) for count, seconds in limits]
        seconds = [s for *_, s in self._limits]
        self._store: Windows = MemoryWindows(seconds, clock if clock and shared is None else time.monotonic)
        if shared is not None and limits:
            self._store = FileWindows(shared, seconds, fallback=self._store, clock=clock or time.time)
        self._closed = threading.Event()
        self._sleep = sleep or self._closed.wait
        self._turns = threading.Condition()
        self._lines: dict[bool, deque[int]] = {True: deque(), False: deque()}  # tickets waiting, by urgency
        self._tickets = itertools.count()
        self._urgent_waiting = 0

    def acquire(self, urgent: bool = False) -> None:
        """Block until one more request fits in every window, then count it as sent now.

        Requests of one urgency take their turns first come, first served: among the clients
        sharing a limiter (one per profile), one with many requests queued never starves one
        with a single request, which waits at most for those queued before it.
        Raises TransientError once the limiter is closed: the request is not sent.
        """
        line = self._lines[urgent]
        with self._turns:
            ticket = next(self._tickets)
            line.append(ticket)
            self._urgent_waiting += urgent
        try:
            while True:
                with self._turns:
                    while line[0] != ticket and not self._closed.is_set():
                        self._turns.wait()
                if self._closed.is_set():
                    raise TransientError("the client was closed while the request waited for its turn: "
                                         "it was not sent, and will be tried again later")
                wait = self._store.take(lambda sent: self._wait(sent, urgent))
                if wait <= 0:
                    return
                self._sleep(wait)  # outside the store's lock: other threads may still check in meanwhile
        finally:
            with self._turns:
                line.remove(ticket)
                self._urgent_waiting -= urgent
                self._turns.notify_all()

    def close(self) -> None:
        """End every wait, now and later: for the one who made the limiter, once all its clients are done."""
        self._closed.set()
        with self._turns:
            self._turns.notify_all()

    def _wait(self, sent: Sent, urgent: bool) -> float:
        """Seconds until every window has room for this request. Room means a free slot for an
        urgent request; for another one, a slot outside the reserve and one more for every urgent
        request waiting. While another process has waited longer, another request waits its turn:
        a slot's time, then it looks again (an urgent one goes first all the same)."""
        yields = not urgent and sent.ahead() > 0
        wait = min((seconds / count for count, _, seconds in self._limits), default=0.0) if yields else 0.0
        for window, (count, normal, seconds) in enumerate(self._limits):
            in_window = sent.count(window)
            if urgent:
                must_leave = in_window + 1 - count
            else:
                must_leave = max(in_window + 1 - normal, in_window + 1 + self._urgent_waiting - count)
            if must_leave <= 0:
                continue
            if must_leave <= in_window:
                wait = max(wait, sent.leaves_in(window, must_leave))
            else:  # urgent requests are about to take what is free: look again a slot's time later
                wait = max(wait, sent.leaves_in(window, in_window) if in_window else seconds / count)
        return wait
