"""The outbox mirror, in-process: a real sandbox over HTTP, the real client, a real ledger.

`assert_outbox_complete` is shared with test_mirror_e2e.py: it is the acceptance check of
issue 4 (one JSON per invoice, attachment bytes matching the sandbox, the CSV, nothing else).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from agent import config as configuration
from agent import cli
from agent.outbox import sync as mirror
from agent.base.errors import CredentialsError, TransientError
from agent.outbox.folder import Outbox
from agent.outbox.names import attachment_ext, invoice_stem, safe_component
from agent.outbox.sync import SyncReport
from agent.qonto.client import QontoClient
from agent.qonto.listing import Page
from agent.qonto.transport import RetryPolicy
from agent.sandbox.server import Sandbox
from agent.state.ledger import Ledger
from support import (assert_outbox_complete, assert_safe_name, make_config, read_csv, settle, sha256,
                     storage_downloads)

INVOICE_ID = "7f1c0a52-3b7e-4f7e-9a4e-1d2c3b4a5f60"
HOSTILE_NAMES = [
    "../../x.pdf", "/etc/passwd", "CON.pdf", "con", "NUL", "a" * 300 + ".pdf", "bad\x00\x1f\nname\x7f.pdf",
    "", "..", ".", ".hidden.pdf", "..pdf", "C:\\Windows\\system32\\evil.pdf", "x/..\\..\\y.pdf",
    "日本語の請求書" * 30 + ".pdf", "\u202egpj.exe", "tab\tand  spaces .pdf", "trailing dots...",
    "reçu: n°12?.pdf", "<>:\"|?*.pdf", "é" * 200,
]



# --- fixtures -----------------------------------------------------------------------------------

@dataclass
class Env:
    """One agent's pieces, as `qonto-agent sync` wires them, on a tmp_path."""

    sandbox: Sandbox
    config: configuration.Config
    client: QontoClient
    ledger: Ledger
    reports: list[SyncReport] = field(default_factory=list)

    @property
    def outbox(self) -> Path:
        return self.config.outbox.path

    def sync(self, **kwargs: Any) -> SyncReport:
        report = mirror.sync(self.config, self.client, self.ledger, **kwargs)
        self.reports.append(report)
        return report

    def cursor(self) -> str | None:
        return self.ledger.cursor()

    def files(self) -> dict[str, tuple[int, bytes]]:
        """Name → (mtime in ns, content) of everything in the outbox."""
        return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in self.outbox.iterdir()}


def fast_retry(total: int = 10):
    return RetryPolicy(total=total, backoff_factor=0.01, backoff_max=0.05, backoff_jitter=0.0, retry_after_max=1)


@pytest.fixture
def make_env(tmp_path: Path, sandbox: Sandbox):
    made: list[Env] = []

    def make(retries: int = 10, state: str = "state/ledger.sqlite", **outbox: Any) -> Env:
        path = make_config(tmp_path, sandbox, outbox={"path": "outbox", **outbox}, state={"path": state})
        config = configuration.load(path)
        env = Env(sandbox, config, QontoClient(config.qonto, retry=fast_retry(retries)), Ledger(config.state.path))
        made.append(env)
        return env

    yield make
    for env in made:
        env.client.close()
        env.ledger.close()


@pytest.fixture
def env(make_env) -> Env:
    return make_env()


# --- names --------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_name", HOSTILE_NAMES)
def test_stem_of_a_hostile_file_name_is_safe(file_name: str, tmp_path: Path) -> None:
    stem = invoice_stem({"id": INVOICE_ID, "created_at": "2026-03-14T10:00:00.123Z", "file_name": file_name})
    assert_safe_name(stem)
    assert stem.startswith("2026-03-14_") and stem.endswith(f"_{INVOICE_ID}")
    assert len(stem.encode("utf-8")) <= 150
    outbox = Outbox(tmp_path / "outbox")
    for name in (f"{stem}.json", f"{stem}.pdf"):
        assert outbox.path(name).parent == outbox.root
        outbox.write_bytes(name, b"x")
    assert sorted(os.listdir(tmp_path)) == ["outbox"]


