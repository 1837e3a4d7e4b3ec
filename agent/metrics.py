"""The metrics file: the figures monitoring watches, in Prometheus's text exposition format for
node_exporter's textfile collector, rewritten atomically by `run` at each heartbeat. `status`
reports the same figures from the same ledger queries (`figures`)."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.base import files as atomic
from agent.base import times
from agent.state.ledger import Ledger, UploadOutcome

log = logging.getLogger(__name__)

# name: (type, help)
METRICS = {
    "qonto_agent_files_waiting": ("gauge", "Files waiting in the inbox."),
    "qonto_agent_uploaded_total": ("counter", "Files uploaded to Qonto since the ledger was created."),
    "qonto_agent_refused_total": ("counter", "Files filed in error/ since the ledger was created."),
    "qonto_agent_last_upload_timestamp_seconds": ("gauge", "When the last upload finished (0: never)."),
    "qonto_agent_last_sync_timestamp_seconds": ("gauge", "When the last whole outbox sync ended (0: never)."),
    "qonto_agent_paused": ("gauge", "1 while the agent is paused waiting for a person, else 0."),
}


def figures(ledger: Ledger, paused: bool) -> dict[str, float]:
    """The value of every metric, from the ledger (and whether `run` is paused)."""
    last = ledger.recent(UploadOutcome.UPLOADED, limit=1)
    synced = times.parse(ledger.last_sync_at() or "")
    return {
        "qonto_agent_files_waiting": ledger.size("pending"),
        "qonto_agent_uploaded_total": ledger.count(UploadOutcome.UPLOADED),
        "qonto_agent_refused_total": ledger.count(UploadOutcome.REJECTED),
        "qonto_agent_last_upload_timestamp_seconds": (last[0].finished_at or 0) if last else 0,
        "qonto_agent_last_sync_timestamp_seconds": synced.timestamp() if synced else 0,
        "qonto_agent_paused": int(paused),
    }


def exposition(values: dict[str, float], profile: str | None = None) -> str:
    """Prometheus text format: HELP, TYPE and one sample per metric, labelled with its profile."""
    labels = f'{{profile="{profile}"}}' if profile else ""  # profile names are plain (profile_settings.NAME)
    lines = []
    for name, (kind, text) in METRICS.items():
        value = values[name]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}",
                  f"{name}{labels} {int(value) if float(value).is_integer() else repr(float(value))}"]
    return "\n".join(lines) + "\n"


class MetricsFile:
    """The file `run` rewrites (one per profile); a failing write is said once, and never stops the agent."""

    def __init__(self, path: Path, profile: str | None = None) -> None:
        self.path, self.profile = path, profile
        self._failing = False

    def write(self, ledger: Ledger, paused: bool) -> None:
        try:
            atomic.write_bytes(self.path, exposition(figures(ledger, paused), self.profile).encode("ascii"), mode=0o644)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot write the metrics file %s (%s): check that its folder exists and the agent "
                            "may write there; uploads go on", self.path, exc.strerror or exc)
            self._failing = True
            return
        if self._failing:
            log.info("the metrics file %s is written again", self.path)
        self._failing = False
