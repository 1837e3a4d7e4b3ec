"""One rate budget per host: real processes sharing the windows through one file, the file failing
(the agent keeps its own budget), the wall clock set back, and clients of one process sharing one
limiter."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import responses

from agent.config import QontoConfig
from agent.qonto.client import QontoClient, api_budget
from agent.qonto import budget_store
from agent.qonto.ratelimit import RateLimiter
from support import REPO, FakeClock, agent_env, most_in_any_window

SENDER = """
import json, sys, time
from pathlib import Path
from agent.qonto.ratelimit import RateLimiter

path, limit, window, start, until = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), \\
    float(sys.argv[5])
reading = [0.0]

def clock():  # the limiter's last reading is when it counted the request it let through
    reading[0] = time.time()
    return reading[0]

limiter = RateLimiter([(limit, window)], reserve=0.0, clock=clock, shared=path)
time.sleep(max(0.0, start - time.time()))  # both processes begin together
sent = []
while time.time() < until:
    limiter.acquire()
    sent.append(reading[0])
print(json.dumps(sent))
"""


def test_two_processes_on_one_file_share_the_windows_fairly(tmp_path):
    limit, window, seconds = 20, 1.0, 3.5
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    start = time.time() + 1.0
    args = [str(tmp_path / "budget" / "rate-limit.sqlite"), str(limit), str(window), str(start), str(start + seconds)]
    env = agent_env(PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    one, two = (json.loads(out) for out, _ in outputs)
    merged = one + two
    assert most_in_any_window(merged, window) == limit  # full use, never more
    assert len(merged) >= 3 * limit  # the windows slid: neither process stalled the other
    # The first window goes to whichever interpreter started first; from then on, turns alternate.
    later = [sum(1 for at in sent if at >= start + window) for sent in (one, two)]
    assert min(later) >= sum(later) // 4, later  # neither starved


@pytest.fixture(params=["memory", "file"])
def make_limiter(request, tmp_path):
    """Limiters on a fake clock, keeping their windows in memory or in one file (then shared)."""
    clock = FakeClock(1_000_000.0)
    shared = tmp_path / "rate-limit.sqlite" if request.param == "file" else None

    def make(limits, **kw) -> RateLimiter:
        return RateLimiter(limits, clock=clock, sleep=clock.sleep, shared=shared, **kw)
    make.clock = clock
    return make


def test_both_stores_slide_the_window_alike(make_limiter):
    rl = make_limiter([(2, 10.0)])
    rl.acquire()
    make_limiter.clock.now += 4
    rl.acquire()
    rl.acquire()  # the first leaves the window 6 s from now
    rl.acquire()  # the second, 4 s later
    assert make_limiter.clock.sleeps == [pytest.approx(6.0), pytest.approx(4.0)]


def test_both_stores_keep_the_reserve_for_uploads(make_limiter):
    rl = make_limiter([(10, 10.0)], reserve=0.2)
    for _ in range(8):
        rl.acquire()
    rl.acquire(urgent=True)
    rl.acquire(urgent=True)
    assert make_limiter.clock.sleeps == []
    rl.acquire()
    assert make_limiter.clock.sleeps == [pytest.approx(10.0)]


def test_limiters_on_one_file_count_each_others_requests(tmp_path):
    clock = FakeClock(1_000_000.0)
    one, two = (RateLimiter([(10, 10.0)], reserve=0.2, clock=clock, sleep=clock.sleep,
                            shared=tmp_path / "rate-limit.sqlite") for _ in range(2))
    for _ in range(8):
        one.acquire()  # the ordinary share of the window, all spent by the first
    two.acquire(urgent=True)  # an upload of the other still finds the reserve
    assert clock.sleeps == []
    two.acquire()
    assert clock.sleeps == [pytest.approx(10.0)]


def test_times_left_by_a_clock_set_back_are_dropped(tmp_path):
    clock = FakeClock(1_000_000.0)
    rl = RateLimiter([(1, 10.0), (2, 600.0)], clock=clock, sleep=clock.sleep, shared=tmp_path / "r.sqlite")
    rl.acquire()
    clock.now -= 3  # a small step back: the request still counts, a little longer
    rl.acquire()
    assert clock.sleeps == [pytest.approx(13.0)]
    clock.now -= 3600  # an hour back: those times are in the future, forgotten rather than waited for
    rl.acquire()
    assert clock.sleeps == [pytest.approx(13.0)]


def _not_a_database(path):
    path.write_bytes(b"this is not an SQLite database, only some text of sufficient length" * 20)


def _a_folder(path):
    path.mkdir()


def _under_a_file(path):
    path.parent.rmdir()
    path.parent.write_text("a file where the folder should be")


@pytest.mark.parametrize("spoil", [_not_a_database, _a_folder, _under_a_file])
def test_an_unusable_file_costs_one_warning_and_the_process_keeps_its_own_budget(tmp_path, caplog, spoil):
    path = tmp_path / "state" / "rate-limit.sqlite"
    path.parent.mkdir()
    spoil(path)
    sleeps: list[float] = []
    with caplog.at_level(logging.WARNING, logger="agent.qonto"):
        rl = RateLimiter([(2, 0.2)], shared=path, sleep=lambda s: (sleeps.append(s), time.sleep(s)))
        for _ in range(5):
            rl.acquire()
    assert sleeps  # still limited
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeps its own budget" in warnings[0] and str(path) in warnings[0]


def test_a_disk_that_fills_up_costs_one_warning_and_no_request(tmp_path, mounted, caplog):
    point = mounted(tmp_path / "mnt", size="1m")
    path = point / "rate-limit.sqlite"
    rl = RateLimiter([(1000, 10.0)], shared=path)
    rl.acquire()
    assert path.exists() and not caplog.records
    with pytest.raises(OSError), (point / "filler").open("wb") as filler:
        while True:
            filler.write(b"x" * 4096)
            filler.flush()
    with caplog.at_level(logging.WARNING, logger="agent.qonto"):
        for _ in range(200):  # the file's spare pages run out within these
            rl.acquire()
    assert len(caplog.records) == 1 and "disk is full" in caplog.records[0].getMessage()


def test_clients_given_one_limiter_share_it_and_closing_one_leaves_it_to_the_others():
    clock = FakeClock(1_000_000.0)
    shared = RateLimiter([(2, 10.0)], reserve=0.0, clock=clock, sleep=clock.sleep)
    config = QontoConfig(base_url="https://api.qonto.test", login="acme", secret_key="s3cret")
    org = {"organization": {"id": "org-1", "slug": "acme"}}
    with responses.RequestsMock() as rsps:
        rsps.get("https://api.qonto.test/v2/organization", json=org)
        one, two = QontoClient(config, limiter=shared), QontoClient(config, limiter=shared)
        one.get_organization()
        two.get_organization()
        assert clock.sleeps == []
        one.close()
        two.get_organization()  # the third in the window: it waits for the first, sent by the other client
        assert clock.sleeps == [pytest.approx(10.0)]
        two.close()


def test_the_default_budget_uses_the_configured_file_and_a_bare_config_none(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "budget.sqlite"
    api_budget(QontoConfig(login="acme", secret_key="s3cret", rate_limit_file=path)).acquire()
    api_budget(QontoConfig(login="acme", secret_key="s3cret")).acquire()  # not through `load`: this process's own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget.sqlite", "budget.sqlite-shm", "budget.sqlite-wal"]
    assert not caplog.records


def _hold_the_file(path, seconds: float) -> threading.Thread:
    """Another process's transaction holding the budget file for `seconds` (as on a loaded host)."""
    held = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    return thread


