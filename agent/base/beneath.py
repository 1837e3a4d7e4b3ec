"""Reach paths under a root without ever following a link out of it.

Every component below the root is opened with `O_NOFOLLOW` relative to its parent's descriptor,
so a folder swapped for a link, or a file swapped for one, fails with ELOOP/ENOTDIR instead of
reading, moving or creating something elsewhere. The root itself is the configured folder and
may be a link. Where the platform has no `dir_fd` support, each component is `lstat`ed first
(a smaller guarantee, documented in the README).
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_DIR_FD = os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)
LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}  # what O_NOFOLLOW answers for a link


@dataclass(frozen=True)
class Identity:
    """What makes "the same file, unchanged": a rename keeps it, any write or swap changes it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def is_link_error(exc: OSError) -> bool:
    return exc.errno in LINK_ERRNOS


@contextmanager
def folder(root: Path, parts: tuple[str, ...] = (), *, create: bool = False) -> Iterator[int | None]:
    """A descriptor for `root/parts...`, each part entered without following links (created if asked).

    Yields None where the platform has no `dir_fd` support, after `lstat`ing each part instead.
    """
    for part in parts:
        if part in ("", ".", ".."):
            raise OSError(errno.EINVAL, "not a plain path component", part)
    if not _DIR_FD:
        for depth in range(1, len(parts) + 1):
            path = root.joinpath(*parts[:depth])
            if create:
                path.mkdir(exist_ok=True)
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise OSError(errno.ELOOP, "a link or a file on the way", str(path))
        yield None
        return
    fd = os.open(root, _DIR_FLAGS & ~_NOFOLLOW)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def open_file(root: Path, rel: Path) -> tuple[int, os.stat_result]:
    """Open `root/rel` for reading, never through a link; the caller owns (and closes) the descriptor.

    Raises OSError: ELOOP/ENOTDIR for a link on the way, EINVAL for anything but a regular file.
    """
    with folder(root, rel.parts[:-1]) as parent:
        if parent is None:
            if stat.S_ISLNK(os.lstat(root / rel).st_mode):
                raise OSError(errno.ELOOP, "a link", str(rel))
            fd = os.open(root / rel, _FILE_FLAGS)
        else:
            fd = os.open(rel.name, _FILE_FLAGS, dir_fd=parent)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(rel))
    return fd, st


def lstat(root: Path, rel: Path) -> os.stat_result:
    """`lstat` of `root/rel`, reached without following a link on the way."""
    if len(rel.parts) == 1:  # the common case, one system call: only the last name can be a link
        return os.lstat(root / rel)
    with folder(root, rel.parts[:-1]) as parent:
        if parent is None:
            return os.lstat(root / rel)
        return os.stat(rel.name, dir_fd=parent, follow_symlinks=False)


def move(src_root: Path, src_rel: Path, dst_root: Path, dst_rel: Path, *, clobber: bool) -> None:
    """Move `src_root/src_rel` to `dst_root/dst_rel` (parents created), never through a link.

    With `clobber=False` an existing destination is never replaced (FileExistsError): a hard link
    then an unlink. File systems without hard links get a checked rename (a race remains there).
    """
    with folder(src_root, src_rel.parts[:-1]) as src, \
            folder(dst_root, dst_rel.parts[:-1], create=True) as dst:
        if src is None or dst is None:
            _move_by_path(src_root / src_rel, dst_root / dst_rel, clobber)
            return
        if clobber:
            os.rename(src_rel.name, dst_rel.name, src_dir_fd=src, dst_dir_fd=dst)
            return
        try:
            os.link(src_rel.name, dst_rel.name, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            if _exists(dst_rel.name, dst):
                raise FileExistsError(errno.EEXIST, "exists", str(dst_rel)) from None
            os.rename(src_rel.name, dst_rel.name, src_dir_fd=src, dst_dir_fd=dst)
            return
        os.unlink(src_rel.name, dir_fd=src)


NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EACCES}


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _move_by_path(src: Path, dst: Path, clobber: bool) -> None:
    if not clobber and (dst.exists() or dst.is_symlink()):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)
