"""Qonto's per-IP rate limit, played by the sandbox: at most N requests in any window of S seconds
per client address, every organization together (Qonto counts addresses, not credentials).

A sliding log of the requests let through: a refused request is not counted, so `Retry-After` is
exact: after that many seconds a slot is free, whatever the client did meanwhile.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class IpRateLimit:
    """Admits or refuses each request by its client address; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted: dict[str, deque[float]] = {}  # address → time.monotonic() of admitted requests

    def admit(self, address: str, limits: tuple[tuple[int, float], ...]) -> int | None:
        """Count a request from `address` and return None, or return the whole seconds until one
        of `limits` ((requests, seconds), ...) would let it through, counting nothing."""
        if not limits:
            return None
        now = time.monotonic()
        longest = max(seconds for _, seconds in limits)
        with self._lock:
            admitted = self._admitted.setdefault(address, deque())
            while admitted and admitted[0] <= now - longest:
                admitted.popleft()
            wait = max((self._wait(admitted, count, seconds, now) for count, seconds in limits), default=0.0)
            if wait > 0:
                return max(1, math.ceil(wait))
            admitted.append(now)
            return None

    @staticmethod
    def _wait(admitted: deque[float], count: int, seconds: float, now: float) -> float:
        """Seconds until fewer than `count` admitted requests lie in the last `seconds` (0: now)."""
        if count <= 0:
            return seconds
        if len(admitted) < count:
            return 0.0
        freeing = admitted[-count]  # the oldest request that must leave the window
        return max(0.0, freeing + seconds - now)
