"""`status`: what waits and why, what was uploaded, what failed, the last sync; text or JSON.

It reads the ledger and the folders only, so it works while `run` is busy and when no agent runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from agent import metrics
from agent.config import Config
from agent.logs import escape_controls

from agent.base import files as atomic
from agent.base import times
from agent.base.errors import ConfigError
from agent.base.files import ProcessLock
from agent.base.times import iso
from agent.base.text import printable
from agent.inbox.filing import iter_files
from agent.inbox.mounts import choose_mode
from agent.inbox.rules import Rules
from agent.state.ledger import Ledger, UploadOutcome

ALIVE_WITHIN_SECONDS = 20.0  # three missed heartbeats of `run` (every 5 s) mean it is gone (or hangs)


def gather(config: Config) -> dict[str, Any]:
    """The status as plain data: the JSON of `status --json` (fields fixed by DESIGN.md)."""
    previous = config.previous_ledger
    ledger = Ledger(config.state.path, previous=previous) \
        if config.state.path.exists() or (previous is not None and previous.exists()) else None
    try:
        beat = ledger.heartbeat() if ledger else None
        alive = beat is not None and time.time() - beat.at < ALIVE_WITHIN_SECONDS and _run_holds_lock(config)
        mode, why = (beat.mode, beat.why) if alive and beat else choose_mode(config.inbox)
        candidates, not_taken = _survey(config, aside_only=alive)  # a live `run` lists the work itself
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
        figures = metrics.figures(ledger, paused is not None) if ledger else None
        errors_unseen = _errors_unseen(config)
        return {
            "profile": config.profile,
            "run_alive": alive,
            "run_expected": beat is not None,  # it wrote a heartbeat and did not stop cleanly
            "errors_unseen": errors_unseen,
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
            "uploaded_count": figures["qonto_agent_uploaded_total"] if figures else 0,
            "refused_count": figures["qonto_agent_refused_total"] if figures else 0,
            "last_upload_at": iso(figures["qonto_agent_last_upload_timestamp_seconds"] or None) if figures else None,
            "last_sync_at": ledger.last_sync_at() if ledger else None,
            "cursor": ledger.cursor() if ledger else None,
            "outbox_count": ledger.size("mirror") if ledger else 0,
            "ledger": str(config.state.path),
        }
    finally:
        if ledger:
            ledger.close()


def _survey(config: Config, aside_only: bool) -> tuple[list[Path], list[dict[str, str]]]:
    """The inbox's candidates (none with `aside_only`), and the files the agent leaves where they
    are, each with why."""
    if not config.inbox.path.is_dir():
        return [], []
    rules = Rules(config.inbox.path, config.inbox.patterns, config.inbox.recursive)
    candidates, not_taken = [], []
    for path, why in rules.survey(aside_only):
        if why is None:
            candidates.append(path)
        else:
            not_taken.append({"file": printable(str(path.relative_to(config.inbox.path))), "code": why.value,
                              "reason": why.text})
    return candidates, sorted(not_taken, key=lambda n: n["file"])


def _unattended(config: Config, candidates: list[Path]) -> list[dict[str, Any]]:
    """With no `run` alive, what sits in the inbox waits for one (by strings, not path objects: a
    holiday's backlog is 50,000 files, and `status` answers within a second)."""
    root = len(str(config.inbox.path)) + 1
    reason = "no agent is running: start `qonto-agent run`, or `qonto-agent upload` once"
    out = []
    for path in map(str, candidates):
        try:
            since = os.stat(path, follow_symlinks=False).st_mtime
        except OSError:
            continue
        out.append({"file": printable(path[root:]), "since": iso(since), "reason": reason})
    return sorted(out, key=lambda p: p["since"] or "")


def _run_holds_lock(config: Config) -> bool:
    """Whether a `run` process holds its lock: one that cannot be taken is held (or out of reach, and
    then the heartbeat's age decides alone). It works on every platform, unlike probing a pid."""
    lock = ProcessLock(config.run_lock)
    if not lock.acquire(blocking=False):
        return True
    lock.release()
    return False


def _seen_mark(config: Config) -> Path:
    return config.state.path.with_name(config.state.path.name + ".errors-seen")


def mark_seen(config: Config) -> None:
    """Record that a person has looked at what is in error/ now (`status --seen`)."""
    try:
        atomic.write_bytes(_seen_mark(config), f"{time.time()}\n".encode())
    except OSError as exc:
        raise ConfigError(f"cannot record that error/ was seen in {_seen_mark(config)} ({exc.strerror or exc}): "
                          "run `status --seen` as the user the agent runs as.") from None


def _errors_unseen(config: Config) -> int:
    """Files in error/ filed after the last `status --seen` (when their sidecar was written)."""
    try:
        seen = float(_seen_mark(config).read_text())
    except (OSError, ValueError):
        seen = 0.0
    unseen = 0
    for path in iter_files(config.inbox.path / "error"):
        try:
            sidecar = path.with_name(path.name + ".error.json")
            filed = (sidecar if sidecar.exists() else path).stat().st_mtime
        except OSError:
            continue
        unseen += filed > seen
    return unseen


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
        f"{data['error_count']} in error/" + (f" ({data['errors_unseen']} not marked seen: `status --seen`)"
                                                 if data["errors_unseen"] else ""),
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


def render_profiles(profiles: list[dict[str, Any]]) -> str:
    """One line per profile (`status` of a configuration with profiles): `--profile NAME` shows one in full."""
    lines = []
    for data in profiles:
        if "error" in data:
            lines.append(f"{data['profile']}: CANNOT READ its status: {data['error']}")
            continue
        state = "running" if data["run_alive"] else "NOT running"
        if data["paused"]:
            state += f", PAUSED: {data['paused']['reason']}"
        lines.append(
            f"{data['profile']}: {state} — {len(data['pending'])} waiting, {data['refused_count']} refused "
            f"({data['error_count']} in error/), last upload {data['last_upload_at'] or 'never'}, "
            f"last sync {data['last_sync_at'] or 'never'}")
    lines.append("`qonto-agent status --profile NAME` shows one profile in full.")
    return "\n".join(escape_controls(line) for line in lines)


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
