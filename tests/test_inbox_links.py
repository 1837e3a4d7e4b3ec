"""Links, swaps and rewrites in the inbox, end to end: `qonto-agent` as a real process, the sandbox
over HTTP, real folders. Every test checks both ends: what lives outside the inbox keeps its bytes
and its place, and the sandbox holds exactly the invoices expected, each byte for byte a file in done/."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from corpus import jpeg_photo, png_image
from PIL import Image
from support import make_config, pdf_bytes, run_agent, wait_for, write_pdf

from agent.sandbox.server import Sandbox

MODES = pytest.mark.parametrize("polling", [pytest.param(False, id="native"), pytest.param(True, id="polling")])
LEFT = "is left in the inbox"


# --- helpers -------------------------------------------------------------------------------------

def inbox_settings(polling: bool = False, **overrides) -> dict:
    """Short timings; the rescan out of the way unless a test wants it."""
    cfg = {"settle_seconds": 0.3, "debounce_seconds": 0.3, "max_wait_seconds": 20, "rescan_seconds": 300}
    if polling:
        cfg.update(polling=True, poll_interval_seconds=0.2)
    cfg.update(overrides)
    return cfg


def tree(root: Path) -> dict[str, tuple]:
    """Everything under `root`, links not followed: relative path -> (kind, content, inode, ctime).

    The change time catches a file moved away and back, or linked and unlinked, meanwhile."""
    out: dict[str, tuple] = {}
    for folder, dirs, names in os.walk(root):  # never descends into a link
        for name in dirs + names:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path), st.st_ino, st.st_ctime_ns)
            elif path.is_dir():
                out[rel] = ("dir", None, st.st_ino, st.st_ctime_ns)
            else:
                out[rel] = ("file", path.read_bytes(), st.st_ino, st.st_ctime_ns)
    return out


class Outside:
    """A folder beside the inbox, with invoices the agent must never read, move, send or delete."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "outside"
        self.secret = write_pdf(self.root / "secret.pdf", "outside secret, never to be sent")
        self.before: dict[str, tuple] | None = None

    def add(self, rel: str, label: str) -> Path:
        return write_pdf(self.root / rel, label)

    def freeze(self) -> None:
        self.before = tree(self.root)

    def contents(self) -> set[bytes]:
        return {content for kind, content, *_ in tree(self.root).values() if kind == "file"}

    def check(self) -> None:
        assert self.before is not None, "freeze() first"
        assert tree(self.root) == self.before, "something outside the inbox was changed, moved or deleted"


def filed(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".error.json"))


def done_names(inbox: Path) -> list[str]:
    return [p.name for p in filed(inbox / "done")]


def claims_left(inbox: Path) -> list[str]:
    root = inbox / ".processing"
    return sorted(str(p) for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and not p.name.endswith(".lock"))


def check_sandbox(sandbox: Sandbox, inbox: Path, count: int, outside: Outside) -> list[bytes]:
    """Exactly `count` invoices, whose bytes are exactly the bytes filed in done/, none from outside."""
    invoices = sandbox.invoices()
    assert len(invoices) == count, [inv["file_name"] for inv in invoices]
    sent = sorted(sandbox.attachment_bytes(inv["attachment_id"]) for inv in invoices)
    done = sorted(p.read_bytes() for p in filed(inbox / "done"))
    assert sent == done, (f"sandbox holds {[inv['file_name'] for inv in invoices]}, "
                          f"done/ holds {done_names(inbox)}: not the same bytes")
    assert not set(sent) & outside.contents(), "a file from outside the inbox was uploaded"
    assert filed(inbox / "error") == []
    return sent


def done_but_not_sent(sandbox: Sandbox, inbox: Path) -> str | None:
    """A file is filed in done/ only after Qonto answered: done/ never holds bytes Qonto does not."""
    sent = {sandbox.attachment_bytes(inv["attachment_id"]) for inv in sandbox.invoices()}
    stray = [p.name for p in filed(inbox / "done") if p.read_bytes() not in sent]
    return f"done/ holds {stray}, whose bytes Qonto never received" if stray else None


