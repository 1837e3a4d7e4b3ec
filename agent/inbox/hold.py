""""Try this file again later, and why": the one type and the one back-off policy for it.

The uploader makes a `Hold` when a file goes back to the inbox after an attempt; the pipeline
stretches it over a pause that needs a person; the settler keeps the file back until it ends.
Times are monotonic, so a wall-clock jump neither shortens nor stretches a wait.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

FIRST_DELAY_SECONDS = 2.0  # after a first failed attempt; doubled after each further one
MAX_DELAY_SECONDS = 300.0
JITTER = 0.2  # ±20 %, so files released together do not all come back in the same second


def backoff(attempts: int) -> float:
    """Seconds before trying content again after `attempts` attempts (exponential, jittered)."""
    delay = min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2 ** max(0, attempts - 1))
    return delay * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(frozen=True)
class Hold:
    """A file kept back until `until` (monotonic), with the reason `status` shows meanwhile."""

    path: Path
    until: float
    reason: str
    first_seen: float | None = None  # wall clock: when the agent first saw the file

    @classmethod
    def after_attempts(cls, path: Path, attempts: int, reason: str, first_seen: float | None = None) -> Hold:
        return cls(path, time.monotonic() + backoff(attempts), reason, first_seen)

    def at_least_until(self, until: float) -> Hold:
        """This hold, lasting at least until `until` (a pause that needs a person)."""
        return self if self.until >= until else replace(self, until=until)
