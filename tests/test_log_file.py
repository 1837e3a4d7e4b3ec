"""`--log-file` with `--log-format json`: `run` as a real process, every line parsed, each outcome
line carrying its documented fields, and a logrotate-style move of the file losing no line."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from support import make_config, run_agent, sidecar_of, wait_for, write_pdf

from agent.base.fingerprint import idempotency_key, sha256_file
from agent.sandbox.server import Sandbox

FINAL = {"uploaded", "already_uploaded", "rejected", "refused"}  # a file's last word: it left the inbox


def lines_of(*paths: Path) -> list[dict]:
    """Every line of the files, each parsed as one JSON object (a torn or foreign line fails)."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        assert text == "" or text.endswith("\n"), f"{path.name} ends inside a line"
        out.extend(json.loads(line) for line in text.splitlines())
    return out


def outcomes(*paths: Path) -> list[dict]:
    return [e for e in lines_of(*paths) if e.get("event") == "upload" and e.get("outcome") in FINAL]


def qonto_refuses_locked(name: str, data: bytes) -> str | None:
    return "encrypted PDF" if name == "locked.pdf" else None


def test_run_logs_json_outcomes_to_a_file_and_loses_no_line_when_it_is_moved(tmp_path, agents):
    with Sandbox(analysis_delay_seconds=0.2, seed=1234, reject=qonto_refuses_locked) as sandbox:
        check_run(tmp_path, sandbox, agents)


def check_run(tmp_path: Path, sandbox: Sandbox, agents) -> None:
    config = make_config(tmp_path, sandbox)
    inbox, log_file, rotated = tmp_path / "inbox", tmp_path / "logs" / "agent.json", tmp_path / "logs" / "agent.json.1"
    log_file.parent.mkdir()
    agent = agents(config, "--log-file", str(log_file), "--log-format", "json", "run", verbose=False)
    wait_for(lambda: (inbox / ".processing").exists(), message="agent started", on_fail=agent.log)

    (inbox / "scan.jpg").write_bytes(b"GIF89a" + bytes(range(256)) * 4)
    (inbox / "notes.pdf").write_text("not a PDF at all, only words\n" * 20)
    write_pdf(inbox / "locked.pdf")
    first = [write_pdf(inbox / f"first-{i}.pdf") for i in range(3)]
    wait_for(lambda: len(outcomes(log_file)) >= 6, message="6 outcomes in the log file",
             on_fail=lambda: log_file.read_text() + agent.log())

    renamed = threading.Event()
    dropped: list[Path] = []

    def keep_dropping() -> None:  # files keep coming, one every 0.15 s, until 4 came after the move
        after = 0
        while after < 4 and len(dropped) < 40:
            dropped.append(write_pdf(inbox / f"stream-{len(dropped):02}.pdf"))
            after += renamed.is_set()
            time.sleep(0.15)  # pacing a writer, not waiting for a condition

    writer = threading.Thread(target=keep_dropping)
    writer.start()
    wait_for(lambda: len(dropped) >= 3, message="3 streamed files")
    log_file.rename(rotated)  # what logrotate does (its default `create` mode); no signal is sent
    renamed.set()
    writer.join(30)
    names = [p.name for p in first + dropped]
    wait_for(lambda: len(list((inbox / "done").glob("*.pdf"))) == len(names), message=f"{len(names)} files in done/",
             on_fail=agent.log)
    wait_for(lambda: len(outcomes(rotated, log_file)) == len(names) + 3, message="every outcome logged",
             on_fail=lambda: "\n".join(map(str, outcomes(rotated, log_file))))
    assert agent.stop() == 0, agent.log()
    assert agent.log() == "", "with --log-file nothing goes to stderr"

    every = outcomes(rotated, log_file)
    by_file = {}
    for entry in every:
        assert entry["file"] not in by_file, f"{entry['file']} has two outcome lines"
        by_file[entry["file"]] = entry
    assert outcomes(rotated) and outcomes(log_file), "the move happened while files were coming"

    invoices = {inv["file_name"]: inv["id"] for inv in sandbox.invoices()}
    assert set(invoices) == set(names)
    for name in names:
        entry = by_file[name]
        sha = sha256_file(inbox / "done" / name)
        assert entry["outcome"] == "uploaded" and entry["level"] == "info"
        assert entry["sha256"] == sha and entry["idempotency_key"] == idempotency_key(sha)
        assert entry["invoice_id"] == invoices[name]
        assert isinstance(entry["duration_seconds"], float) and 0 <= entry["duration_seconds"] < 10
        assert name in entry["message"] and invoices[name] in entry["message"]
    for name in ("scan.jpg", "notes.pdf"):
        entry, sidecar = by_file[name], sidecar_of(inbox / "error", name)
        assert entry["outcome"] == "refused" and entry["level"] == "warning"
        assert entry["sha256"] == sidecar["sha256"] == sha256_file(inbox / "error" / name)
        assert entry["idempotency_key"] == sidecar["idempotency_key"]
        assert entry["reason"] == sidecar["errors"][0]["detail"] and "invoice_id" not in entry
        assert "duration_seconds" not in entry  # nothing was sent
    entry, sidecar = by_file["locked.pdf"], sidecar_of(inbox / "error", "locked.pdf")
    assert entry["outcome"] == "rejected" and entry["reason"] == "encrypted PDF"
    assert entry["sha256"] == sidecar["sha256"] == sha256_file(inbox / "error" / "locked.pdf")
    assert entry["idempotency_key"] == idempotency_key(entry["sha256"]) and entry["duration_seconds"] >= 0

    before = len(lines_of(log_file))  # `run` may have synced too: only the command's own lines count
    done = run_agent(config, "--log-file", str(log_file), "--log-format", "json", "sync")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    synced = [e for e in lines_of(log_file)[before:] if e.get("event") == "sync"]
    assert len(synced) == 1, synced
    assert synced[0]["outcome"] == "synced" and synced[0]["listed"] == synced[0]["written"] == len(names)
    assert synced[0]["failed"] == 0 and synced[0]["cursor"] and synced[0]["duration_seconds"] >= 0


def test_a_log_file_that_cannot_be_written_is_one_sentence_and_exit_code_2(tmp_path, sandbox):
    config = make_config(tmp_path, sandbox)
    done = run_agent(config, "--log-file", str(tmp_path / "no such folder" / "agent.log"), "status")
    assert done.returncode == 2
    assert "cannot write the log file" in done.stderr and "choose another --log-file" in done.stderr
    assert "Traceback" not in done.stderr
