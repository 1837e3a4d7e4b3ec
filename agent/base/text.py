"""File names as text that SQLite, JSON and HTTP accept."""

from __future__ import annotations


def printable(name: str) -> str:
    """`name` as valid UTF-8 text. Python keeps a file name's bytes that are not UTF-8 (a Latin-1
    name from an old share or zip) as surrogates, which SQLite, JSON and HTTP refuse; they become
    U+FFFD here. For display and records only: the file itself keeps its name."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
