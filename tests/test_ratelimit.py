"""RateLimiter: sliding windows on a fake clock, so every test is exact and instant; the order of
waiting threads and closing on the real clock."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from agent.base.errors import TransientError
from agent.qonto.ratelimit import RateLimiter
from support import FakeClock, wait_for


def limiter(limits, clock: FakeClock) -> RateLimiter:
    return RateLimiter(limits, clock=clock, sleep=clock.sleep)


def test_requests_within_the_limit_do_not_wait():
    clock = FakeClock()
    rl = limiter([(3, 10.0)], clock)
    for _ in range(3):
        rl.acquire()
    assert clock.sleeps == []


def test_the_next_request_waits_until_the_oldest_leaves_the_window():
    clock = FakeClock()
    rl = limiter([(2, 10.0)], clock)
    rl.acquire()
    clock.now += 4
    rl.acquire()
    rl.acquire()  # the first left at t=0 and leaves the window at t=10, 6 s from now
    assert clock.sleeps == [pytest.approx(6.0)]
    rl.acquire()  # the second, sent at t=4, leaves at t=14
    assert clock.sleeps == [pytest.approx(6.0), pytest.approx(4.0)]


def test_the_window_slides_rather_than_resetting():
    clock = FakeClock()
    rl = limiter([(2, 10.0)], clock)
    rl.acquire()
    clock.now += 9
    rl.acquire()
    clock.now += 1.5  # t=10.5: the first has left, the second is still in
    rl.acquire()
    assert clock.sleeps == []
    rl.acquire()  # must wait for the second (t=9) to leave at t=19
    assert clock.sleeps == [pytest.approx(8.5)]


def test_every_window_applies_and_the_longest_wait_wins():
    clock = FakeClock()
    rl = limiter([(2, 1.0), (3, 60.0)], clock)
    for _ in range(2):
        rl.acquire()
    rl.acquire()  # short window full: wait 1 s
    assert clock.sleeps == [pytest.approx(1.0)]
    rl.acquire()  # long window holds 3 since t=0: wait until t=60
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(59.0)]


def test_idle_time_frees_every_window():
    clock = FakeClock()
    rl = limiter([(1, 10.0)], clock)
    rl.acquire()
    clock.now += 10.0
    rl.acquire()
    assert clock.sleeps == []


@pytest.mark.parametrize("limits", [[(0, 10.0)], [(5, 0.0)], [(5, -1.0)]])
def test_impossible_limits_are_refused(limits):
    with pytest.raises(ValueError):
        RateLimiter(limits)


def test_no_limits_never_waits():
    clock = FakeClock()
    rl = limiter([], clock)
    for _ in range(1000):
        rl.acquire()
    assert clock.sleeps == []


def test_threads_never_exceed_the_limit():
    """Many threads on a shared fake clock: no window ever holds more than its limit."""
    lock = threading.Lock()
    now = [1000.0]
    seen = threading.local()  # the last time each thread read: its acquisition time on return
    sent: list[float] = []

    def clock() -> float:
        with lock:
            seen.value = now[0]
        return seen.value

    def sleep(seconds: float) -> None:
        with lock:
            now[0] += seconds

    rl = RateLimiter([(5, 1.0)], clock=clock, sleep=sleep)

    def worker() -> None:
        for _ in range(10):
            rl.acquire()
            with lock:
                sent.append(seen.value)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(sent) == 80
    sent.sort()
    assert all(sent[i + 5] - sent[i] >= 1.0 for i in range(len(sent) - 5))


# --- uploads first: the reserve and the queue --------------------------------------------------

def test_other_requests_leave_the_reserve_to_urgent_ones():
    clock = FakeClock()
    rl = RateLimiter([(10, 10.0)], reserve=0.2, clock=clock, sleep=clock.sleep)
    for _ in range(8):
        rl.acquire()
    assert clock.sleeps == []
    rl.acquire(urgent=True)
    rl.acquire(urgent=True)  # the two reserved slots: no wait
    assert clock.sleeps == []
    rl.acquire()  # the ninth ordinary request waits for the first to leave the window
    assert clock.sleeps == [pytest.approx(10.0)]


def test_a_full_window_makes_an_urgent_request_wait_like_any_other():
    clock = FakeClock()
    rl = RateLimiter([(10, 10.0)], reserve=0.2, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        rl.acquire(urgent=True)
    rl.acquire(urgent=True)
    assert clock.sleeps == [pytest.approx(10.0)]


def test_small_windows_have_no_reserve():
    clock = FakeClock()
    rl = RateLimiter([(5, 10.0)], clock=clock, sleep=clock.sleep)  # 10 % of 5 rounds down to none
    for _ in range(5):
        rl.acquire()
    assert clock.sleeps == []


@pytest.mark.parametrize("reserve", [-0.1, 1.0])
def test_an_impossible_reserve_is_refused(reserve):
    with pytest.raises(ValueError):
        RateLimiter([(10, 1.0)], reserve=reserve)


def test_a_waiting_urgent_request_gets_the_next_free_slot():
    """Real threads and clock: ordinary requests queue on a full window, an upload arrives after
    them, and it is still the first to go when the window frees."""
    rl = RateLimiter([(2, 0.6)], reserve=0.0)
    rl.acquire()
    time.sleep(0.3)
    rl.acquire()  # the window frees one slot at a time: at 0.6 s, then at 0.9 s
    order: list[str] = []
    lock = threading.Lock()

    def request(name: str, urgent: bool) -> None:
        rl.acquire(urgent)
        with lock:
            order.append(name)

    threads = [threading.Thread(target=request, args=(f"sync-{n}", False)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # the sync requests are queued and sleeping before the upload arrives
    upload = threading.Thread(target=request, args=("upload", True))
    upload.start()
    for t in [*threads, upload]:
        t.join(timeout=10)
    assert order[0] == "upload", order
    assert sorted(order[1:]) == ["sync-0", "sync-1", "sync-2"]


def test_close_ends_every_wait():
    rl = RateLimiter([(1, 600.0)])
    rl.acquire()
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            rl.acquire()
        except TransientError as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    rl.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and time.monotonic() - started < 1
    assert "was not sent" in str(failed[0])


def test_requests_take_turns_first_come_first_served():
    """A client with one request at a time (a quiet profile) waits only for the requests queued
    before it, however many a busy client sharing the limiter keeps queueing (taking turns at
    random, it would wait longer than that about one time in three)."""
    rl = RateLimiter([(1, 0.02)], reserve=0.0)
    granted: list[str] = []
    lock = threading.Lock()

    def busy() -> None:
        with contextlib.suppress(TransientError):  # closed at the end
            while True:
                rl.acquire()
                with lock:
                    granted.append("busy")

    threads = [threading.Thread(target=busy) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(granted) >= 12, 10, message="the busy client's requests flowing")
    waits = []
    for _ in range(10):
        with lock:
            before = len(granted)
        rl.acquire()  # the quiet client's request
        with lock:
            waits.append(len(granted) - before)
            granted.append("quiet")
    rl.close()
    for t in threads:
        t.join(5)
    assert max(waits) <= 6 + 1, waits  # one queued per busy thread, and one taking its slot meanwhile
