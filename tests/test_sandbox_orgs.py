"""The sandbox serving several organizations, each with its own API key and data, and playing
Qonto's per-IP rate limit: over real HTTP on loopback with `requests`."""

from __future__ import annotations

import argparse
import http.client
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from agent.base.errors import ConfigError
from agent.sandbox import command
from agent.sandbox.server import Sandbox
from support import pdf_bytes, wait_for

PRIMARY = {"Authorization": "sandbox-org:sandbox-secret-key"}
ACME = {"Authorization": "acme:acme-secret"}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=3, analysis_delay_seconds=3600, organizations=(("acme", "acme-secret"),)) as sandbox:
        yield sandbox


def upload(sandbox: Sandbox, headers: dict[str, str], *pairs: tuple[str, str]) -> requests.Response:
    """POST (idempotency key, file name) pairs to the bulk endpoint with `headers`' credentials."""
    files: list[tuple[str, Any]] = []
    for key, name in pairs:
        files += [("supplier_invoices[][idempotency_key]", (None, key)),
                  ("supplier_invoices[][file]", (name, pdf_bytes(name), "application/pdf"))]
    return requests.post(f"{sandbox.base_url}/v2/supplier_invoices/bulk", files=files, headers=headers)


def get(sandbox: Sandbox, path: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{sandbox.base_url}{path}", headers=headers)


def listed(sandbox: Sandbox, headers: dict[str, str]) -> list[str]:
    answer = get(sandbox, "/v2/supplier_invoices?per_page=100", headers)
    assert answer.status_code == 200, answer.text
    return [invoice["file_name"] for invoice in answer.json()["supplier_invoices"]]


# ---------------------------------------------------------------------------------------------
# Organizations


def test_each_organization_sees_only_its_own_invoices(sandbox: Sandbox) -> None:
    assert upload(sandbox, PRIMARY, ("k1", "ours.pdf")).status_code == 200
    assert upload(sandbox, ACME, ("k2", "acme-1.pdf"), ("k3", "acme-2.pdf")).status_code == 200
    sandbox.seed(2, organization="acme")

    assert listed(sandbox, PRIMARY) == ["ours.pdf"]
    assert {"acme-1.pdf", "acme-2.pdf"} <= set(listed(sandbox, ACME)) and len(listed(sandbox, ACME)) == 4
    assert [invoice["file_name"] for invoice in sandbox.invoices()] == ["ours.pdf"]
    assert sandbox.invoice_count(organization="acme") == 4 and sandbox.invoice_count() == 1

    ours, theirs = (get(sandbox, "/v2/organization", h).json()["organization"] for h in (PRIMARY, ACME))
    assert (ours["slug"], ours["legal_name"], theirs["slug"]) == ("sandbox-org", "Sandbox Company SAS", "acme")
    assert ours["id"] != theirs["id"]
    assert {invoice["organization_id"] for invoice in sandbox.invoices(organization="acme")} == {theirs["id"]}
    acme_id = sandbox.invoices(organization="acme")[0]["id"]
    assert get(sandbox, f"/v2/supplier_invoices/{acme_id}", PRIMARY).status_code == 404
    assert sandbox.invoice(acme_id) is None and sandbox.invoice(acme_id, organization="acme") is not None


def test_an_idempotency_key_is_each_organizations_own(sandbox: Sandbox) -> None:
    first = upload(sandbox, PRIMARY, ("same-key", "a.pdf")).json()["supplier_invoices"][0]
    other = upload(sandbox, ACME, ("same-key", "a.pdf")).json()["supplier_invoices"][0]
    replay = upload(sandbox, ACME, ("same-key", "a.pdf")).json()["supplier_invoices"][0]

    assert first["id"] != other["id"] and replay["id"] == other["id"]
    assert sandbox.uploads_by_key() == {"same-key": first["id"]}
    assert sandbox.uploads_by_key(organization="acme") == {"same-key": other["id"]}
    assert sandbox.invoice_count() == 1 and sandbox.invoice_count(organization="acme") == 1


@pytest.mark.parametrize("authorization", ["acme:wrong", "acme:sandbox-secret-key", "sandbox-org:acme-secret", "acme"])
def test_a_wrong_secret_is_refused_with_401(sandbox: Sandbox, authorization: str) -> None:
    answer = get(sandbox, "/v2/organization", {"Authorization": authorization})
    assert answer.status_code == 401 and answer.json()["errors"][0]["code"] == "unauthorized"
    assert sandbox.request_log()[-1].organization is None


def test_the_request_log_names_the_organization_and_never_a_secret(sandbox: Sandbox) -> None:
    get(sandbox, "/v2/organization", ACME)
    get(sandbox, "/v2/organization", PRIMARY)
    get(sandbox, "/v2/organization", {"Authorization": "Bearer sandbox-access-token"})
    assert [record.organization for record in sandbox.request_log()] == ["acme", "sandbox-org", "sandbox-org"]
    assert sandbox.count(organization="acme") == 1 and sandbox.count(organization="sandbox-org") == 2
    shown = requests.get(f"{sandbox.base_url}/_sandbox/requests").text
    assert '"organization": "acme"' in shown and "acme-secret" not in shown and "sandbox-secret-key" not in shown


def test_a_download_url_serves_its_own_organizations_attachment(sandbox: Sandbox) -> None:
    upload(sandbox, PRIMARY, ("k", "ours.pdf"))
    upload(sandbox, ACME, ("k", "theirs.pdf"))
    acme_attachment = sandbox.invoices(organization="acme")[0]["attachment_id"]
    assert get(sandbox, f"/v2/attachments/{acme_attachment}", PRIMARY).status_code == 404

    url = get(sandbox, f"/v2/attachments/{acme_attachment}", ACME).json()["attachment"]["url"]
    download = requests.get(url)
    assert download.status_code == 200 and download.content == pdf_bytes("theirs.pdf")
    assert download.content == sandbox.attachment_bytes(acme_attachment, organization="acme")
    assert sandbox.request_log()[-1].organization == "acme"
    with pytest.raises(KeyError):
        sandbox.attachment_bytes(acme_attachment)
    tampered = requests.get(url.replace("organization=acme", "organization=sandbox-org"))
    assert tampered.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in tampered.text


def test_an_organization_added_at_run_time_is_served_from_then_on(sandbox: Sandbox) -> None:
    beta = {"Authorization": "beta:beta-secret"}
    assert get(sandbox, "/v2/organization", beta).status_code == 401
    sandbox.add_organization("beta", "beta-secret")
    assert get(sandbox, "/v2/organization", beta).json()["organization"]["slug"] == "beta"
    assert sandbox.invoices(organization="beta") == [] and listed(sandbox, beta) == []

    for login, secret_key in [("beta", "again"), ("sandbox-org", "x"), ("a:b", "x"), ("gamma", "")]:
        with pytest.raises(ValueError, match="organization"):
            sandbox.add_organization(login, secret_key)
    with pytest.raises(KeyError, match="serves no organization 'nobody'"):
        sandbox.invoices(organization="nobody")


def test_the_command_serves_the_organizations_it_is_given() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--organization", "acme:s:with:colons", "--ip-rate-limit", "1000/10"])
    sandbox = command.sandbox_from_args(args)
    assert sandbox.organizations == (("acme", "s:with:colons"),) and sandbox.ip_rate_limits == ((1000, 10.0),)
    with pytest.raises(ConfigError, match="already serves an organization 'acme'.*--organization"):
        command.sandbox_from_args(parser.parse_args(["--organization", "acme:a", "--organization", "acme:b"]))
    for wrong in (["--organization", "no-colon"], ["--ip-rate-limit", "10"], ["--ip-rate-limit", "0/1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(wrong)


# ---------------------------------------------------------------------------------------------
# The per-IP rate limit


def test_the_ip_rate_limit_answers_429_exactly_above_the_limit_and_recovers(sandbox: Sandbox) -> None:
    upload(sandbox, ACME, ("k", "theirs.pdf"))
    attachment_id = sandbox.invoices(organization="acme")[0]["attachment_id"]
    url = get(sandbox, f"/v2/attachments/{attachment_id}", ACME).json()["attachment"]["url"]
    sandbox.reset_log()
    sandbox.ip_rate_limits = ((4, 1.0),)

    first = time.monotonic()
    statuses = [get(sandbox, "/v2/organization", headers).status_code
                for headers in (PRIMARY, ACME, {"Authorization": "acme:wrong"}, PRIMARY)]
    assert statuses == [200, 200, 401, 200]  # every organization together, 401s included
    refused = get(sandbox, "/v2/organization", ACME)
    assert refused.status_code == 429 and refused.json()["errors"][0]["code"] == "too_many_requests"
    assert refused.headers["Retry-After"] == "1"
    assert requests.get(url).status_code == 200  # storage downloads are not counted
    assert requests.get(f"{sandbox.base_url}/_sandbox/counts").status_code == 200  # nor the request view

    wait_for(lambda: get(sandbox, "/v2/organization", PRIMARY).status_code == 200, timeout=5, interval=0.02,
             message="a slot to free up")
    assert time.monotonic() - first >= 1.0  # not before the first request left the window
    assert sandbox.count(status=429) == sandbox.count(path_prefix="/v2/") - 5 >= 1

    sandbox.ip_rate_limits = ()  # changed at run time
    assert all(get(sandbox, "/v2/organization", PRIMARY).status_code == 200 for _ in range(6))


def test_retry_after_is_the_whole_seconds_until_a_slot_frees(sandbox: Sandbox) -> None:
    sandbox.ip_rate_limits = ((100, 60.0), (2, 2.5))
    sent = time.monotonic()
    assert [get(sandbox, "/v2/organization", PRIMARY).status_code for _ in range(2)] == [200, 200]
    refused = get(sandbox, "/v2/organization", PRIMARY)
    frees_in = sent + 2.5 - time.monotonic()  # at most: the first request was admitted after `sent`
    assert refused.status_code == 429 and math.ceil(frees_in) <= int(refused.headers["Retry-After"]) <= 3


def test_the_ip_rate_limit_counts_each_client_address_apart(sandbox: Sandbox) -> None:
    sandbox.ip_rate_limits = ((1, 5.0),)

    def status_from(address: str) -> int:
        connection = http.client.HTTPConnection(sandbox.host, sandbox.port, timeout=5, source_address=(address, 0))
        try:
            connection.request("GET", "/v2/organization", headers=PRIMARY)
            return connection.getresponse().status
        finally:
            connection.close()

    assert [status_from("127.0.0.1"), status_from("127.0.0.1"), status_from("127.0.0.2")] == [200, 429, 200]
    assert [record.client for record in sandbox.request_log()] == ["127.0.0.1", "127.0.0.1", "127.0.0.2"]
    assert json.loads(requests.get(f"{sandbox.base_url}/_sandbox/requests").text)["requests"][-1]["client"] == "127.0.0.2"
