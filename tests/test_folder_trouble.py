"""Folder-wide trouble as a person meets it: done/ turning read-only while files arrive, the outbox's
disk filling up. The agent pauses what needs that folder, says why in `status`, and resumes by
itself once the folder works again, without a restart. Real processes, real (tmpfs) mounts."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from support import (FAST_INBOX, assert_outbox_complete, files_in, fill, make_config, run_agent, status_of, wait_for,
                     write_pdf)




def remount(point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(point)], check=True, capture_output=True)


def test_done_turning_read_only_pauses_uploads_says_why_and_resumes_after_the_fix(tmp_path, sandbox, agents, mounted):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    done = mounted(inbox / "done", size="8m")
    agent = agents(config, "run")
    write_pdf(inbox / "before.pdf")
    wait_for(lambda: "before.pdf" in files_in(done), message="before.pdf in done/", on_fail=agent.log)

    remount(done, "ro")
    try:
        write_pdf(inbox / "first-refused.pdf")  # its batch is uploaded, then done/ refuses it
        paused = wait_for(lambda: (status_of(config)["paused"] or {}).get("reason"), timeout=30,
                          message="status saying why uploads are paused", on_fail=agent.log)
        assert "done/" in paused and "read-only" in paused, paused
        assert status_of(config)["paused"]["until"] is None  # until a person fixes it
        text = run_agent(config, "status").stdout
        assert "PAUSED until this is fixed" in text and "read-only" in text, text
        for i in range(5):
            write_pdf(inbox / f"while-{i}.pdf")
        waiting = lambda: [p for p in status_of(config)["pending"] if "read-only" in p["reason"]]  # noqa: E731
        wait_for(lambda: len(waiting()) == 5, timeout=30, message="5 files waiting on the pause", on_fail=agent.log)
        assert sandbox.invoice_count() == 2, agent.log()  # paused means paused: nothing more went out
    finally:
        remount(done, "rw")

    expected = {"before.pdf", "first-refused.pdf", *(f"while-{i}.pdf" for i in range(5))}
    wait_for(lambda: set(files_in(done)) == expected, timeout=60, message="every file in done/ after the fix",
             on_fail=agent.log)
    wait_for(lambda: status_of(config)["paused"] is None, message="the pause over in status", on_fail=agent.log)
    held = {inv["file_name"]: sandbox.attachment_bytes(inv["attachment_id"]) for inv in sandbox.invoices()}
    assert held == files_in(done)  # one invoice per file, with exactly the bytes filed
    assert not [p for p in (inbox / ".processing").rglob("*") if p.is_file() and p.suffix != ".lock"]
    log = agent.log()
    assert agent.proc.poll() is None and "Traceback" not in log, log
    assert log.count("paused: done/ is on a read-only file system") == 1, log  # said once, not per file
    assert "done/ can be written again; resuming" in log, log


def test_upload_into_a_read_only_done_exits_2_and_the_next_pass_files_without_sending_again(tmp_path, sandbox, mounted):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    done = mounted(inbox / "done", size="8m")
    write_pdf(inbox / "a.pdf")
    remount(done, "ro")
    try:
        first = run_agent(config, "upload")
    finally:
        remount(done, "rw")
    assert first.returncode == 2, first.stderr
    assert "read-only" in first.stderr and "Traceback" not in first.stderr, first.stderr
    assert (inbox / "a.pdf").exists() and sandbox.invoice_count() == 1  # back in the inbox, sent once
    second = run_agent(config, "upload")
    assert second.returncode == 0, second.stderr
    assert "already uploaded as invoice" in second.stderr
    assert sandbox.invoice_count() == 1
    sha = hashlib.sha256((done / "a.pdf").read_bytes()).hexdigest()
    assert sha == hashlib.sha256(sandbox.attachment_bytes(sandbox.invoices()[0]["attachment_id"])).hexdigest()


def test_a_full_outbox_pauses_the_sync_says_why_and_resumes_after_space_is_freed(tmp_path, sandbox, agents, mounted):
    sandbox.seed(60, without_attachment=0.0)
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX, outbox={"sync_interval_seconds": 3600})
    outbox = mounted(tmp_path / "outbox", size="2m")
    filler = fill(outbox, leave=40_000)
    agent = agents(config, "run")
    paused = wait_for(lambda: (status_of(config)["paused"] or {}).get("reason"), timeout=30,
                      message="status saying why the sync is paused", on_fail=agent.log)
    assert "outbox" in paused and "full" in paused, paused
    write_pdf(tmp_path / "inbox" / "meanwhile.pdf")  # uploads are not held up by the outbox
    wait_for(lambda: (tmp_path / "inbox" / "done" / "meanwhile.pdf").exists(), message="an upload meanwhile",
             on_fail=agent.log)

    filler.unlink()
    wait_for(lambda: status_of(config)["paused"] is None, timeout=60, message="the pause over in status",
             on_fail=agent.log)
    wait_for(lambda: status_of(config)["outbox_count"] >= 60, message="the seeded invoices mirrored", on_fail=agent.log)
    log = agent.log()
    assert agent.stop() == 0, log
    assert "Traceback" not in log and "the outbox can be written again" in log, log
    assert log.count("paused: the disk holding the outbox") == 1, log  # said once, not per invoice
    # The upload made during the pause is the next window's (Qonto's analysis moved its updated_at).
    again = run_agent(config, "sync")
    assert again.returncode == 0, again.stderr
    assert_outbox_complete(outbox, sandbox)  # every invoice, bytes equal to Qonto's, nothing else