def status(config: Path) -> dict:
    answer = run_agent(config, "status", "--json")
    assert answer.returncode == 0, answer.stderr  # links and hard links are left aside, never put in error/
    return json.loads(answer.stdout)


def not_taken(config: Path) -> dict[str, str]:
    return {n["file"]: n["code"] for n in status(config)["not_taken"]}


def queued(config: Path, rel: str) -> bool:
    return any(p["file"] == rel and p["reason"] == "queued for upload" for p in status(config)["pending"])


def wait_for_rescans(inbox: Path, agent, count: int = 2) -> None:
    """Markers dropped into a subfolder that is not watched (recursive off) are found only by a
    rescan, never by an event: once the last one is logged, `count` rescans went over the inbox."""
    for i in range(count):
        marker = f"unwatched/rescan-{i}.pdf"
        write_pdf(inbox / marker)
        wait_for(lambda: f"{marker} {LEFT}" in agent.log(), timeout=10, message=f"{marker} logged by a rescan",
                 on_fail=agent.log)


def lines_naming(log: str, rel: str) -> list[str]:
    return [line for line in log.splitlines() if f" {rel} {LEFT}" in line]


def drop_sentinel(inbox: Path, agent, name: str = "sentinel.pdf") -> bytes:
    """A valid PDF dropped last: once it is in done/, the agent has been past what came before."""
    data = write_pdf(inbox / name, f"sentinel {name}").read_bytes()
    wait_for(lambda: name in done_names(inbox), message=f"{name} in done/", on_fail=agent.log)
    return data


def start(tmp_path: Path, sandbox: Sandbox, agents, polling: bool, **settings: Any) -> tuple[Path, Path, Any]:
    """(config, inbox, agent): `run` started on a fresh inbox in the mode under test."""
    config = make_config(tmp_path, sandbox, inbox=inbox_settings(polling, **settings))
    return config, tmp_path / "inbox", agents(config, "run")


# --- 1. links and swaps --------------------------------------------------------------------------

@MODES
def test_a_symlink_to_an_outside_pdf_is_left_listed_and_logged_once(tmp_path, sandbox, agents, polling):
    outside = Outside(tmp_path)
    outside.freeze()
    config, inbox, agent = start(tmp_path, sandbox, agents, polling, rescan_seconds=1.0)
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    (inbox / "link.pdf").symlink_to(outside.secret)
    sentinel = drop_sentinel(inbox, agent)
    check_sandbox(sandbox, inbox, 1, outside)
    wait_for(lambda: agent.log().count(LEFT) >= 1, message="the link logged", on_fail=agent.log)
    assert not_taken(config) == {"link.pdf": "link"}
    [entry] = status(config)["not_taken"]
    assert "link" in entry["reason"]
    # the link is where it was, still a link to the same place
    assert (inbox / "link.pdf").is_symlink() and os.readlink(inbox / "link.pdf") == str(outside.secret)
    assert done_names(inbox) == ["sentinel.pdf"]
    wait_for_rescans(inbox, agent)
    assert (inbox / "link.pdf").is_symlink()
    assert check_sandbox(sandbox, inbox, 1, outside) == [sentinel]
    outside.check()
    log = agent.log()
    assert len(lines_naming(log, "link.pdf")) == 1 and "link.pdf is left in the inbox: it is a link" in log, log
    assert agent.proc.poll() is None, log


