"""What a hostile review of the inbox found, kept as tests: the agent as a real process against the
sandbox, real folders. Archive folders that are links, names that are not UTF-8 or at the length
limit, a second program closing a file a scanner still writes, folders renamed in a recursive inbox."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from support import FAST_INBOX, make_config, pdf_bytes, run_agent, wait_for, write_pdf

import corpus
from agent.base.fingerprint import idempotency_key
from agent.sandbox.server import Sandbox



def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".error.json")) if folder.is_dir() else []


@pytest.mark.parametrize("folder", ["done", "error", ".processing"])
def test_an_archive_folder_that_is_a_link_stops_the_agent_with_words_and_moves_nothing(tmp_path, sandbox, folder):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir(exist_ok=True)
    outside.mkdir()
    (inbox / folder).symlink_to(outside, target_is_directory=True)
    write_pdf(inbox / "a.pdf")
    (inbox / "bad.pdf").write_text("not a pdf")
    result = run_agent(config, "upload")
    assert result.returncode == 2, result.stderr
    assert f"{inbox / folder} is a link or a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(outside.iterdir()) == [] and {"a.pdf", "bad.pdf", folder} <= set(names(inbox))
    assert (inbox / folder).is_symlink()
    assert sandbox.invoice_count() == 0


def test_a_file_named_done_is_a_configuration_error_not_a_traceback(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "done").write_text("someone's notes")
    result = run_agent(config, "upload")
    assert result.returncode == 2 and "is a link or a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr and (inbox / "done").read_text() == "someone's notes"


def test_a_name_that_is_not_utf8_is_uploaded_and_stops_nothing(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    latin1 = os.path.join(os.fsencode(inbox), b"Facture n\xb012.pdf")  # a Latin-1 name from an old share
    with open(latin1, "wb") as fh:
        fh.write(pdf_bytes("latin-1 name"))
    write_pdf(inbox / "ok.pdf")
    wait_for(lambda: len(names(inbox / "done")) == 2, message="both files in done/", on_fail=agent.log)
    assert os.path.exists(os.path.join(os.fsencode(inbox / "done"), b"Facture n\xb012.pdf"))
    assert sorted(inv["file_name"] for inv in sandbox.invoices()) == ["Facture n\ufffd12.pdf", "ok.pdf"]
    status = run_agent(config, "status", "--json")
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr  # run alive, nothing in error/
    assert agent.proc.poll() is None, agent.log()


def test_a_name_at_the_length_limit_already_in_done_gets_a_shorter_free_name(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    long_name = "x" * 251 + ".pdf"  # 255 bytes: `... (2).pdf` does not fit
    write_pdf(inbox / "done" / long_name, "the one filed last year")
    agent = agents(config, "run")
    write_pdf(inbox / long_name, "this year's invoice, same name")
    (inbox / ("y" * 251 + ".pdf")).write_text("not a pdf, its sidecar name would be too long")
    wait_for(lambda: len(names(inbox / "done")) == 2 and len(names(inbox / "error")) == 1,
             message="the long names filed", on_fail=agent.log)
    second = [n for n in names(inbox / "done") if n != long_name]
    assert len(second) == 1 and second[0].endswith(" (2).pdf") and len(second[0].encode()) <= 255
    assert (inbox / "done" / second[0]).read_bytes() == pdf_bytes("this year's invoice, same name")
    [refused] = names(inbox / "error")
    assert (inbox / "error" / f"{refused}.error.json").exists()
    write_pdf(inbox / "after.pdf")
    wait_for(lambda: "after.pdf" in names(inbox / "done"), message="later files still go", on_fail=agent.log)
    assert sandbox.invoice_count() == 2 and agent.proc.poll() is None, agent.log()


def test_a_scanner_pausing_while_another_program_touches_its_file_is_still_waited_for(tmp_path, sandbox, agents):
    """A second program opening and closing the file (`touch`, an indexer) does not end the writer's pause."""
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.5, "debounce_seconds": 0.3})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    data = corpus.valid_files()["reportlab-1page.incremental.pdf"]
    first_revision = data.find(b"%%EOF") + len(b"%%EOF\n")
    path = inbox / "scan.pdf"
    touched = threading.Event()
    with open(path, "wb") as scanner:
        scanner.write(data[:first_revision])  # page 1: a whole PDF on its own
        scanner.flush()
        with open(path, "ab"):  # `touch`: another open for writing, closed at once
            os.utime(path)
        touched.set()
        time.sleep(1.5)  # the scanner's pause, longer than settle_seconds, file still open
        scanner.write(data[first_revision:])
    wait_for(lambda: names(inbox / "done") == ["scan.pdf"], message="scan.pdf in done/", on_fail=agent.log)
    [invoice] = sandbox.invoices()
    assert sandbox.attachment_bytes(invoice["attachment_id"]) == data == (inbox / "done" / "scan.pdf").read_bytes()


