"""No twin in Qonto, ever (issue 12): Qonto's key window counted from the first attempt, adoption
only by content, and dedupe against what the outbox mirror knows Qonto holds. Real agent processes,
the sandbox over HTTP with its key window shortened."""

from __future__ import annotations

import hashlib
import os
from contextlib import closing
import signal
import time
from pathlib import Path
from typing import Callable

from support import AgentProcess, make_config, pdf_bytes, run_agent, wait_for, write_pdf

from agent.base.fingerprint import idempotency_key, sha256_file
from agent.config import load
from agent.qonto.bulk import UploadItem
from agent.qonto.client import QontoClient
from agent.sandbox.faults import Faults
from agent.sandbox.server import Sandbox
from agent.state.ledger import Ledger

BULK = "/v2/supplier_invoices/bulk"
WINDOW = 2.0  # Qonto's idempotency-key window, shortened on both sides


def held_bytes(sandbox: Sandbox) -> list[bytes]:
    return sorted(sandbox.attachment_bytes(invoice["attachment_id"]) for invoice in sandbox.invoices())


def done_files(inbox: Path) -> dict[str, bytes]:
    done = inbox / "done"
    return {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()} if done.is_dir() else {}


def lossy_sandbox() -> Sandbox:
    """Every answer lost after the work is done (a 500 or a dropped connection): the agent never
    hears that its invoice was created."""
    return Sandbox(key_window_seconds=WINDOW, analysis_delay_seconds=0.2, seed=7,
                   faults=Faults(commit_then_fail_rate=1.0))


def uploaded_once_despite(tmp_path: Path, name: str, interrupt: Callable[[Sandbox, AgentProcess], None]) -> None:
    """`run` uploads `name`, Qonto creates its invoice but the answer is lost, then `interrupt`
    outlasts the key window: the file ends in done/ once, adopted, and Qonto holds one invoice."""
    with lossy_sandbox() as sandbox:
        config = make_config(tmp_path, sandbox, qonto={"idempotency_window_seconds": WINDOW})
        inbox = tmp_path / "inbox"
        agent = AgentProcess(config, "run")
        try:
            write_pdf(inbox / name)
            wait_for(lambda: sandbox.invoice_count() == 1, message="the invoice created", on_fail=agent.log)
            interrupt(sandbox, agent)
            wait_for(lambda: name in done_files(inbox), timeout=60, message=f"{name} in done/", on_fail=agent.log)
            log = agent.log()
            assert sandbox.invoice_count() == 1, log  # adopted, not sent again
            assert held_bytes(sandbox) == list(done_files(inbox).values())
            assert "(the same bytes); adopting it" in log and "Traceback" not in log, log
        finally:
            agent.stop()


def longer_than_the_window() -> None:
    until = time.monotonic() + 2 * WINDOW
    wait_for(lambda: time.monotonic() > until, timeout=10, message="twice the key window")


def test_an_outage_longer_than_the_key_window_after_a_lost_answer_makes_no_twin(tmp_path):
    def outage(sandbox: Sandbox, agent: AgentProcess) -> None:
        sandbox.stop()  # the network goes down right after the lost answer, for longer than Qonto remembers
        longer_than_the_window()
        sandbox.faults = Faults()
        sandbox.start()

    uploaded_once_despite(tmp_path, "lost.pdf", outage)


def test_a_process_paused_in_its_retry_wait_past_the_key_window_makes_no_twin(tmp_path):
    def pause(sandbox: Sandbox, agent: AgentProcess) -> None:
        agent.proc.send_signal(signal.SIGSTOP)  # a laptop lid closed during the client's retry wait
        try:
            longer_than_the_window()
            sandbox.faults = Faults()  # a resend with the forgotten key would now make a twin
        finally:
            agent.proc.send_signal(signal.SIGCONT)

    uploaded_once_despite(tmp_path, "paused.pdf", pause)


def test_another_machines_file_of_the_same_name_and_size_is_never_adopted(tmp_path):
    with Sandbox(key_window_seconds=WINDOW, analysis_delay_seconds=0.2) as sandbox:
        one = make_config(tmp_path / "one", sandbox, qonto={"idempotency_window_seconds": WINDOW})
        two = make_config(tmp_path / "two", sandbox, qonto={"idempotency_window_seconds": WINDOW})
        mine = write_pdf(tmp_path / "one" / "inbox" / "scan.pdf", "machine-one")
        theirs = write_pdf(tmp_path / "two" / "inbox" / "scan.pdf", "machine-two")
        assert mine.stat().st_size == theirs.stat().st_size and mine.read_bytes() != theirs.read_bytes()
        mine_bytes, theirs_bytes = mine.read_bytes(), theirs.read_bytes()
        # Machine one sent scan.pdf long ago and never heard back; its request never reached Qonto.
        cfg = load(one, env={})
        sha = sha256_file(mine)
        with closing(Ledger(cfg.state.path)) as ledger:
            ledger.begin_attempt(sha, idempotency_key(sha), "scan.pdf", mine.stat().st_size, None,
                                 now=time.time() - 3 * WINDOW)
        second = run_agent(two, "upload")
        assert second.returncode == 0, second.stderr
        first = run_agent(one, "upload")
        assert first.returncode == 0, first.stderr
        assert "no earlier attempt without an answer had reached Qonto; sending it again" in first.stderr
        assert sandbox.invoice_count() == 2
        assert held_bytes(sandbox) == sorted([mine_bytes, theirs_bytes])  # machine one's content reached Qonto
        assert done_files(tmp_path / "one" / "inbox") == {"scan.pdf": mine_bytes}
        assert done_files(tmp_path / "two" / "inbox") == {"scan.pdf": theirs_bytes}
        with closing(Ledger(cfg.state.path)) as ledger:
            credited = ledger.lookup(sha).invoice_id
        assert sandbox.attachment_bytes(sandbox.invoice(credited)["attachment_id"]) == mine_bytes


def test_content_a_person_uploaded_in_qonto_is_not_uploaded_again(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    elsewhere = tmp_path / "from-the-app.pdf"  # outside the inbox: uploaded "in Qonto's app"
    elsewhere.write_bytes(pdf_bytes("uploaded by a person", 4000))
    with QontoClient(load(config, env={}).qonto) as client:
        [created] = client.upload_bulk([UploadItem(elsewhere, "app-upload-1", "Facture mars.pdf")])
    invoice_id = created.invoice["id"]
    wait_for(lambda: sandbox.invoice(invoice_id)["analyzed_at"], message="Qonto's analysis of the invoice")
    synced = run_agent(config, "sync")
    assert synced.returncode == 0, synced.stderr
    (tmp_path / "inbox" / "mars.pdf").write_bytes(elsewhere.read_bytes())
    before = sandbox.count(path_prefix=BULK)

    result = run_agent(config, "upload")
    assert result.returncode == 0, result.stderr
    assert f"mars.pdf: already in Qonto as invoice {invoice_id} (the same bytes" in result.stderr, result.stderr
    assert sandbox.count(path_prefix=BULK) == before and sandbox.invoice_count() == 1
    assert done_files(tmp_path / "inbox") == {"mars.pdf": elsewhere.read_bytes()}
    status = run_agent(config, "status").stdout
    assert invoice_id in status, status  # the file is credited to that invoice for a person to see
    assert hashlib.sha256(elsewhere.read_bytes()).hexdigest() == sandbox.attachment_sha256(
        sandbox.invoice(invoice_id)["attachment_id"])
    assert not os.listdir(tmp_path / "inbox" / ".processing") or all(
        name.endswith(".lock") for name in os.listdir(tmp_path / "inbox" / ".processing"))