@MODES
def test_links_planted_in_the_claim_folder_are_never_followed(tmp_path, sandbox, agents, polling):
    outside = Outside(tmp_path)
    # what `.processing/evil` points at: an agent's claim folder, outside, with a token and a PDF in it
    outside.add("claims/1700000000000-cafe0002/y.pdf", "outside claim folder, never to be sent")
    outside.add("token/z.pdf", "outside token folder, never to be sent")
    outside.freeze()
    config = make_config(tmp_path, sandbox, inbox=inbox_settings(polling))
    inbox = tmp_path / "inbox"
    dead = inbox / ".processing" / "4242-deadbeef"  # a dead agent's claim folder (no process holds its lock)
    token = dead / "1700000000000-cafe0001"
    token.mkdir(parents=True)
    (token / "x.pdf").symlink_to(outside.secret)  # a claimed "file" that is a link
    (dead / "1700000000000-cafe0003").symlink_to(outside.root / "token", target_is_directory=True)  # a link token
    (inbox / ".processing" / "evil").symlink_to(outside.root / "claims", target_is_directory=True)
    (inbox / ".processing" / "evil.lock").touch()
    agent = agents(config, "run")
    sentinel = drop_sentinel(inbox, agent)
    assert check_sandbox(sandbox, inbox, 1, outside) == [sentinel]
    outside.check()
    assert (inbox / ".processing" / "evil").is_symlink()
    # the planted link may have been given back to the inbox, but only ever as a link
    for path in [inbox / "x.pdf", *(inbox / ".processing").rglob("x.pdf")]:
        if path.exists() or path.is_symlink():
            assert path.is_symlink(), f"{path} is no longer a link: its target was read"
    assert agent.proc.poll() is None, agent.log()


@MODES
def test_a_settled_file_swapped_for_a_link_during_the_debounce_is_not_sent(tmp_path, sandbox, agents, polling):
    outside = Outside(tmp_path)
    outside.freeze()
    config, inbox, agent = start(tmp_path, sandbox, agents, polling, debounce_seconds=3.0)
    write_pdf(inbox / "a.pdf", "the file that settled")
    wait_for(lambda: queued(config, "a.pdf"), message="a.pdf queued for upload", on_fail=agent.log)
    (inbox / ".swap").symlink_to(outside.secret)
    os.replace(inbox / ".swap", inbox / "a.pdf")  # atomic: a.pdf is a link from one instant to the next
    sentinel = drop_sentinel(inbox, agent)
    wait_for(lambda: not claims_left(inbox) and (inbox / "a.pdf").is_symlink(),
             message="a.pdf back in the inbox as a link", on_fail=agent.log)
    # the original a.pdf was replaced before its batch left: nothing but the sentinel can be in Qonto
    assert check_sandbox(sandbox, inbox, 1, outside) == [sentinel]
    assert os.readlink(inbox / "a.pdf") == str(outside.secret)
    outside.check()
    assert not_taken(config) == {"a.pdf": "link"}
    assert len(lines_naming(agent.log(), "a.pdf")) == 1, agent.log()
    assert agent.proc.poll() is None, agent.log()


@MODES
def test_a_subfolder_swapped_for_a_link_during_the_debounce_reads_nothing_outside(tmp_path, sandbox, agents,
                                                                                  polling):
    outside = Outside(tmp_path)
    outside.add("shadow/a.pdf", "outside, same name as the one in the subfolder")
    outside.freeze()
    config = make_config(tmp_path, sandbox, inbox=inbox_settings(polling, debounce_seconds=3.0, recursive=True))
    inbox = tmp_path / "inbox"
    original = write_pdf(inbox / "sub" / "a.pdf", "inside the subfolder").read_bytes()
    agent = agents(config, "run")
    wait_for(lambda: queued(config, "sub/a.pdf"), message="sub/a.pdf queued for upload", on_fail=agent.log)
    parked = tmp_path / "parked-sub"
    os.rename(inbox / "sub", parked)
    (inbox / ".sublink").symlink_to(outside.root / "shadow", target_is_directory=True)
    os.replace(inbox / ".sublink", inbox / "sub")
    sentinel = drop_sentinel(inbox, agent)
    wait_for(lambda: not claims_left(inbox), message="no claim left", on_fail=agent.log)
    # sub/a.pdf went away before its batch: only the sentinel can be in Qonto
    assert check_sandbox(sandbox, inbox, 1, outside) == [sentinel]
    outside.check()
    assert (inbox / "sub").is_symlink() and os.readlink(inbox / "sub") == str(outside.root / "shadow")
    assert [(kind, content) for kind, content, *_ in tree(parked).values()] == [("file", original)]
    assert not_taken(config) == {"sub": "link"}
    assert agent.proc.poll() is None, agent.log()


