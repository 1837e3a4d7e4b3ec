"""The local Qonto-compatible API, exercised over real HTTP on loopback with `requests`.

Multipart bodies are built by hand so that field order, filenames and encodings are exactly
what each test means to send.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
import requests

from agent.sandbox import api as sandbox_api
from agent.sandbox.faults import Faults
from agent.sandbox.server import Sandbox
from support import (API_KEY, REPO, api_get, download_url, item, list_all, multipart, pdf_bytes, post_bulk, upload,
                     wait_for)

@pytest.fixture
def make_sandbox() -> Callable[..., Sandbox]:
    """Start sandboxes with test-friendly defaults (no analysis unless asked); stop them all at the end."""
    started: list[Sandbox] = []

    def make(**kw: Any) -> Sandbox:
        kw.setdefault("analysis_delay_seconds", 3600)
        kw.setdefault("seed", 7)
        sb = Sandbox(**kw).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sb(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


# ---------------------------------------------------------------------------------------------
# Authentication, staging token, HTML


def test_organization_with_api_key_and_static_bearer_token(sb: Sandbox) -> None:
    answer = api_get(sb, "/v2/organization")
    assert answer.status_code == 200
    organization = answer.json()["organization"]
    assert organization["legal_name"] == "Sandbox Company SAS"
    assert organization["slug"] == "sandbox-org" and organization["id"]
    assert answer.headers["X-Tyk-Trace-Id"]
    bearer = requests.get(f"{sb.base_url}/v2/organization", headers={"Authorization": "Bearer sandbox-access-token"})
    assert bearer.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "sandbox-org:wrong"}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic c2I6c2I="}],
)
def test_wrong_credentials_get_401_with_trace_id(sb: Sandbox, headers: dict[str, str]) -> None:
    answer = requests.get(f"{sb.base_url}/v2/supplier_invoices", headers=headers)
    assert answer.status_code == 401
    body = answer.json()
    assert body["errors"][0]["code"] == "unauthorized"
    assert body["trace_id"] == answer.headers["X-Tyk-Trace-Id"]
    assert sb.count(status=401) == 1
    assert sb.request_log()[0].authorization == bool(headers)


def test_staging_token_redirects_to_an_html_login_page(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(staging_token="stage-me")
    redirected = requests.get(f"{sb.base_url}/v2/organization", headers=API_KEY, allow_redirects=False)
    assert redirected.status_code == 302 and redirected.headers["Location"].endswith("/login")
    followed = requests.post(f"{sb.base_url}/oauth2/token", data={"grant_type": "refresh_token"})
    assert followed.status_code == 200 and followed.headers["Content-Type"].startswith("text/html")
    assert followed.history[0].status_code == 302
    ok = requests.get(f"{sb.base_url}/v2/organization", headers={**API_KEY, "X-Qonto-Staging-Token": "stage-me"})
    assert ok.status_code == 200 and ok.json()["organization"]


def test_html_mode_answers_every_request_with_a_page(sb: Sandbox) -> None:
    sb.html_mode = True
    answer = api_get(sb, "/v2/organization")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    assert b"<html" in answer.content
    sb.html_mode = False
    assert api_get(sb, "/v2/organization").json()["organization"]


def test_oauth_refresh_tokens_rotate_with_a_grace_period(
    make_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_api, "REFRESH_GRACE_SECONDS", 0.3)
    sb = make_sandbox(token_ttl_seconds=0.3)
    form = {"grant_type": "refresh_token", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret"}

    def refresh(token: str) -> requests.Response:
        return requests.post(f"{sb.base_url}/oauth2/token", data={**form, "refresh_token": token})

    first = refresh("sandbox-refresh-token").json()
    assert first["token_type"] == "bearer" and first["expires_in"] == 0.3
    assert first["refresh_token"] != "sandbox-refresh-token"
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert requests.get(f"{sb.base_url}/v2/organization", headers=bearer).status_code == 200
    assert refresh("sandbox-refresh-token").status_code == 200  # still inside the grace period
    second = refresh(first["refresh_token"]).json()
    assert second["refresh_token"] not in (first["refresh_token"], "sandbox-refresh-token")
    time.sleep(0.35)
    refused = refresh("sandbox-refresh-token")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert refresh(second["refresh_token"]).status_code == 200
    expired = requests.get(f"{sb.base_url}/v2/organization", headers=bearer)
    assert expired.status_code == 401
    wrong_client = requests.post(f"{sb.base_url}/oauth2/token", data={**form, "client_secret": "x"})
    assert wrong_client.status_code == 401 and wrong_client.json()["error"] == "invalid_client"


# ---------------------------------------------------------------------------------------------
# Bulk upload


def test_fields_in_item_order_pair_keys_with_their_files(sb: Sandbox) -> None:
    pairs = [("key-a", "a.pdf"), ("key-b", "b.pdf"), ("key-c", "c.pdf")]
    answer = upload(sb, *pairs)
    assert answer["errors"] == []
    assert [invoice["file_name"] for invoice in answer["supplier_invoices"]] == ["a.pdf", "b.pdf", "c.pdf"]
    by_key = sb.uploads_by_key()
    by_id = {invoice["id"]: invoice for invoice in sb.invoices()}
    for key, name in pairs:
        invoice = by_id[by_key[key]]
        assert invoice["file_name"] == name
        assert sb.attachment_bytes(invoice["attachment_id"]) == pdf_bytes(name)
    record = sb.request_log()[-1]
    assert record.items == 3 and record.idempotency_keys == ("key-a", "key-b", "key-c")


def test_all_keys_then_all_files_mis_pairs_items_like_rails(sb: Sandbox) -> None:
    keys = [("supplier_invoices[][idempotency_key]", k) for k in ("key-1", "key-2")]
    files = [("supplier_invoices[][file]", (name, pdf_bytes(name))) for name in ("one.pdf", "two.pdf")]
    answer = post_bulk(sb, keys + files)
    # Grouped as {key-1}, {key-2, one.pdf}, {two.pdf}: the first item has no file, so the whole
    # request is refused, as Qonto's reference says.
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert (error["code"], error["detail"], error["source"]) == ("required", "File is required", {"pointer": "/file"})
    assert sb.invoice_count() == 0 and sb.request_log()[-1].items == 3


def test_new_invoice_shape(sb: Sandbox) -> None:
    parts = [("source", "integration"), ("meta", '{"origin": "scanner"}'), *item("key-x", "x.pdf")]
    invoice = post_bulk(sb, parts).json()["supplier_invoices"][0]
    assert invoice["status"] == "to_review"
    assert invoice["source"] == "integration" and invoice["meta"] == {"origin": "scanner"}
    assert invoice["supplier_name"] is None and invoice["total_amount"] is None and invoice["analyzed_at"] is None
    assert invoice["has_duplicates"] is False and invoice["created_at"] == invoice["updated_at"]
    assert invoice["created_at"].endswith("Z") and len(invoice["created_at"]) == len("2026-01-01T00:00:00.000Z")
    assert "key-x" not in str(invoice) and "idempotency_key" not in invoice
    assert sb.attachment_sha256(invoice["attachment_id"])


def test_unicode_file_names_survive_raw_utf8_rfc2231_and_urllib3(sb: Sandbox) -> None:
    raw = post_bulk(sb, item("k-raw", "facture été №1.pdf")).json()
    assert raw["supplier_invoices"][0]["file_name"] == "facture été №1.pdf"
    encoded = post_bulk(sb, item("k-2231", "日本 €.pdf"), rfc2231=True).json()
    assert encoded["supplier_invoices"][0]["file_name"] == "日本 €.pdf"
    via_requests = requests.post(
        f"{sb.base_url}/v2/supplier_invoices/bulk",
        headers=API_KEY,
        files=[
            ("supplier_invoices[][idempotency_key]", (None, "k-req")),
            ("supplier_invoices[][file]", ('Ünï "quoted".pdf', pdf_bytes("u"))),  # urllib3 sends %22
        ],
    ).json()
    assert via_requests["supplier_invoices"][0]["file_name"] == 'Ünï "quoted".pdf'


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("a%20b.pdf", "a b.pdf"), ("50%.pdf", "50%.pdf"), ("dir/../x.pdf", "x.pdf"), ("C:\\Users\\me\\s.pdf", "s.pdf")],
)
def test_file_names_are_read_the_way_rack_reads_them(sb: Sandbox, sent: str, kept: str) -> None:
    answer = post_bulk(sb, item("k-rack", sent)).json()
    assert answer["supplier_invoices"][0]["file_name"] == kept


def test_a_replayed_key_returns_the_same_invoice_until_the_window_ends(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(key_window_seconds=0.3)
    first = upload(sb, ("key-r", "r.pdf"))["supplier_invoices"][0]
    replay = post_bulk(sb, item("key-r", "different.pdf")).json()["supplier_invoices"][0]
    assert replay["id"] == first["id"] and replay["file_name"] == "r.pdf"
    assert sb.invoice_count() == 1
    time.sleep(0.35)
    later = upload(sb, ("key-r", "r.pdf"))["supplier_invoices"][0]
    assert later["id"] != first["id"] and sb.invoice_count() == 2
    assert sb.uploads_by_key() == {"key-r": later["id"]}


def test_more_than_20_items_are_refused_with_limit_reached(sb: Sandbox) -> None:
    answer = post_bulk(sb, [part for i in range(21) for part in item(f"k{i}", f"{i}.pdf")])
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert (error["code"], error["source"]) == ("limit_reached", {"pointer": "/supplier_invoices"})
    assert answer.json()["trace_id"] == answer.headers["X-Tyk-Trace-Id"]
    assert sb.invoice_count() == 0 and sb.request_log()[-1].items == 21


def test_an_item_without_key_refuses_the_whole_request(sb: Sandbox) -> None:
    parts = item("k-first", "first.pdf") + item(None, "nokey.pdf")  # last: a key after it would join its item
    answer = post_bulk(sb, parts)
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert (error["code"], error["detail"], error["source"]) == (
        "required", "Idempotency key is required", {"pointer": "/idempotency_key"})
    assert sb.invoice_count() == 0


def test_errors_in_the_other_published_shape(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(error_source_list=True, error_details=True)
    body = post_bulk(sb, item("k-text", "notes.pdf", b"hello, not a pdf") + item("k-ok", "ok.pdf")).json()
    [error] = body["errors"]
    assert error["source"] == [{"pointer": "/supplier_invoices/idempotency_key/k-text/file"}]
    assert "unsupported" in error["details"] and "detail" not in error
    whole = post_bulk(sb, [part for i in range(21) for part in item(f"k{i}", f"{i}.pdf")]).json()
    assert whole["errors"][0]["source"] == [{"pointer": "/supplier_invoices"}] and whole["errors"][0]["details"]


def test_a_file_over_10_mb_is_invalid_and_the_others_are_created(sb: Sandbox) -> None:
    big = pdf_bytes("big", 11 * 1024 * 1024)
    parts = item("k-small-1", "s1.pdf") + item("k-big", "big.pdf", big) + item("k-small-2", "s2.pdf")
    answer = post_bulk(sb, parts)
    assert answer.status_code == 200
    body = answer.json()
    assert [invoice["file_name"] for invoice in body["supplier_invoices"]] == ["s1.pdf", "s2.pdf"]
    [error] = body["errors"]
    assert error["code"] == "invalid" and "too large" in error["detail"]
    assert error["source"]["pointer"] == "/supplier_invoices/idempotency_key/k-big/file"


@pytest.mark.parametrize("proxy, status, code", [(False, 400, "bad_request"), (True, 413, "request_entity_too_large")])
def test_a_request_over_15_mb_is_refused_as_too_large(make_sandbox: Callable[..., Sandbox], proxy: bool,
                                                      status: int, code: str) -> None:
    sb = make_sandbox(too_large_413=proxy)
    parts = item("k1", "1.pdf", pdf_bytes("1", 8 * 1024 * 1024)) + item("k2", "2.pdf", pdf_bytes("2", 8 * 1024 * 1024))
    answer = post_bulk(sb, parts)
    assert answer.status_code == status and answer.json()["errors"][0]["code"] == code
    assert proxy or answer.json()["errors"][0]["detail"] == "Request is too large"
    assert sb.invoice_count() == 0


def test_per_item_errors_unsupported_type_and_reject(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(reject=lambda name, data: "encrypted PDF" if name == "locked.pdf" else None)
    parts = (
        item("k-text", "notes.pdf", b"hello, not a pdf")
        + item("k-locked", "locked.pdf")
        + item("k-png", "scan.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        + item("k-jpg", "photo.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 20)
    )
    body = post_bulk(sb, parts).json()
    errors = {error["source"]["pointer"]: (error["code"], error["detail"]) for error in body["errors"]}
    assert errors["/supplier_invoices/idempotency_key/k-text/file"][0] == "invalid"
    assert "unsupported" in errors["/supplier_invoices/idempotency_key/k-text/file"][1]
    assert errors["/supplier_invoices/idempotency_key/k-locked/file"] == ("invalid", "encrypted PDF")
    assert [invoice["file_name"] for invoice in body["supplier_invoices"]] == ["scan.png", "photo.jpg"]
    contents = [api_get(sb, f"/v2/attachments/{i['attachment_id']}").json() for i in body["supplier_invoices"]]
    assert [c["attachment"]["file_content_type"] for c in contents] == ["image/png", "image/jpeg"]


def test_a_chunked_body_is_read(sb: Sandbox) -> None:
    body, content_type = multipart(item("k-chunked", "c.pdf"))
    chunks = iter([body[:100], body[100:]])
    answer = requests.post(
        f"{sb.base_url}/v2/supplier_invoices/bulk", data=chunks, headers={**API_KEY, "Content-Type": content_type}
    )
    assert answer.json()["supplier_invoices"][0]["file_name"] == "c.pdf"


def test_updated_at_is_strictly_increasing(sb: Sandbox) -> None:
    upload(sb, *[(f"k{i}", f"{i}.pdf") for i in range(20)])
    upload(sb, ("k-last", "last.pdf"))
    stamps = [invoice["updated_at"] for invoice in sb.invoices()]
    assert stamps == sorted(stamps) and len(set(stamps)) == 21


def test_analysis_fills_fields_and_moves_updated_at(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(analysis_delay_seconds=0.2)
    created = upload(sb, ("k-an", "an.pdf"))["supplier_invoices"][0]
    assert api_get(sb, f"/v2/supplier_invoices/{created['id']}").json()["supplier_invoice"]["analyzed_at"] is None

    def analysed() -> dict[str, Any] | None:
        invoice = api_get(sb, f"/v2/supplier_invoices/{created['id']}").json()["supplier_invoice"]
        return invoice if invoice["analyzed_at"] else None

    invoice = wait_for(analysed, timeout=5, message="the analysis")
    assert invoice["supplier_name"] and invoice["invoice_number"] and invoice["issue_date"] and invoice["due_date"]
    assert invoice["total_amount"]["currency"] == "EUR"
    assert isinstance(invoice["total_amount"]["value"], str) and "." in invoice["total_amount"]["value"]
    assert invoice["updated_at"] > created["updated_at"] and invoice["analyzed_at"] == invoice["updated_at"]
    assert invoice["created_at"] == created["created_at"] and invoice["status"] == "to_review"


def test_an_analysis_finished_before_a_list_request_is_in_a_window_ending_before_it(
        make_sandbox: Callable[..., Sandbox]) -> None:
    """The analysis runs on its own at Qonto: it is stamped when it finished, not when a request
    noticed it, so a client listing up to "now" sees an invoice analysed before it asked."""
    sb = make_sandbox(analysis_delay_seconds=0.2)
    created = upload(sb, ("k-window", "window.pdf"))["supplier_invoices"][0]
    analysed_by = time.monotonic() + 0.5
    wait_for(lambda: time.monotonic() > analysed_by, timeout=5, message="the analysis to be due")
    window_end = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    listed = list_all(sb, **{"filter[updated_at_to]": window_end})
    assert [invoice["id"] for invoice in listed] == [created["id"]]
    assert listed[0]["analyzed_at"] and listed[0]["updated_at"] <= window_end


# ---------------------------------------------------------------------------------------------
# Listing


def test_filters_on_updated_at_window_and_status(sb: Sandbox) -> None:
    sb.seed(12, start=datetime.now(timezone.utc) - timedelta(days=12))
    invoices = sorted(sb.invoices(), key=lambda invoice: invoice["updated_at"])
    low, high = invoices[3]["updated_at"], invoices[7]["updated_at"]
    window = list_all(sb, **{"filter[updated_at_from]": low, "filter[updated_at_to]": high, "per_page": 100})
    assert sorted(invoice["id"] for invoice in window) == sorted(invoice["id"] for invoice in invoices[3:8])
    since = list_all(sb, **{"filter[created_at_from]": invoices[0]["created_at"], "per_page": 100})
    assert len(since) == 12

    for invoice in invoices[:3]:
        sb.update_invoice(invoice["id"], status="paid")
    sb.update_invoice(invoices[3]["id"], status="zz-new")
    paid = {invoice["id"] for invoice in sb.invoices() if invoice["status"] == "paid"}
    assert {i["id"] for i in list_all(sb, **{"filter[status]": "paid", "per_page": 100})} == paid
    both = list_all(sb, **{"filter[status][]": ["paid", "zz-new"], "per_page": 100})
    assert {i["id"] for i in both} == paid | {invoices[3]["id"]}

    bad = api_get(sb, "/v2/supplier_invoices", **{"filter[updated_at_from]": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["source"]["parameter"] == "filter[updated_at_from]"


def test_sorting_and_the_updated_at_fallback(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox()
    sb.seed(6)
    sb.update_invoice(sb.invoices()[0]["id"], supplier_name="Moved Last")
    ascending = list_all(sb, sort_by="updated_at:asc", per_page=100)
    assert [i["updated_at"] for i in ascending] == sorted(i["updated_at"] for i in ascending)
    assert ascending[-1]["supplier_name"] == "Moved Last"
    descending = list_all(sb, sort_by="updated_at:desc", per_page=100)
    assert [i["id"] for i in descending] == [i["id"] for i in reversed(ascending)]
    by_creation = list_all(sb, sort_by="created_at:asc", per_page=100)
    assert [i["created_at"] for i in by_creation] == sorted(i["created_at"] for i in by_creation)

    strict = make_sandbox(sortable_updated_at=False)
    refused = api_get(strict, "/v2/supplier_invoices", sort_by="updated_at:asc")
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["source"]["parameter"] == "sort_by"
    assert api_get(strict, "/v2/supplier_invoices", sort_by="created_at:asc").status_code == 200


def test_pagination(sb: Sandbox) -> None:
    ids = sb.seed(7)
    pages, page = [], 1
    while page is not None:
        answer = api_get(sb, "/v2/supplier_invoices", page=page, per_page=3, sort_by="created_at:asc").json()
        pages.append(answer)
        page = answer["meta"]["next_page"]
    assert [len(p["supplier_invoices"]) for p in pages] == [3, 3, 1]
    assert [i["id"] for p in pages for i in p["supplier_invoices"]] == ids
    assert pages[1]["meta"] == {
        "current_page": 2, "next_page": 3, "prev_page": 1, "total_pages": 3, "total_count": 7, "per_page": 3
    }
    default = api_get(sb, "/v2/supplier_invoices").json()
    assert len(default["supplier_invoices"]) == 1 and default["meta"]["per_page"] == 1
    assert len(api_get(sb, "/v2/supplier_invoices", per_page=100).json()["supplier_invoices"]) == 7
    too_many = api_get(sb, "/v2/supplier_invoices", per_page=101)
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["source"]["parameter"] == "per_page"


def test_one_invoice_and_404(sb: Sandbox) -> None:
    [invoice_id] = sb.seed(1)
    assert api_get(sb, f"/v2/supplier_invoices/{invoice_id}").json()["supplier_invoice"]["id"] == invoice_id
    missing = api_get(sb, f"/v2/supplier_invoices/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["trace_id"] == missing.headers["X-Tyk-Trace-Id"]
    assert api_get(sb, "/v2/nothing-here").json()["errors"][0]["code"] == "not_found"
    assert requests.delete(f"{sb.base_url}/v2/organization", headers=API_KEY).status_code == 405


# ---------------------------------------------------------------------------------------------
# Attachments and storage


def test_attachment_urls_refuse_authorization_and_expiry_and_serve_exact_bytes(sb: Sandbox) -> None:
    invoice = upload(sb, ("k-dl", "dl.pdf"))["supplier_invoices"][0]
    attachment = api_get(sb, f"/v2/attachments/{invoice['attachment_id']}").json()["attachment"]
    assert attachment["file_size"] == str(len(pdf_bytes("dl.pdf")))
    assert attachment["file_name"] == "dl.pdf" and attachment["file_content_type"] == "application/pdf"
    assert attachment["probative_attachment"] == {"status": "unavailable"}
    url = attachment["url"]
    assert url.startswith(f"{sb.base_url}/_storage/")

    with_auth = requests.get(url, headers=API_KEY)
    assert with_auth.status_code == 400 and b"Only one auth mechanism allowed" in with_auth.content
    tampered = requests.get(url.replace("signature=", "signature=0"))
    assert tampered.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in tampered.content
    served = requests.get(url)
    assert served.status_code == 200 and served.content == pdf_bytes("dl.pdf")
    assert served.headers["Content-Type"] == "application/pdf"
    assert served.headers["Content-Length"] == attachment["file_size"]

    sb.url_ttl_seconds = 0.05
    short_lived = download_url(sb, invoice["attachment_id"])
    time.sleep(0.1)
    expired = requests.get(short_lived)
    assert expired.status_code == 403
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in expired.content
    assert api_get(sb, f"/v2/attachments/{uuid.uuid4()}").status_code == 404


def test_keep_files_false_keeps_only_size_and_hash(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(keep_files=False)
    invoice = upload(sb, ("k-nofile", "n.pdf"))["supplier_invoices"][0]
    assert len(sb.attachment_sha256(invoice["attachment_id"])) == 64
    with pytest.raises(KeyError):
        sb.attachment_bytes(invoice["attachment_id"])
    assert requests.get(download_url(sb, invoice["attachment_id"])).status_code == 404


# ---------------------------------------------------------------------------------------------
# Seeding and editing


def test_seed_makes_analysed_invoices_with_valid_pdfs(sb: Sandbox) -> None:
    start = datetime.now(timezone.utc) - timedelta(days=3)
    ids = sb.seed(30, without_attachment=0.3, start=start)
    invoices = sb.invoices()
    assert [invoice["id"] for invoice in invoices] == ids and len(set(ids)) == 30
    with_files = [invoice for invoice in invoices if invoice["attachment_id"]]
    assert 10 <= len(with_files) < 30
    for invoice in invoices:
        assert invoice["analyzed_at"] and invoice["supplier_name"] and invoice["total_amount"]["value"]
        assert start.isoformat()[:19] <= invoice["created_at"] <= invoice["updated_at"]
    assert len({invoice["updated_at"] for invoice in invoices}) == 30
    for invoice in with_files:
        data = sb.attachment_bytes(invoice["attachment_id"])
        assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
        assert 1_500 <= len(data) <= 31_000
    # A new upload is always later than anything seeded.
    new = upload(sb, ("k-after", "after.pdf"))["supplier_invoices"][0]
    assert new["updated_at"] > max(invoice["updated_at"] for invoice in invoices)


def test_seed_is_reproducible_with_a_seed(make_sandbox: Callable[..., Sandbox]) -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    one, two = make_sandbox(seed=3), make_sandbox(seed=3)
    assert one.seed(3, start=start) == two.seed(3, start=start)


def test_update_invoice_sets_fields_and_moves_updated_at(sb: Sandbox) -> None:
    [invoice_id] = sb.seed(1)
    before = sb.invoices()[0]
    after = sb.update_invoice(invoice_id, status="paid", payment_date="2026-02-01")
    assert after["status"] == "paid" and after["payment_date"] == "2026-02-01"
    assert after["updated_at"] > before["updated_at"]
    assert api_get(sb, f"/v2/supplier_invoices/{invoice_id}").json()["supplier_invoice"] == after
    with pytest.raises(KeyError):
        sb.update_invoice("nope", status="paid")


# ---------------------------------------------------------------------------------------------
# Faults


def test_error_rate_gives_500_json(sb: Sandbox) -> None:
    sb.faults = Faults(error_rate=1.0)
    answer = api_get(sb, "/v2/organization")
    assert answer.status_code == 500
    assert answer.json()["errors"][0]["code"] == "internal_server_error"
    assert answer.json()["trace_id"] == answer.headers["X-Tyk-Trace-Id"]


def test_rate_limit_gives_429_with_retry_after(sb: Sandbox) -> None:
    sb.faults = Faults(rate_limit_rate=1.0, retry_after_seconds=0.5)
    answer = api_get(sb, "/v2/supplier_invoices")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "0.5"


def test_html_error_rate_gives_a_502_page(sb: Sandbox) -> None:
    sb.faults.html_error_rate = 1.0
    answer = api_get(sb, "/v2/organization")
    assert answer.status_code == 502 and answer.headers["Content-Type"].startswith("text/html")


def test_drop_rate_closes_the_connection_without_an_answer(sb: Sandbox) -> None:
    sb.faults = Faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        upload(sb, ("k-drop", "drop.pdf"))
    assert sb.invoice_count() == 0
    assert sb.request_log()[-1].status is None and sb.count(status=200) == 0


def test_commit_then_fail_creates_and_a_retry_returns_the_same_invoice(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(faults=Faults(commit_then_fail_rate=1.0))
    outcomes = set()
    for index in range(8):  # both outcomes (500 and a drop) come up
        try:
            outcomes.add(post_bulk(sb, item(f"k-ctf-{index}", f"{index}.pdf")).status_code)
        except requests.ConnectionError:
            outcomes.add(None)
    assert outcomes == {500, None} and sb.invoice_count() == 8
    sb.faults = Faults()
    retried = upload(sb, ("k-ctf-0", "0.pdf"))["supplier_invoices"][0]
    assert retried["id"] == sb.uploads_by_key()["k-ctf-0"] and sb.invoice_count() == 8


def test_latency_applies_everywhere_but_storage_gets_no_other_fault(sb: Sandbox) -> None:
    [invoice_id] = sb.seed(1, without_attachment=0.0)
    url = download_url(sb, sb.invoices()[0]["attachment_id"])
    sb.faults = Faults(latency_seconds=0.2, error_rate=1.0)
    began = time.monotonic()
    served = requests.get(url)
    assert served.status_code == 200 and time.monotonic() - began >= 0.2
    assert api_get(sb, f"/v2/supplier_invoices/{invoice_id}").status_code == 500


# ---------------------------------------------------------------------------------------------
# Plumbing: log, keep-alive, stop, command line


def test_request_log_and_count(sb: Sandbox) -> None:
    api_get(sb, "/v2/organization")
    requests.get(f"{sb.base_url}/v2/organization")
    upload(sb, ("k-log", "log.pdf"))
    assert sb.count() == 3
    assert sb.count(method="GET", path_prefix="/v2/organization") == 2
    assert sb.count(path_prefix="/v2/supplier_invoices/bulk", status=200) == 1
    record = sb.requests[-1]
    assert record.method == "POST" and record.body_bytes > 0 and record.finished_at >= record.started_at
    sb.reset_log()
    assert sb.request_log() == []


def test_concurrent_clients_get_distinct_invoices_and_timestamps(sb: Sandbox) -> None:
    def client(worker: int) -> list[str]:
        with requests.Session() as session:
            answers = [post_bulk(sb, item(f"k{worker}-{n}", f"{worker}-{n}.pdf"), session=session) for n in range(5)]
            session.get(f"{sb.base_url}/v2/supplier_invoices", params={"per_page": 100}, headers=API_KEY)
            return [answer.json()["supplier_invoices"][0]["id"] for answer in answers]

    with ThreadPoolExecutor(8) as pool:
        ids = [invoice_id for batch in pool.map(client, range(8)) for invoice_id in batch]
    invoices = sb.invoices()
    assert len(set(ids)) == 40 and {invoice["id"] for invoice in invoices} == set(ids)
    assert len({invoice["updated_at"] for invoice in invoices}) == 40
    assert sb.count(method="POST", status=200) == 40


def test_keep_alive_reuses_one_connection(sb: Sandbox) -> None:
    with requests.Session() as session:
        session.headers.update(API_KEY)
        for _ in range(3):
            assert session.get(f"{sb.base_url}/v2/organization").status_code == 200
        assert post_bulk(sb, item("k-ka", "ka.pdf"), session=session).status_code == 200
        pools = session.get_adapter(sb.base_url).poolmanager.pools
        assert sum(pools[key].num_connections for key in pools.keys()) == 1


def test_stop_closes_open_connections_and_start_serves_the_same_data_again(sb: Sandbox) -> None:
    [invoice_id] = sb.seed(1)
    url = sb.base_url
    with requests.Session() as session:
        assert session.get(f"{url}/v2/organization", headers=API_KEY).status_code == 200
        sb.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(f"{url}/v2/organization", headers=API_KEY)
        sb.start()
        assert sb.base_url == url
        assert session.get(f"{url}/v2/supplier_invoices/{invoice_id}", headers=API_KEY).status_code == 200


def test_command_serves_until_sigterm() -> None:
    code = (
        "import argparse, sys; from agent.sandbox import command\n"
        "p = argparse.ArgumentParser(); command.add_arguments(p)\n"
        "command.serve(p.parse_args(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", code, "--port", "0", "--seed-invoices", "3", "--login", "me", "--secret-key", "s3",
            "--deny-scope", "attachment.read"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = list(iter(proc.stdout.readline, "Press Ctrl+C to stop.\n"))
        assert banner and banner[0].startswith("Qonto sandbox listening on http://127.0.0.1:"), proc.stderr.read()
        base_url = banner[0].split()[-1]
        assert f'base_url = "{base_url}"\n' in banner and 'login = "me"\n' in banner and 'secret_key = "s3"\n' in banner
        answer = requests.get(f"{base_url}/v2/supplier_invoices?per_page=100", headers={"Authorization": "me:s3"})
        assert answer.json()["meta"]["total_count"] == 3
        attachment_id = answer.json()["supplier_invoices"][0]["attachment_id"]
        refused = requests.get(f"{base_url}/v2/attachments/{attachment_id}", headers={"Authorization": "me:s3"})
        assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "forbidden"
        assert f"What it received: {base_url}/_sandbox/requests and {base_url}/_sandbox/counts\n" in banner
        assert requests.get(f"{base_url}/_sandbox/counts").json()["total"] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
