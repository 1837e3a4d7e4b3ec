"""Bounded requests: an overall deadline per exchange, a size cap on answers, downloads kept only
when whole. Against misbehaving servers on a loopback socket (trickling, endless, lying about
lengths) and against the sandbox's body faults, with the client in-process and the agent as a
real process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from typing import Callable

import pytest

from agent.base.errors import TransientError
from agent.config import QontoConfig
from agent.qonto.client import QontoClient
from agent.qonto.transport import RetryPolicy
from support import REPO, agent_command, agent_env, make_config, run_agent, wait_for, write_config, write_pdf

ORG = json.dumps({"organization": {"id": "org-1", "slug": "acme", "legal_name": "ACME SAS"}}).encode()
HUGE = 400 * 1024 * 1024


class Misbehaving:
    """A loopback HTTP server that reads each request's head and hands the socket to `answer`."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            self.requests += 1
            try:
                self.answer(conn)
            except OSError:
                pass  # the client hung up: that is what a bounded client does

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def trickle(answer: bytes, seconds: float = 1.0) -> Callable[[socket.socket], None]:
    """The whole answer, status line and headers included, one byte every `seconds`."""
    def send(conn: socket.socket) -> None:
        for byte in answer:
            conn.sendall(bytes([byte]))
            time.sleep(seconds)
    return send


