"""A client-side rate limiter, so the agent stays under Qonto's per-IP limits instead of meeting 429s.

Qonto counts requests per IP in sliding windows (1,000 per 10 s and 10,000 per 10 min). The limiter
remembers when each recent request left and makes the next one wait until every window has room.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Sequence


class RateLimiter:
    """Sliding-window limits, e.g. `[(900, 10.0), (9000, 600.0)]`: at most 900 requests in any 10 s, ...

    Thread-safe; uses a monotonic clock so wall-clock jumps neither stall nor burst it.
    `clock` and `sleep` are injectable so tests run on a fake clock.
    """

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for count, seconds in limits:
            if count < 1 or seconds <= 0:
                raise ValueError(f"rate limit ({count}, {seconds}) must allow at least 1 request in a positive time")
        self._windows = [(count, float(seconds), deque[float]()) for count, seconds in limits]
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until one more request fits in every window, then count it as sent now."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait(now)
                if wait <= 0:
                    for _, _, sent in self._windows:
                        sent.append(now)
                    return
            self._sleep(wait)  # outside the lock: other threads may still check in meanwhile

    def _wait(self, now: float) -> float:
        """Seconds until every window has room, forgetting requests that left their window."""
        wait = 0.0
        for count, seconds, sent in self._windows:
            while sent and sent[0] + seconds <= now:
                sent.popleft()
            if len(sent) >= count:
                wait = max(wait, sent[0] + seconds - now)
        return wait
