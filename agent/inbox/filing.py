"""Moving files safely: claim before reading, file away into done/ or error/, release for a retry.

A claim is an atomic rename into `<inbox>/.processing/<process id>/<token>/`. Two agents on one
share cannot both claim a file (only one rename wins), and a file claimed by a process that died
(kill -9, power loss) is adopted by the next process that starts, because the dead one's lock on
its claim folder is gone. Names in done/ and error/ are never overwritten.

Filing away is a no-clobber move (`beneath.move`), and a stop at any point of it leaves one copy
once the claim is adopted: a claim that is also in done/ or error/ by a hard link is finished
(`_filed_before_a_stop`); where the move takes its target's name with a placeholder first (no
hard links), a note in the claim folder says where it was going, and the placeholder that a
stopped filing left there is removed before the claim is filed again (`_placeholder_left`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from agent.base import beneath, files as atomic
from agent.base.beneath import Identity
from agent.base.files import ProcessLock
from agent.base.text import printable
from agent.base.errors import ConfigError

log = logging.getLogger(__name__)

PROCESSING = ".processing"
PLACING = ".placing-"  # a note in the claim folder: which claim is moving where, and its placeholder's bytes
NAME_MAX = 255  # bytes in one file name, on every file system the agent meets
SIDECAR_RESERVE = len(".error.json") + len(".") + len(".tmp-") + 12  # its temporary name while written


@dataclass(frozen=True)
class Claim:
    """A file this process owns: `path` is inside its claim folder, `rel` is where it came from."""

    path: Path
    rel: Path
    dropped_at: float
    settled: Identity | None = None  # what the settler judged, for a fresh claim

    @property
    def name(self) -> str:
        return self.rel.name

    @property
    def label(self) -> str:
        """The name as text for the ledger, sidecars and Qonto (see `base.text.printable`)."""
        return printable(self.rel.name)


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
            try:
                folder.mkdir()
            except FileExistsError:
                pass
            if not _is_real_dir(folder):  # files moved through a link would leave the inbox
                raise ConfigError(f"{folder} is a link or a file, not a folder: remove or rename it (the agent "
                                  "files invoices in done/ and error/, and keeps the ones it is working on in "
                                  ".processing/, all inside the inbox; mount another disk there if need be).")
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.own = self.processing / self.id
        self.placeholder = f"qonto-agent {self.id}: placeholder for a file being moved here\n".encode()
        self._lock = ProcessLock(self.processing / f"{self.id}.lock")
        self._lock.acquire(blocking=True)  # before the folder exists: another agent must never see it unlocked
        self.own.mkdir()

    def close(self) -> None:
        """Give back what is still claimed (nothing is lost if this never runs: it is adopted). What
        the inbox refuses back (read-only, full) stays claimed, and the next start adopts it."""
        kept = False
        for claim in self.claims():
            try:
                self.release(claim)
            except OSError as exc:
                kept = True
                log.warning("%s could not be put back in the inbox (%s); it waits in %s and is taken up again at "
                            "the next start", claim.name, exc.strerror or exc, self.processing)
        if not kept:
            shutil.rmtree(self.own, ignore_errors=True)
        self._lock.release()
        with contextlib.suppress(OSError):  # a read-only inbox: the next start removes it
            (self.processing / f"{self.id}.lock").unlink(missing_ok=True)

    # --- claiming ---------------------------------------------------------------------------------

    def claim(self, path: Path, dropped_at: float, settled: Identity | None = None) -> Claim | None:
        """Take a file by atomic rename; None when it is gone, or reached only through a link."""
        rel = path.relative_to(self.inbox)
        token = self.own / f"{int(dropped_at * 1000)}-{uuid.uuid4().hex[:8]}"
        token.mkdir()
        try:
            beneath.move(self.inbox, rel, token, rel, clobber=True)
        except OSError as exc:
            shutil.rmtree(token, ignore_errors=True)
            if isinstance(exc, FileNotFoundError) or beneath.is_link_error(exc):
                return None  # taken by someone else, or a folder on the way became a link: not ours
            raise
        return Claim(token / rel, rel, dropped_at, settled)

    def claims(self) -> list[Claim]:
        """Every entry in this process's claim folder (after adoption: the ones a crash left).

        Links are listed too, never followed: the uploader refuses them like any other file.
        """
        out = []
        for token in sorted(self.own.iterdir()):
            if token.name.startswith("."):
                continue
            if token.is_symlink():  # planted (a link to a folder elsewhere): removed, never entered
                log.warning("removed %s from the claim folder: it is not a folder the agent made (a link?)", token.name)
                token.unlink(missing_ok=True)
                continue
            if not _is_real_dir(token):  # a file put there by hand: it is checked and sent like any other
                out.append(Claim(token, Path(token.name), token.lstat().st_mtime))
                continue
            try:
                dropped_at = int(token.name.split("-", 1)[0]) / 1000
            except ValueError:
                dropped_at = token.lstat().st_mtime
            unlisted: list[OSError] = []
            found = [f for f in _entries(token, unlisted.append) if not self._filed_before_a_stop(f)]
            if not found and not unlisted:  # never removed unless every folder in it could be listed
                shutil.rmtree(token, ignore_errors=True)
            out.extend(Claim(f, f.relative_to(token), dropped_at) for f in sorted(found))
        return out

    def _filed_before_a_stop(self, path: Path) -> bool:
        """A claim that is also in done/ or error/ under another name (a stop between the hard link
        and the unlink of a move): the filing is finished by removing the claim's name."""
        try:
            st = path.lstat()
        except OSError:
            return False
        if st.st_nlink < 2 or not stat.S_ISREG(st.st_mode):
            return False
        for folder, reserve in (("done", 0), ("error", SIDECAR_RESERVE)):
            for candidate in _names(Path(folder, path.name), reserve):
                try:
                    other = (self.inbox / candidate).lstat()
                except OSError:
                    break  # names are taken in order: the first free one ends the search
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    path.unlink()
                    log.info("%s was filed as %s before the agent stopped; finished", path.name, candidate)
                    return True
        return False

    def adopt_orphans(self) -> int:
        """Take over the claim folders of processes that died; returns how many entries came back."""
        adopted = 0
        for folder in self.processing.iterdir():
            if not _is_real_dir(folder) or folder == self.own:
                continue  # a link planted here is never entered
            lock = ProcessLock(self.processing / f"{folder.name}.lock")
            if not lock.acquire(blocking=False):
                continue  # its process is alive and working on it
            notes = []
            try:
                for token in folder.iterdir():
                    try:
                        os.rename(token, self.own / token.name)
                        adopted += _is_real_dir(self.own / token.name)
                        if token.name.startswith(PLACING):
                            notes.append(self.own / token.name)
                    except OSError as exc:
                        log.warning("could not adopt %s from a stopped agent: %s", token, exc)
                for note in notes:  # the claims they name are ours now
                    self._placeholder_left(note)
                shutil.rmtree(folder, ignore_errors=True)
                lock.path.unlink(missing_ok=True)
            finally:
                lock.release()
        return adopted

    def _placeholder_left(self, note: Path) -> None:
        """Finish a move that a stopped filing left between its placeholder and its rename (see
        `_place`): when the claim is still here and its target holds that filing's placeholder (its
        bytes, or nothing: stopped between creating and writing it), the placeholder is removed and
        the claim is filed again like any other. Only the dead filing can have made that file: the
        name was free just before the note was written, and nobody takes a name that exists. (An
        empty file someone else made there in the instant between that check and the placeholder,
        with this filing stopped in that instant too, would be taken for one.) Anything else at the
        target is left alone."""
        try:
            fields = note.read_bytes().split(b"\0")
            if len(fields) != 3 or not fields[2].startswith(b"qonto-agent ") or not fields[2].endswith(b"here\n"):
                return  # not a whole note (the disk was full?): nothing to go by
            source, target, placeholder = Path(os.fsdecode(fields[0])), Path(os.fsdecode(fields[1])), fields[2]
            if source.is_absolute() or target.is_absolute():
                return
            try:
                claimed = beneath.lstat(self.own, source)
                there = beneath.lstat(self.inbox, target)
            except OSError:
                return  # the move was done (or never began): nothing was left
            if not stat.S_ISREG(there.st_mode) or there.st_size > len(placeholder) \
                    or (there.st_dev, there.st_ino) == (claimed.st_dev, claimed.st_ino):
                return  # someone else's file, or the claim itself by a hard link (`_filed_before_a_stop`)
            fd, _ = beneath.open_file(self.inbox, target)
            with open(fd, "rb") as fh:
                if fh.read(len(placeholder) + 1) not in (b"", placeholder):
                    return
            beneath.unlink(self.inbox, target)
            log.info("removed %s, a placeholder left by an agent that stopped while moving %s there; it is "
                     "filed again", printable(str(target)), printable(source.name))
        except OSError as exc:
            log.warning("could not check %s, left by an agent that stopped while moving a file: %s", note.name, exc)
        finally:
            note.unlink(missing_ok=True)

    # --- filing away ------------------------------------------------------------------------------

    def to_done(self, claim: Claim) -> Path:
        return self._file_away(claim, "done")

    def to_error(self, claim: Claim, sidecar: dict[str, Any]) -> Path:
        """Move to error/ with `<name>.error.json` beside it, saying why and what to do."""
        target = self._file_away(claim, "error", reserve=SIDECAR_RESERVE)
        atomic.write_json(target.with_name(target.name + ".error.json"), {**sidecar, "file": printable(target.name)})
        return target

    def file_snapshot(self, claim: Claim, snapshot: BinaryIO) -> Path:
        """File the bytes that were sent in done/ under the claim's name, when the original changed
        after it was copied: done/ then holds what Qonto holds."""
        path = self.own / f".sent-{uuid.uuid4().hex[:8]}"  # dot names are never taken for claims
        snapshot.seek(0)
        with open(path, "xb") as out:
            shutil.copyfileobj(snapshot, out)
            out.flush()
            os.fsync(out.fileno())
        return self._file_away(Claim(path, Path(claim.name), claim.dropped_at), "done", keep_token=True)

    def release(self, claim: Claim) -> Path | None:
        """Put a claimed file back where it was found (or at the inbox's top if that folder became a
        link), to be tried again later; None when it is gone."""
        try:
            return self._move_out(claim, claim.rel)
        except OSError as exc:
            if not beneath.is_link_error(exc):
                raise
            return self._move_out(claim, Path(claim.name))

    def _file_away(self, claim: Claim, folder: str, keep_token: bool = False, reserve: int = 0) -> Path:
        target = self._move_out(claim, Path(folder, claim.name), keep_token, reserve)
        if target is None:
            raise FileNotFoundError(errno.ENOENT, "the claimed file disappeared", str(claim.path))
        return target

    def _move_out(self, claim: Claim, rel: Path, keep_token: bool = False, reserve: int = 0) -> Path | None:
        """Move a claimed file to `inbox/rel` (reached without links, folders made as needed), or the
        first free `name (n).ext` beside it; never replaces."""
        source = claim.path.relative_to(self.own)
        root = self.inbox
        for candidate in _names(rel, reserve):
            if _taken(root, candidate):  # a shortcut past names in use: the move itself never replaces
                continue
            try:
                self._place(source, candidate)
            except FileExistsError:  # taken (perhaps a moment ago by another agent): the next name
                continue
            except FileNotFoundError:
                if (self.own / source).is_symlink() or (self.own / source).exists():
                    raise
                return None
            if not keep_token:
                _drop_token(claim, self.own)
            return root / candidate
        raise AssertionError("unreachable: _names is endless")

    def _place(self, source: Path, target: Path) -> None:
        """Move `own/source` to `inbox/target` without replacing anything, with a note beside the
        claim saying where, read by `_placeholder_left` if this process stops in the middle. The
        note is best effort: without it (a full disk) a stop may leave a placeholder, never a loss."""
        note = self.own / f"{PLACING}{hashlib.sha256(os.fsencode(str(source))).hexdigest()[:16]}"
        try:
            note.write_bytes(b"\0".join((os.fsencode(str(source)), os.fsencode(str(target)), self.placeholder)))
        except OSError as exc:
            log.debug("no note for the move of %s: %s", printable(source.name), exc)
        try:
            beneath.move(self.own, source, self.inbox, target, clobber=False, placeholder=self.placeholder)
        finally:
            note.unlink(missing_ok=True)


