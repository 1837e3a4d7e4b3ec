"""Realistic sample invoices as valid one-page PDFs, for `demo` and benchmarks (no PDF library needed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Sequence


@dataclass(frozen=True)
class SampleInvoice:
    supplier: str
    number: str
    issued: date
    lines: tuple[tuple[str, str], ...]  # (description, amount in EUR as a decimal string)

    @property
    def total(self) -> str:
        return f"{sum(float(amount) for _, amount in self.lines):.2f}"

    @property
    def file_name(self) -> str:
        return f"{self.supplier.split()[0].lower()}-{self.number}.pdf"


SAMPLES = (
    SampleInvoice("Papeterie Martin SARL", "F-2026-0142", date(2026, 11, 3),
                  (("Ramettes papier A4 x10", "42.50"), ("Cartouches toner", "118.90"))),
    SampleInvoice("Atelier Numerique SAS", "AN-88317", date(2026, 11, 9),
                  (("Maintenance serveur novembre", "390.00"),)),
    SampleInvoice("Boulangerie du Parc", "BP-5521", date(2026, 11, 12),
                  (("Plateau petit-dejeuner equipe", "64.20"), ("Livraison", "8.00"))),
    SampleInvoice("Transports Leroy", "TL-20261118", date(2026, 11, 18),
                  (("Coursier Paris intra-muros", "27.00"), ("Supplement urgence", "12.00"))),
)


def _escape(text: str) -> bytes:
    shown = text.encode("latin-1", "replace")
    for special in (b"\\", b"(", b")"):
        shown = shown.replace(special, b"\\" + special)
    return shown


def page_pdf(rows: Sequence[tuple[int, int, int, str]], padding: bytes = b"") -> bytes:
    """A valid one-page PDF showing each (x, y, font size, text) row in Helvetica.

    `padding` (whole lines starting with `%`) is placed as a comment before the cross-reference
    table, to reach a size or to make the bytes unique without changing the page.
    """
    stream = b"\n".join(b"BT /F1 %d Tf %d %d Td (" % (size, x, y) + _escape(text) + b") Tj ET"
                        for x, y, size, text in rows)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    out += padding
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def invoice_pdf(invoice: SampleInvoice, padding: int = 0) -> bytes:
    """The invoice laid out as a page; `padding` bytes of comment make the file bigger."""
    due = invoice.issued + timedelta(days=30)
    rows = [(72, 760, 20, invoice.supplier), (72, 730, 12, f"Invoice {invoice.number}"),
            (72, 712, 12, f"Issued {invoice.issued.isoformat()} - due {due.isoformat()}"),
            (72, 680, 12, "Billed to: Demo Company SAS, 1 rue de la Paix, 75002 Paris")]
    y = 640
    for description, amount in invoice.lines:
        rows.append((72, y, 12, description))
        rows.append((430, y, 12, f"{amount} EUR"))
        y -= 20
    rows.append((72, y - 20, 14, f"Total due: {invoice.total} EUR"))
    filler = b"%" + b"0" * max(0, padding - 2) + b"\n" if padding > 0 else b""
    return page_pdf(rows, filler)
