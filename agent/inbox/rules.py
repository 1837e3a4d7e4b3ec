"""Which paths under the inbox are work."""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from agent.base import beneath
from agent.inbox.reasons import Unaccepted

log = logging.getLogger(__name__)

ARCHIVE_DIRS = ("done", "error")
_TEMP_SUFFIXES = (".part", ".crdownload", ".filepart", ".partial", ".tmp", ".download")
_LITTER = {".ds_store", "thumbs.db", "desktop.ini", "@eadir"}


def is_ignored_name(name: str) -> bool:
    """Names never uploaded nor moved: hidden, office locks, temporaries, OS litter (DESIGN.md)."""
    lower = name.lower()
    return (
        lower.startswith((".", "~", "~$"))
        or lower.endswith(_TEMP_SUFFIXES)
        or lower in _LITTER
        or lower.startswith("._")
    )


@dataclass(frozen=True)
class Rules:
    """Which paths under the inbox are work, which are left aside with a reason, which are not ours."""

    root: Path
    patterns: tuple[str, ...]
    recursive: bool

    def classify(self, path: Path) -> bool | Unaccepted:
        """True for work; an `Unaccepted` reason for a file left where it is; False for what is not
        ours to mention (outside, the archive, dot-folders, ignored names)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        return self._classify(rel.parts)

    def _classify(self, parts: tuple[str, ...]) -> bool | Unaccepted:
        """`classify` of a path given by its parts under the inbox (a scan knows them: no path to parse)."""
        if not parts or parts[0] in ARCHIVE_DIRS or any(_hidden(p) for p in parts[:-1]):
            return False
        name = parts[-1]
        if is_ignored_name(name):
            return False
        if len(parts) > 1 and not self.recursive:
            return Unaccepted.SUBFOLDER
        if not _matcher(self.patterns)(name.lower()):
            return Unaccepted.OTHER_TYPE
        return True

    def wants(self, path: Path) -> bool:
        return self.classify(path) is True

    def prune(self, rel_dir: Path, name: str) -> bool:
        """True for a folder a scan must not enter: the archive and dot-folders (their size never costs CPU)."""
        return (rel_dir == Path(".") and name in ARCHIVE_DIRS) or _hidden(name)

    def survey(self, aside_only: bool = False) -> Iterator[tuple[Path, Unaccepted | None]]:
        """Every file under the inbox that is work (None) or left aside (with why), never following
        links; without `recursive`, subfolders are looked into one level deep, only to say so.
        `aside_only`: only the files left aside (`status` while `run` lists the work itself)."""
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                subfolders, found = self._look_in(folder, aside_only)
            except OSError as exc:
                if folder == self.root:
                    log.warning("cannot list %s (%s): check that the folder exists and is readable", folder, exc)
                elif not (isinstance(exc, FileNotFoundError) or beneath.is_link_error(exc)):  # not gone, not a link
                    yield folder, Unaccepted.UNREADABLE  # said once, and listed by `status`, like any file left aside
                continue
            stack.extend(subfolders)
            yield from found

    def _look_in(self, folder: Path, aside_only: bool) -> tuple[list[Path], list[tuple[Path, Unaccepted | None]]]:
        """The subfolders to look into and the files found in `folder`, listed through a descriptor
        reached without links, so a folder deeper than PATH_MAX is listed too."""
        rel_dir = folder.relative_to(self.root)
        prefix = rel_dir.parts
        subfolders, found = [], []
        with beneath.folder(self.root, rel_dir.parts) as fd, os.scandir(folder if fd is None else fd) as entries:
            for entry in entries:  # entries are looked at through `fd`: only while it is open
                if entry.is_dir(follow_symlinks=False):
                    if not self.prune(rel_dir, entry.name) and (self.recursive or folder == self.root):
                        subfolders.append(folder / entry.name)
                    continue
                verdict = self._classify((*prefix, entry.name))
                if verdict is False:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                why = problem_of(st, verdict)
                if why is not None or not aside_only:
                    found.append((folder / entry.name, why))
        return subfolders, found

    def scan(self) -> Iterator[Path]:
        """Every candidate file under the inbox, never entering the archive or following links."""
        return (path for path, why in self.survey() if why is None)

    def listdir(self, path: str) -> Iterator[os.DirEntry]:
        """`os.scandir` for the polling observer, minus the archive and dot-folders."""
        rel_dir = Path(path).relative_to(self.root)
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False) and self.prune(rel_dir, entry.name):
                continue
            yield entry


@functools.lru_cache(maxsize=8)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match | None]:
    """One compiled expression for the patterns (fnmatch's, of a lowercased name): a scan of
    50,000 names matches each once, not once per pattern."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() == "@eadir"


def problem_of(st: os.stat_result, verdict: bool | Unaccepted) -> Unaccepted | None:
    """What keeps a file whose name `classify` judged from being taken: a link first (whatever its
    name), then its name's verdict, then a device or a hard link (a matching name is not enough)."""
    if stat.S_ISLNK(st.st_mode):
        return Unaccepted.LINK
    if verdict is not True:
        return verdict or None
    if not stat.S_ISREG(st.st_mode):
        return Unaccepted.NOT_A_FILE
    return Unaccepted.HARD_LINK if st.st_nlink > 1 else None