def test_stem_is_readable_stable_and_unique() -> None:
    invoice = {"id": INVOICE_ID, "created_at": "2026-03-14T10:00:00Z", "file_name": "Facture EDF mars.pdf",
               "status": "to_review", "updated_at": "2026-03-14T10:00:00Z"}
    stem = invoice_stem(invoice)
    assert stem == f"2026-03-14_Facture-EDF-mars_{INVOICE_ID}"
    analysed = {**invoice, "status": "paid", "issue_date": "2026-02-01", "updated_at": "2026-04-01T00:00:00Z"}
    assert invoice_stem(analysed) == stem
    other = {**invoice, "id": INVOICE_ID.replace("7f", "8f")}
    assert invoice_stem(other) != stem


def test_stem_cuts_on_character_boundaries() -> None:
    stem = invoice_stem({"id": INVOICE_ID, "created_at": "2026-03-14T00:00:00Z", "file_name": "日" * 100 + ".pdf"})
    assert len(stem.encode("utf-8")) <= 150
    assert stem.encode("utf-8").decode("utf-8") == stem and "日" * 33 in stem


@pytest.mark.parametrize("invoice_id", ["../../evil", "a/b", "", "x" * 500, "CON", "..", "ids with spaces"])
def test_stem_of_a_hostile_id_is_safe_and_distinct(invoice_id: str) -> None:
    stem = invoice_stem({"id": invoice_id, "file_name": "CON.pdf"})
    assert_safe_name(stem)
    assert len(stem.encode()) <= 150
    assert stem != invoice_stem({"id": invoice_id + "2", "file_name": "CON.pdf"})


def test_safe_component_keeps_letters_and_drops_everything_else() -> None:
    assert safe_component("  ../Reçu n°12 (copie).PDF ") == "Reçu-n-12-copie.PDF"
    assert safe_component("e\u0301t\u00e9") == "été"  # NFC: one code point per letter
    assert safe_component("\x00\x01") == ""


@pytest.mark.parametrize("attachment, ext", [
    ({"file_content_type": "application/pdf", "file_name": "x.exe"}, "pdf"),
    ({"file_content_type": "image/png"}, "png"),
    ({"file_content_type": "image/jpeg; charset=binary"}, "jpg"),
    ({"file_content_type": "application/x-weird", "file_name": "scan.TIFF"}, "tiff"),
    ({"file_name": "../../etc/passwd"}, "pdf"),
    ({"file_name": "meta.json"}, "bin"),  # would collide with <stem>.json
    ({"file_name": "run.EXE", "file_content_type": "application/octet-stream"}, "bin"),
    ({"file_name": "x.a/b"}, "pdf"),
    ({"file_name": "scan.JPEG"}, "jpeg"),
    ({"file_name": "noext"}, "pdf"),
    ({}, "pdf"),
])
def test_attachment_ext(attachment: dict, ext: str) -> None:
    assert attachment_ext(attachment) == ext


@pytest.mark.parametrize("name", ["../x.pdf", "a/b.pdf", ".hidden", "", "..", "/etc/passwd"])
def test_outbox_refuses_names_outside_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path / "outbox").write_bytes(name, b"x")
    assert sorted(os.listdir(tmp_path)) == ["outbox"] and not os.listdir(tmp_path / "outbox")


# --- syncing ------------------------------------------------------------------------------------

