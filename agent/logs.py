"""Logging set-up: one line per outcome, text or JSON, and never a secret.

Secrets, and the query strings of links (a pre-signed link's signature is in its query), are
redacted from every record as a last line of defence: the code already avoids logging them, but
a URL or an exception from a library might still carry one. urllib3 speaks only from warnings
up, and the agent says its retries itself.

`--log-file` writes through `logging.handlers.WatchedFileHandler`: before each line it checks that
the path still names the file it has open, and opens it again when logrotate (or a person) moved
or deleted it. No signal is needed, nothing is written between the move and the reopening to a
file nobody reads, and it works the same for `run`, `upload` and `sync`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from agent.base import profile
from agent.base.errors import ConfigError
from agent.base.events import FIELDS

_SECRETS: set[str] = set()


def add_secrets(values: list[str]) -> None:
    """Register values that must never appear in a log line (short values are ignored)."""
    _SECRETS.update(v for v in values if v and len(v) >= 4)


_LINK_QUERY = re.compile(r"""(https?://[^\s?#"'<>]+)\?[^\s"'<>]*""", re.IGNORECASE)
_SIGNED_QUERY = re.compile(r"""\?[^\s"'<>]*(?:signature=|x-amz-)[^\s"'<>]*""", re.IGNORECASE)


def redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    text = _LINK_QUERY.sub(r"\1?[query hidden]", text)
    return _SIGNED_QUERY.sub("?[query hidden]", text)


_CONTROL = {c: repr(chr(c))[1:-1] for c in (*range(32), *range(127, 160), 0x2028, 0x2029)}


def escape_controls(text: str) -> str:
    """`text` with control characters written as escapes (`\\n`, `\\t`, `\\x1b`), so a file name
    holding a newline or a terminal escape can neither forge a log line nor move the cursor."""
    return text.translate(_CONTROL)


class _ProfileTag(logging.Filter):
    """Names the profile a line is about (`[acme] ` in text, `"profile"` in JSON) when one runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.profile = profile.current()
        record.profile_tag = f"[{record.profile}] " if record.profile else ""
        return True


class _RedactingFormatter(logging.Formatter):
    """One line per record: the message is escaped; a traceback keeps its own lines after it."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JSONFormatter(logging.Formatter):
    """One object per line: time, level, logger, message, and an outcome's fields (`base.events`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "profile", None):
            entry["profile"] = record.profile
        extra = getattr(record, "fields", None) or {}
        entry.update((name, extra[name]) for name in FIELDS if name in extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


def configure(verbose: bool = False, fmt: str = "text", file: Path | None = None) -> None:
    """Log to stderr, or to `file` alone when given (a scheduled task has no console to show
    stderr, and a service manager's journal would hold every line twice): INFO for outcomes a
    person cares about, DEBUG with -v. Raises ConfigError, logging to stderr, when `file` cannot
    be opened."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    trouble = None
    if file is not None:
        try:
            handler = logging.handlers.WatchedFileHandler(file, encoding="utf-8")
        except OSError as exc:
            trouble = ConfigError(f"cannot write the log file {file} ({exc.strerror or exc}): create its folder, "
                                  "let the user running the agent write it, or choose another --log-file")
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)-7s %(profile_tag)s%(message)s",
                                                 "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_ProfileTag())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # its debug lines print whole links
    logging.getLogger("watchdog").setLevel(logging.INFO if verbose else logging.WARNING)
    if trouble is not None:
        raise trouble
