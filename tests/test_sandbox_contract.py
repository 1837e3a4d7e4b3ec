"""The sandbox speaks Qonto's published contract (issue 12): the reference's sort fields, its
`source_type` values and a string `source`, the newer invoice fields, 403 `forbidden` for a
missing scope (where the agent's client expects it), and a read-only view of what it received.
Over real HTTP on loopback, with `requests` and the agent's own client."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from agent.base.errors import PermissionDenied
from agent.config import load
from agent.qonto.bulk import UploadItem
from agent.qonto.client import QontoClient
from agent.sandbox.faults import Faults
from agent.sandbox.server import Sandbox
from support import api_get, download_url, item, list_all, make_config, post_bulk, upload, wait_for, write_pdf

SORT_FIELDS = ("created_at", "updated_at", "file_name", "supplier_name", "payment_date", "due_date",
               "scheduled_date", "total_amount")
SOURCE_TYPES = {"direct_upload", "e_invoicing", "email"}
NEWER_FIELDS = {  # qonto-api.md, "Invoice objects (2026)": name → the JSON type it holds when set
    "is_einvoice": bool, "source": str, "source_type": str, "has_discrepancies": bool, "declined_note": str,
    "e_invoice_type": str, "vat_number": str, "tin": str, "is_attachment_invoice": bool, "attachment_category": str,
    "is_attachment_non_financial": bool, "matched_transactions": list, "transfer_ids": list,
    "einvoicing_lifecycle_events": list, "available_actions": dict, "approval_workflow": dict,
    "payable_amount": dict, "total_amount_credit_notes": dict, "is_credit_note": bool,
    "has_suggested_credit_notes": bool, "related_invoices": list, "suggested_transactions": list,
}
NEVER_NULL = {"is_einvoice", "source", "source_type", "matched_transactions", "transfer_ids", "related_invoices",
              "einvoicing_lifecycle_events", "suggested_transactions", "available_actions"}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(seed=11, analysis_delay_seconds=3600) as sandbox:
        yield sandbox


def assert_newer_fields(invoice: dict[str, Any]) -> None:
    """Every field of the 2026 reference is there, with its type (or null where it may be)."""
    for name, kind in NEWER_FIELDS.items():
        assert name in invoice, name
        assert isinstance(invoice[name], kind) or (invoice[name] is None and name not in NEVER_NULL), (name, invoice)
    assert invoice["source_type"] in SOURCE_TYPES and invoice["source"]
    assert invoice["is_einvoice"] == (invoice["source_type"] == "e_invoicing")
    assert all(isinstance(allowed, bool) for allowed in invoice["available_actions"].values())


# ---------------------------------------------------------------------------------------------
# Sorting and parameters


def _sort_value(invoice: dict[str, Any], field: str) -> Any:
    value = invoice[field]
    return Decimal(value["value"]) if field == "total_amount" and value else value


def test_every_documented_sort_field_both_ways_with_nulls_last_then_first(sb: Sandbox) -> None:
    ids = sb.seed(12)
    sb.update_invoice(ids[0], payment_date="2026-01-05", scheduled_date="2026-03-01")
    sb.update_invoice(ids[1], payment_date="2025-12-30", scheduled_date="2026-01-15")
    sb.update_invoice(ids[2], total_amount={"value": "9.50", "currency": "EUR"})  # "9.50" < "10.00" only as numbers
    sb.update_invoice(ids[3], total_amount={"value": "10.00", "currency": "EUR"})
    upload(sb, ("k-fresh-1", "zz fresh.pdf"), ("k-fresh-2", "Aa fresh.pdf"))  # not analysed: nulls
    for field in SORT_FIELDS:
        ascending = list_all(sb, sort_by=f"{field}:asc", per_page=100)
        values = [_sort_value(invoice, field) for invoice in ascending]
        present = [value for value in values if value is not None]
        assert len(set(present)) >= 2, f"{field}: the test needs distinct values"
        assert present == sorted(present) and values[:len(present)] == present, f"{field}: {values}"
        descending = list_all(sb, sort_by=f"{field}:desc", per_page=100)
        assert [i["id"] for i in descending] == [i["id"] for i in reversed(ascending)], field
        assert len(ascending) == 14
    for refused in ("iban:asc", "file_name", "total_amount:up"):
        answer = api_get(sb, "/v2/supplier_invoices", sort_by=refused)
        assert answer.status_code == 400 and answer.json()["errors"][0]["source"]["parameter"] == "sort_by"


def test_without_updated_at_sorting_the_reference_fields_still_sort(sb: Sandbox) -> None:
    sb.sortable_updated_at = False
    assert api_get(sb, "/v2/supplier_invoices", sort_by="updated_at:asc").status_code == 400
    assert api_get(sb, "/v2/supplier_invoices", sort_by="due_date:desc").status_code == 200


def test_unknown_parameters_are_ignored_and_the_request_view_shows_them(sb: Sandbox) -> None:
    sb.seed(5)
    plain = list_all(sb, per_page=100)
    odd = list_all(sb, per_page=100, **{"filter[supplier_name]": "Nobody", "query": "x"})
    assert odd == plain  # the reference lists no such filters: ignored, not refused
    record = sb.request_log()[-1]
    assert record.ignored_parameters == ("filter[supplier_name]", "query")
    shown = requests.get(f"{sb.base_url}/_sandbox/requests", params={"limit": 1}).json()["requests"][0]
    assert shown["ignored_parameters"] == ["filter[supplier_name]", "query"]
    assert shown["query"]["filter[supplier_name]"] == ["Nobody"]


# ---------------------------------------------------------------------------------------------
# Invoice objects


def test_source_types_are_qontos_and_source_is_always_a_string(sb: Sandbox) -> None:
    sb.seed(40)
    seeded = sb.invoices()
    assert {invoice["source_type"] for invoice in seeded} == SOURCE_TYPES
    assert {i["source"] for i in seeded if i["source_type"] == "email"} == {"email_forward"}
    named = post_bulk(sb, [("source", "integration"), *item("k-n", "n.pdf")]).json()
    unnamed = upload(sb, ("k-u", "u.pdf"))
    for invoice, source in ((named["supplier_invoices"][0], "integration"), (unnamed["supplier_invoices"][0], "api")):
        assert (invoice["source_type"], invoice["source"]) == ("direct_upload", source)
    for invoice in sb.invoices():
        assert_newer_fields(invoice)


def test_seeded_invoices_carry_realistic_nested_history(sb: Sandbox) -> None:
    sb.seed(60)
    invoices = sb.invoices()

    def some(predicate: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
        found = [invoice for invoice in invoices if predicate(invoice)]
        assert found, "no seeded invoice shows it: the test proves nothing"
        return found

    for invoice in some(lambda i: i["matched_transactions"]):
        assert invoice["status"] in ("paid", "archived") and invoice["payment_date"]
        assert len(invoice["matched_transactions"]) == len(invoice["transfer_ids"]) <= 2
    for invoice in some(lambda i: i["approval_workflow"]):
        steps = invoice["approval_workflow"]["steps"]
        assert 1 <= len(steps) <= 3 and all(step["approvers"] and step["approvers"][0]["full_name"] for step in steps)
    for invoice in some(lambda i: i["related_invoices"]):
        [note] = invoice["related_invoices"]
        assert note["is_credit_note"] and invoice["total_amount_credit_notes"] == note["total_amount"]
        left = Decimal(invoice["total_amount"]["value"]) - Decimal(note["total_amount"]["value"])
        assert Decimal(invoice["payable_amount"]["value"]) == left
    for invoice in some(lambda i: i["is_einvoice"]):
        assert invoice["e_invoice_type"] and len(invoice["einvoicing_lifecycle_events"]) >= 2
    some(lambda i: i["suggested_transactions"])
    paid = some(lambda i: i["status"] == "paid")[0]
    assert paid["available_actions"]["unmark_as_paid"] and not paid["available_actions"]["pay"]
    changed = sb.update_invoice(paid["id"], status="to_pay")
    assert changed["available_actions"]["pay"] and not changed["available_actions"]["unmark_as_paid"]


def test_analysis_fills_what_is_left_to_pay() -> None:
    with Sandbox(seed=5, analysis_delay_seconds=0.1) as sandbox:
        created = upload(sandbox, ("k-a", "a.pdf"))["supplier_invoices"][0]
        assert created["payable_amount"] is None and created["matched_transactions"] == []
        invoice = wait_for(lambda: (i := sandbox.invoice(created["id"])) and i["analyzed_at"] and i, timeout=5)
        assert invoice["payable_amount"] == invoice["total_amount"] and invoice["is_einvoice"] is False
        parts = [Decimal(invoice[name]["value"]) for name in ("total_amount_excluding_taxes", "total_tax_amount")]
        assert sum(parts) == Decimal(invoice["total_amount"]["value"])
        assert_newer_fields(invoice)


def test_seeded_history_is_reproducible_with_a_seed() -> None:
    timeless = {"created_at", "updated_at", "analyzed_at", "issue_date", "due_date", "payment_date", "scheduled_date",
                "approval_workflow", "einvoicing_lifecycle_events", "suggested_transactions"}

    def seeded() -> list[dict[str, Any]]:
        with Sandbox(seed=21) as sandbox:
            sandbox.seed(30)
            return [{k: v for k, v in i.items() if k not in timeless} for i in sandbox.invoices()]

    first, second = seeded(), seeded()
    assert first == second and len({json.dumps(i, sort_keys=True) for i in first}) == 30


# ---------------------------------------------------------------------------------------------
# A denied scope


@pytest.mark.parametrize("scope", ["organization.read", "supplier_invoice.read", "supplier_invoice.write",
                                   "attachment.read"])
def test_a_denied_scope_answers_403_where_the_agents_client_expects_it(sb: Sandbox, scope: str,
                                                                       tmp_path: Path) -> None:
    [invoice_id] = sb.seed(1, without_attachment=0.0)
    attachment_id = sb.invoice(invoice_id)["attachment_id"]
    sb.denied_scopes = {scope}
    pdf = write_pdf(tmp_path / "one.pdf")
    calls = {  # each of the agent's calls, with the scope its 403 hint names
        "organization.read": lambda client: client.get_organization(),
        "supplier_invoice.read": lambda client: [client.get_supplier_invoice(invoice_id),
                                                 list(client.iter_supplier_invoices())],
        "supplier_invoice.write": lambda client: client.upload_bulk([UploadItem(pdf, "k-403", pdf.name)]),
        "attachment.read": lambda client: client.get_attachment(attachment_id),
    }
    with QontoClient(load(make_config(tmp_path, sb), env={}).qonto) as client:
        for needs, call in calls.items():
            if needs == scope:
                with pytest.raises(PermissionDenied, match=rf"\(403\): the credentials need the `{scope}` permission"):
                    call(client)
            else:
                call(client)
    raw = {
        "organization.read": lambda: api_get(sb, "/v2/organization"),
        "supplier_invoice.read": lambda: api_get(sb, f"/v2/supplier_invoices/{invoice_id}"),
        "supplier_invoice.write": lambda: post_bulk(sb, item("k-raw", "raw.pdf")),
        "attachment.read": lambda: api_get(sb, f"/v2/attachments/{attachment_id}"),
    }[scope]()
    [error] = raw.json()["errors"]
    assert raw.status_code == 403 and error["code"] == "forbidden" and scope in error["detail"]
    assert raw.json()["trace_id"] == raw.headers["X-Tyk-Trace-Id"]
    token = requests.post(f"{sb.base_url}/oauth2/token", data={
        "grant_type": "refresh_token", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret",
        "refresh_token": "sandbox-refresh-token"}).json()
    assert scope not in token["scope"].split() and "offline_access" in token["scope"].split()


# ---------------------------------------------------------------------------------------------
# What the sandbox received


def test_the_request_view_counts_and_lists_without_a_secret(sb: Sandbox) -> None:
    [invoice_id] = sb.seed(1, without_attachment=0.0)
    url = download_url(sb, sb.invoice(invoice_id)["attachment_id"])
    assert requests.get(url).status_code == 200
    token = requests.post(f"{sb.base_url}/oauth2/token", data={
        "grant_type": "refresh_token", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret",
        "refresh_token": "sandbox-refresh-token"}).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{sb.base_url}/v2/supplier_invoices/{invoice_id}", headers=bearer).status_code == 200
    api_get(sb, "/v2/organization", access_token="leaked-in-a-query")
    requests.get(f"{sb.base_url}/v2/organization")  # 401
    secrets = ("sandbox-secret-key", "sandbox-org:", token, "sandbox-client-secret", "sandbox-refresh-token",
               "leaked-in-a-query", url.split("signature=")[1])

    view = requests.get(f"{sb.base_url}/_sandbox/requests")
    counts = requests.get(f"{sb.base_url}/_sandbox/counts").json()
    assert view.status_code == 200 and not [s for s in secrets if s in view.text + json.dumps(counts)]
    shown = view.json()["requests"]
    assert [r["endpoint"] for r in shown] == [
        "GET /v2/attachments/{id}", "GET /_storage/{id}", "POST /oauth2/token", "GET /v2/supplier_invoices/{id}",
        "GET /v2/organization", "GET /v2/organization"]
    assert [r["status"] for r in shown] == [200, 200, 200, 200, 200, 401]
    assert shown[1]["query"]["signature"] == ["[redacted]"] and shown[1]["authorization"] is False
    assert shown[4]["query"]["access_token"] == ["[redacted]"]
    assert all(r["received_at"].endswith("Z") and r["duration_ms"] >= 0 for r in shown)
    assert counts == {"counts": sb.counts(), "total": 6} and counts["counts"]["GET /v2/organization"] == 2
    assert sb.count() == 6, "looking at the view was itself logged"

    last = view.json()["last_seq"]
    api_get(sb, "/v2/organization")
    newer = requests.get(f"{sb.base_url}/_sandbox/requests", params={"since": last}).json()["requests"]
    assert [r["seq"] for r in newer] == [last + 1] and [r.seq for r in sb.request_log(since=last)] == [last + 1]
    assert requests.get(f"{sb.base_url}/_sandbox/requests", params={"limit": 2}).json()["requests"][-1] == newer[0]
    sb.reset_log()
    assert sb.counts() == {} and requests.get(f"{sb.base_url}/_sandbox/requests").json()["last_seq"] == last + 1


def test_the_request_view_is_read_only_and_always_answers(sb: Sandbox) -> None:
    assert requests.post(f"{sb.base_url}/_sandbox/requests").status_code == 405
    assert requests.delete(f"{sb.base_url}/_sandbox/counts").status_code == 405
    assert requests.get(f"{sb.base_url}/_sandbox/secrets").status_code == 404
    assert requests.get(f"{sb.base_url}/_sandbox/requests", params={"limit": 0}).status_code == 400
    sb.faults = Faults(error_rate=1.0, drop_rate=1.0)
    sb.html_mode = True
    sb.staging_token = "st"
    assert requests.get(f"{sb.base_url}/_sandbox/counts").json() == {"counts": {}, "total": 0}


def test_a_log_limit_keeps_the_latest_records_and_counts_them_all() -> None:
    with Sandbox(request_log_limit=2) as sandbox:
        for _ in range(3):
            api_get(sandbox, "/v2/organization")
        assert [record.seq for record in sandbox.request_log()] == [2, 3]
        assert sandbox.counts() == {"GET /v2/organization": 3}
