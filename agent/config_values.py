"""TOML values → the typed fields of a configuration dataclass, refused with a sentence a person can act on.

Kept apart from `config.py` (what the configuration is) as the generic part: it knows types, not keys.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Iterable

from agent.base.errors import ConfigError


def nearest(word: str, choices: Iterable[str]) -> str:
    """The end of an "unknown name" sentence: the likely intended name, else every valid one."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.5)
    return f": did you mean `{close[0]}`?" if close else f"; valid: {', '.join(sorted(choices))}."


def build(cls: type, section: str, values: dict[str, Any]) -> Any:
    """An instance of `cls` from one TOML table: keys left out keep their defaults."""
    defaults = cls()
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        kwargs[f.name] = _coerce(values[f.name], getattr(defaults, f.name), f"`[{section}] {f.name}`")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, what: str) -> Any:
    """Check a value against the type of its default, converting only where it is lossless."""
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{what} must be {expected}, not {type(value).__name__} ({value!r}).")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if default == "auto":  # polling
        if isinstance(value, bool) or value == "auto":
            return value
        raise wrong('true, false or "auto"')
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        if value < 0:
            raise ConfigError(f"{what} is {value}: it must not be negative.")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong('a list of strings, e.g. ["*.pdf"]')
        return tuple(value)
    if isinstance(default, Path):
        if not isinstance(value, str):
            raise wrong("a path in quotes")
        return Path(value)
    if not isinstance(value, str):  # strings and optional strings
        raise wrong("a string in quotes")
    return value
