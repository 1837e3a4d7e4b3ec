"""The pause after Qonto refuses the credentials, so a bad key is not hammered against the API, and
the latest refusal that needs a person, kept so the running agent can tell `status` about it."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from agent.base.errors import CredentialsError


class CredentialsPause:
    """After a refusal of the credentials, calls fail at once for a pause that doubles each time
    (up to a maximum) until a call succeeds: Qonto throttles clients that repeat bad credentials."""

    def __init__(self, first: float, longest: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._first = first
        self._longest = longest
        self._clock = clock
        self._lock = threading.Lock()
        self._pause = 0.0
        self._until = 0.0
        self._hint = ""

    @property
    def first(self) -> float:
        """The first, shortest pause."""
        return self._first

    def check(self) -> None:
        """Raise CredentialsError during a pause, so no request repeats refused credentials."""
        with self._lock:
            remaining = self._until - self._clock()
            hint = self._hint
        if remaining > 0:
            raise CredentialsError(f"{hint}; paused; next try in {math.ceil(remaining)} s", status=401)

    def trip(self, hint: str) -> None:
        """Start the next, longer pause after a refusal; `hint` says what to check."""
        with self._lock:
            now = self._clock()
            if now < self._until:
                return  # concurrent refusals of one pause do not lengthen it
            self._pause = min(self._pause * 2, self._longest) if self._pause else self._first
            self._until = now + self._pause
            self._hint = hint

    def remaining(self) -> float:
        """Seconds left in the pause, 0 outside one: what a status report shows."""
        with self._lock:
            return max(0.0, self._until - self._clock())

    def release(self) -> None:
        """Forget past refusals once the credentials worked, so the next pause is short again."""
        with self._lock:
            self._pause = 0.0
            self._until = 0.0


@dataclass(frozen=True)
class PersonPause:
    """A pause that needs a person (credentials refused, a permission missing, a web page instead of
    the API), as `status` shows it: what to fix, and until when (wall clock) it is not tried again."""

    reason: str
    until: float


class LastRefusal:
    """The latest refusal that needs a person, remembered until the pause it started ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reason = ""
        self._until = 0.0

    def note(self, reason: str, seconds: float) -> None:
        """A refusal that pauses for `seconds`; `reason` is the error's message (it holds no secret)."""
        with self._lock:
            self._reason, self._until = reason, self._clock() + seconds

    def current(self) -> PersonPause | None:
        """The pause in force now, its end on the wall clock; None when there is none."""
        with self._lock:
            remaining = self._until - self._clock()
            reason = self._reason
        return PersonPause(reason, time.time() + remaining) if remaining > 0 else None
