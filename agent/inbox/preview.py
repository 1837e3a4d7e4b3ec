"""`upload --dry-run`: what one pass would do with each file, nothing sent, moved or recorded.

Decided by the pass's own parts, so the preview cannot drift from what `upload` does: the rules
(`rules.py`), the settler watching each file for `settle_seconds` (`settle.py`), the checks a claim
passes (`prepare.verdict`) and what the ledger and the mirror credit with the content
(`Reconciler.credited`). Qonto is never asked anything: when only Qonto could tell (an attempt
without an answer, older than its key window), the verdict says that the upload asks first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from agent.base import beneath
from agent.base.fingerprint import sha256_stream
from agent.base.text import printable
from agent.config import Config
from agent.inbox.content import judge
from agent.inbox.prepare import Back, verdict
from agent.inbox.reasons import Refusal, Unaccepted
from agent.inbox.reconcile import Reconciler
from agent.inbox.rules import Rules
from agent.inbox.settle import Ready, Refused, Settler
from agent.qonto.client import QontoClient
from agent.state.ledger import Ledger, seen_at

LOOK_SECONDS = 1.0  # how long past `settle_seconds` the preview watches files that are still settling
WORDS = {"would_upload": "would upload", "already_uploaded": "", "would_refuse": "would refuse",
         "waiting": "waiting", "left": "left in the inbox"}


@dataclass(frozen=True)
class Preview:
    """One file's verdict: `outcome` is a key of WORDS; `file` is relative to the inbox."""

    file: str
    outcome: str
    reason: str = ""
    invoice_id: str | None = None

    def line(self) -> str:
        words = ": ".join(w for w in (WORDS[self.outcome], self.reason) if w)
        return f"{self.file}: {words}"


class _SeenOnly:
    """The ages of unfinished files (`settle.FirstSeen`), read from the ledger and never written."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def first_seen(self, rel: str, inode: int, now: float) -> float:
        seen = seen_at(self.ledger, rel, inode)
        return now if seen is None else seen

    def forget_seen(self, rel: str) -> None:
        pass


def preview(config: Config, client: QontoClient, ledger: Ledger, files: list[Path] | None = None, *,
            force: bool = False) -> list[Preview]:
    """Every file's verdict (the inbox's, or the given files'), sorted by name."""
    cfg = config.inbox
    rules = Rules(cfg.path, cfg.patterns, cfg.recursive)
    settler = Settler(cfg.path, cfg.settle_seconds, cfg.incomplete_after_seconds, _SeenOnly(ledger))

    def shown(path: Path) -> str:  # as `status` and the log show it
        return printable(str(path.relative_to(cfg.path)))

    out = []
    found = [(path, rules.classify(path)) for path in files] if files else list(rules.survey())
    for path, why in found:
        if why in (None, True, Unaccepted.HARD_LINK, Unaccepted.LINK):
            settler.track(path)  # the settler looks again, as in a pass
        elif isinstance(why, Unaccepted):
            out.append(Preview(shown(path), "left", why.text))
    ready, refused = _watch(settler, cfg.settle_seconds + LOOK_SECONDS)
    reconciler = Reconciler(client, ledger, cfg.path, config.qonto.idempotency_window_seconds)
    sending: dict[str, str] = {}  # content this pass would send, and as which file
    for item in sorted(ready, key=lambda r: r.path):
        out.append(_decide(reconciler, item, shown(item.path), sending, force))
    out += [Preview(shown(r.path), "would_refuse", r.refusal.detail) for r in refused]
    out += [Preview(shown(path), "waiting", why) for path, _, why in settler.pending()]
    out += [Preview(shown(path), "left", why.text) for path, why in settler.unaccepted().items()]
    return sorted(out, key=lambda p: p.file)


def _watch(settler: Settler, seconds: float) -> tuple[list[Ready], list[Refused]]:
    """Let the settler look at its files until none is settling any more, for `seconds` at most."""
    ready: list[Ready] = []
    refused: list[Refused] = []
    end = time.monotonic() + seconds
    while True:
        now_ready, now_refused = settler.poll()
        ready += now_ready
        refused += now_refused
        if not settler.settling() or time.monotonic() >= end:
            return ready, refused
        time.sleep(min(settler.next_check() or 0.1, 0.2))


def _decide(reconciler: Reconciler, item: Ready, name: str, sending: dict[str, str], force: bool) -> Preview:
    """A settled file: the claim's checks on its content and name, then whether it is an invoice already."""
    root = reconciler.scratch
    try:
        fd, st = beneath.open_file(root, item.path.relative_to(root))
    except OSError as exc:
        return Preview(name, "waiting", f"it could not be read now ({exc.strerror or exc})")
    try:
        with open(fd, "rb", buffering=0, closefd=False) as source:
            sha = sha256_stream(source)
        judged = judge(fd, st.st_size)
    finally:
        os.close(fd)
    outcome = verdict(item.path.name, judged.state, judged.kind, st.st_size)
    if isinstance(outcome, Back):
        return Preview(name, "waiting", outcome.why)
    if isinstance(outcome, Refusal):
        return Preview(name, "would_refuse", outcome.detail)
    if force:
        return Preview(name, "would_upload", "forced, even if its content is already an invoice")
    known, upload = reconciler.credited(sha)
    if known is not None:
        return Preview(name, "already_uploaded", known.words, known.invoice_id)
    if sha in sending:
        return Preview(name, "already_uploaded", f"the same content as {sending[sha]}, which this pass would upload")
    sending[sha] = name
    if reconciler.asks_qonto(upload):
        return Preview(name, "would_upload", "unless Qonto shows that an earlier attempt without an answer "
                                             "created it (the upload asks first)")
    return Preview(name, "would_upload")
