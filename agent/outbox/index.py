"""The outbox index, `invoices.csv`: one row per invoice, rewritten whole and atomically.

Names in it come from other people's documents (Qonto reads `supplier_name` off a supplier's own
invoice), so no text cell may be read as a formula by a spreadsheet: a text starting with `=`,
`+`, `-`, `@`, a tab or a carriage return gets a leading `'`, as OWASP recommends against CSV
injection. An amount that is a plain number stays a number, negative ones too. The JSON files
keep the exact values.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from agent.outbox.folder import Outbox
from agent.state.ledger import Ledger

CSV_NAME = "invoices.csv"
CSV_FIELDS = ("id", "status", "supplier_name", "invoice_number", "issue_date", "due_date",
              "total_amount", "currency", "file", "updated_at")
NUMBER_FIELDS = frozenset({"total_amount"})
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def csv_row(invoice: Mapping[str, Any], file: str | None) -> dict[str, str]:
    """The invoice's line in invoices.csv (values as Qonto sent them; missing ones empty)."""
    amount = invoice.get("total_amount")
    value, currency = (amount.get("value"), amount.get("currency")) if isinstance(amount, dict) else (amount, None)
    row = {key: invoice.get(key) for key in CSV_FIELDS}
    row.update(total_amount=value, currency=currency, file=file)
    return {key: "" if row[key] is None else str(row[key]) for key in CSV_FIELDS}


def safe_cell(field: str, value: str) -> str:
    """The value as a spreadsheet may show it: a plain number in a number column as it is, any
    other text that a spreadsheet would read as a formula behind a `'`."""
    if field in NUMBER_FIELDS and _PLAIN_NUMBER.fullmatch(value):
        return value
    return f"'{value}" if value.startswith(FORMULA_START) else value


def write_index(outbox: Outbox, ledger: Ledger) -> None:
    """Rewrite invoices.csv from the rows the ledger keeps (as Qonto sent them) for every mirrored invoice."""
    rows = [{field: safe_cell(field, value) for field, value in entry.row.items()}
            for entry in ledger.mirror_entries()]
    outbox.write_csv(CSV_NAME, CSV_FIELDS, rows)
