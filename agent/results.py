"""`upload --json`, `sync --json` and `upload --dry-run`: one result on stdout (README: "Results").

The per-file outcomes of `upload --json` are the ones its log lines carry (`base.events`): a
handler keeps each file's last one while the pass runs, so the result and the log always agree.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from agent.inbox.preview import WORDS, Preview
from agent.outbox.sync import SyncReport
from agent.service import PassSummary

_KEPT = ("outcome", "invoice_id", "reason", "sha256")


class FileOutcomes(logging.Handler):
    """Each file's last outcome in the log (`upload` events), while installed on the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.files: dict[str, dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = getattr(record, "fields", None)
        if found and found.get("event") == "upload" and "file" in found:
            self.files[found["file"]] = {"file": found["file"], **{k: found[k] for k in _KEPT if k in found}}

    def __enter__(self) -> FileOutcomes:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)


def upload(summary: PassSummary, outcomes: FileOutcomes) -> dict[str, Any]:
    totals = summary.totals
    return {"command": "upload", "dry_run": False, "verdict": summary.verdict.value,
            "interrupted": summary.interrupted,
            "counts": {"uploaded": totals.uploaded, "already_uploaded": totals.duplicates, "failed": totals.failed,
                       "waiting": summary.waiting},
            "files": [outcomes.files[name] for name in sorted(outcomes.files)]}


def dry_run(previews: list[Preview]) -> dict[str, Any]:
    counted = Counter(p.outcome for p in previews)
    return {"command": "upload", "dry_run": True,
            "counts": {outcome: counted[outcome] for outcome in WORDS},
            "files": [{"file": p.file, "outcome": p.outcome, "reason": p.reason or None, "invoice_id": p.invoice_id}
                      for p in previews]}


def sync(report: SyncReport, interrupted: bool) -> dict[str, Any]:
    return {"command": "sync", "verdict": report.verdict.value, "interrupted": interrupted,
            "listed": report.listed, "written": report.written, "downloaded": report.downloaded,
            "unchanged": report.unchanged, "failed": report.failed, "failed_ids": list(report.failed_ids),
            "cursor": report.cursor, "complete": report.complete, "seconds": round(report.seconds, 3)}


def stopped(command: str, error: str) -> dict[str, Any]:
    """The result of one profile's pass that an error stopped (the others' passes went on)."""
    return {"command": command, "verdict": "error", "error": error}


def show(result: dict[str, Any] | list[dict[str, Any]]) -> None:
    """The result (a list of them, one per profile) as one line of JSON on stdout (log lines go to
    stderr or the log file)."""
    print(json.dumps(result, sort_keys=False), flush=True)
