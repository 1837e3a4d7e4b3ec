"""Which paths under the inbox are work, and whether the inbox gets OS events or must be polled."""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agent.config import InboxConfig

log = logging.getLogger(__name__)

ARCHIVE_DIRS = ("done", "error")
NETWORK_FS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "afs", "9p", "fuse.sshfs", "davfs", "fuse.davfs2",
              "ncpfs", "glusterfs", "ceph", "fuse.glusterfs", "fuse.rclone"}
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
    """Which paths under the inbox are work: matching, not ignored, not in the archive."""

    root: Path
    patterns: tuple[str, ...]
    recursive: bool

    def wants(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        parts = rel.parts
        if not parts or (len(parts) > 1 and not self.recursive):
            return False
        if parts[0] in ARCHIVE_DIRS or any(p.startswith(".") or p.lower() == "@eadir" for p in parts[:-1]):
            return False
        name = parts[-1]
        return not is_ignored_name(name) and any(fnmatch.fnmatch(name.lower(), p) for p in self.patterns)

    def prune(self, rel_dir: Path, name: str) -> bool:
        """True for a folder a scan must not enter: the archive and dot-folders (their size never costs CPU)."""
        return (rel_dir == Path(".") and name in ARCHIVE_DIRS) or name.startswith(".") or name.lower() == "@eadir"

    def scan(self) -> Iterator[Path]:
        """Every candidate file under the inbox, never entering the archive or following links."""
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                log.warning("cannot list %s (%s): check that the folder exists and is readable", folder, exc)
                continue
            rel_dir = folder.relative_to(self.root)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive and not self.prune(rel_dir, entry.name):
                        stack.append(Path(entry.path))
                elif self.wants(Path(entry.path)):
                    yield Path(entry.path)

    def listdir(self, path: str) -> Iterator[os.DirEntry]:
        """`os.scandir` for the polling observer, minus the archive and dot-folders."""
        rel_dir = Path(path).relative_to(self.root)
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False) and self.prune(rel_dir, entry.name):
                continue
            yield entry


def filesystem_type(path: Path) -> str | None:
    """The type of the mount holding `path` (Linux /proc/mounts), or None where unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target, best, best_len = str(path.resolve()), None, -1
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > best_len:
            best, best_len = fields[2], len(point)
    return best


def choose_mode(cfg: InboxConfig) -> tuple[str, str]:
    """('native' | 'polling', why): polling where OS events do not arrive (network mounts)."""
    if cfg.polling is True:
        return "polling", "polling = true in the configuration"
    if cfg.polling is False:
        return "native", "polling = false in the configuration"
    fstype = filesystem_type(cfg.path)
    if fstype in NETWORK_FS:
        return "polling", f"the inbox is on a {fstype} network mount, where file events do not arrive"
    return "native", f"the inbox is on a local {fstype or 'file system'}"

