"""Ignore rules, settle rule and batching, on real files (no network)."""

import os
import time
from pathlib import Path

import pytest
from support import pdf_bytes, wait_for

from agent.inbox import reasons, settle
from agent.inbox.filing import Filing
from agent.inbox.batch import Batcher
from agent.inbox.rules import Rules, is_ignored_name
from agent.inbox.settle import Ready, Settler
from agent.qonto.limits import REQUEST_BUDGET_BYTES as MAX_REQUEST_BYTES


@pytest.mark.parametrize("name", [
    ".hidden.pdf", "~$temp.pdf", "~lock.pdf", ".~lock.a.pdf#", "scan.pdf.part", "x.pdf.crdownload",
    "x.pdf.filepart", "x.partial", "x.tmp", "x.pdf.download", ".syncthing.a.pdf.tmp", "~syncthing~a.pdf.tmp",
    ".DS_Store", "._a.pdf", "Thumbs.db", "desktop.ini",
])
def test_ignored_names(name):
    assert is_ignored_name(name)


def test_rules_match_patterns_case_insensitively_and_skip_the_archive(tmp_path):
    rules = Rules(tmp_path, ("*.pdf",), recursive=True)
    assert rules.wants(tmp_path / "FACTURE.PDF")
    assert rules.wants(tmp_path / "facture été №5.pdf")
    assert rules.wants(tmp_path / "sub" / "a.pdf")
    assert not rules.wants(tmp_path / "a.txt")
    assert not rules.wants(tmp_path / "done" / "a.pdf")
    assert not rules.wants(tmp_path / "error" / "a.pdf")
    assert not rules.wants(tmp_path / ".processing" / "x" / "a.pdf")
    assert not rules.wants(tmp_path.parent / "outside.pdf")
    assert not Rules(tmp_path, ("*.pdf",), recursive=False).wants(tmp_path / "sub" / "a.pdf")


def test_scan_never_enters_the_archive_or_follows_links(tmp_path):
    outside = tmp_path / "outside"
    inbox = tmp_path / "inbox"
    for folder in (outside, inbox / "done", inbox / "error", inbox / "sub", inbox / ".hidden"):
        folder.mkdir(parents=True)
    for path in (outside / "o.pdf", inbox / "done" / "d.pdf", inbox / "error" / "e.pdf",
                 inbox / ".hidden" / "h.pdf", inbox / "a.pdf", inbox / "sub" / "s.pdf"):
        path.write_bytes(pdf_bytes(path.name))
    (inbox / "linkdir").symlink_to(outside)
    (inbox / "x.pdf").mkdir()
    found = sorted(p.relative_to(inbox).as_posix() for p in Rules(inbox, ("*.pdf",), True).scan())
    assert found == ["a.pdf", "sub/s.pdf"]


def _settle(settler, timeout=5.0):
    ready, refused = [], []
    deadline = time.monotonic() + timeout
    while settler.files and time.monotonic() < deadline:
        r, f = settler.poll()
        ready += r
        refused += f
        time.sleep(0.02)
    return ready, refused


def test_settler_waits_for_quiet_and_classifies(tmp_path):
    good = tmp_path / "good.pdf"
    good.write_bytes(pdf_bytes("good"))
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    text = tmp_path / "text.pdf"
    text.write_text("hello, I am not a PDF")
    settler = Settler(tmp_path, settle_seconds=0.3, incomplete_after_seconds=1.0)  # empty: waited for, then refused
    for p in (good, empty, text):
        settler.track(p)
    start = time.monotonic()
    ready, refused = _settle(settler)
    assert time.monotonic() - start >= 0.25  # fresh files wait for the settle time
    assert [r.path for r in ready] == [good]
    assert {r.path.name: r.code for r in refused} == {"empty.pdf": "empty", "text.pdf": "not_supported"}
    assert all(r.refusal.hint.endswith(".") for r in refused)


def test_settler_restarts_the_clock_on_every_write(tmp_path):
    path = tmp_path / "slow.pdf"
    data = pdf_bytes("slow", size=6000)
    settler = Settler(tmp_path, settle_seconds=0.4)
    with open(path, "wb") as fh:
        for i in range(0, len(data), 1000):
            fh.write(data[i:i + 1000])
            fh.flush()
            settler.track(path)
            r, f = settler.poll()
            assert not r and not f
            time.sleep(0.15)
    ready, _ = _settle(settler)
    assert [r.path for r in ready] == [path] and ready[0].size == len(data)


def test_pdf_without_trailer_waits_then_goes_to_error(tmp_path):
    path = tmp_path / "cut.pdf"
    path.write_bytes(b"%PDF-1.4\n" + b"x" * 5000)
    settler = Settler(tmp_path, settle_seconds=0.1, incomplete_after_seconds=0.6)
    settler.track(path)

    def waiting_for_trailer():
        settler.poll()
        return settler.pending()[0][2] == reasons.UNFINISHED

    wait_for(waiting_for_trailer, timeout=2, message="the settler to wait for the trailer")
    ready, refused = _settle(settler)
    assert not ready and [r.code for r in refused] == ["incomplete"]


