"""The outbox index, `invoices.csv`: one row per invoice, rewritten whole and atomically."""

from __future__ import annotations

from typing import Any, Mapping

from agent.outbox.folder import Outbox
from agent.state.ledger import Ledger

CSV_NAME = "invoices.csv"
CSV_FIELDS = ("id", "status", "supplier_name", "invoice_number", "issue_date", "due_date",
              "total_amount", "currency", "file", "updated_at")


def csv_row(invoice: Mapping[str, Any], file: str | None) -> dict[str, str]:
    """The invoice's line in invoices.csv (values as Qonto sent them; missing ones empty)."""
    amount = invoice.get("total_amount")
    value, currency = (amount.get("value"), amount.get("currency")) if isinstance(amount, dict) else (amount, None)
    row = {key: invoice.get(key) for key in CSV_FIELDS}
    row.update(total_amount=value, currency=currency, file=file)
    return {key: "" if row[key] is None else str(row[key]) for key in CSV_FIELDS}



def write_index(outbox: Outbox, ledger: Ledger) -> None:
    """Rewrite invoices.csv from the rows the ledger keeps for every mirrored invoice."""
    rows = [entry.row for entry in ledger.mirror_entries()]
    outbox.write_csv(CSV_NAME, CSV_FIELDS, rows)
