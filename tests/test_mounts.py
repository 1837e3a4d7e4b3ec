"""`polling = "auto"`: the mount holding the inbox decides, from psutil's list on Linux, macOS and Windows."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import replace

import psutil
import pytest

from agent.config import InboxConfig
from agent.inbox import mounts

Partition = namedtuple("Partition", "device mountpoint fstype opts")  # psutil's sdiskpart fields

LINUX = [
    Partition("/dev/vda", "/", "ext4", "rw,relatime"),
    Partition("proc", "/proc", "proc", "rw"),
    Partition("//nas/scans", "/mnt/scans", "cifs", "rw,relatime,vers=3.1.1"),
    Partition("nas:/export", "/mnt/nfs", "nfs4", "rw"),
    Partition("/dev/vdb", "/mnt/scans/local", "xfs", "rw"),
    Partition("me@box:/srv", "/home/me/box", "fuse.sshfs", "rw,nosuid"),
]
DARWIN = [
    Partition("/dev/disk3s1s1", "/", "apfs", "ro,local,rootfs"),
    Partition("/dev/disk3s5", "/System/Volumes/Data", "apfs", "rw,local"),
    Partition("//me@nas._smb._tcp.local/Scans", "/Volumes/Scans", "smbfs", "rw,nodev,nosuid"),
    Partition("afp_0TQL", "/Volumes/Old", "afpfs", "rw,nodev,nosuid"),
    Partition("http://dav.example/files", "/Volumes/files", "webdav", "rw,nodev"),
]
WINDOWS = [
    Partition("C:\\", "C:\\", "NTFS", "rw,fixed"),
    Partition("D:\\", "D:\\", "", "cdrom"),
    Partition("Z:\\", "Z:\\", "NTFS", "rw,remote"),
]


@pytest.fixture
def partitions(monkeypatch):
    """Sets the list psutil answers with."""
    def use(listing: list[Partition]) -> None:
        monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: listing if all else [])
    return use


@pytest.mark.parametrize("target, mode, said", [
    ("/home/me/inbox", "native", "local ext4 mount at /"),
    ("/mnt/scans/inbox", "polling", "cifs network mount at /mnt/scans,"),
    ("/mnt/scans", "polling", "cifs network mount at /mnt/scans,"),
    ("/mnt/scansX/inbox", "native", "local ext4 mount at /"),  # a prefix of the name is not the folder
    ("/mnt/scans/local/inbox", "native", "local xfs mount at /mnt/scans/local"),  # the longest point wins
    ("/mnt/nfs/a b", "polling", "nfs4 network mount at /mnt/nfs,"),
    ("/home/me/box/inbox", "polling", "fuse.sshfs network mount at /home/me/box,"),
])
def test_linux_mounts(partitions, target, mode, said):
    partitions(LINUX)
    chosen, why = mounts.auto_mode(target, windows=False)
    assert (chosen, said in why) == (mode, True), why


@pytest.mark.parametrize("target, mode, said", [
    ("/Users/me/Invoices", "native", "local apfs mount at /"),
    ("/System/Volumes/Data/Users/me", "native", "local apfs mount at /System/Volumes/Data"),
    ("/Volumes/Scans/inbox", "polling", "the inbox is on a smbfs network mount at /Volumes/Scans,"),
    ("/Volumes/Old/inbox", "polling", "afpfs network mount at /Volumes/Old,"),
    ("/Volumes/files", "polling", "webdav network mount at /Volumes/files,"),
])
def test_darwin_mounts(partitions, target, mode, said):
    partitions(DARWIN)
    chosen, why = mounts.auto_mode(target, windows=False)
    assert (chosen, said in why) == (mode, True), why


@pytest.mark.parametrize("target, mode, said", [
    ("C:\\Users\\me\\Invoices", "native", "local NTFS mount at C:\\"),
    ("c:\\users\\me", "native", "local NTFS mount at C:\\"),  # drive letters have no case
    ("Z:\\Scans\\inbox", "polling", "NTFS network mount at Z:\\,"),  # said remote by its opts
    ("\\\\nas\\scans\\inbox", "polling", "the network share \\\\nas\\scans,"),  # a UNC path lists no drive
    ("E:\\inbox", "native", "no mount was found holding the inbox; set polling = true"),
])
def test_windows_mounts(partitions, target, mode, said):
    partitions(WINDOWS)
    chosen, why = mounts.auto_mode(target, windows=True)
    assert (chosen, said in why) == (mode, True), why


def test_mounts_that_cannot_be_listed_leave_native_events_and_say_how_to_poll(monkeypatch):
    def refuse(all=False):
        raise PermissionError("permission denied: '/etc/mtab'")
    monkeypatch.setattr(psutil, "disk_partitions", refuse)
    mode, why = mounts.auto_mode("/srv/inbox", windows=False)
    assert mode == "native"
    assert "the mounts could not be listed (permission denied" in why and "set polling = true" in why


def test_the_configuration_decides_before_any_mount_is_looked_at(tmp_path, monkeypatch, partitions):
    partitions([Partition("srv:/x", "/", "nfs", "rw")])
    auto = InboxConfig(path=tmp_path)
    assert mounts.choose_mode(auto)[0] == "polling"
    assert mounts.choose_mode(replace(auto, polling=False)) == ("native", "polling = false in the configuration")
    monkeypatch.setattr(psutil, "disk_partitions", None)  # not called
    assert mounts.choose_mode(replace(auto, polling=True)) == ("polling", "polling = true in the configuration")


def test_this_machines_own_mounts_answer(tmp_path):
    """The real psutil on this machine finds the mount holding a temporary folder."""
    mode, why = mounts.choose_mode(InboxConfig(path=tmp_path))
    assert mode in ("native", "polling") and " mount at /" in why, why
