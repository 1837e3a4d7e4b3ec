"""`upload --dry-run`, `upload --json` and `sync --json`: real processes against the sandbox, real files."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from support import make_config, pdf_bytes, run_agent, wait_for, write_pdf

BULK = "/v2/supplier_invoices/bulk"
SAME = {"would_upload": "uploaded", "already_uploaded": "already_uploaded", "would_refuse": "refused",
        "waiting": "waiting"}  # a dry run's verdict, and what the real pass then logs


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def ledger_rows(config: Path) -> list:
    with sqlite3.connect(config.parent / "state" / "ledger.sqlite") as db:
        return [db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("uploads", "attempts", "sightings", "pending")]


def result(proc) -> dict:
    assert proc.returncode in (0, 1, 3), proc.stderr
    return json.loads(proc.stdout)


def test_dry_run_says_what_upload_then_does_and_sends_moves_and_records_nothing(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    inbox = tmp_path / "inbox"
    write_pdf(inbox / "old.pdf", "old invoice")
    first = result(run_agent(config, "upload", "--json"))
    old_id = first["files"][0]["invoice_id"]
    (inbox / "copy-of-old.pdf").write_bytes(pdf_bytes("old invoice"))
    write_pdf(inbox / "new.pdf", "a new invoice")
    (inbox / "empty.pdf").write_bytes(b"")
    (inbox / "fake.pdf").write_text("Dear customer, please find attached... (this is a text file)\n" * 20)
    growing = inbox / "growing.pdf"
    growing.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    before, rows, bulk = tree(inbox), ledger_rows(config), sandbox.count(path_prefix=BULK)

    stop = threading.Event()

    def keep_writing() -> None:  # a scanner still writing page after page during the dry run
        with growing.open("ab") as out:
            while not stop.wait(0.1):
                out.write(b"2 0 obj\n<< /Length 0 >>\nendobj\n")
                out.flush()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        dry = run_agent(config, "upload", "--dry-run")
        dry_json = result(run_agent(config, "upload", "--dry-run", "--json"))
    finally:
        stop.set()
        writer.join()
    assert dry.returncode == 0, dry.stderr
    lines = dict(line.split(": ", 1) for line in dry.stdout.splitlines())
    assert lines["new.pdf"] == "would upload"
    assert lines["copy-of-old.pdf"].startswith(f"already uploaded as invoice {old_id} on ")
    assert lines["fake.pdf"] == "would refuse: the file is not a PDF, JPEG or PNG, whatever its name says"
    assert lines["empty.pdf"].startswith("waiting: it looks unfinished")
    assert lines["growing.pdf"].startswith("waiting: settling"), dry.stdout
    assert set(lines) == {"new.pdf", "copy-of-old.pdf", "fake.pdf", "empty.pdf", "growing.pdf"}
    verdicts = {f["file"]: f for f in dry_json["files"]}
    assert {name: f["outcome"] for name, f in verdicts.items()} == {
        "new.pdf": "would_upload", "copy-of-old.pdf": "already_uploaded", "fake.pdf": "would_refuse",
        "empty.pdf": "waiting", "growing.pdf": "waiting"}
    assert verdicts["copy-of-old.pdf"]["invoice_id"] == old_id
    assert dry_json["counts"] == {"would_upload": 1, "already_uploaded": 1, "would_refuse": 1, "waiting": 2, "left": 0}
    assert sandbox.count(path_prefix=BULK) == bulk  # nothing sent
    tree_after = tree(inbox)
    assert tree_after.keys() == before.keys()  # nothing moved (growing.pdf only grew)
    assert all(tree_after[name] == data for name, data in before.items() if name != "growing.pdf")
    assert ledger_rows(config) == rows  # nothing recorded

    real = result(run_agent(config, "upload", "--json"))
    done = {f["file"]: f for f in real["files"]}
    assert {name: SAME[f["outcome"]] for name, f in verdicts.items()} == {name: done[name]["outcome"]
                                                                          for name in verdicts}
    new_id = done["new.pdf"]["invoice_id"]
    assert {inv["id"] for inv in sandbox.invoices()} == {old_id, new_id}
    assert done["copy-of-old.pdf"]["invoice_id"] == old_id
    assert done["fake.pdf"]["reason"] == "the file is not a PDF, JPEG or PNG, whatever its name says"
    assert real["counts"] == {"uploaded": 1, "already_uploaded": 1, "failed": 1, "waiting": 2}
    assert real["dry_run"] is False and real["verdict"] == "failed"


def test_dry_run_knows_the_mirror_without_asking_qonto_and_sync_json_counts(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    ids = sandbox.seed(3, without_attachment=0)
    synced = run_agent(config, "sync", "--json")
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert {k: report[k] for k in ("listed", "written", "downloaded", "unchanged", "failed", "complete")} == {
        "listed": 3, "written": 3, "downloaded": 3, "unchanged": 0, "failed": 0, "complete": True}
    assert report["cursor"] and report["verdict"] == "done" and report["failed_ids"] == []
    assert "synced" not in synced.stdout.replace('"command": "sync"', "")  # log lines stay on stderr
    again = json.loads(run_agent(config, "sync", "--json").stdout)
    assert again["written"] == again["downloaded"] == 0 and again["unchanged"] == again["listed"], again

    invoice = sandbox.invoice(ids[0])
    (tmp_path / "inbox" / "from-qonto.pdf").write_bytes(sandbox.attachment_bytes(invoice["attachment_id"]))
    rows = ledger_rows(config)
    sandbox.reset_log()
    dry = run_agent(config, "upload", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"from-qonto.pdf: already in Qonto as invoice {ids[0]} (the same bytes"), dry.stdout
    assert sandbox.requests == []  # a dry run asks Qonto nothing
    assert ledger_rows(config) == rows


def test_dry_run_counts_an_unfinished_file_from_when_a_pass_first_saw_it(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox, inbox={"incomplete_after_seconds": 1})
    empty = tmp_path / "inbox" / "empty.pdf"
    empty.write_bytes(b"")
    assert "empty.pdf: waiting: it looks unfinished" in run_agent(config, "upload", "--dry-run").stdout
    first = result(run_agent(config, "upload", "--json"))  # records when it first saw the file
    assert first["files"][0]["outcome"] == "waiting"
    seen = ledger_rows(config)[2][0][2]
    wait_for(lambda: time.time() > seen + 1.5)
    dry = run_agent(config, "upload", "--dry-run")
    assert dry.stdout == "empty.pdf: would refuse: the file is empty (0 bytes), and stayed so\n", dry.stdout
    assert empty.exists()
    assert result(run_agent(config, "upload", "--json"))["files"][0]["outcome"] == "refused"
