"""Reaching paths under a root never follows a link out of it (agent/base/beneath.py, inbox/filing.py)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import pdf_bytes

from agent.base import beneath
from agent.base.errors import ConfigError
from agent.inbox.filing import Filing


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(inbox, outside): a real subfolder in the inbox, and an outside folder with a secret."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.pdf").write_bytes(pdf_bytes("secret"))
    (inbox / "sub" / "x.pdf").write_bytes(pdf_bytes("inside"))
    return inbox, outside


def _swap_for_link(folder: Path, target: Path) -> None:
    moved = folder.with_name(folder.name + "-real")
    folder.rename(moved)
    folder.symlink_to(target, target_is_directory=True)


def test_a_folder_swapped_for_a_link_is_never_entered(tree):
    inbox, outside = tree
    fd, _ = beneath.open_file(inbox, Path("sub/x.pdf"))
    os.close(fd)
    _swap_for_link(inbox / "sub", outside)
    for call in (lambda: beneath.open_file(inbox, Path("sub/x.pdf")),
                 lambda: beneath.lstat(inbox, Path("sub/x.pdf")),
                 lambda: beneath.move(inbox, Path("sub/x.pdf"), inbox, Path("moved.pdf"), clobber=True)):
        with pytest.raises(OSError) as caught:
            call()
        assert beneath.is_link_error(caught.value)
    assert (outside / "x.pdf").read_bytes() == pdf_bytes("secret") and not (inbox / "moved.pdf").exists()


def test_a_file_link_is_never_opened_and_a_device_is_refused(tree):
    inbox, outside = tree
    (inbox / "link.pdf").symlink_to(outside / "x.pdf")
    with pytest.raises(OSError) as caught:
        beneath.open_file(inbox, Path("link.pdf"))
    assert beneath.is_link_error(caught.value)
    os.mkfifo(inbox / "pipe.pdf")
    with pytest.raises(OSError) as caught:  # opened without blocking, then refused: not a regular file
        beneath.open_file(inbox, Path("pipe.pdf"))
    assert caught.value.errno == errno.EINVAL


def test_a_claim_through_a_swapped_folder_takes_nothing(tree):
    inbox, outside = tree
    filing = Filing(inbox)
    try:
        _swap_for_link(inbox / "sub", outside)
        assert filing.claim(inbox / "sub" / "x.pdf", 0.0) is None
        assert (outside / "x.pdf").read_bytes() == pdf_bytes("secret")
        assert filing.claims() == []
    finally:
        filing.close()


def test_links_planted_in_the_claim_folder_are_listed_never_followed(tree):
    inbox, outside = tree
    (outside / "token").mkdir()
    (outside / "token" / "y.pdf").write_bytes(pdf_bytes("outside token"))
    processing = inbox / ".processing"
    processing.mkdir()
    (processing / "evil").symlink_to(outside, target_is_directory=True)  # a dead agent's folder?
    (processing / "dead" / "1-tok").mkdir(parents=True)
    (processing / "dead" / "1-tok" / "x.pdf").symlink_to(outside / "x.pdf")
    filing = Filing(inbox)
    try:
        assert filing.adopt_orphans() == 1  # the real dead folder's token; the link is not entered
        claims = filing.claims()
        assert [c.rel for c in claims] == [Path("x.pdf")] and claims[0].path.is_symlink()
        assert sorted(p.name for p in outside.iterdir()) == ["token", "x.pdf"]
        assert (outside / "token" / "y.pdf").exists()
    finally:
        filing.close()
    assert (inbox / "x.pdf").is_symlink()  # given back as the link it was, for `status` to list
    assert (outside / "x.pdf").read_bytes() == pdf_bytes("secret")


def test_a_claim_folder_that_is_a_link_stops_the_agent_before_it_moves_anything(tree):
    inbox, outside = tree
    (inbox / ".processing").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="is a link or a file, not a folder"):
        Filing(inbox)
    assert sorted(p.name for p in outside.iterdir()) == ["x.pdf"]


@pytest.fixture
def mount(tmp_path):
    """A small tmpfs mounted in the test (another device); skipped, with the reason, where refused."""
    point = tmp_path / "mnt"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield point
    subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("how", ["renameat2", "hard link", "placeholder"])
def test_no_clobber_move_on_every_file_system(tree, monkeypatch, how):
    inbox, _ = tree
    if how != "renameat2":
        monkeypatch.setattr(beneath, "renameat2", lambda: None)
    if how == "placeholder":  # FAT and many SMB shares: no hard links
        def refuse(*args, **kw):
            raise PermissionError(errno.EPERM, "no hard links here")
        monkeypatch.setattr(os, "link", refuse)
    (inbox / "a.pdf").write_bytes(b"a")
    (inbox / "b.pdf").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        beneath.move(inbox, Path("a.pdf"), inbox, Path("b.pdf"), clobber=False)
    assert (inbox / "b.pdf").read_bytes() == b"b" and (inbox / "a.pdf").read_bytes() == b"a"
    beneath.move(inbox, Path("a.pdf"), inbox, Path("new/deep/a.pdf"), clobber=False)  # parents made inside
    assert (inbox / "new/deep/a.pdf").read_bytes() == b"a" and not (inbox / "a.pdf").exists()


def test_a_move_to_another_device_copies_then_removes_and_never_clobbers(tree, mount):
    inbox, _ = tree
    (inbox / "a.pdf").write_bytes(pdf_bytes("across"))
    (mount / "taken.pdf").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        beneath.move(inbox, Path("a.pdf"), mount, Path("taken.pdf"), clobber=False)
    assert (mount / "taken.pdf").read_bytes() == b"someone else's" and (inbox / "a.pdf").exists()
    beneath.move(inbox, Path("a.pdf"), mount, Path("done/a.pdf"), clobber=False)
    assert (mount / "done" / "a.pdf").read_bytes() == pdf_bytes("across") and not (inbox / "a.pdf").exists()
    assert sorted(p.name for p in mount.iterdir()) == ["done", "taken.pdf"]  # no temporary left


def test_a_stop_between_link_and_unlink_leaves_one_copy_after_restart(tree):
    inbox, _ = tree
    stopped = subprocess.run([sys.executable, "-c", (  # a process claims, links into done/, and dies
        "import os, sys\nfrom pathlib import Path\nfrom agent.inbox.filing import Filing\n"
        "inbox = Path(sys.argv[1])\nclaim = Filing(inbox).claim(inbox / 'sub' / 'x.pdf', 0.0)\n"
        "os.link(claim.path, inbox / 'done' / 'x.pdf')\nos._exit(9)\n"), str(inbox)])
    assert stopped.returncode == 9
    second = Filing(inbox)
    try:
        assert second.adopt_orphans() == 1
        assert second.claims() == []  # recognised as filed
    finally:
        second.close()
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["x.pdf"]
    assert (inbox / "done" / "x.pdf").stat().st_nlink == 1