def test_symlink_is_left_aside_and_never_read(tmp_path):
    outside = tmp_path / "secret.pdf"
    outside.write_bytes(pdf_bytes("secret"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    link = inbox / "link.pdf"
    link.symlink_to(outside)
    settler = Settler(inbox, settle_seconds=0.0)
    settler.track(link)
    for _ in range(3):
        assert settler.poll() == ([], [])
    assert settler.unaccepted() == {link: reasons.Unaccepted.LINK}
    assert not settler.settling() and settler.pending() == []


def test_a_backlog_is_looked_at_when_due_a_share_at_each_poll(tmp_path, monkeypatch):
    """50,000 files waiting to settle cost nothing per poll; once quiet, a poll reads a share of
    them, so the first batch leaves before the last file is read, and the next poll goes on."""
    for i in range(60):
        (tmp_path / f"{i:02d}.pdf").write_bytes(pdf_bytes(str(i)))
    looks = []
    lstat = settle.beneath.lstat
    monkeypatch.setattr(settle.beneath, "lstat", lambda root, rel: looks.append(rel) or lstat(root, rel))
    monkeypatch.setattr(settle, "LOOKS_PER_POLL", 20)
    settler = Settler(tmp_path, settle_seconds=0.3)
    for path in sorted(tmp_path.iterdir()):
        settler.track(path)
    while len(looks) < 60:
        assert settler.poll() == ([], [])  # each identity noted once, 20 at a time
    assert len(looks) == 60
    assert settler.poll() == ([], []) and len(looks) == 60  # nothing due: nothing looked at
    assert 0.2 < settler.next_check() <= 0.3
    wait_for(lambda: settler.next_check() == 0, timeout=2, message="the backlog due")
    first, _ = settler.poll()
    assert [r.path.name for r in first] == [f"{i:02d}.pdf" for i in range(20)] and len(looks) == 80
    rest = settler.poll()[0] + settler.poll()[0]
    assert len(rest) == 40 and not settler.files and settler.next_check() is None
    assert {p.name for p in settler.changed} == {f"{i:02d}.pdf" for i in range(60)}  # for `status`


def _ready(n, size=1000):
    return [Ready(Path(f"/x/{i}.pdf"), size, 0.0) for i in range(n)]


def test_batcher_cuts_full_batches_at_once_and_debounces_the_rest():
    b = Batcher(batch_size=20, debounce_seconds=0.2, max_wait_seconds=5)
    b.add(_ready(45))
    batches = b.take()
    assert [len(x) for x in batches] == [20, 20]
    assert b.take() == []
    wait_for(lambda: b.take(), timeout=2, message="debounced remainder")


def test_batcher_hands_out_no_more_batches_than_asked():
    b = Batcher(batch_size=20, debounce_seconds=10, max_wait_seconds=10)
    b.add(_ready(70))
    assert [len(x) for x in b.take(limit=2)] == [20, 20] and len(b.queue) == 30
    assert b.take(limit=0) == [] and [len(x) for x in b.take(flush=True)] == [20, 10]


def test_batcher_respects_the_request_byte_cap():
    b = Batcher(batch_size=20, debounce_seconds=0, max_wait_seconds=0)
    b.add(_ready(6, size=4_000_000))
    batches = b.take()
    assert [len(x) for x in batches] == [3, 3]
    assert all(sum(r.size for r in x) < MAX_REQUEST_BYTES for x in batches)


def test_batcher_max_wait_caps_a_steady_trickle():
    b = Batcher(batch_size=20, debounce_seconds=10, max_wait_seconds=0.3)
    start = time.monotonic()
    while not (batches := b.take()):
        b.add(_ready(1))
        time.sleep(0.05)
    assert time.monotonic() - start < 1.0 and len(batches[0]) < 20


def test_filing_never_overwrites_and_adopts_a_dead_agents_claims(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "done").mkdir()
    (inbox / "done" / "invoice.pdf").write_bytes(b"old")
    (inbox / "invoice.pdf").write_bytes(b"new")
    first = Filing(inbox)
    claim = first.claim(inbox / "invoice.pdf", time.time())
    assert claim and not (inbox / "invoice.pdf").exists()
    assert first.claim(inbox / "invoice.pdf", time.time()) is None  # already taken
    # the first agent "dies" holding the claim: its lock goes with it
    first._lock.release()
    second = Filing(inbox)
    assert second.adopt_orphans() == 1
    [adopted] = second.claims()
    assert adopted.rel == Path("invoice.pdf")
    target = second.to_done(adopted)
    assert target.name == "invoice (2).pdf" and target.read_bytes() == b"new"
    assert (inbox / "done" / "invoice.pdf").read_bytes() == b"old"
    second.close()
    assert os.listdir(inbox / ".processing") == []
