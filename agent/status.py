"""`status`: what waits and why, what was uploaded, what failed, the last sync; text or JSON.

It reads the ledger and the folders only, so it works while `run` is busy and when no agent runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.logs import escape_controls

from agent.base import times
from agent.base.times import iso
from agent.base.text import printable
from agent.inbox.filing import iter_files
from agent.inbox.rules import Rules, choose_mode
from agent.state.ledger import Ledger, UploadOutcome

ALIVE_WITHIN_SECONDS = 20.0  # three missed heartbeats of `run` (every 5 s) mean it is gone


def gather(config: Config) -> dict[str, Any]:
    """The status as plain data: the JSON of `status --json` (fields fixed by DESIGN.md)."""
    previous = config.previous_ledger
    ledger = Ledger(config.state.path, previous=previous) \
        if config.state.path.exists() or (previous is not None and previous.exists()) else None
    try:
        beat = ledger.heartbeat() if ledger else None
        alive = beat is not None and time.time() - beat.at < ALIVE_WITHIN_SECONDS and _pid_alive(beat.pid)
        mode, why = (beat.mode, beat.why) if alive and beat else choose_mode(config.inbox)
        candidates, not_taken = _survey(config)
        if alive:
            pending = [{"file": p.file, "since": iso(p.since), "reason": p.reason} for p in ledger.pending()]
        else:
            pending = _unattended(config, candidates)
        paused = None
        if alive and beat and beat.paused and (beat.paused_until is None or beat.paused_until > time.time()):
            paused = {"reason": beat.paused, "until": iso(beat.paused_until) if beat.paused_until else None}
        recent_uploads = [{"file": u.file_name, "invoice_id": u.invoice_id, "uploaded_at": iso(u.finished_at)}
                          for u in (ledger.recent(UploadOutcome.UPLOADED) if ledger else [])]
        recent_errors = [{"file": u.file_name, "errors": u.errors, "hint": u.hint, "failed_at": iso(u.finished_at)}
                         for u in (ledger.recent(UploadOutcome.REJECTED) if ledger else [])]
        return {
            "run_alive": alive,
            "mode": mode,
            "mode_reason": why,
            "paused": paused,
            "inbox": str(config.inbox.path),
            "outbox": str(config.outbox.path),
            "pending": pending,
            "not_taken": not_taken,
            "done_count": sum(1 for _ in iter_files(config.inbox.path / "done")),
            "error_count": sum(1 for _ in iter_files(config.inbox.path / "error")),
            "recent_uploads": recent_uploads,
            "recent_errors": recent_errors,
            "last_sync_at": ledger.last_sync_at() if ledger else None,
            "cursor": ledger.cursor() if ledger else None,
            "outbox_count": ledger.mirror_count() if ledger else 0,
            "ledger": str(config.state.path),
        }
    finally:
        if ledger:
            ledger.close()


def _survey(config: Config) -> tuple[list[Path], list[dict[str, str]]]:
    """The inbox's candidates, and the files the agent leaves where they are, each with why."""
    if not config.inbox.path.is_dir():
        return [], []
    rules = Rules(config.inbox.path, config.inbox.patterns, config.inbox.recursive)
    candidates, not_taken = [], []
    for path, why in rules.survey():
        if why is None:
            candidates.append(path)
        else:
            not_taken.append({"file": printable(str(path.relative_to(config.inbox.path))), "code": why.value,
                              "reason": why.text})
    return candidates, sorted(not_taken, key=lambda n: n["file"])


def _unattended(config: Config, candidates: list[Path]) -> list[dict[str, Any]]:
    """With no `run` alive, what sits in the inbox waits for one."""
    out = []
    for path in candidates:
        try:
            since = path.stat().st_mtime
        except OSError:
            continue
        out.append({"file": printable(str(path.relative_to(config.inbox.path))), "since": iso(since),
                    "reason": "no agent is running: start `qonto-agent run`, or `qonto-agent upload` once"})
    return sorted(out, key=lambda p: p["since"] or "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def render(data: dict[str, Any]) -> str:
    """A page a person reads at a glance."""
    lines = [
        f"agent:   {'running' if data['run_alive'] else 'NOT running (start `qonto-agent run`)'}"
        f" — {data['mode']} mode ({data['mode_reason']})",
    ]
    if data["paused"] and data["paused"]["until"]:
        lines.append(f"PAUSED until {data['paused']['until']} (in {_ago(data['paused']['until'], ahead=True)}), "
                     f"waiting for a person: {data['paused']['reason']}")
    elif data["paused"]:
        lines.append(f"PAUSED until this is fixed (it resumes by itself): {data['paused']['reason']}")
    lines += [
        f"inbox:   {data['inbox']} — {len(data['pending'])} waiting, {data['done_count']} in done/, "
        f"{data['error_count']} in error/",
    ]
    for p in data["pending"][:20]:
        lines.append(f"  waiting since {_ago(p['since'])}: {p['file']} — {p['reason']}")
    if len(data["pending"]) > 20:
        lines.append(f"  ... and {len(data['pending']) - 20} more")
    if data["not_taken"]:
        lines.append(f"not taken ({len(data['not_taken'])} file(s) left where they are):")
        lines += [f"  {n['file']} — {n['reason']}" for n in data["not_taken"][:20]]
        if len(data["not_taken"]) > 20:
            lines.append(f"  ... and {len(data['not_taken']) - 20} more")
    if data["recent_uploads"]:
        lines.append("last uploads:")
        lines += [f"  {u['uploaded_at']}  {u['file']} → invoice {u['invoice_id']}" for u in data["recent_uploads"]]
    if data["recent_errors"]:
        lines.append("last errors (files in error/, each with a .error.json beside it):")
        for e in data["recent_errors"]:
            why = "; ".join(str(x.get("detail") or x.get("code")) for x in e["errors"])
            lines.append(f"  {e['failed_at']}  {e['file']}: {why}. {e['hint']}")
    lines.append(f"outbox:  {data['outbox']} — {data['outbox_count']} invoices; last sync "
                 f"{data['last_sync_at'] or 'never'}; cursor {data['cursor'] or 'none'}")
    return "\n".join(escape_controls(line) for line in lines)  # a name's newline cannot forge a line


def _ago(stamp: str | None, *, ahead: bool = False) -> str:
    """How long ago `stamp` was (with `ahead`, how far off it is), in the unit a person reads best."""
    if not stamp:
        return "?"
    moment = times.parse(stamp)
    if moment is None:
        return "?"
    seconds = time.time() - moment.timestamp()
    if ahead:
        seconds = -seconds
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show(config: Config, *, as_json: bool) -> None:
    """Print the status page, or its JSON."""
    data = gather(config)
    print(json.dumps(data, indent=2, ensure_ascii=False) if as_json else render(data))