def json_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def huge_list(announce: bool) -> Callable[[socket.socket], None]:
    """A 400 MB list answer, announced by Content-Length or streamed chunked without one."""
    item = b'{"id": "inv-xxxxxxxxxxxxxxxx", "status": "paid", "supplier_name": "' + b"x" * 400 + b'"},'
    block = item * (65536 // len(item))

    def send(conn: socket.socket) -> None:
        length = b"Content-Length: %d\r\n" % HUGE if announce else b"Transfer-Encoding: chunked\r\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + length + b"\r\n")
        sent = 0
        while sent < HUGE:
            conn.sendall(block if announce else b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
    return send


@pytest.fixture
def misbehaving():
    servers: list[Misbehaving] = []

    def start(answer: Callable[[socket.socket], None]) -> Misbehaving:
        servers.append(Misbehaving(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client_for(url: str, timeout: float = 0.5) -> QontoClient:
    config = QontoConfig(base_url=url, login="acme-1234", secret_key="sk-test", timeout_seconds=timeout)
    return QontoClient(config, retry=RetryPolicy(total=3, backoff_factor=0.01, backoff_max=0.01, backoff_jitter=0.0))


# --- the client against misbehaving servers ------------------------------------------------------

@pytest.mark.parametrize("answer", [
    trickle(json_answer(ORG), 0.2),  # status line and headers trickle too
    lambda conn: (conn.sendall(json_answer(ORG)[:-len(ORG)]), trickle(ORG, 0.2)(conn)),  # only the body trickles
], ids=["head", "body"])
def test_a_trickling_server_meets_the_deadline_once_and_is_not_retried(misbehaving, answer):
    server = misbehaving(answer)
    with client_for(server.url, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"Qonto did not finish answering within 1.5 s .*tried again later"):
            client.get_organization()
        elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 3.0  # 3 x the 0.5 s per-read timeout, which never tripped
    assert server.requests == 1


@pytest.mark.parametrize("announce", [True, False], ids=["announced", "streamed"])
def test_an_answer_over_the_cap_is_refused_without_reading_it_all(misbehaving, announce):
    server = misbehaving(huge_list(announce))
    with client_for(server.url, timeout=5) as client:
        with pytest.raises(TransientError, match=r"Qonto sent an answer larger than 50 MB: it was refused"):
            next(client.iter_pages())
    assert server.requests == 1


def download_answer(body: bytes, length: int | None) -> Callable[[socket.socket], None]:
    def send(conn: socket.socket) -> None:
        header = b"Content-Length: %d\r\n" % length if length is not None else b"Connection: close\r\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\n" + header + b"\r\n" + body)
    return send


def endless(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        conn.sendall(b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")


FILE = b"%PDF-1.7 " + os.urandom(40_000 - 9)


@pytest.mark.parametrize("answer, said", [
    (download_answer(FILE[:20_000], 20_000), "announced 20000 bytes for an attachment of 40000 bytes"),
    (download_answer(FILE[:20_000], None), "ended after 20000 of 40000 bytes"),
    (download_answer(FILE + b"more", 40_004), "announced 40004 bytes for an attachment of 40000 bytes"),
    (download_answer(FILE + b"more" * 1000, None), "went on past 40000 bytes"),
    (endless, "went on past 40000 bytes"),
], ids=["short", "short-unannounced", "long", "long-unannounced", "endless"])
def test_a_download_of_another_length_than_file_size_is_refused(misbehaving, tmp_path, answer, said):
    server = misbehaving(answer)
    with client_for(server.url, timeout=5) as client:
        with pytest.raises(TransientError, match=said):
            client.download(f"{server.url}/bucket/att-1?X-Amz-Signature=abc", tmp_path / "att.part", size=len(FILE))


def test_a_download_of_the_announced_length_is_kept(misbehaving, tmp_path):
    server = misbehaving(download_answer(FILE, len(FILE)))
    with client_for(server.url, timeout=5) as client:
        sha = client.download(f"{server.url}/bucket/att-1", tmp_path / "att.part", size=len(FILE))
    assert sha == hashlib.sha256(FILE).hexdigest() and (tmp_path / "att.part").read_bytes() == FILE


# --- the agent as a real process -----------------------------------------------------------------

def test_check_against_a_trickling_server_ends_within_30_s_with_a_sentence(tmp_path, misbehaving):
    server = misbehaving(trickle(json_answer(ORG)))
    config = write_config(tmp_path, server.url, qonto={"timeout_seconds": 3})
    started = time.monotonic()
    result = run_agent(config, "check", timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < 30, result.stderr
    assert result.returncode == 3, result.stderr
    assert "Qonto did not finish answering within 9 s" in result.stderr
    assert "Traceback" not in result.stderr
    assert server.requests == 1  # not retried: a server that slow is tried again later


@pytest.mark.parametrize("announce", [True, False], ids=["announced", "streamed"])
def test_a_400_mb_list_answer_is_refused_with_a_sentence_in_little_memory(tmp_path, misbehaving, announce):
    server = misbehaving(huge_list(announce))
    config = write_config(tmp_path, server.url, qonto={"timeout_seconds": 10})
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(agent_command(config, "sync"), stdout=log, stderr=subprocess.STDOUT,
                                env=agent_env(), cwd=REPO)
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, in kB on Linux
        finally:
            proc.returncode = 0  # reaped above: Popen must not wait for it again
    output = (tmp_path / "agent.log").read_text()
    assert os.waitstatus_to_exitcode(status) == 3, output
    assert "Qonto sent an answer larger than 50 MB: it was refused" in output
    assert "Traceback" not in output
    assert usage.ru_maxrss < 200 * 1024, f"peak RSS {usage.ru_maxrss} kB"


def test_run_keeps_working_on_other_files_while_qonto_trickles(tmp_path, sandbox, agents):
    config = make_config(tmp_path, sandbox, qonto={"timeout_seconds": 1.5})  # a byte a second never trips it
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: "synced 0 invoices" in agent.log(), message="the first sync", on_fail=agent.log)
    sandbox.faults.trickle_rate = 1.0
    write_pdf(inbox / "slow.pdf")
    wait_for(lambda: sandbox.count(method="POST", path_prefix="/v2/supplier_invoices/bulk"),
             message="the trickled upload", on_fail=agent.log)
    sandbox.faults.trickle_rate = 0.0
    write_pdf(inbox / "other.pdf")
    wait_for(lambda: (inbox / "done" / "other.pdf").exists() and (inbox / "done" / "slow.pdf").exists(),
             timeout=30, message="both files filed in done/", on_fail=agent.log)
    log = agent.log()
    assert "Qonto did not finish answering within 4.5 s" in log and "they stay in the inbox and will be retried" in log
    assert sandbox.invoice_count() == 2  # the trickled attempt's invoice, adopted by its key, and the other
    assert agent.stop() == 0


# --- short, long and endless storage bodies in a real sync ---------------------------------------

@pytest.mark.parametrize("fault", ["short_body_rate", "long_body_rate", "endless_body_rate"])
def test_a_bad_download_is_never_committed_and_the_next_good_sync_completes(tmp_path, sandbox, fault):
    sandbox.seed(6, without_attachment=0.0)
    config = make_config(tmp_path, sandbox)
    outbox = tmp_path / "outbox"
    setattr(sandbox.faults, fault, 1.0)
    bad = run_agent(config, "sync", timeout=60)
    assert bad.returncode == 3, bad.stderr
    assert "nothing was kept; it will be tried again later" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not list(outbox.glob("*.pdf")) and not list(outbox.glob("*.json"))
    assert not [p for p in outbox.iterdir() if p.name.startswith(".")]  # no temporary left behind
    status = json.loads(run_agent(config, "status", "--json").stdout)
    assert status["cursor"] is None

    setattr(sandbox.faults, fault, 0.0)
    good = run_agent(config, "sync", timeout=60)
    assert good.returncode == 0, good.stderr
    files = {p.name: p.read_bytes() for p in outbox.glob("*.pdf")}
    assert len(files) == 6
    hashes = {hashlib.sha256(data).hexdigest() for data in files.values()}
    assert hashes == {sandbox.attachment_sha256(inv["attachment_id"]) for inv in sandbox.invoices()}
    assert json.loads(run_agent(config, "status", "--json").stdout)["cursor"]