@MODES
def test_a_link_to_an_outside_folder_is_logged_once_as_a_link(tmp_path, sandbox, agents, polling):
    outside = Outside(tmp_path)
    outside.add("shadow/a.pdf", "outside, behind a folder link")
    outside.freeze()
    config, inbox, agent = start(tmp_path, sandbox, agents, polling, rescan_seconds=1.0)
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    (inbox / "shared").symlink_to(outside.root / "shadow", target_is_directory=True)
    sentinel = drop_sentinel(inbox, agent)
    assert not_taken(config) == {"shared": "link"}
    wait_for_rescans(inbox, agent)
    assert check_sandbox(sandbox, inbox, 1, outside) == [sentinel]
    outside.check()
    assert (inbox / "shared").is_symlink()
    lines = lines_naming(agent.log(), "shared")
    assert len(lines) == 1 and "shared is left in the inbox: it is a link" in lines[0], lines


@MODES
def test_a_hard_link_to_an_outside_file_is_left_listed_and_logged_once(tmp_path, sandbox, agents, polling):
    outside = Outside(tmp_path)
    config, inbox, agent = start(tmp_path, sandbox, agents, polling, rescan_seconds=1.0)
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    os.link(outside.secret, inbox / "hard.pdf")
    outside.freeze()  # after the link, which changes the file's link count (and so its change time)
    sentinel = drop_sentinel(inbox, agent)
    check_sandbox(sandbox, inbox, 1, outside)
    wait_for(lambda: agent.log().count(LEFT) >= 1, message="the hard link logged", on_fail=agent.log)
    assert not_taken(config) == {"hard.pdf": "hard_link"}
    wait_for_rescans(inbox, agent)
    assert os.path.samefile(inbox / "hard.pdf", outside.secret) and outside.secret.stat().st_nlink == 2
    assert check_sandbox(sandbox, inbox, 1, outside) == [sentinel]
    outside.check()
    log = agent.log()
    assert len(lines_naming(log, "hard.pdf")) == 1 and "hard.pdf is left in the inbox: it is a hard link" in log, log
    assert agent.proc.poll() is None, log


# --- 2. a file overwritten in place --------------------------------------------------------------

def overwrite_in_place(path: Path, data: bytes) -> None:
    ino = path.stat().st_ino
    with open(path, "r+b") as fh:  # same inode: no rename, no new file
        fh.write(data)
        fh.truncate()
    assert path.stat().st_ino == ino


@MODES
def test_a_file_rewritten_in_place_during_the_debounce_is_sent_once_with_its_final_bytes(
        tmp_path, sandbox, agents, polling):
    outside = Outside(tmp_path)
    outside.freeze()
    config = make_config(tmp_path, sandbox, inbox=inbox_settings(polling, debounce_seconds=3.0))
    inbox = tmp_path / "inbox"
    first, final = pdf_bytes("first version"), pdf_bytes("final version, another size", size=4000)
    agent = agents(config, "run")
    (inbox / "a.pdf").write_bytes(first)
    wait_for(lambda: queued(config, "a.pdf"), message="a.pdf queued for upload", on_fail=agent.log)
    overwrite_in_place(inbox / "a.pdf", final)
    wait_for(lambda: done_names(inbox) == ["a.pdf"] and not claims_left(inbox), timeout=30,
             message="a.pdf in done/", on_fail=agent.log,
             give_up=lambda: done_but_not_sent(sandbox, inbox)
             or (f"{sandbox.invoice_count()} invoices: the stale version was sent" if sandbox.invoice_count() > 1
                 else None))
    # it changed after it settled and before its batch left: only the final version is sent
    assert check_sandbox(sandbox, inbox, 1, outside) == [final]
    assert (inbox / "done" / "a.pdf").read_bytes() == final
    outside.check()
    assert agent.proc.poll() is None, agent.log()


