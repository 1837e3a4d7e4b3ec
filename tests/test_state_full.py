"""The state folder's disk filling up under `run`: uploads pause (nothing is sent that the ledger
could not record), the agent keeps running and says why once, and everything is uploaded, exactly
once, after space is freed. The state folder is a small tmpfs mounted in the test."""

from __future__ import annotations

from support import FAST_INBOX, files_in, fill, make_config, run_agent, wait_for, write_pdf


def test_a_full_state_disk_pauses_uploads_and_they_resume_once_space_is_freed(tmp_path, sandbox, agents, mounted):
    state = mounted(tmp_path / "state", size="1m")
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox, done = tmp_path / "inbox", tmp_path / "inbox" / "done"
    agent = agents(config, "run")
    write_pdf(inbox / "before.pdf")
    wait_for(lambda: "before.pdf" in files_in(done), message="before.pdf in done/", on_fail=agent.log)

    filler = fill(state, leave=0)
    for i in range(3):
        write_pdf(inbox / f"while-{i}.pdf")
    wait_for(lambda: "paused: the disk holding the ledger" in agent.log(), timeout=30,
             message="the pause said", on_fail=agent.log)
    assert sandbox.invoice_count() == 1, agent.log()  # nothing sent that could not be recorded
    assert agent.proc.poll() is None, agent.log()
    filler.unlink()

    expected = {"before.pdf", *(f"while-{i}.pdf" for i in range(3))}
    wait_for(lambda: set(files_in(done)) == expected, timeout=60, message="every file in done/ after the fix",
             on_fail=agent.log)
    held = {inv["file_name"]: sandbox.attachment_bytes(inv["attachment_id"]) for inv in sandbox.invoices()}
    assert held == files_in(done)  # one invoice per file, with exactly the bytes filed
    log = agent.log()
    assert agent.proc.poll() is None and "Traceback" not in log, log
    assert log.count("paused: the disk holding the ledger") == 1, log
    assert "the ledger can be written again; resuming" in log, log
    # Healthy again (0) once the next heartbeat, at most 5 s on, no longer carries the pause.
    wait_for(lambda: run_agent(config, "status", "--json").returncode == 0, timeout=15,
             message="`status` exiting 0 after the fix", on_fail=agent.log)
