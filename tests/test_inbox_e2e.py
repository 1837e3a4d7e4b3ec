"""The inbox end to end: `qonto-agent` as a real process, the sandbox over HTTP, real folders."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from support import make_config, pdf_bytes, run_agent, sidecar_of, wait_for, write_pdf

from agent.base.fingerprint import idempotency_key, sha256_file
from agent.qonto.limits import REQUEST_BUDGET_BYTES as MAX_REQUEST_BYTES
from agent.sandbox.faults import Faults
from agent.sandbox.server import Sandbox

BULK = "/v2/supplier_invoices/bulk"


def filed(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith(".error.json"))


def done_count(inbox: Path, n: int):
    return lambda: len(filed(inbox / "done")) >= n


def inbox_left(inbox: Path) -> list[str]:
    return sorted(p.name for p in inbox.iterdir() if p.is_file())


def processing_left(inbox: Path) -> list[str]:
    root = inbox / ".processing"
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if root.exists() else []


def test_five_pdfs_become_five_invoices_with_their_keys(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    paths = [write_pdf(inbox / f"invoice-{i}.pdf") for i in range(5)]
    keys = {idempotency_key(sha256_file(p)) for p in paths}
    wait_for(done_count(inbox, 5), message="5 files in done/", on_fail=agent.log)
    assert sandbox.invoice_count() == 5
    assert set(sandbox.uploads_by_key()) == keys
    assert {inv["file_name"] for inv in sandbox.invoices()} == {p.name for p in paths}
    status = json.loads(run_agent(config, "status", "--json").stdout)
    assert status["run_alive"] is True and status["done_count"] == 5
    assert {u["invoice_id"] for u in status["recent_uploads"]} == {inv["id"] for inv in sandbox.invoices()}
    assert agent.stop() == 0, agent.log()
    assert "uploaded invoice-0.pdf as invoice" in agent.log()


def test_a_hundred_pdfs_at_once_go_in_at_most_six_requests(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 1.0, "debounce_seconds": 1.0})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: (tmp_path / "inbox" / ".processing").exists(), message="agent started", on_fail=agent.log)
    for i in range(100):
        write_pdf(inbox / f"bulk-{i:03}.pdf", size=20_000)
    wait_for(done_count(inbox, 100), timeout=60, message="100 files in done/", on_fail=agent.log)
    bulk = [r for r in sandbox.request_log() if r.path == BULK]
    assert sandbox.invoice_count() == 100
    assert len(bulk) <= 6, [r.items for r in bulk]
    assert all(r.items <= 20 and r.body_bytes <= MAX_REQUEST_BYTES for r in bulk)


def test_slow_writer_is_uploaded_once_with_its_final_bytes(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 1.0})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    data = pdf_bytes("slow scan", size=120_000)
    chunks = [data[i:i + 10_000] for i in range(0, len(data), 10_000)]  # 12 chunks, one every 0.5 s: 6 s
    with open(inbox / "slow.pdf", "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            time.sleep(0.5)  # the writer's own pace, the thing under test
    wait_for(done_count(inbox, 1), message="slow.pdf in done/", on_fail=agent.log)
    assert sandbox.invoice_count() == 1
    [invoice] = sandbox.invoices()
    assert sandbox.attachment_sha256(invoice["attachment_id"]) == sha256_file(inbox / "done" / "slow.pdf")
    assert (inbox / "done" / "slow.pdf").read_bytes() == data


def test_scanner_part_file_renamed_is_uploaded_once(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox)
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    part = inbox / "scan.pdf.part"
    with open(part, "wb") as fh:
        fh.write(pdf_bytes("scan", size=50_000))
    write_pdf(inbox / "sentinel.pdf")  # dropped after the .part: once it is filed, the .part was seen too
    wait_for(done_count(inbox, 1), message="sentinel.pdf in done/", on_fail=agent.log)
    assert part.exists() and [inv["file_name"] for inv in sandbox.invoices()] == ["sentinel.pdf"]
    part.rename(inbox / "scan.pdf")
    wait_for(done_count(inbox, 2), message="scan.pdf in done/", on_fail=agent.log)
    assert filed(inbox / "done") == ["scan.pdf", "sentinel.pdf"]
    assert sorted(inv["file_name"] for inv in sandbox.invoices()) == ["scan.pdf", "sentinel.pdf"]


def test_bad_inputs_get_their_outcome_and_odd_names_survive(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox={"incomplete_after_seconds": 4})
    inbox = tmp_path / "inbox"
    outside = tmp_path / "outside.pdf"
    write_pdf(outside, "outside secret")
    agent = agents(config, "run")
    (inbox / "empty.pdf").write_bytes(b"")
    (inbox / "notes.pdf").write_text("these are notes, not a PDF")
    write_pdf(inbox / "huge.pdf", size=11 * 1024 * 1024)
    (inbox / "cut.pdf").write_bytes(b"%PDF-1.4\n" + b"0" * 4000)
    (inbox / "x.pdf").mkdir()
    (inbox / "link.pdf").symlink_to(outside)
    for litter in ("Thumbs.db", ".~lock.a.pdf#", "~$temp.pdf"):
        (inbox / litter).write_bytes(pdf_bytes(litter))
    odd = ["FACTURE.PDF", "facture été №5.pdf", "it's \"quoted\" and spaced .pdf"]
    for name in odd:
        write_pdf(inbox / name)

    wait_for(done_count(inbox, 3), message="the three odd names in done/", on_fail=agent.log)
    assert filed(inbox / "done") == sorted(odd)
    assert sorted(inv["file_name"] for inv in sandbox.invoices()) == sorted(odd)
    errors = ["cut.pdf", "empty.pdf", "huge.pdf", "notes.pdf"]
    wait_for(lambda: filed(inbox / "error") == errors, timeout=20, message=f"{errors} in error/",
             on_fail=lambda: f"{filed(inbox / 'error')}\n{agent.log()}")
    for name in errors:
        sidecar = sidecar_of(inbox / "error", name)
        assert sidecar["file"] == name and sidecar["errors"][0]["detail"] and sidecar["hint"].endswith(".")
        assert set(sidecar) >= {"file", "sha256", "idempotency_key", "errors", "failed_at", "hint"}
    assert sidecar_of(inbox / "error", "huge.pdf")["errors"][0]["code"] == "too_large"
    # ignored names and the link stay where they are, untouched; the folder stays a folder; nothing
    # outside was read or sent
    assert sorted(p.name for p in inbox.iterdir() if not p.is_dir()) == sorted(["Thumbs.db", ".~lock.a.pdf#",
                                                                                 "~$temp.pdf", "link.pdf"])
    assert (inbox / "x.pdf").is_dir() and outside.read_bytes() == pdf_bytes("outside secret")
    assert (inbox / "link.pdf").is_symlink()
    assert "link.pdf is left in the inbox: it is a link" in agent.log()
    assert sandbox.invoice_count() == 3
    assert agent.proc.poll() is None, agent.log()


def test_an_item_the_server_rejects_goes_to_error_with_qontos_detail(tmp_path, agents):
    def reject(filename: str, data: bytes) -> str | None:
        return "The file is corrupted and cannot be analysed" if "corrupt" in filename else None

    with Sandbox(reject=reject, analysis_delay_seconds=0.2) as sandbox:
        config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.5, "debounce_seconds": 1.0})
        inbox = tmp_path / "inbox"
        agent = agents(config, "run")
        for name in ("a.pdf", "corrupt.pdf", "b.pdf"):
            write_pdf(inbox / name)
        wait_for(lambda: filed(inbox / "error") == ["corrupt.pdf"] and filed(inbox / "done") == ["a.pdf", "b.pdf"],
                 message="a, b in done/ and corrupt in error/", on_fail=agent.log)
        sidecar = sidecar_of(inbox / "error", "corrupt.pdf")
        assert sidecar["errors"] == [{"code": "invalid", "detail": "The file is corrupted and cannot be analysed"}]
        assert sidecar["idempotency_key"] == idempotency_key(sidecar["sha256"])
        assert sandbox.count(path_prefix=BULK) == 1
        # the supplier sent a good copy: moving the file back from error/ retries it
        sandbox.reject = None
        (inbox / "error" / "corrupt.pdf").rename(inbox / "corrupt.pdf")
        wait_for(done_count(inbox, 3), message="corrupt.pdf in done/ after the retry", on_fail=agent.log)
        assert sandbox.invoice_count() == 3


@pytest.mark.parametrize("files, seed", [(60, 7), pytest.param(400, 11, marks=pytest.mark.slow)])
def test_faults_on_thirty_percent_of_requests_lose_and_double_nothing(tmp_path, agents, files, seed):
    faults = Faults(error_rate=0.08, rate_limit_rate=0.08, drop_rate=0.07, commit_then_fail_rate=0.07,
                    retry_after_seconds=0.1)
    with Sandbox(faults=faults, seed=seed, analysis_delay_seconds=0.2) as sandbox:
        config = make_config(tmp_path, sandbox, inbox={"batch_size": 5})
        inbox = tmp_path / "inbox"
        agent = agents(config, "run")
        for i in range(files):
            write_pdf(inbox / f"fault-{i:03}.pdf")
        wait_for(done_count(inbox, files), timeout=300, message=f"{files} files in done/", on_fail=agent.log)
        assert sandbox.invoice_count() == files
        assert filed(inbox / "error") == []
        assert sandbox.count(path_prefix=BULK) > files // 5, "the faults did not fire: the test proves nothing"


@pytest.mark.parametrize("files, kills, seed", [
    (100, 5, 42),
    pytest.param(300, 20, 7, marks=pytest.mark.slow),  # a longer soak of the same property
])
def test_kill_minus_nine_loses_and_doubles_nothing(tmp_path, agents, files, kills, seed):
    with Sandbox(faults=Faults(latency_seconds=0.25), analysis_delay_seconds=0.2) as sandbox:
        config = make_config(tmp_path, sandbox, inbox={"batch_size": 10, "debounce_seconds": 0.1})
        inbox = tmp_path / "inbox"
        for i in range(files):
            write_pdf(inbox / f"crash-{i:03}.pdf")
        rng = random.Random(seed)
        for round_ in range(kills):
            agent = agents(config, "run", log_name=f"agent-{round_}.log")
            before = len(filed(inbox / "done"))
            wait_for(lambda: sandbox.count(path_prefix=BULK) > 0 and len(filed(inbox / "done")) > before
                     or processing_left(inbox), timeout=30, message="the agent at work", on_fail=agent.log)
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment within the work, the thing under test
            agent.kill()
        agent = agents(config, "run", log_name="agent-final.log")
        wait_for(done_count(inbox, files), timeout=300, message=f"{files} files in done/", on_fail=agent.log)
        assert filed(inbox / "done") == [f"crash-{i:03}.pdf" for i in range(files)]
        assert sandbox.invoice_count() == files
        assert inbox_left(inbox) == [] and processing_left(inbox) == []


def test_same_content_after_the_key_window_is_not_uploaded_twice(tmp_path, agents):
    with Sandbox(key_window_seconds=1.0, analysis_delay_seconds=0.2) as sandbox:
        config = make_config(tmp_path, sandbox, qonto={"idempotency_window_seconds": 1.0})
        inbox = tmp_path / "inbox"
        agent = agents(config, "run")
        write_pdf(inbox / "first.pdf", "same bytes")
        wait_for(done_count(inbox, 1), message="first.pdf in done/", on_fail=agent.log)
        time.sleep(1.5)  # let Qonto's key window pass: that is the situation under test
        write_pdf(inbox / "again.pdf", "same bytes")
        wait_for(done_count(inbox, 2), message="again.pdf in done/", on_fail=agent.log)
        assert sandbox.invoice_count() == 1
        assert sandbox.count(path_prefix=BULK) == 1
        invoice_id = sandbox.invoices()[0]["id"]
        wait_for(lambda: f"again.pdf: already uploaded as invoice {invoice_id}" in agent.log(),
                 message="the 'already uploaded' line", on_fail=agent.log)


def test_unanswered_attempt_older_than_the_key_window_is_reconciled(tmp_path):
    """A crash after Qonto created the invoice but before we heard: adopt it, do not make a twin."""
    from agent.config import load
    from agent.qonto.bulk import UploadItem
    from agent.qonto.client import QontoClient
    from agent.state.ledger import Ledger

    with Sandbox(key_window_seconds=0.5, analysis_delay_seconds=0.2) as sandbox:
        config_path = make_config(tmp_path, sandbox, qonto={"idempotency_window_seconds": 0.5})
        cfg = load(config_path, env={})
        path = write_pdf(cfg.inbox.path / "lost-answer.pdf")
        sha = sha256_file(path)
        with QontoClient(cfg.qonto) as client:
            [created] = client.upload_bulk([UploadItem(path, idempotency_key(sha), path.name)])
        ledger = Ledger(cfg.state.path)
        ledger.begin_attempt(sha, idempotency_key(sha), path.name, path.stat().st_size, None,
                             now=time.time() - 5)
        ledger.close()
        result = run_agent(config_path, "upload")
        assert result.returncode == 0, result.stderr
        assert sandbox.invoice_count() == 1
        assert f"had created invoice {created.invoice['id']} (the same bytes); adopting it" in result.stderr
        assert filed(cfg.inbox.path / "done") == ["lost-answer.pdf"]


def test_two_agents_on_one_inbox_make_exactly_one_invoice_per_file(tmp_path, sandbox, agents):
    inbox = tmp_path / "inbox"
    configs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        configs.append(make_config(folder, sandbox, inbox={"path": str(inbox)}))
    first, second = (agents(c, "run") for c in configs)
    for i in range(50):
        write_pdf(inbox / f"shared-{i:02}.pdf")
    wait_for(done_count(inbox, 50), timeout=60, message="50 files in done/",
             on_fail=lambda: first.log() + second.log())
    assert filed(inbox / "done") == [f"shared-{i:02}.pdf" for i in range(50)]
    assert sandbox.invoice_count() == 50
    assert first.proc.poll() is None and second.proc.poll() is None, first.log() + second.log()
    assert first.stop() == 0 and second.stop() == 0


@pytest.mark.slow  # watches a wrong secret for the full minute the acceptance bar speaks of
def test_wrong_secret_keeps_files_and_asks_little(tmp_path, agents):
    with Sandbox(analysis_delay_seconds=0.2) as sandbox:
        bad = make_config(tmp_path, sandbox, qonto={"secret_key": "wrong-secret-value"})
        inbox = tmp_path / "inbox"
        agent = agents(bad, "run")
        for i in range(3):
            write_pdf(inbox / f"waiting-{i}.pdf")
        wait_for(lambda: sandbox.count(status=401) >= 1, message="the first 401", on_fail=agent.log)
        started = time.monotonic()
        status = wait_for(lambda: (s := json.loads(run_agent(bad, "status", "--json").stdout))["pending"]
                          and all(p["reason"].startswith("paused") for p in s["pending"]) and s,
                          message="status shows the pause", on_fail=agent.log)
        assert len(status["pending"]) == 3
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))  # the 60 s the acceptance bar speaks of
        assert sandbox.count(status=401) <= 5
        assert inbox_left(inbox) == [f"waiting-{i}.pdf" for i in range(3)]
        errors = [line for line in agent.log().splitlines() if "ERROR" in line]
        assert len(errors) == 1 and "check `[qonto] login` and `[qonto] secret_key`" in errors[0], errors
        assert "wrong-secret-value" not in agent.log()
        assert agent.stop() == 0

        good = make_config(tmp_path, sandbox, qonto={"secret_key": "sandbox-secret-key"})
        fixed = agents(good, "run", log_name="fixed.log")
        wait_for(done_count(inbox, 3), message="3 files in done/ after the fix", on_fail=fixed.log)
        assert sandbox.invoice_count() == 3


def test_a_single_pdf_is_sent_within_settle_plus_debounce_plus_one_second(tmp_path, sandbox, agents):
    settle, debounce = 1.0, 0.5
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": settle, "debounce_seconds": debounce})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: (inbox / ".processing").exists(), message="agent started", on_fail=agent.log)
    latencies = []
    for i in range(3):
        write_pdf(inbox / f"quick-{i}.pdf")
        written = time.monotonic()
        wait_for(done_count(inbox, i + 1), message=f"quick-{i}.pdf in done/", on_fail=agent.log)
        [request] = [r for r in sandbox.request_log() if r.path == BULK][i:i + 1]
        latencies.append(request.started_at - written)
    assert max(latencies) <= settle + debounce + 1.0, latencies


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow  # measures idle CPU over a while; bench/bench_idle.py measures it too
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")
def test_idle_agent_cost_does_not_grow_with_the_archive(tmp_path, sandbox, agents):
    def idle_cpu(folder: Path, archived: int) -> float:
        folder.mkdir()
        config = make_config(folder, sandbox, inbox={"polling": True, "poll_interval_seconds": 0.5})
        done = folder / "inbox" / "done"
        done.mkdir(parents=True)
        for i in range(archived):
            (done / f"old-{i:05}.pdf").write_bytes(b"%PDF-1.4 archived\n%%EOF\n")
        agent = agents(config, "run", log_name="idle.log")
        wait_for(lambda: sandbox.count(path_prefix="/v2/supplier_invoices", method="GET") > 0,
                 message="the start-up sync", on_fail=agent.log)
        wait_for(lambda: "synced" in agent.log(), message="the start-up sync to end", on_fail=agent.log)
        sandbox.reset_log()
        before = _cpu_seconds(agent.proc.pid)
        time.sleep(5)  # the idle period being measured
        used = _cpu_seconds(agent.proc.pid) - before
        assert sandbox.request_log() == [], "an idle agent sent requests"
        agent.stop()
        return used

    empty = idle_cpu(tmp_path / "empty", 0)
    full = idle_cpu(tmp_path / "full", 10_000)
    assert full <= max(0.25, empty * 3), (empty, full)


def test_a_dead_watcher_makes_the_agent_exit_non_zero(tmp_path, sandbox, agents):
    """A watcher that stopped must not leave a deaf agent running: its supervisor restarts it."""
    import shutil

    config = make_config(tmp_path, sandbox)
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    shutil.rmtree(tmp_path / "inbox")  # e.g. a network share that went away
    wait_for(lambda: agent.proc.poll() is not None, message="the agent to exit", on_fail=agent.log)
    assert agent.proc.returncode == 3
    assert "the file watcher stopped unexpectedly" in agent.log()