@MODES
def test_a_file_rewritten_in_place_during_the_send_files_what_was_sent_then_sends_the_rest(
        tmp_path, agents, polling):
    inbox = tmp_path / "inbox"
    first, final = pdf_bytes("first version"), pdf_bytes("final version, another size", size=4000)
    rewrote: list[str] = []

    def rewrite_during_the_send(filename: str, data: bytes) -> str | None:
        if filename == "a.pdf" and not rewrote:
            claimed = [p for p in (inbox / ".processing").rglob("a.pdf") if not p.is_symlink()]
            assert len(claimed) == 1, claimed
            overwrite_in_place(claimed[0], final)
            rewrote.append(str(claimed[0]))
        return None

    outside = Outside(tmp_path)
    outside.freeze()
    with Sandbox(reject=rewrite_during_the_send, analysis_delay_seconds=0.2, seed=1234) as sandbox:
        config = make_config(tmp_path, sandbox, inbox=inbox_settings(polling))
        agent = agents(config, "run")
        (inbox / "a.pdf").write_bytes(first)
        wait_for(lambda: len(done_names(inbox)) == 2 and sandbox.invoice_count() == 2 and not claims_left(inbox),
                 timeout=30, message="both versions in done/ and in Qonto", on_fail=agent.log,
                 give_up=lambda: done_but_not_sent(sandbox, inbox))
        assert rewrote, "the hook never found the claimed file: the test proves nothing"
        # Qonto got the first version during the send, then the final one; done/ holds exactly both
        assert check_sandbox(sandbox, inbox, 2, outside) == sorted([first, final])
        assert {p.name: p.read_bytes() for p in filed(inbox / "done")} == {"a.pdf": first, "a (2).pdf": final}
        assert not (inbox / "a.pdf").exists()
        outside.check()
        assert agent.proc.poll() is None, agent.log()


# --- 3. other types and subfolders ---------------------------------------------------------------

def tiff_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(out, "TIFF")
    return out.getvalue()


@MODES
def test_images_are_sent_and_other_types_and_subfolders_are_listed_and_logged_once(tmp_path, sandbox, agents,
                                                                                   polling):
    outside = Outside(tmp_path)
    outside.freeze()
    config = make_config(tmp_path, sandbox, inbox=inbox_settings(polling, rescan_seconds=1.0))
    inbox = tmp_path / "inbox"
    jpeg, png, tiff = jpeg_photo(), png_image(), tiff_bytes()
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    (inbox / "photo.jpg").write_bytes(jpeg)
    (inbox / "scan.png").write_bytes(png)
    (inbox / "fax.tiff").write_bytes(tiff)
    sub_pdf = write_pdf(inbox / "sub" / "x.pdf", "in a subfolder").read_bytes()
    wait_for(lambda: done_names(inbox) == ["photo.jpg", "scan.png"], message="the JPEG and the PNG in done/",
             on_fail=agent.log)
    assert (inbox / "done" / "photo.jpg").read_bytes() == jpeg and (inbox / "done" / "scan.png").read_bytes() == png
    assert sorted(check_sandbox(sandbox, inbox, 2, outside)) == sorted([jpeg, png])
    listed = status(config)["not_taken"]
    assert [(n["file"], n["code"]) for n in listed] == [("fax.tiff", "other_type"), ("sub/x.pdf", "subfolder")]
    assert all(n["reason"] for n in listed)
    wait_for_rescans(inbox, agent)  # sub/x.pdf, not watched either, was first logged by a rescan at the latest
    log = agent.log()
    assert len(lines_naming(log, "fax.tiff")) == 1 and len(lines_naming(log, "sub/x.pdf")) == 1, log
    assert log.count(LEFT) == 4, log  # those two and the two markers
    # left where they are, untouched; nothing else was sent
    assert (inbox / "fax.tiff").read_bytes() == tiff and (inbox / "sub" / "x.pdf").read_bytes() == sub_pdf
    assert sorted(check_sandbox(sandbox, inbox, 2, outside)) == sorted([jpeg, png])
    outside.check()
    assert agent.proc.poll() is None, log
