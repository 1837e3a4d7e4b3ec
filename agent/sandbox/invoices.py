"""What a supplier invoice looks like, field by field, as Qonto's 2026 reference shows it: a fresh
upload, what the analysis fills in, and the history (payments, approvals, credit notes, e-invoicing
events) a seeded invoice carries, so clients meet nested arrays and objects of realistic size.

Every value is drawn from the random generator passed in, so a seeded sandbox is reproducible.
"""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

NewId = Callable[[], str]

SUPPLIERS = (
    "Acme Fournitures SARL",
    "Bureau Vallée",
    "OVHcloud",
    "Électricité de France",
    "Papeterie Dupont & Fils",
    "Transports Martin",
    "Café Lumière",
    "Müller Logistik GmbH",
)
APPROVERS = ("Camille Laurent", "Jules Moreau", "Inès Bernard", "Hugo Petit")
# Qonto's source_type values; the sandbox's API uploads are `direct_upload`.
DIRECT_UPLOAD, E_INVOICING, EMAIL = "direct_upload", "e_invoicing", "email"
SEED_SOURCES = (  # (source_type, source) of seeded invoices: half uploaded by hand, the rest received
    (DIRECT_UPLOAD, "web_app"),
    (DIRECT_UPLOAD, "mobile_app"),
    (EMAIL, "email_forward"),
    (E_INVOICING, "e_invoicing_network"),
)
API_SOURCE = "api"  # `source` of an upload whose request named none
_E_INVOICE_TYPES = ("facturx", "zugferd", "ubl")
_EINVOICING_STEPS = ("deposited", "received", "made_available", "approved")
_ACTIONS = ("approve", "reject", "pay", "schedule_payment", "mark_as_paid", "unmark_as_paid", "archive", "edit")
_ALLOWED = {  # status → the actions Qonto's app would offer
    "to_review": {"edit", "reject", "archive"},
    "to_approve": {"approve", "reject", "edit"},
    "awaiting_payment": {"pay", "schedule_payment", "mark_as_paid", "edit"},
    "to_pay": {"pay", "schedule_payment", "mark_as_paid", "reject", "edit"},
    "scheduled": {"edit"},
    "paid": {"unmark_as_paid", "archive"},
}


def new_id(rng: random.Random) -> str:
    """A UUID4 drawn from `rng`."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def available_actions(status: str) -> dict[str, bool]:
    """What a person may do with an invoice in `status` (unknown statuses: nothing)."""
    allowed = _ALLOWED.get(status, set())
    return {action: action in allowed for action in _ACTIONS}


def new_invoice(
    invoice_id: str, organization_id: str, file_name: str, attachment_id: str | None, now: str,
    *, source_type: str, source: str,
) -> dict[str, Any]:
    """A fresh invoice before analysis: identity, file and origin set, the rest null or empty."""
    return {
        "id": invoice_id,
        "organization_id": organization_id,
        "file_name": file_name,
        "status": "to_review",
        "source_type": source_type,
        "source": source,
        "is_einvoice": source_type == E_INVOICING,
        "e_invoice_type": None,
        "supplier_name": None,
        "supplier_id": None,
        "invoice_number": None,
        "description": None,
        "total_amount": None,
        "total_amount_excluding_taxes": None,
        "total_tax_amount": None,
        "payable_amount": None,
        "total_amount_credit_notes": None,
        "issue_date": None,
        "due_date": None,
        "payment_date": None,
        "scheduled_date": None,
        "iban": None,
        "vat_number": None,
        "tin": None,
        "attachment_id": attachment_id,
        "display_attachment_id": attachment_id,
        "initiator_id": None,
        "attachment_category": None,
        "is_attachment_invoice": None,
        "is_attachment_non_financial": None,
        "created_at": now,
        "updated_at": now,
        "analyzed_at": None,
        "has_duplicates": False,
        "has_discrepancies": False,
        "declined_note": None,
        "is_credit_note": False,
        "has_suggested_credit_notes": False,
        "matched_transactions": [],
        "transfer_ids": [],
        "request_transfer": None,
        "suggested_transactions": [],
        "related_invoices": [],
        "einvoicing_lifecycle_events": [],
        "approval_workflow": None,
        "available_actions": available_actions("to_review"),
        "meta": None,
    }


def _amount(cents: int) -> dict[str, str]:
    """An amount as Qonto writes it: a decimal string with two places, and its currency."""
    return {"value": f"{cents // 100}.{cents % 100:02d}", "currency": "EUR"}


def analysis(rng: random.Random, created_day: str, *, einvoice: bool) -> dict[str, Any]:
    """What Qonto's analysis reads off an invoice: supplier, number, amounts (20% VAT), dates, IBAN."""
    issued = date.fromisoformat(created_day) - timedelta(days=rng.randint(0, 20))
    supplier = rng.randint(0, len(SUPPLIERS) - 1)
    cents = rng.randint(500, 500_000)
    tax = round(cents / 6)
    fields = {
        "supplier_name": SUPPLIERS[supplier],
        "supplier_id": _stable_id("supplier", SUPPLIERS[supplier]),
        "invoice_number": f"F-{issued.year}-{rng.randint(1, 99999):05d}",
        "total_amount": _amount(cents),
        "total_amount_excluding_taxes": _amount(cents - tax),
        "total_tax_amount": _amount(tax),
        "payable_amount": _amount(cents),
        "issue_date": issued.isoformat(),
        "due_date": (issued + timedelta(days=30)).isoformat(),
        "iban": f"FR76{rng.randint(10**22, 10**23 - 1)}",
        "vat_number": f"FR{rng.randint(10**10, 10**11 - 1)}",
        "attachment_category": "INVOICE",
        "is_attachment_invoice": True,
        "is_attachment_non_financial": False,
    }
    if einvoice:
        fields["e_invoice_type"] = rng.choice(_E_INVOICE_TYPES)
    return fields


