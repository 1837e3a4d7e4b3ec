"""Which profile (organization) the current thread works for, so each log line can name it.

Every thread starts without one: the threads a profile's runner starts (its inbox loop, upload
and mirror pools, sync schedule, notifier) call `enter` first, pools through their initializer.
"""

from __future__ import annotations

import contextvars

_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("profile", default=None)


def enter(name: str | None) -> None:
    """From now on, this thread's log lines belong to profile `name` (None: to no profile)."""
    _CURRENT.set(name)


def current() -> str | None:
    return _CURRENT.get()
