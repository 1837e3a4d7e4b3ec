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


def env_name(name: str, variable: str) -> str:
    """`QONTO_SECRET_KEY` for profile `acme-2` → `QONTO_ACME_2_SECRET_KEY`."""
    prefix = "QONTO_"
    tail = variable[len(prefix):] if variable.startswith(prefix) else variable
    return f"{prefix}{name.upper().replace('-', '_')}_{tail}"


def settings_words(keys: tuple[str, ...]) -> str:
    """How the current profile's person sets these `[qonto]` keys: `[qonto] k` and QONTO_K, or
    with a profile `[profiles.acme.qonto] k` and QONTO_ACME_K, so a refusal names the right ones."""
    name = current()
    table = f"[profiles.{name}.qonto]" if name else "[qonto]"
    variables = [f"QONTO_{key.upper()}" for key in keys]
    return (" and ".join(f"`{table} {key}`" for key in keys) + " (or "
            + " / ".join(env_name(name, v) if name else v for v in variables) + ")")
