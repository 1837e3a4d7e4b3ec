"""Moving files safely: claim before reading, file away into done/ or error/, release for a retry.

A claim is an atomic rename into `<inbox>/.processing/<process id>/<token>/`. Two agents on one
share cannot both claim a file (only one rename wins), and a file claimed by a process that died
(kill -9, power loss) is adopted by the next process that starts, because the dead one's lock on
its claim folder is gone. Names in done/ and error/ are never overwritten.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from agent.base import files as atomic
from agent.base.files import ProcessLock
from agent.base.errors import ConfigError

log = logging.getLogger(__name__)

PROCESSING = ".processing"


@dataclass(frozen=True)
class Claim:
    """A file this process owns: `path` is inside its claim folder, `rel` is where it came from."""

    path: Path
    rel: Path
    dropped_at: float

    @property
    def name(self) -> str:
        return self.rel.name


class Filing:
    """The inbox's moving parts: claim folder, done/, error/."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.done = inbox / "done"
        self.error = inbox / "error"
        self.processing = inbox / PROCESSING
        if not inbox.is_dir():  # never create it: it may be the mount point of a share not mounted yet
            raise ConfigError(f"the inbox folder {inbox} does not exist: create it, or check that its share "
                              "is mounted.")
        for folder in (self.done, self.error, self.processing):
            folder.mkdir(exist_ok=True)
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.own = self.processing / self.id
        self.own.mkdir()
        self._lock = ProcessLock(self.processing / f"{self.id}.lock")
        self._lock.acquire(blocking=True)

    def close(self) -> None:
        """Give back what is still claimed (nothing is lost if this never runs: it is adopted)."""
        for claim in self.claims():
            self.release(claim)
        shutil.rmtree(self.own, ignore_errors=True)
        self._lock.release()
        (self.processing / f"{self.id}.lock").unlink(missing_ok=True)

    # --- claiming ---------------------------------------------------------------------------------

    def claim(self, path: Path, dropped_at: float) -> Claim | None:
        """Take a file by atomic rename; None when another process (or a person) took it first."""
        rel = path.relative_to(self.inbox)
        token = self.own / f"{int(dropped_at * 1000)}-{uuid.uuid4().hex[:8]}"
        token.mkdir()
        target = token / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            shutil.rmtree(token, ignore_errors=True)
            return None
        return Claim(target, rel, dropped_at)

    def claims(self) -> list[Claim]:
        """Every file in this process's claim folder (after adoption: the ones a crash left)."""
        out = []
        for token in sorted(p for p in self.own.iterdir() if p.is_dir()):
            try:
                dropped_at = int(token.name.split("-", 1)[0]) / 1000
            except ValueError:
                dropped_at = token.stat().st_mtime
            files = [p for p in token.rglob("*") if p.is_file() or p.is_symlink()]
            if not files:
                shutil.rmtree(token, ignore_errors=True)
            out.extend(Claim(f, f.relative_to(token), dropped_at) for f in files)
        return out

    def adopt_orphans(self) -> int:
        """Take over the claim folders of processes that died; returns how many files came back."""
        adopted = 0
        for folder in self.processing.iterdir():
            if not folder.is_dir() or folder == self.own:
                continue
            lock = ProcessLock(self.processing / f"{folder.name}.lock")
            if not lock.acquire(blocking=False):
                continue  # its process is alive and working on it
            try:
                for token in folder.iterdir():
                    try:
                        os.rename(token, self.own / token.name)
                        adopted += sum(1 for p in (self.own / token.name).rglob("*") if not p.is_dir())
                    except OSError as exc:
                        log.warning("could not adopt %s from a stopped agent: %s", token, exc)
                shutil.rmtree(folder, ignore_errors=True)
                lock.path.unlink(missing_ok=True)
            finally:
                lock.release()
        return adopted

    # --- filing away ------------------------------------------------------------------------------

    def to_done(self, claim: Claim) -> Path:
        return self._file_away(claim, self.done)

    def to_error(self, claim: Claim, sidecar: dict[str, Any]) -> Path:
        """Move to error/ with `<name>.error.json` beside it, saying why and what to do."""
        return self._file_away(claim, self.error, sidecar)

    def release(self, claim: Claim) -> Path | None:
        """Put a claimed file back where it was found, to be tried again later."""
        target = _free_name(self.inbox / claim.rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _move_no_clobber(claim.path, target)
        except FileNotFoundError:
            return None
        _drop_token(claim, self.own)
        return target

    def _file_away(self, claim: Claim, folder: Path, sidecar: dict[str, Any] | None = None) -> Path:
        while True:
            target = _free_name(folder / claim.name)
            if sidecar is not None:
                atomic.write_json(target.with_name(target.name + ".error.json"), {**sidecar, "file": target.name})
            try:
                _move_no_clobber(claim.path, target)
                break
            except FileExistsError:  # another agent took that name a moment ago: pick the next
                continue
        _drop_token(claim, self.own)
        return target


def _free_name(target: Path) -> Path:
    """`invoice.pdf`, else `invoice (2).pdf`, `invoice (3).pdf`, ... whichever does not exist yet."""
    if not target.exists() and not target.is_symlink():
        return target
    stem, suffix = target.stem, target.suffix
    n = 2
    while True:
        candidate = target.with_name(f"{stem} ({n}){suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        n += 1


def _move_no_clobber(src: Path, dst: Path) -> None:
    """Rename without ever replacing an existing file: a hard link fails if `dst` exists."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:  # FileExistsError (EEXIST) is re-raised below, as the caller expects
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EACCES):
            raise
        if dst.exists():  # a file system without hard links (some SMB/FAT mounts)
            raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _drop_token(claim: Claim, own: Path) -> None:
    """Remove the now-empty claim token folder (`.processing/<id>/<token>/`)."""
    token = own / claim.path.relative_to(own).parts[0]
    shutil.rmtree(token, ignore_errors=True)


def iter_files(folder: Path) -> Iterator[Path]:
    """The filed invoices in done/ or error/ (sidecars and hidden files excluded)."""
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.is_file() and not entry.name.startswith(".") and not entry.name.endswith(".error.json"):
                yield Path(entry.path)