def test_first_sync_mirrors_every_invoice(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(250, without_attachment=0.1)
    seen: list[tuple[int, int]] = []
    report = env.sync(progress=lambda done, total: seen.append((done, total)))
    with_attachment = sum(1 for invoice in sandbox.invoices() if invoice["attachment_id"])
    assert 200 <= with_attachment < 250
    assert (report.listed, report.written, report.downloaded, report.failed) == (250, 250, with_attachment, 0)
    assert report.complete and cli.VERDICT_EXIT[report.verdict] == 0
    assert_outbox_complete(env.outbox, sandbox)
    assert env.cursor() == report.cursor and env.ledger.last_sync_at()
    assert env.ledger.size("mirror") == 250
    assert seen[-1] == (250, 250) and len(seen) == 250
    assert all(record.authorization is False for record in sandbox.request_log() if record.path.startswith("/_storage/"))


def test_second_sync_without_changes_lists_once_and_writes_nothing(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(250)
    env.sync()
    before = env.files()
    sandbox.reset_log()
    report = env.sync()
    assert sandbox.count(method="GET", path_prefix="/v2/supplier_invoices") == 1
    assert sandbox.count(path_prefix="/v2/attachments") == 0 and sandbox.count(path_prefix="/_storage") == 0
    assert (report.written, report.downloaded, report.failed) == (0, 0, 0) and report.complete
    assert env.files() == before


def test_changed_invoices_rewrite_only_their_json_and_csv_rows(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(250)
    env.sync()
    docs = assert_outbox_complete(env.outbox, sandbox)
    before, rows_before = env.files(), {row["id"]: row for row in read_csv(env.outbox)}
    changed = [invoice["id"] for invoice in sandbox.invoices() if invoice["status"] != "paid"][:10]
    for invoice_id in changed:
        sandbox.update_invoice(invoice_id, status="paid")
    settle(sandbox)
    sandbox.reset_log()
    report = env.sync()
    assert (report.written, report.downloaded, report.unchanged, report.failed) == (10, 0, 0, 0)
    assert sandbox.count(path_prefix="/v2/attachments") == 0 and sandbox.count(path_prefix="/_storage") == 0
    after = env.files()
    rewritten = {name for name in after if after[name] != before.get(name)}
    changed_jsons = {f"{env.ledger.mirror_entry(i).stem}.json" for i in changed}
    assert rewritten == changed_jsons | {"invoices.csv"}
    rows_after = {row["id"]: row for row in read_csv(env.outbox)}
    assert {i for i in rows_after if rows_after[i] != rows_before[i]} == set(changed)
    assert all(rows_after[i]["status"] == "paid" for i in changed)
    new_docs = assert_outbox_complete(env.outbox, sandbox)
    for invoice_id in changed:  # the attachment was kept, not fetched again: same object, same hash
        assert new_docs[invoice_id]["attachment"] == docs[invoice_id]["attachment"]


def test_a_changed_attachment_is_downloaded_again(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(20, without_attachment=0.0)
    env.sync()
    first, second = sandbox.invoices()[:2]
    sandbox.update_invoice(first["id"], attachment_id=second["attachment_id"])
    settle(sandbox)
    sandbox.reset_log()
    report = env.sync()
    assert (report.written, report.downloaded) == (1, 1)
    assert storage_downloads(sandbox) == {second["attachment_id"]: 1}
    assert_outbox_complete(env.outbox, sandbox)


def test_short_lived_links_and_a_slow_sandbox(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(60, without_attachment=0.0)
    sandbox.url_ttl_seconds = 1.0
    sandbox.faults.latency_seconds = 0.05
    report = env.sync()
    assert report.complete and report.downloaded == 60
    assert_outbox_complete(env.outbox, sandbox)
    storage = [r for r in sandbox.request_log() if r.path.startswith("/_storage/")]
    assert storage and not any(r.authorization for r in storage)


def test_expired_links_are_refreshed(env: Env, sandbox: Sandbox) -> None:
    """Every attachment's first link is already expired when used: each is fetched once more."""
    sandbox.seed(30, without_attachment=0.0)
    real_get = env.client.get_attachment
    served: set[str] = set()
    lock = threading.Lock()

    def first_link_expired(attachment_id: str) -> dict:
        with lock:  # the TTL is global to the sandbox: one attachment request at a time
            sandbox.url_ttl_seconds = 1800.0 if attachment_id in served else -60.0
            served.add(attachment_id)
            return real_get(attachment_id)

    env.client.get_attachment = first_link_expired  # type: ignore[method-assign]
    report = env.sync()
    assert report.complete and report.downloaded == 30
    assert_outbox_complete(env.outbox, sandbox)
    storage = [r for r in sandbox.request_log() if r.path.startswith("/_storage/")]
    assert sum(r.status == 403 for r in storage) == 30 and sum(r.status == 200 for r in storage) == 30
    assert not any(r.authorization for r in storage)


def test_readers_never_see_a_partial_file(env: Env, sandbox: Sandbox) -> None:
    """A reader polling during a sync finds only complete files, and every JSON's file beside it."""
    sandbox.seed(150)
    sandbox.faults.latency_seconds = 0.005
    expected = {i["attachment_id"]: sandbox.attachment_sha256(i["attachment_id"])
                for i in sandbox.invoices() if i["attachment_id"]}
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for path in list(env.outbox.glob("*.json")):
                doc = json.loads(path.read_bytes())  # a torn JSON would raise here
                if doc["file"] and not (env.outbox / doc["file"]).exists():
                    problems.append(f"{path.name} points to a missing file")
                if doc["file"] and sha256(env.outbox / doc["file"]) != expected[doc["attachment"]["id"]]:
                    problems.append(f"{doc['file']} is not complete")
            if (env.outbox / "invoices.csv").exists():
                read_csv(env.outbox)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        env.sync()
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert_outbox_complete(env.outbox, sandbox)


def assert_cursor_covers_written(env: Env, sandbox: Sandbox) -> None:
    """The cursor never passes an invoice whose JSON (and attachment) is not in the outbox."""
    cursor = env.cursor()
    if cursor is None:
        return
    limit = configuration.parse_timestamp(cursor, "cursor")
    for invoice in sandbox.invoices():
        if configuration.parse_timestamp(invoice["updated_at"], "updated_at") > limit:
            continue
        entry = env.ledger.mirror_entry(invoice["id"])
        assert entry and entry.updated_at == invoice["updated_at"], f"cursor {cursor} passed {invoice['id']}"
        assert (env.outbox / f"{entry.stem}.json").exists()
        if invoice["attachment_id"]:
            assert sha256(env.outbox / entry.file) == sandbox.attachment_sha256(invoice["attachment_id"])


def test_thirty_percent_of_requests_failing(make_env: Callable[..., Env], sandbox: Sandbox) -> None:
    """One retry only, so some invoices fail for real: the sync is re-run until it reports success."""
    env = make_env(retries=1)
    sandbox.seed(120)
    sandbox.faults.error_rate = sandbox.faults.rate_limit_rate = sandbox.faults.drop_rate = 0.115  # ~30% in all
    sandbox.faults.retry_after_seconds = 0.01
    outcomes = []
    for _ in range(25):
        try:
            report = env.sync()
        except TransientError as exc:  # the listing itself failed: nothing can be said about the window
            outcomes.append(str(exc))
            assert env.cursor() is None
            continue
        outcomes.append(report)
        assert_cursor_covers_written(env, sandbox)
        if report.failed:
            assert not report.complete and report.cursor is None and env.cursor() is None
            assert cli.VERDICT_EXIT[report.verdict] == 3
        if report.complete:
            break
    assert isinstance(outcomes[-1], SyncReport) and outcomes[-1].complete, outcomes
    failed = sum(r.failed for r in outcomes if isinstance(r, SyncReport))
    faulty = sum(r.status in (None, 429, 500) for r in sandbox.request_log() if r.path.startswith("/v2/"))
    assert faulty > 20, "the faults were not injected"
    sandbox.faults.error_rate = sandbox.faults.rate_limit_rate = sandbox.faults.drop_rate = 0.0
    assert_outbox_complete(env.outbox, sandbox)
    assert env.ledger.size("mirror") == 120
    assert failed > 0, "no invoice failed: the partial-failure path was not exercised"


def test_one_failing_invoice_keeps_the_cursor_but_not_the_others(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(40, without_attachment=0.0)
    broken = {invoice["attachment_id"] for invoice in sandbox.invoices()[:3]}
    real_download = env.client.download_attachment

    def flaky(attachment_id: str, dest: Path, **kw: Any):
        if attachment_id in broken:
            raise TransientError("no answer from 127.0.0.1 (ReadTimeout): it will be tried again later")
        return real_download(attachment_id, dest, **kw)

    env.client.download_attachment = flaky  # type: ignore[method-assign]
    report = env.sync()
    assert (report.failed, report.written, report.complete, cli.VERDICT_EXIT[report.verdict]) == (3, 37, False, 3)
    assert env.cursor() is None and report.cursor is None
    assert len(read_csv(env.outbox)) == 37
    assert not [n for n in os.listdir(env.outbox) if n.startswith(".")]

    env.client.download_attachment = real_download  # type: ignore[method-assign]
    sandbox.reset_log()
    report = env.sync()
    assert report.complete and (report.written, report.downloaded) == (3, 3)
    assert set(storage_downloads(sandbox)) == broken
    assert_outbox_complete(env.outbox, sandbox)


def test_refused_credentials_abort_the_sync(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(30, without_attachment=0.0)
    calls = []

    def refused(attachment_id: str) -> dict:
        calls.append(attachment_id)
        raise CredentialsError("the secret key was refused (401): check `[qonto] login`", status=401)

    env.client.get_attachment = refused  # type: ignore[method-assign]
    with pytest.raises(CredentialsError):
        env.sync()
    assert env.cursor() is None
    assert len(calls) <= env.config.outbox.concurrency + 1, "kept calling after credentials were refused"
    assert not [n for n in os.listdir(env.outbox) if n.startswith(".")]


def test_source_file_links_an_uploaded_invoice(env: Env, sandbox: Sandbox) -> None:
    ids = sandbox.seed(5)
    env.ledger.begin_attempt("ab" * 32, "key", "Scan 2026-03-14 (1).pdf", 1234, dropped_at=1773480000.5)
    env.ledger.record_uploaded("ab" * 32, ids[2])
    env.sync()
    docs = assert_outbox_complete(env.outbox, sandbox)
    assert docs[ids[2]]["source_file"] == {"name": "Scan 2026-03-14 (1).pdf", "dropped_at": "2026-03-14T09:20:00Z"}
    assert all(docs[i]["source_file"] is None for i in ids if i != ids[2])


def test_hostile_file_names_stay_inside_the_outbox(env: Env, sandbox: Sandbox, tmp_path: Path) -> None:
    ids = sandbox.seed(len(HOSTILE_NAMES))
    for invoice_id, name in zip(ids, HOSTILE_NAMES):
        sandbox.update_invoice(invoice_id, file_name=name)
    settle(sandbox)
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(env.outbox)}
    report = env.sync()
    assert report.complete and report.written == len(HOSTILE_NAMES)
    assert_outbox_complete(env.outbox, sandbox)
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(env.outbox)}
    assert {p.relative_to(tmp_path).parts[0] for p in after - before} <= {"state"}
    assert all(p.parent == env.outbox for p in env.outbox.rglob("*"))


def test_symlinks_planted_in_the_outbox_are_replaced_not_followed(env: Env, sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.seed(3, without_attachment=0.0)
    env.sync()
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = [env.ledger.mirror_entry(i["id"]) for i in sandbox.invoices()]
    for name in (entries[0].file, f"{entries[1].stem}.json"):
        (outside / name).write_bytes(b"not yours")
        (env.outbox / name).unlink()
        (env.outbox / name).symlink_to(outside / name)
    report = env.sync(full=True)
    assert report.complete and report.written == 2
    assert all((outside / name).read_bytes() == b"not yours" for name in os.listdir(outside))
    assert not any(p.is_symlink() for p in env.outbox.iterdir())
    assert_outbox_complete(env.outbox, sandbox)


def test_an_interrupted_sync_resumes_without_downloading_again(make_env: Callable[..., Env], sandbox: Sandbox) -> None:
    """What a kill -9 between an attachment's rename and its JSON leaves: files, no JSON, no ledger."""
    sandbox.seed(60)
    first = make_env()
    first.sync()
    for path in list(first.outbox.glob("*.json")) + [first.outbox / "invoices.csv"]:
        path.unlink()
    (first.outbox / ".2026-01-01_x_1.pdf.tmp-0123456789ab").write_bytes(b"%PDF-half")
    (first.outbox / ".keep-me").write_bytes(b"not ours")
    fresh = make_env(state="state/other-ledger.sqlite")
    sandbox.reset_log()
    report = fresh.sync()
    assert report.complete and report.written == 60 and report.downloaded == 0
    assert sandbox.count(path_prefix="/_storage") == 0
    (fresh.outbox / ".keep-me").unlink()
    assert_outbox_complete(fresh.outbox, sandbox)


def test_a_truncated_attachment_file_is_downloaded_again(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(10, without_attachment=0.0)
    env.sync()
    victim = sandbox.invoices()[4]
    entry = env.ledger.mirror_entry(victim["id"])
    (env.outbox / entry.file).write_bytes(b"%PDF-1.4 truncated")
    sandbox.update_invoice(victim["id"], status="paid")
    settle(sandbox)
    sandbox.reset_log()
    report = env.sync()
    assert (report.written, report.downloaded) == (1, 1)
    assert storage_downloads(sandbox) == {victim["attachment_id"]: 1}
    assert_outbox_complete(env.outbox, sandbox)


def test_an_invoice_updated_while_the_list_is_paged_is_not_missed(env: Env, sandbox: Sandbox) -> None:
    """Offset paging shifts when an invoice leaves the window between two pages: the list is read again."""
    sandbox.seed(250)
    first = min(sandbox.invoices(), key=lambda i: i["updated_at"])
    real_pages = env.client.iter_pages

    def pages_with_an_update(**kw: Any) -> Iterator[Page]:
        for number, listed in enumerate(real_pages(**kw)):
            yield listed
            if number == 0:  # after the first page was handled, before the second is asked for
                sandbox.update_invoice(first["id"], status="paid")  # leaves the window

    env.client.iter_pages = pages_with_an_update  # type: ignore[method-assign]
    report = env.sync()
    assert report.complete and report.listed == 250 and env.ledger.size("mirror") == 250
    assert sandbox.count(path_prefix="/v2/supplier_invoices") > 3  # the window was read again
    env.client.iter_pages = real_pages  # type: ignore[method-assign]
    settle(sandbox)
    report = env.sync()
    assert report.written == 1
    assert_outbox_complete(env.outbox, sandbox)


def test_window_cursor_overlap_since_and_full(make_env: Callable[..., Env], sandbox: Sandbox) -> None:
    env = make_env(since="2026-01-01T00:00:00Z")
    sandbox.seed(5)

    def last_window() -> tuple[str | None, str | None]:
        query = [r for r in sandbox.request_log() if r.path == "/v2/supplier_invoices"][-1].query
        return query.get("filter[updated_at_from]", [None])[0], query.get("filter[updated_at_to]", [None])[0]

    report = env.sync()
    assert last_window() == ("2026-01-01T00:00:00.000Z", report.cursor)
    cursor = configuration.parse_timestamp(report.cursor, "cursor")
    report = env.sync()
    assert last_window()[0] == mirror.rfc3339(cursor - mirror.OVERLAP)
    assert last_window()[1] == report.cursor and report.cursor >= env.reports[0].cursor
    report = env.sync(full=True)
    assert last_window()[0] == "2026-01-01T00:00:00.000Z" and report.unchanged == 5 and report.written == 0


def test_first_sync_without_since_lists_everything(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(3)
    env.sync()
    query = [r for r in sandbox.request_log() if r.path == "/v2/supplier_invoices"][0].query
    assert "filter[updated_at_from]" not in query and "filter[updated_at_to]" in query
    assert query["per_page"] == ["100"]


def test_cancel_stops_early_and_keeps_the_cursor(env: Env, sandbox: Sandbox) -> None:
    sandbox.seed(100)
    cancel = threading.Event()
    report = env.sync(progress=lambda done, total: done >= 10 and cancel.set(), cancel=cancel)
    assert not report.complete and env.cursor() is None and cli.VERDICT_EXIT[report.verdict] == 3
    report = env.sync()
    assert report.complete
    assert_outbox_complete(env.outbox, sandbox)
