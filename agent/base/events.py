"""The fields an outcome's log line carries, for `--log-format json` (README: "Log fields").

Named once, here, so the log calls that set them (inbox, outbox) and the formatter that writes
them (`agent/logs.py`) agree. They travel in one record attribute, `fields`, so they can never
clash with the attributes `logging` itself puts on a record.
"""

from __future__ import annotations

from typing import Any

FIELDS = ("event", "outcome", "file", "sha256", "idempotency_key", "invoice_id", "reason", "duration_seconds",
          "listed", "written", "downloaded", "unchanged", "failed", "cursor")


def fields(event: str, outcome: str, **values: Any) -> dict[str, dict[str, Any]]:
    """`extra=` for a log call: its event and outcome, and those of `values` that apply (not None)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a documented log field: {', '.join(sorted(unknown))}")
    return {"fields": {"event": event, "outcome": outcome, **{k: v for k, v in values.items() if v is not None}}}
