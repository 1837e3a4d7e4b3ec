"""Logging set-up: one line per outcome, text or JSON, and never a secret.

Secrets, and the query strings of links (a pre-signed link's signature is in its query), are
redacted from every record as a last line of defence: the code already avoids logging them, but
a URL or an exception from a library might still carry one. urllib3 speaks only from warnings
up, and the agent says its retries itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

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


class _RedactingFormatter(logging.Formatter):
    """One line per record: the message is escaped; a traceback keeps its own lines after it."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


def configure(verbose: bool = False, fmt: str = "text") -> None:
    """Log to stderr: INFO for outcomes a person cares about, DEBUG with -v."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # its debug lines print whole links
    logging.getLogger("watchdog").setLevel(logging.INFO if verbose else logging.WARNING)
