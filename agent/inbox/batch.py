"""Batch: group ready files into bulk requests, debounced, with a cap on waiting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent.inbox.settle import Ready
from agent.qonto.limits import PART_OVERHEAD, REQUEST_BUDGET_BYTES


@dataclass
class Batcher:
    """Groups ready files: at most `batch_size` and under the request cap; debounced, with a cap on waiting."""

    batch_size: int
    debounce_seconds: float
    max_wait_seconds: float
    max_bytes: int = REQUEST_BUDGET_BYTES
    queue: list[Ready] = field(default_factory=list)
    _first: float = 0.0
    _last: float = 0.0

    def add(self, items: list[Ready]) -> None:
        if not items:
            return
        now = time.monotonic()
        if not self.queue:
            self._first = now
        self._last = now
        self.queue.extend(items)

    def take(self, flush: bool = False, limit: int | None = None) -> list[list[Ready]]:
        """Batches due now, at most `limit`: full ones at once; the rest after the debounce or the max wait."""
        batches: list[list[Ready]] = []
        while self.queue and (limit is None or len(batches) < limit):
            batch, size = [], 0
            for item in self.queue:
                cost = item.size + PART_OVERHEAD
                if batch and (len(batch) >= self.batch_size or size + cost > self.max_bytes):
                    break
                batch.append(item)
                size += cost
            full = len(batch) < len(self.queue) or len(batch) >= self.batch_size
            now = time.monotonic()
            due = flush or full or now - self._last >= self.debounce_seconds \
                or now - self._first >= self.max_wait_seconds
            if not due:
                break
            batches.append(batch)
            del self.queue[: len(batch)]
        if self.queue and batches:
            self._first = time.monotonic()
        return batches

    def next_due(self) -> float | None:
        if not self.queue:
            return None
        now = time.monotonic()
        return max(0.0, min(self._last + self.debounce_seconds, self._first + self.max_wait_seconds) - now)