def test_a_folder_renamed_in_a_recursive_inbox_is_not_called_a_file_of_another_type(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "recursive": True})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    write_pdf(inbox / "April" / "x.pdf")
    wait_for(lambda: names(inbox / "done") == ["x.pdf"], message="x.pdf in done/", on_fail=agent.log)
    (inbox / "April").rename(inbox / "June")
    write_pdf(inbox / "June" / "y.pdf")
    wait_for(lambda: names(inbox / "done") == ["x.pdf", "y.pdf"], message="y.pdf in done/", on_fail=agent.log)
    assert "is left in the inbox" not in agent.log()


def test_done_deleted_while_running_is_made_again(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: (inbox / "done").is_dir(), message="done/ made", on_fail=agent.log)
    (inbox / "done").rmdir()  # someone "clears the archive"
    write_pdf(inbox / "a.pdf")
    wait_for(lambda: names(inbox / "done") == ["a.pdf"], message="a.pdf in a new done/", on_fail=agent.log)
    assert agent.proc.poll() is None, agent.log()


def test_a_file_on_another_mount_inside_the_inbox_waits_and_stops_nothing(tmp_path, sandbox, agents, mounted):
    config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "recursive": True})
    inbox = tmp_path / "inbox"
    share = mounted(inbox / "share")
    write_pdf(share / "x.pdf", "on another device")
    agent = agents(config, "run")
    wait_for(lambda: "x.pdf stays in the inbox: it is on another disk" in agent.log(),
             message="the reason logged", on_fail=agent.log)
    for i in range(20):
        write_pdf(inbox / f"good-{i:02}.pdf")
    wait_for(lambda: len(names(inbox / "done")) == 20, message="the 20 good files in done/", on_fail=agent.log)
    assert (share / "x.pdf").read_bytes() == pdf_bytes("on another device")
    pending = json.loads(run_agent(config, "status", "--json").stdout)["pending"]
    assert [p["file"] for p in pending] == ["share/x.pdf"] and "another disk" in pending[0]["reason"]
    assert sandbox.invoice_count() == 20 and agent.proc.poll() is None, agent.log()


def test_done_on_another_mount_gets_its_files_copied_whole(tmp_path, sandbox, agents, mounted):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    done = mounted(inbox / "done", size="8m")
    agent = agents(config, "run")
    for i in range(5):
        write_pdf(inbox / f"a-{i}.pdf", size=200_000)
    wait_for(lambda: len(names(done)) == 5, message="5 files in done/ on its own mount", on_fail=agent.log)
    by_name = {inv["file_name"]: sandbox.attachment_bytes(inv["attachment_id"]) for inv in sandbox.invoices()}
    assert {n: (done / n).read_bytes() for n in names(done)} == by_name
    assert not [p for p in done.iterdir() if p.name.startswith(".")]  # no temporary left
    assert agent.proc.poll() is None, agent.log()


@pytest.mark.parametrize("agent_count", [1, 2])
def test_same_named_refused_files_each_keep_their_own_sidecar(tmp_path, agent_count, agents):
    """120 files named bad.pdf (one per subfolder), all refused by Qonto from the upload threads of
    one or two agents: every sidecar in error/ describes the file beside it."""
    with Sandbox(reject=lambda name, data: "The file is corrupted", analysis_delay_seconds=0.0) as sandbox:
        config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "recursive": True})
        inbox = tmp_path / "inbox"
        for i in range(120):
            write_pdf(inbox / f"from-{i:03}" / "bad.pdf", f"refused invoice {i}")
        started = [agents(config, "run", log_name=f"agent-{n}.log") for n in range(agent_count)]
        both_logs = lambda: "\n".join(a.log() for a in started)  # noqa: E731
        sidecars = lambda: len(list((inbox / "error").glob("*.error.json")))  # noqa: E731 - written after the move
        wait_for(lambda: len(names(inbox / "error")) == 120 and sidecars() == 120, timeout=60,
                 message="120 files with their sidecars in error/", on_fail=both_logs)
        for name in names(inbox / "error"):
            sidecar = json.loads((inbox / "error" / f"{name}.error.json").read_text())
            data = (inbox / "error" / name).read_bytes()
            assert sidecar["file"] == name and sidecar["sha256"] == hashlib.sha256(data).hexdigest(), name
            assert sidecar["idempotency_key"] == idempotency_key(sidecar["sha256"])
        assert sandbox.invoice_count() == 0
