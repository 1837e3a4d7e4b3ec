"""Reach paths under a root without ever following a link out of it.

Every component below the root is opened with `O_NOFOLLOW` relative to its parent's descriptor,
so a folder swapped for a link, or a file swapped for one, fails with ELOOP/ENOTDIR instead of
reading, moving or creating something elsewhere. The root itself is the configured folder and
may be a link. Where the platform has no `dir_fd` support, each component is `lstat`ed first
(a smaller guarantee, documented in the README).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

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


def move(src_root: Path, src_rel: Path, dst_root: Path, dst_rel: Path, *, clobber: bool,
         placeholder: bytes = b"") -> None:
    """Move `src_root/src_rel` to `dst_root/dst_rel` (parents created), never through a link.

    With `clobber=False` an existing destination is never replaced (FileExistsError), on every
    file system: `renameat2(RENAME_NOREPLACE)` where the kernel and file system have it (atomic: a
    crash leaves the file in one place); else a hard link then an unlink (a crash between leaves
    two names for one file, which `Filing` recognises); else a placeholder created with `O_EXCL`
    at the destination, holding the `placeholder` bytes, that the rename then replaces. A crash
    between leaves that placeholder (or, in the instant between creating and writing it, an empty
    file) at the destination, for the caller to recognise by its bytes; any error removes it.
    Across devices the bytes are copied under a temporary name, fsynced, placed without
    clobbering, and only then is the source removed.
    """
    with folder(src_root, src_rel.parts[:-1]) as src, \
            folder(dst_root, dst_rel.parts[:-1], create=True) as dst:
        if src is None or dst is None:
            _move_by_path(src_root / src_rel, dst_root / dst_rel, clobber)
        elif clobber:
            os.rename(src_rel.name, dst_rel.name, src_dir_fd=src, dst_dir_fd=dst)
        else:
            _move_no_clobber(src, src_rel.name, dst, dst_rel.name, placeholder)


def unlink(root: Path, rel: Path) -> None:
    """Remove the file `root/rel`, reached without following a link on the way."""
    with folder(root, rel.parts[:-1]) as parent:
        if parent is None:
            os.unlink(root / rel)
        else:
            os.unlink(rel.name, dir_fd=parent)


NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES}
RENAME_NOREPLACE = 1


def _move_no_clobber(src: int, name: str, dst: int, target: str, placeholder: bytes) -> None:
    if _renameat2_noreplace(src, name, dst, target):
        return
    try:
        os.link(name, target, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            _copy_across(src, name, dst, target, placeholder)
            return
        if exc.errno not in NO_HARD_LINKS:
            raise
        _rename_over_placeholder(src, name, dst, target, placeholder)
        return
    os.unlink(name, dir_fd=src)


def _rename_over_placeholder(src: int, name: str, dst: int, target: str, placeholder: bytes) -> None:
    """No hard links: take the name with an `O_EXCL` placeholder, then rename over it (ours alone:
    nobody else takes a name that exists). Any error (or an interrupt) removes the placeholder."""
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dst)
    ours = None
    try:
        ours = os.fstat(fd)
        view = memoryview(placeholder)
        while view:
            view = view[os.write(fd, view):]
        os.rename(name, target, src_dir_fd=src, dst_dir_fd=dst)
    except BaseException:
        try:  # unless the rename did happen (an interrupt just after it): then the name holds the file
            now = os.stat(target, dir_fd=dst, follow_symlinks=False)
            if ours is None or (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
                os.unlink(target, dir_fd=dst)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)


def _renameat2_noreplace(src: int, name: str, dst: int, target: str) -> bool:
    """True once moved; False where the platform or the file system has no RENAME_NOREPLACE."""
    call = renameat2()
    if call is None:
        return False
    if call(src, os.fsencode(name), dst, os.fsencode(target), RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False  # EXDEV: across devices, handled by the copy
    raise FileExistsError(err, os.strerror(err), target) if err == errno.EEXIST else OSError(err, os.strerror(err), target)


@functools.cache
def renameat2() -> Callable[..., int] | None:
    """libc's `renameat2`, or None where the platform has none (then hard links are used)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2")
    except (OSError, AttributeError):
        return None


def _copy_across(src: int, name: str, dst: int, target: str, placeholder: bytes) -> None:
    """Another device: copy to a temporary name, fsync, place it without clobbering, then unlink."""
    temp = f".qonto-agent-{os.urandom(6).hex()}.tmp"  # short: the target may use all 255 bytes
    with open(os.open(name, _FILE_FLAGS, dir_fd=src), "rb") as source, \
            open(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=dst), "wb") as out:
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
    try:
        _move_no_clobber(dst, temp, dst, target, placeholder)
    except BaseException:
        os.unlink(temp, dir_fd=dst)
        raise
    os.unlink(name, dir_fd=src)


def _move_by_path(src: Path, dst: Path, clobber: bool) -> None:
    if not clobber and (dst.exists() or dst.is_symlink()):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)