def _taken(root: Path, rel: Path) -> bool:
    """Something (a link too) is at `root/rel`; an error reaching it says no: the move will answer."""
    try:
        beneath.lstat(root, rel)
    except OSError:
        return False
    return True


def _names(rel: Path, reserve: int = 0) -> Iterator[Path]:
    """`invoice.pdf`, then `invoice (2).pdf`, `invoice (3).pdf`, ..., each shortened to fit a file
    name's 255 bytes with `reserve` bytes to spare (a sidecar's suffix)."""
    yield rel.with_name(_fit(rel.stem, rel.suffix, reserve))
    n = 2
    while True:
        yield rel.with_name(_fit(rel.stem, f" ({n}){rel.suffix}", reserve))
        n += 1


def _fit(stem: str, tail: str, reserve: int) -> str:
    room = NAME_MAX - reserve - len(os.fsencode(tail))
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return stem + tail


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _entries(token: Path, onerror: Callable[[OSError], None]) -> Iterator[Path]:
    """The files under a claim token, and anything else there that is not a real folder (a link),
    never entering a link. Walked by descriptor where the platform can: a claim deeper than
    PATH_MAX is found too."""
    if hasattr(os, "fwalk"):
        walk = ((folder, dirs, names, functools.partial(_is_dir_at, fd))
                for folder, dirs, names, fd in os.fwalk(token, onerror=onerror))
    else:
        walk = ((folder, dirs, names, lambda d, f=folder: _is_real_dir(Path(f, d)))
                for folder, dirs, names in os.walk(token, onerror=onerror))
    for folder, dirs, names, is_dir in walk:  # each folder's descriptor is open while it is looked at
        yield from (Path(folder, n) for n in names if not n.startswith("."))
        yield from (Path(folder, d) for d in dirs if not is_dir(d))


def _is_dir_at(folder: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _drop_token(claim: Claim, own: Path) -> None:
    """Remove the now-empty claim token folder (`.processing/<id>/<token>/`)."""
    token = own / claim.path.relative_to(own).parts[0]
    try:
        os.rmdir(token)  # one system call where the claim was one file; a backlog files thousands
    except OSError:
        shutil.rmtree(token, ignore_errors=True)  # the folders of a file claimed from a subfolder


def iter_files(folder: Path) -> Iterator[Path]:
    """The filed invoices in done/ or error/ (sidecars and hidden files excluded)."""
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.is_file() and not entry.name.startswith(".") and not entry.name.endswith(".error.json"):
                yield Path(entry.path)
