"""One bad file never stops the agent (issue 11, "crash-loops on one file"): names and paths at the
length limits, an inbox turning read-only. Each case with `run` as a real process: the bad file
stays in the inbox with a reason `status` shows (or is filed under a shortened safe name), 20 good
files dropped afterwards are all uploaded with exactly their bytes, the agent is still running,
and its log holds no traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from support import FAST_INBOX, AgentProcess, make_config, pdf_bytes, sidecar_of, status_of, wait_for, write_pdf

from agent.inbox import settle
from agent.inbox.content import Judgement, judge

PATH_MAX = 4096


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".error.json")) if folder.is_dir() else []


def twenty_good_files_all_go(config: Path, sandbox, agent: AgentProcess, already: list[tuple[str, bytes]]) -> None:
    """Drop 20 good files: all reach done/, Qonto holds exactly their bytes (and the invoices
    `already` made, by name and bytes, nothing else), the agent still runs, no traceback."""
    inbox = config.parent / "inbox"
    good = {f"good-{i:02}.pdf": write_pdf(inbox / f"good-{i:02}.pdf").read_bytes() for i in range(20)}
    wait_for(lambda: set(good) <= set(names(inbox / "done")), timeout=30, message="the 20 good files in done/",
             on_fail=agent.log)
    held = sorted((inv["file_name"], sandbox.attachment_bytes(inv["attachment_id"])) for inv in sandbox.invoices())
    assert held == sorted([*already, *good.items()]), agent.log()
    assert {n: (inbox / "done" / n).read_bytes() for n in good} == good
    log = agent.log()
    assert agent.proc.poll() is None, log
    assert "Traceback" not in log and "stopped on an unexpected error" not in log, log


def test_a_255_byte_name_dropped_twice_is_filed_under_a_shortened_name(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = tmp_path / "inbox"
    long_name = "x" * 251 + ".pdf"  # 255 bytes: the second one's `... (2).pdf` does not fit
    agent = agents(config, "run")
    first = write_pdf(inbox / long_name, "the first one").read_bytes()
    wait_for(lambda: names(inbox / "done") == [long_name], message="the first long name in done/", on_fail=agent.log)
    second = write_pdf(inbox / long_name, "the second one, same name").read_bytes()
    wait_for(lambda: len(names(inbox / "done")) == 2, message="the second long name in done/", on_fail=agent.log)
    [shortened] = [n for n in names(inbox / "done") if n != long_name]
    assert shortened.endswith(" (2).pdf") and len(shortened.encode()) == 255, shortened
    assert (inbox / "done" / shortened).read_bytes() == second
    wait_for(lambda: f"is filed in done/ as {shortened}" in agent.log(), message="one line saying where it went",
             on_fail=agent.log)
    assert status_of(config)["pending"] == []
    twenty_good_files_all_go(config, sandbox, agent, [(long_name, first), (long_name, second)])


def test_an_empty_file_with_a_240_byte_name_goes_to_error_under_a_name_its_sidecar_fits(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "incomplete_after_seconds": 4})
    inbox = tmp_path / "inbox"
    empty = "e" * 236 + ".pdf"  # 240 bytes: `.<name>.error.json.tmp-<12 hex>` would not fit
    agent = agents(config, "run")
    (inbox / empty).touch()
    waiting = wait_for(lambda: [p for p in status_of(config)["pending"] if p["file"] == empty], timeout=10,
                       message="the empty file waiting in status", on_fail=agent.log)
    assert waiting[0]["reason"], waiting
    wait_for(lambda: names(inbox / "error"), timeout=15, message="the empty file in error/", on_fail=agent.log)
    [filed] = names(inbox / "error")
    assert filed.startswith("eee") and filed.endswith(".pdf") and len(filed.encode()) < 240, filed
    sidecar = sidecar_of(inbox / "error", filed)
    assert sidecar["file"] == filed and sidecar["errors"][0]["detail"], sidecar
    assert not (inbox / empty).exists() and (inbox / "error" / filed).stat().st_size == 0
    assert [e["file"] for e in status_of(config)["recent_errors"]] == [empty]
    twenty_good_files_all_go(config, sandbox, agent, [])


def deep_file(inbox: Path, total: int, name: str) -> bytes:
    """A PDF at the bottom of nested folders (200-byte names, the last one shorter) whose path is
    `total` bytes, made folder by folder through descriptors as a program working relative to its
    current folder would: past PATH_MAX, no path names it whole."""
    data = pdf_bytes(name)
    fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    left = total - len(os.fsencode(inbox / name))
    pattern = Path(name).stem  # the top folder is named after the file: one tree per file
    while left > 0:
        step = min(200, left - 1)
        step -= left - step - 1 == 1  # never leave a single byte, too short for "/x"
        folder, pattern, left = (pattern * step)[:step], str(left % 10), left - step - 1
        os.mkdir(folder, dir_fd=fd)
        fd, parent = os.open(folder, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
    os.close(fd)
    with open(out, "wb") as fh:
        fh.write(data)
    return data


def found_under(folder: Path, name: str) -> bool:
    """`name` somewhere under `folder`, at any depth."""
    return any(name in names for _, _, names, _ in os.fwalk(folder))


@pytest.mark.parametrize("polling", [False, True])
def test_files_near_and_past_path_max_in_a_recursive_inbox_are_uploaded(tmp_path, sandbox, agents, polling):
    """Near PATH_MAX, the claim's own path goes past it; past it, no path names the file whole (a
    file name taking it over, or the folders themselves): the agent reaches each by descriptor.
    Paths past PATH_MAX get no file events (inotify and polling take paths): the rescan finds them."""
    config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "recursive": True, "rescan_seconds": 1,
                                                   "polling": polling, "poll_interval_seconds": 0.3})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    long_name = "n" * 150 + ".pdf"
    dropped = {"near.pdf": deep_file(inbox, PATH_MAX - 20, "near.pdf"),  # its claim's path is past PATH_MAX
               long_name: deep_file(inbox, PATH_MAX + 60, long_name),  # its folder is not, its name takes it past
               "beyond.pdf": deep_file(inbox, 2 * PATH_MAX, "beyond.pdf")}  # its folders are past PATH_MAX
    wait_for(lambda: set(dropped) <= set(names(inbox / "done")), timeout=15, message="the deep files in done/",
             on_fail=agent.log)
    assert {n: (inbox / "done" / n).read_bytes() for n in dropped} == dropped
    twenty_good_files_all_go(config, sandbox, agent, sorted(dropped.items()))
    assert not [n for n in dropped if found_under(inbox, n) and n not in names(inbox / "done")]


def test_a_claim_past_path_max_left_by_a_killed_agent_is_filed_once_at_the_next_start(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, inbox={**FAST_INBOX, "recursive": True})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    sandbox.faults.latency_seconds = 3.0  # the upload is in flight for a while
    data = deep_file(inbox, PATH_MAX - 20, "near.pdf")
    wait_for(lambda: found_under(inbox / ".processing", "near.pdf"), message="near.pdf claimed", on_fail=agent.log)
    agent.kill()
    sandbox.faults.latency_seconds = 0.0
    inbox_before = names(inbox)
    again = agents(config, "run", log_name="again.log")
    wait_for(lambda: names(inbox / "done") == ["near.pdf"], message="near.pdf in done/", on_fail=again.log)
    assert (inbox / "done" / "near.pdf").read_bytes() == data
    [invoice] = sandbox.invoices()
    assert sandbox.attachment_bytes(invoice["attachment_id"]) == data
    assert names(inbox) == inbox_before and not found_under(inbox / ".processing", "near.pdf")  # nothing put back
    log = again.log()
    assert "not an ordinary file" not in log and "Traceback" not in log and again.proc.poll() is None, log


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[int]:
    """`folder` read-only while in the block (a read-only bind mounted over it), and a descriptor of
    the writable folder beneath, through which another program (a scanner on the share) still drops
    files. `mount -o remount,ro` is refused while the agent holds its claim folder's lock file open
    for writing ("mount point is busy"), as the kernel refuses it for any open writer."""
    beneath = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        os.close(beneath)
        pytest.skip(f"cannot mount a read-only bind here: {done.stderr.strip() or done.returncode}")
    try:
        yield beneath
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)
        os.close(beneath)


def drop_at(folder: int, name: str) -> bytes:
    """A PDF written into the folder open as `folder` (a descriptor), as a program holding it open would."""
    data = pdf_bytes(name)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=folder)
    with open(fd, "wb") as out:
        out.write(data)
    return data


def watching_a_mounted_inbox(tmp_path: Path, sandbox, agents, mounted) -> tuple[Path, Path, AgentProcess]:
    """(config, inbox, agent): `run` watching an inbox that is a tmpfs of its own (to be made read-only)."""
    config = make_config(tmp_path, sandbox, inbox=FAST_INBOX)
    inbox = mounted(tmp_path / "inbox", size="16m")
    agent = agents(config, "run")
    wait_for(lambda: "watching" in agent.log(), message="the agent watching", on_fail=agent.log)
    return config, inbox, agent


def test_an_inbox_turning_read_only_holds_its_files_with_a_reason_and_resumes_without_a_restart(
        tmp_path, sandbox, agents, mounted):
    config, inbox, agent = watching_a_mounted_inbox(tmp_path, sandbox, agents, mounted)
    write_pdf(inbox / "before.pdf")
    wait_for(lambda: "before.pdf" in names(inbox / "done"), message="before.pdf in done/", on_fail=agent.log)
    uploaded = [("before.pdf", (inbox / "done" / "before.pdf").read_bytes())]
    with read_only(inbox) as share:
        arrived = {f"while-{i}.pdf": drop_at(share, f"while-{i}.pdf") for i in range(3)}
        held = lambda: [p["file"] for p in status_of(config)["pending"] if "read-only" in p["reason"]]  # noqa: E731
        wait_for(lambda: sorted(held()) == sorted(arrived), timeout=15, message="the files waiting, read-only said",
                 on_fail=agent.log)
        assert sandbox.invoice_count() == 1 and set(arrived) <= set(names(inbox)), agent.log()
        assert agent.proc.poll() is None, agent.log()
    wait_for(lambda: set(arrived) <= set(names(inbox / "done")), timeout=20, message="the held files uploaded",
             on_fail=agent.log)
    assert not [p for p in status_of(config)["pending"] if "read-only" in p["reason"]]
    twenty_good_files_all_go(config, sandbox, agent, uploaded + sorted(arrived.items()))


def test_stopped_while_the_inbox_is_read_only_it_exits_cleanly_and_the_next_start_files_what_it_held(
        tmp_path, sandbox, agents, mounted):
    config, inbox, agent = watching_a_mounted_inbox(tmp_path, sandbox, agents, mounted)
    sandbox.faults.latency_seconds = 2.0  # in flight when the inbox turns read-only
    data = write_pdf(inbox / "in-flight.pdf").read_bytes()
    wait_for(lambda: found_under(inbox / ".processing", "in-flight.pdf"), message="the file claimed", on_fail=agent.log)
    with read_only(inbox) as share:
        waiting = drop_at(share, "waiting.pdf")
        wait_for(lambda: "waiting.pdf stays in the inbox" in agent.log(), message="waiting.pdf held", on_fail=agent.log)
        assert agent.stop() == 0, agent.log()  # its batch ends, done/ refuses it, the inbox refuses it back
    log = agent.log()
    assert "Traceback" not in log and "in-flight.pdf could not be put back in the inbox" in log, log
    assert found_under(inbox / ".processing", "in-flight.pdf")  # kept claimed, never removed
    sandbox.faults.latency_seconds = 0.0
    again = agents(config, "run", log_name="again.log")
    wait_for(lambda: names(inbox / "done") == ["in-flight.pdf", "waiting.pdf"], message="both files in done/",
             on_fail=again.log)
    held = sorted((inv["file_name"], sandbox.attachment_bytes(inv["attachment_id"])) for inv in sandbox.invoices())
    assert held == [("in-flight.pdf", data), ("waiting.pdf", waiting)]  # the one in flight was not sent twice
    assert {p.name.split("-")[0] for p in (inbox / ".processing").iterdir()} == {str(again.proc.pid)}  # adopted
    assert "Traceback" not in again.log() and again.proc.poll() is None, again.log()


def test_a_file_whose_read_fails_is_refused_as_unreadable_not_raised(tmp_path, monkeypatch):
    """A read error while judging (a bad sector, a share gone away) is that file's trouble: it is
    refused with the reason (to error/ with a sidecar), and the settler goes on with the others."""
    def judge_failing_on_bad_sector(fd: int, size: int) -> Judgement:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("bad-sector.pdf"):
            raise OSError(errno.EIO, "Input/output error")
        return judge(fd, size)

    bad, good = write_pdf(tmp_path / "bad-sector.pdf"), write_pdf(tmp_path / "good.pdf")
    monkeypatch.setattr(settle, "judge", judge_failing_on_bad_sector)
    settler = settle.Settler(tmp_path, settle_seconds=0.0)
    settler.track(bad)
    settler.track(good)
    seen: dict[str, list] = {"ready": [], "refused": []}

    def both_decided() -> bool:
        ready, refused = settler.poll()
        seen["ready"] += ready
        seen["refused"] += refused
        return len(seen["ready"]) + len(seen["refused"]) == 2

    wait_for(both_decided, timeout=2, message="both files decided")
    assert [r.path for r in seen["ready"]] == [good]
    assert [(r.path, r.code) for r in seen["refused"]] == [(bad, "unreadable")]
    assert "Input/output error" in seen["refused"][0].refusal.detail