def history(rng: random.Random, invoice: dict[str, Any], now: datetime, new: NewId) -> dict[str, Any]:
    """The fields an invoice gathers over its life in Qonto, for a seeded invoice in its status:
    who uploaded it, approvals, payments and matched transactions, credit notes, e-invoicing events.
    `new()` draws a fresh id; `now` is its last update, in UTC."""
    status, total = invoice["status"], invoice["total_amount"]
    fields: dict[str, Any] = {"available_actions": available_actions(status), "initiator_id": None}
    if invoice["source_type"] == DIRECT_UPLOAD:
        fields["initiator_id"] = new()
    if invoice["is_einvoice"]:
        fields["einvoicing_lifecycle_events"] = [
            {"status": step, "occurred_at": _stamp(now - timedelta(hours=6 - hour))}
            for hour, step in enumerate(_EINVOICING_STEPS[: rng.randint(2, len(_EINVOICING_STEPS))])
        ]
    if status not in ("to_review", "rejected"):
        fields["approval_workflow"] = _approval_workflow(rng, status, now, new)
    if status in ("paid", "scheduled", "archived"):
        transfers = [new() for _ in range(rng.randint(1, 2))]
        fields["transfer_ids"] = transfers
        fields["request_transfer"] = {"id": new(), "initiator_id": new(), "status": "processed"}
        if status != "scheduled":
            fields["matched_transactions"] = [new() for _ in transfers]
            fields["payment_date"] = (now - timedelta(days=1)).date().isoformat()
        else:
            fields["scheduled_date"] = (now + timedelta(days=rng.randint(1, 20))).date().isoformat()
    if status in ("to_pay", "awaiting_payment"):
        fields["suggested_transactions"] = [_transaction(rng, total, now, new) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.2:
        fields.update(_credit_notes(rng, total, new))
    return fields


def _stable_id(kind: str, name: str) -> str:
    """The same id for the same supplier or member in every invoice and every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox:{kind}:{name}"))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _approval_workflow(rng: random.Random, status: str, now: datetime, new: NewId) -> dict[str, Any]:
    steps = []
    for order in range(1, rng.randint(1, 3) + 1):
        approvers = [{"id": _stable_id("member", name), "full_name": name}
                     for name in rng.sample(APPROVERS, rng.randint(1, 2))]
        done = status != "to_approve"
        steps.append({
            "order": order,
            "operator": rng.choice(("all", "any")),
            "status": "approved" if done else "pending",
            "approvers": approvers,
            "approved_by": approvers[0]["id"] if done else None,
            "approved_at": _stamp(now - timedelta(hours=order)) if done else None,
        })
    return {"id": new(), "status": "pending" if status == "to_approve" else "approved", "steps": steps}


def _transaction(rng: random.Random, total: dict[str, str], now: datetime, new: NewId) -> dict[str, Any]:
    return {
        "id": new(),
        "amount": dict(total),
        "settled_at": _stamp(now - timedelta(days=rng.randint(0, 10))),
        "counterparty_name": rng.choice(SUPPLIERS),
    }


def _credit_notes(rng: random.Random, total: dict[str, str], new: NewId) -> dict[str, Any]:
    """One credit note against the invoice: it lowers what is left to pay."""
    value = Decimal(total["value"])
    credit = (value * Decimal(rng.randint(5, 30)) / 100).quantize(Decimal("0.01"))
    note = {"id": new(), "invoice_number": f"AV-{rng.randint(1, 9999):04d}", "is_credit_note": True,
            "total_amount": {"value": str(credit), "currency": total["currency"]}}
    return {
        "related_invoices": [note],
        "total_amount_credit_notes": note["total_amount"],
        "payable_amount": {"value": str(value - credit), "currency": total["currency"]},
        "has_suggested_credit_notes": rng.random() < 0.5,
    }