def test_a_file_locked_longer_than_the_busy_timeout_is_waited_for_not_given_up(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(budget_store, "BUSY_TIMEOUT_SECONDS", 0.05)
    path = tmp_path / "rate-limit.sqlite"
    rl = RateLimiter([(10, 10.0)], shared=path)
    holder = _hold_the_file(path, 0.5)
    rl.acquire()  # waits out the other's transaction
    holder.join()
    assert "cannot be used" not in caplog.text
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM sent").fetchone()[0] == 1  # counted in the file


def test_a_file_locked_for_good_costs_one_warning_and_an_own_budget(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(budget_store, "BUSY_TIMEOUT_SECONDS", 0.05)
    monkeypatch.setattr(budget_store, "BUSY_GIVE_UP_SECONDS", 0.3)
    path = tmp_path / "rate-limit.sqlite"
    rl = RateLimiter([(10, 10.0)], shared=path)
    holder = _hold_the_file(path, 1.0)
    rl.acquire()
    rl.acquire()
    holder.join()
    assert caplog.text.count("cannot be used") == 1


def test_a_file_locked_while_the_process_starts_is_opened_later_not_given_up(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(budget_store, "BUSY_TIMEOUT_SECONDS", 0.05)
    path = tmp_path / "rate-limit.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")  # as another agent setting the file up at the same instant
    rl = RateLimiter([(10, 10.0)], shared=path)
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    rl.acquire()
    assert "cannot be used" not in caplog.text
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM sent").fetchone()[0] == 1
