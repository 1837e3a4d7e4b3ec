"""Bulk errors the way Qonto's published material shows them, through the agent as a real process.

Per-item errors in either shape (`source` an object or a list, `detail` or `details`) put the
refused file in error/ with Qonto's words. Whole-request refusals (400 `limit_reached`,
`bad_request` "Request is too large", `required` naming an item, a proxy's 413) split the batch
or file the item named: every file ends in done/ or error/, none is retried forever.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import requests
from support import make_config, pdf_bytes, run_agent, sidecar_of, write_pdf

from agent.sandbox.multipart import group_items, parse_multipart
from agent.sandbox.server import Sandbox

BULK = "/v2/supplier_invoices/bulk"


def filed(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".error.json")) if folder.is_dir() else []


def sidecar(inbox: Path, name: str) -> dict:
    return sidecar_of(inbox / "error", name)


def bulk_statuses(sandbox: Sandbox) -> list[int | None]:
    return [r.status for r in sandbox.request_log() if r.path == BULK]


@pytest.mark.parametrize("source_list, details", [(False, False), (True, False), (False, True), (True, True)])
def test_a_refused_file_goes_to_error_with_qontos_words_in_either_shape(tmp_path, source_list, details):
    reasons = {"locked.pdf": "The file is password protected", "blank.pdf": "The file has no content"}
    with Sandbox(reject=lambda name, data: reasons.get(name), error_source_list=source_list,
                 error_details=details) as sandbox:
        config = make_config(tmp_path, sandbox)
        inbox = tmp_path / "inbox"
        for name in ("a.pdf", "locked.pdf", "b.pdf", "blank.pdf"):
            write_pdf(inbox / name)
        result = run_agent(config, "upload", timeout=60)
        assert result.returncode == 1, result.stderr  # two files failed for good
        assert filed(inbox / "done") == ["a.pdf", "b.pdf"], result.stderr
        assert filed(inbox / "error") == ["blank.pdf", "locked.pdf"], result.stderr
        for name, reason in reasons.items():
            assert sidecar(inbox, name)["errors"] == [{"code": "invalid", "detail": reason}]
        assert bulk_statuses(sandbox) == [200] and sandbox.invoice_count() == 2


def test_more_items_than_qonto_takes_splits_the_batch_and_loses_nothing(tmp_path):
    with Sandbox(max_items=3) as sandbox:  # Qonto answers 400 limit_reached above its limit
        config = make_config(tmp_path, sandbox)
        inbox = tmp_path / "inbox"
        for i in range(8):
            write_pdf(inbox / f"f{i}.pdf")
        result = run_agent(config, "upload", timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(filed(inbox / "done")) == 8 and filed(inbox / "error") == []
        statuses = bulk_statuses(sandbox)
        assert 400 in statuses and statuses.count(200) >= 3 and len(statuses) <= 2 * 8, statuses
        assert sandbox.invoice_count() == 8


@pytest.mark.parametrize("proxy", [False, True], ids=["qonto-400", "proxy-413"])
def test_a_request_too_large_is_split_and_a_file_too_large_alone_goes_to_error(tmp_path, proxy):
    size = 60_000
    with Sandbox(max_request_bytes=int(size * 2.5), too_large_413=proxy) as sandbox:
        config = make_config(tmp_path, sandbox)
        inbox = tmp_path / "inbox"
        for i in range(4):
            write_pdf(inbox / f"f{i}.pdf", size=size)
        write_pdf(inbox / "huge.pdf", size=size * 3)
        result = run_agent(config, "upload", timeout=60)
        assert result.returncode == 1, result.stderr
        assert filed(inbox / "done") == [f"f{i}.pdf" for i in range(4)] and filed(inbox / "error") == ["huge.pdf"]
        [error] = sidecar(inbox, "huge.pdf")["errors"]
        expected = ("request_entity_too_large", "The request is larger than 15 MB") if proxy else (
            "bad_request", "Request is too large")
        assert (error["code"], error["detail"]) == expected
        assert len(bulk_statuses(sandbox)) <= 2 * 5 and sandbox.invoice_count() == 4


class _RefusingProxy(ThreadingHTTPServer):
    """Forwards to the sandbox, but refuses a bulk request holding `nofile.pdf` as a whole, naming it
    by its position, as Qonto's reference shows `required` with a pointer."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _RefusingHandler)
        self.upstream = upstream
        self.refusals = 0


class _RefusingHandler(BaseHTTPRequestHandler):
    server: _RefusingProxy

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._forward(b"")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        items, _ = group_items(parse_multipart(self.headers["Content-Type"], body))
        names = [getattr(item.get("file"), "filename", None) for item in items]
        if "nofile.pdf" in names:
            self.server.refusals += 1
            error = {"code": "required", "detail": "File is required",
                     "source": [{"pointer": f"/supplier_invoices/{names.index('nofile.pdf')}/file"}]}
            return self._answer(400, json.dumps({"errors": [error]}).encode())
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(self.command, self.server.upstream + self.path, data=body or None, headers=headers)
        self._answer(answer.status_code, answer.content)

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_proxy() -> Iterator[tuple[Sandbox, _RefusingProxy]]:
    with Sandbox() as sandbox:
        proxy = _RefusingProxy(sandbox.base_url)
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield sandbox, proxy
        finally:
            proxy.shutdown()
            proxy.server_close()


def test_a_whole_request_refusal_naming_an_item_files_that_item_and_sends_the_rest(tmp_path, refusing_proxy):
    sandbox, proxy = refusing_proxy
    config = make_config(tmp_path, type("Root", (), {"base_url": f"http://127.0.0.1:{proxy.server_port}"}))
    inbox = tmp_path / "inbox"
    for name in ("a.pdf", "b.pdf", "nofile.pdf", "c.pdf"):
        (inbox / name).write_bytes(pdf_bytes(name))
    result = run_agent(config, "upload", timeout=60)
    assert result.returncode == 1, result.stderr
    assert filed(inbox / "done") == ["a.pdf", "b.pdf", "c.pdf"] and filed(inbox / "error") == ["nofile.pdf"]
    assert sidecar(inbox, "nofile.pdf")["errors"] == [{"code": "required", "detail": "File is required"}]
    assert proxy.refusals == 1 and sandbox.invoice_count() == 3
