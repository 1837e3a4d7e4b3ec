"""Prepare a claimed file for sending: the same checks for every claim, then a private snapshot.

A claim may be fresh (it settled a moment ago) or adopted after a crash (it never settled in this
process), and its folder is writable by anyone who can write the inbox. So each one is opened
again without following links, must still be the file that settled (device, inode, size, mtime),
must match the patterns, and is copied into an unnamed temporary file while it is hashed. That
snapshot is judged for completeness and is what gets sent: the bytes sent are the bytes hashed.
After the answer, the original's identity is compared again (`Prepared.changed`).
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.base import beneath
from agent.base.beneath import Identity
from agent.base.fingerprint import forced_key, idempotency_key, sha256_stream
from agent.inbox import reasons
from agent.inbox.content import Kind, State, judge
from agent.inbox.filing import Claim
from agent.inbox.reasons import Refusal
from agent.inbox.rules import Rules

log = logging.getLogger(__name__)

_EXTENSIONS = {".pdf": Kind.PDF, ".jpg": Kind.JPEG, ".jpeg": Kind.JPEG, ".png": Kind.PNG}


@dataclass
class Prepared:
    """A claimed file ready to send: its snapshot (what is sent), hash and key, and the original."""

    claim: Claim
    sha256: str
    key: str
    size: int
    kind: Kind
    original: int  # descriptor of the claimed file, kept open to compare it after the answer
    identity: Identity
    snapshot: BinaryIO

    def changed(self) -> bool:
        """True when the original was written to since it was copied (what Qonto got may be stale)."""
        return Identity.of(os.fstat(self.original)) != self.identity

    def close(self) -> None:
        os.close(self.original)
        self.snapshot.close()


@dataclass(frozen=True)
class Back:
    """Put the file back in the inbox to settle again, and why (for the log and `status`)."""

    why: str


def prepare(claim: Claim, own: Path, rules: Rules, *, force: bool, salt: str) -> Prepared | Back | Refusal | None:
    """Check a claim and snapshot it; None when it is gone."""
    try:
        fd, st = beneath.open_file(own, claim.path.relative_to(own))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if beneath.is_link_error(exc) or exc.errno == errno.EINVAL:
            return Back("it is a link or not an ordinary file")  # the settler lists it, untouched
        return _read_trouble(exc)
    identity = Identity.of(st)
    why = _why_not(claim, st, identity, rules)
    if why:
        os.close(fd)
        return Back(why)
    try:
        snapshot = tempfile.TemporaryFile(dir=own)
    except OSError as exc:
        os.close(fd)
        return _read_trouble(exc)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as source:
            sha = sha256_stream(source, snapshot)
        snapshot.flush()
        if Identity.of(os.fstat(fd)) != identity:
            raise _Changed
        judged = judge(snapshot.fileno(), identity.size)
    except (OSError, _Changed) as exc:
        os.close(fd)
        snapshot.close()
        return Back("it changed while it was read") if isinstance(exc, _Changed) else _read_trouble(exc)
    outcome = verdict(claim.name, judged.state, judged.kind, identity.size)
    if outcome is not None:
        os.close(fd)
        snapshot.close()
        return outcome
    assert judged.kind is not None
    key = forced_key(sha, salt) if force else idempotency_key(sha)
    return Prepared(claim, sha, key, identity.size, judged.kind, fd, identity, snapshot)


class _Changed(Exception):
    pass


def _why_not(claim: Claim, st: os.stat_result, identity: Identity, rules: Rules) -> str | None:
    if st.st_nlink > 1:
        return "it is a hard link"
    if claim.settled is not None and identity != claim.settled:
        return "it changed after it settled"
    if not rules.wants(rules.root / claim.rel):
        return "it is not a file the inbox takes"
    return None


def verdict(name: str, state: State, kind: Kind | None, size: int) -> Back | Refusal | None:
    """What a file named `name` whose content was judged so becomes: None when it can be sent."""
    if state in (State.WRITING, State.EMPTY):
        return Back("it looks unfinished")
    if state is not State.COMPLETE:
        return reasons.refusal(state, size)
    named = _EXTENSIONS.get(Path(name).suffix.lower())
    if named is not None and named is not kind:
        return reasons.misnamed(name, kind)
    return None


def _read_trouble(exc: OSError) -> Back | Refusal:
    """Unreadable for want of permission goes to error/; anything else (a full disk) is retried."""
    if isinstance(exc, PermissionError):
        return reasons.unreadable(exc.strerror or str(exc))
    log.warning("could not read or copy a claimed file (%s); it stays in the inbox and is tried again", exc)
    return Back(f"waiting to retry: {exc.strerror or exc}")
