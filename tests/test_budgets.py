"""Two budgets, in a real `run`: pre-signed storage downloads spend nothing of Qonto's rate limit,
and uploads go first within it, so files dropped while a big sync has used up its share of the
budget are still sent at once; and a stop is not held up by requests waiting for their turn."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from agent import service
from agent.config import load
from agent.sandbox.server import Sandbox
from support import make_config, wait_for, write_pdf

SHARE = 54  # 90 % of 60: what requests other than uploads may use of each window


def api_requests(sandbox: Sandbox) -> int:
    return sandbox.count(path_prefix="/v2/")


def test_files_dropped_while_a_sync_holds_its_share_of_the_budget_are_uploaded_at_once(tmp_path, sandbox, agents):
    sandbox.seed(300, without_attachment=0.0)
    sandbox.faults.latency_seconds = 0.005
    # Qonto's two windows, shrunk: 60 requests per 10 s and per 10 minutes.
    config = make_config(tmp_path, sandbox, qonto={"max_requests_per_10s": 60, "max_requests_per_10min": 60})
    agent = agents(config, "run")
    wait_for(lambda: api_requests(sandbox) >= SHARE, timeout=30, message="the sync using its share", on_fail=agent.log)
    read = sandbox.count(path_prefix="/v2/attachments/")
    wait_for(lambda: sandbox.count(path_prefix="/_storage/") >= read, timeout=10,
             message="the download of every attachment read so far", on_fail=agent.log)
    assert api_requests(sandbox) == SHARE  # the downloads took none of it; the sync now waits minutes

    write_pdf(tmp_path / "inbox" / "dropped.pdf")
    dropped = time.monotonic()
    wait_for(lambda: sandbox.count(method="POST", path_prefix="/v2/supplier_invoices/bulk"), timeout=10,
             message="the upload", on_fail=agent.log)
    assert time.monotonic() - dropped < 5  # settle 0.5 s + debounce 0.3 s, then no wait for a turn
    wait_for(lambda: (tmp_path / "inbox" / "done" / "dropped.pdf").exists(), message="dropped.pdf filed",
             on_fail=agent.log)
    assert "synced" not in agent.log()  # the sync is still running, stalled on its share

    stopping = time.monotonic()
    assert agent.stop(timeout=15) == 0, agent.tail()
    assert time.monotonic() - stopping < 10, agent.tail()
    assert "Traceback" not in agent.log()


def test_a_due_sync_waits_while_files_wait_for_an_upload_slot(tmp_path, monkeypatch):
    """A backlog keeps the rate limit for its uploads: a sync falling due meanwhile (here the
    start-up one) starts as soon as no file waits, and waits an interval at most."""
    synced: list[float] = []
    monkeypatch.setattr(service.mirror, "sync", lambda *args, **kwargs: synced.append(time.monotonic()))
    config = load(make_config(tmp_path, SimpleNamespace(base_url="http://127.0.0.1:9")), env={})
    stopping = threading.Event()
    schedule = service.SyncSchedule(config, client=None, ledger=None, stopping=stopping)
    schedule.set_busy(True)
    schedule.start()
    try:
        schedule.soon(0.0)
        try:
            wait_for(lambda: synced, timeout=1.0)
            raise AssertionError("the sync ran while files waited for an upload slot")
        except TimeoutError:
            pass
        freed = time.monotonic()
        schedule.set_busy(False)
        wait_for(lambda: synced, timeout=2.0, message="the sync once no file waits")
        assert synced[0] - freed < 1.0

        capped = load(make_config(tmp_path / "capped", SimpleNamespace(base_url="http://127.0.0.1:9"),
                                  outbox={"sync_interval_seconds": 1.0}), env={})
        patient = service.SyncSchedule(capped, client=None, ledger=None, stopping=stopping)
        patient.set_busy(True)
        started = time.monotonic()
        patient.start()
        wait_for(lambda: len(synced) >= 2, timeout=5.0, message="the sync put off an interval at most")
        assert synced[1] - started >= 0.9
    finally:
        stopping.set()
