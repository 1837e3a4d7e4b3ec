"""Which mount holds the inbox, and so whether it gets OS events or must be polled.

OS file events (inotify, FSEvents, ReadDirectoryChangesW) do not arrive for changes another machine
makes on a network share, so `polling = "auto"` polls there. psutil lists the mounts on Linux,
macOS and Windows alike (on Linux it reads /proc/self/mounts itself).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath

import psutil

from agent.config import InboxConfig

NETWORK_FS = {"nfs", "nfs3", "nfs4", "cifs", "smbfs", "smb2", "smb3", "afpfs", "webdav", "afs", "9p",
              "fuse.sshfs", "sshfs", "davfs", "fuse.davfs2", "ncpfs", "glusterfs", "ceph", "fuse.glusterfs",
              "fuse.rclone", "fuse.s3fs", "lustre"}


@dataclass(frozen=True)
class Mount:
    """A mount point, its file system's type and whether the OS says it is remote (Windows' opts)."""

    point: str
    fstype: str
    remote: bool = False

    @property
    def networked(self) -> bool:
        return self.remote or self.fstype.lower() in NETWORK_FS


def choose_mode(cfg: InboxConfig) -> tuple[str, str]:
    """('native' | 'polling', why): the configuration's choice, or with "auto" the inbox's mount's."""
    if cfg.polling is True:
        return "polling", "polling = true in the configuration"
    if cfg.polling is False:
        return "native", "polling = false in the configuration"
    return auto_mode(str(cfg.path.resolve()), windows=sys.platform == "win32")


def auto_mode(target: str, windows: bool) -> tuple[str, str]:
    """('native' | 'polling', why) for the absolute path `target`, from the mount that holds it."""
    flavour: type[PurePath] = PureWindowsPath if windows else PurePosixPath
    path = flavour(target)
    if windows and path.drive.startswith("\\\\"):
        return "polling", f"the inbox is on the network share {path.drive}, where file events do not arrive"
    try:
        mount = holding(path, _mounts())
    except (OSError, psutil.Error) as exc:
        return "native", (f"the mounts could not be listed ({exc}); set polling = true if the inbox "
                          "is on a network share")
    if mount is None:
        return "native", "no mount was found holding the inbox; set polling = true if it is on a network share"
    if mount.networked:
        return "polling", (f"the inbox is on a {mount.fstype or 'remote'} network mount at {mount.point}, "
                           "where file events do not arrive")
    return "native", f"the inbox is on a local {mount.fstype or 'file system'} mount at {mount.point}"


def holding(path: PurePath, mounts: list[Mount]) -> Mount | None:
    """The mount whose point is the longest prefix of `path` (Windows compares without case)."""
    best: Mount | None = None
    best_depth = -1
    for mount in mounts:
        point = type(path)(mount.point)
        if path.is_relative_to(point) and len(point.parts) > best_depth:
            best, best_depth = mount, len(point.parts)
    return best


def _mounts() -> list[Mount]:
    """Every mount psutil knows, pseudo file systems included (`all=True`: a share can be one)."""
    return [Mount(p.mountpoint, p.fstype, "remote" in p.opts.split(",")) for p in psutil.disk_partitions(all=True)]
