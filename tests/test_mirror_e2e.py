"""`qonto-agent sync` as a real process against the sandbox over HTTP (issue 4's acceptance)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from agent.sandbox.server import Sandbox
from support import (AgentProcess, assert_outbox_complete, make_config, run_agent, settle, sha256, storage_downloads,
                     wait_for, write_pdf)


def assert_newer_fields_compared(docs: dict[str, dict]) -> None:
    """`assert_outbox_complete` compares each mirrored invoice with the sandbox's, whole: make sure
    Qonto's newer fields were among what it compared, nested arrays and objects included."""
    invoices = [doc["supplier_invoice"] for doc in docs.values()]
    assert all(isinstance(i["source"], str) and i["source_type"] in ("direct_upload", "e_invoicing", "email")
               for i in invoices)
    for name in ("is_einvoice", "matched_transactions", "related_invoices", "einvoicing_lifecycle_events",
                 "suggested_transactions", "approval_workflow", "payable_amount", "total_amount_credit_notes"):
        assert any(i[name] for i in invoices), f"no mirrored invoice has {name}: nothing was compared"


def test_sync_mirrors_updates_and_stays_quiet(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.seed(250, without_attachment=0.1)
    config = make_config(tmp_path, sandbox)
    outbox = tmp_path / "outbox"

    first = run_agent(config, "sync")
    assert first.returncode == 0, first.stderr
    assert "synced 250 invoices (250 written" in first.stderr
    assert "sandbox-secret-key" not in first.stderr + first.stdout
    assert_newer_fields_compared(assert_outbox_complete(outbox, sandbox))

    before = {p.name: p.read_bytes() for p in outbox.iterdir()}
    sandbox.reset_log()
    second = run_agent(config, "sync")
    assert second.returncode == 0, second.stderr
    assert sandbox.count(method="GET", path_prefix="/v2/supplier_invoices") == 1
    assert sandbox.count(path_prefix="/v2/attachments") == 0 and sandbox.count(path_prefix="/_storage") == 0
    assert {p.name: p.read_bytes() for p in outbox.iterdir()} == before

    changed = [invoice["id"] for invoice in sandbox.invoices() if invoice["status"] != "paid"][:10]
    for invoice_id in changed:
        sandbox.update_invoice(invoice_id, status="paid")
    settle(sandbox)
    sandbox.reset_log()
    third = run_agent(config, "sync")
    assert third.returncode == 0, third.stderr
    assert sandbox.count(path_prefix="/_storage") == 0 and sandbox.count(path_prefix="/v2/attachments") == 0
    after = {p.name: p.read_bytes() for p in outbox.iterdir()}
    rewritten = {name for name in after if after[name] != before.get(name)}
    assert len(rewritten) == 11 and "invoices.csv" in rewritten
    assert {json.loads(after[name])["supplier_invoice"]["id"] for name in rewritten - {"invoices.csv"}} == set(changed)
    assert_outbox_complete(outbox, sandbox)


def test_kill_9_during_sync_then_sync_again(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.seed(250, without_attachment=0.1)
    sandbox.faults.latency_seconds = 0.02
    config = make_config(tmp_path, sandbox)
    outbox = tmp_path / "outbox"
    agent = AgentProcess(config, "sync")
    try:
        wait_for(lambda: outbox.is_dir() and len(list(outbox.glob("*.pdf"))) >= 20, timeout=60,
                 message="the first attachment files", on_fail=agent.log)
    finally:
        agent.kill()
    assert agent.proc.returncode == -signal.SIGKILL, "the sync ended before it could be killed"

    # What a reader sees right after the kill: only complete files under names it looks for.
    attachment_of = {i["id"]: i["attachment_id"] for i in sandbox.invoices()}
    present: set[str] = set()
    for path in outbox.iterdir():
        if path.name.startswith("."):
            continue  # temporaries are dot-names: readers skip them, the next sync removes them
        if path.suffix == ".pdf":
            attachment_id = attachment_of[path.stem.rsplit("_", 1)[1]]
            assert sha256(path) == sandbox.attachment_sha256(attachment_id), f"{path.name} is partial"
            present.add(attachment_id)
        elif path.suffix == ".json":
            doc = json.loads(path.read_bytes())
            assert doc["file"] is None or (outbox / doc["file"]).exists()
    assert present and len(present) < 225

    again = run_agent(config, "sync")
    assert again.returncode == 0, again.stderr
    assert_outbox_complete(outbox, sandbox)
    assert not [name for name in os.listdir(outbox) if name.startswith(".")]
    downloads = storage_downloads(sandbox)
    twice = {attachment_id: downloads[attachment_id] for attachment_id in present if downloads[attachment_id] != 1}
    assert twice == {}, "attachments already in the outbox were downloaded again"


def test_files_uploaded_by_run_appear_in_the_outbox_within_a_minute(tmp_path: Path, sandbox: Sandbox, agents) -> None:
    sandbox.seed(5, without_attachment=0.0)
    config = make_config(tmp_path, sandbox, outbox={"sync_interval_seconds": 3600})  # not the next interval
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: "synced 5 invoices" in agent.log(), message="the first sync", on_fail=agent.log)
    for i in range(3):
        write_pdf(inbox / f"new-{i}.pdf")
    wait_for(lambda: len(list((inbox / "done").glob("*.pdf"))) == 3, message="3 files uploaded", on_fail=agent.log)
    uploaded = time.monotonic()
    wait_for(lambda: len(list(outbox.glob("*.json"))) == 8, timeout=60, message="the uploads in the outbox",
             on_fail=agent.log)
    assert time.monotonic() - uploaded < 60
    docs = assert_outbox_complete(outbox, sandbox)  # every invoice, with exactly Qonto's bytes
    mirrored = {doc["supplier_invoice"]["file_name"]: doc for doc in docs.values()}
    for i in range(3):
        assert sha256(outbox / mirrored[f"new-{i}.pdf"]["file"]) == sha256(inbox / "done" / f"new-{i}.pdf")


def test_uploaded_invoices_reach_the_outbox_as_qonto_describes_them(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.seed(30)
    config = make_config(tmp_path, sandbox)
    names = [write_pdf(tmp_path / "inbox" / f"scan-{n}.pdf").name for n in range(3)]
    uploaded = run_agent(config, "upload")
    assert uploaded.returncode == 0, uploaded.stderr
    wait_for(lambda: all(invoice["analyzed_at"] for invoice in sandbox.invoices()), timeout=10, message="the analysis")
    settle(sandbox)
    synced = run_agent(config, "sync")
    assert synced.returncode == 0, synced.stderr
    docs = assert_outbox_complete(tmp_path / "outbox", sandbox)
    mine = sorted((doc for doc in docs.values() if doc["source_file"]), key=lambda doc: doc["source_file"]["name"])
    assert [doc["source_file"]["name"] for doc in mine] == names
    for doc in mine:
        invoice = doc["supplier_invoice"]
        assert (invoice["source_type"], invoice["source"], invoice["is_einvoice"]) == ("direct_upload", "integration", False)
        assert invoice["payable_amount"] == invoice["total_amount"] and invoice["available_actions"]["edit"]
    assert_newer_fields_compared(docs)
