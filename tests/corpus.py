"""A corpus of real invoice files made by real producers, for testing and benchmarking the
content judgement (agent/inbox/content.py). Imports nothing from pytest.

Everything is made in memory, deterministically (fixed seeds, reportlab `invariant=1`, pikepdf
`deterministic_id`), in about a second; the only exception is AES-256 encryption, whose salts and
keys qpdf draws at random (same length and structure every time, different bytes).

- `valid_files()`: name (with the right extension) -> bytes of a whole file that a reader accepts.
- `truncations(data, kind)`: label -> a nasty prefix of `data` that must not be judged whole.
- `preallocated(data, filled)`: a copy in progress that preallocated the full length.
- `not_supported_files()`: files that are none of PDF, JPEG, PNG.
"""

from __future__ import annotations

import functools
import io
import random
import re
import struct

import img2pdf
import pikepdf
from PIL import Image, ImageDraw
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

SEED = 20240607
PDF, JPEG, PNG = "pdf", "jpeg", "png"  # the values of agent.inbox.content.Kind
EXTENSIONS = {".pdf": PDF, ".jpg": JPEG, ".jpeg": JPEG, ".png": PNG}

_EOF_MARK = re.compile(rb"%%EOF(?:\r\n|\r|\n)?")
_OBJ = re.compile(rb"(?<![0-9])(\d{1,10}) (\d{1,5}) obj\b")


def kind_of(name: str) -> str:
    """The kind a corpus name stands for, from its extension."""
    return EXTENSIONS[name[name.rfind("."):].lower()]


# --- producers -------------------------------------------------------------------------------

def _lines(rng: random.Random, count: int) -> list[str]:
    items = ["Consulting", "Hosting", "Licence", "Support", "Travel", "Hardware", "Training"]
    return [f"{i + 1:4d}  {rng.choice(items):<12} {rng.randint(1, 40):3d} x {rng.randint(5, 900):4d}.00 EUR"
            for i in range(count)]


def reportlab_invoice(pages: int = 1, lines_per_page: int = 40, seed: int = SEED,
                      image: bytes | None = None, compress: bool = True) -> bytes:
    """A text invoice made by reportlab; `image` (encoded JPEG/PNG bytes) is drawn on page 1."""
    rng = random.Random(seed)
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4, invariant=1, pageCompression=int(compress))
    c.setTitle(f"Invoice {seed}")
    c.setAuthor("ACME Supplies SARL")
    for page in range(pages):
        c.setFont("Helvetica-Bold", 16)
        c.drawString(50, 800, f"ACME Supplies SARL - Invoice F-{seed}-{page + 1}")
        c.setFont("Courier", 9)
        y = 770
        if image is not None and page == 0:
            c.drawImage(ImageReader(io.BytesIO(image)), 50, 420, width=300, height=330)
            y = 400
        for line in _lines(rng, lines_per_page):
            c.drawString(50, y, line)
            y -= 11
            if y < 60:
                break
        c.drawString(50, 40, f"Page {page + 1} / {pages}")
        c.showPage()
    c.save()
    return out.getvalue()


def noise_image(width: int, height: int, seed: int = SEED, mode: str = "RGB") -> Image.Image:
    """Incompressible pixels, to make files big."""
    rng = random.Random(seed)
    bands = len(mode)
    return Image.frombytes(mode, (width, height), rng.randbytes(width * height * bands))


def scan_image(width: int = 620, height: int = 877, seed: int = SEED) -> Image.Image:
    """A page-like picture: white paper, dark text lines, a little sensor noise."""
    rng = random.Random(seed)
    im = Image.new("RGB", (width, height), (250, 250, 246))
    draw = ImageDraw.Draw(im)
    draw.text((40, 30), f"ACME Supplies SARL  invoice F-{seed}", fill=(10, 10, 10))
    for i, line in enumerate(_lines(rng, 60)):
        draw.text((40, 70 + 13 * i), line, fill=(20, 20, 30))
    draw.rectangle((30, 20, width - 30, height - 20), outline=(60, 60, 60))
    noise = noise_image(width // 4, height // 4, seed, "L").resize((width, height))
    return Image.blend(im, Image.merge("RGB", (noise, noise, noise)), 0.06)


def _exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """An APP1 Exif payload (little-endian TIFF) with IFD0 and an IFD1 holding a JPEG thumbnail."""
    ifd0_at = 8
    ifd0 = [(0x0112, 3, 1, 1)]  # Orientation = 1
    ifd1_at = ifd0_at + 2 + 12 * len(ifd0) + 4
    ifd1_size = 2 + 12 * 3 + 4
    thumb_at = ifd1_at + ifd1_size
    ifd1 = [(0x0103, 3, 1, 6), (0x0201, 4, 1, thumb_at), (0x0202, 4, 1, len(thumbnail))]

    def ifd(entries, next_at):
        raw = struct.pack("<H", len(entries))
        for tag, typ, count, value in entries:
            packed = struct.pack("<H", value) + b"\0\0" if typ == 3 else struct.pack("<I", value)
            raw += struct.pack("<HHI", tag, typ, count) + packed
        return raw + struct.pack("<I", next_at)

    tiff = b"II*\0" + struct.pack("<I", ifd0_at) + ifd(ifd0, ifd1_at) + ifd(ifd1, 0)
    assert len(tiff) == thumb_at
    return b"Exif\0\0" + tiff + thumbnail


def jpeg_photo(progressive: bool = False, thumbnail: bool = True, seed: int = SEED,
               quality: int = 85) -> bytes:
    """A Pillow JPEG of a scanned page, optionally with an Exif thumbnail (itself a JPEG)."""
    im = scan_image(seed=seed)
    exif = b""
    if thumbnail:
        thumb = io.BytesIO()
        im.resize((120, 170)).save(thumb, "JPEG", quality=70)
        exif = _exif_with_thumbnail(thumb.getvalue())
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, progressive=progressive, optimize=progressive, exif=exif)
    return out.getvalue()


def png_image(seed: int = SEED, palette: bool = False) -> bytes:
    im = scan_image(width=500, height=700, seed=seed)
    if palette:
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = io.BytesIO()
    im.save(out, "PNG", optimize=False)
    return out.getvalue()


def img2pdf_scan(image: bytes) -> bytes:
    """An image-only PDF, as scanner software makes them."""
    return img2pdf.convert(image, nodate=True)


def pikepdf_resave(data: bytes, **save_kw) -> bytes:
    kw = {"deterministic_id": True}
    if "encryption" in save_kw:
        kw = {}  # qpdf refuses a deterministic /ID with encryption
    kw.update(save_kw)
    with pikepdf.open(io.BytesIO(data)) as pdf:
        out = io.BytesIO()
        pdf.save(out, **kw)
        return out.getvalue()


def _unparse(value) -> bytes:
    """PDF syntax of a value; indirect objects as references (pikepdf turns scalars into Python)."""
    return pikepdf.Array([value]).unparse().strip()[1:-1].strip()


INCREMENTAL_MARK = b"Paid by transfer - incremental update"


def incremental_update(data: bytes) -> bytes:
    """Append a classic incremental update to `data` (which must have an xref table): a new content
    stream and a new version of page 1 that draws it too; new xref section, trailer with /Prev."""
    startxref = int(re.search(rb"startxref\s+(\d+)\s*%%EOF\s*$", data).group(1))
    with pikepdf.open(io.BytesIO(data)) as pdf:
        page = pdf.pages[0].obj
        page_num, page_gen = page.objgen
        size = int(pdf.trailer.Size)
        fields = []
        for key, value in page.items():
            if key == "/Contents":
                continue
            fields.append(key.encode() + b" " + _unparse(value))
        contents = page.get("/Contents")
        old = list(contents) if isinstance(contents, pikepdf.Array) else [contents]
        refs = b" ".join(b"%d %d R" % o.objgen for o in old)
        trailer = {k: v for k, v in pdf.trailer.items() if k in ("/Root", "/Info", "/ID")}
    stream = b"BT /F1 14 Tf 50 20 Td (" + INCREMENTAL_MARK + b") Tj ET"
    # a fresh font resource would need a resource change; F1 exists on reportlab pages
    body = data if data.endswith(b"\n") else data + b"\n"
    offsets = {}
    new_num = size
    offsets[new_num] = len(body)
    body += b"%d 0 obj\n<< /Length %d >>\nstream\n%s\nendstream\nendobj\n" % (new_num, len(stream), stream)
    offsets[page_num] = len(body)
    body += (b"%d %d obj\n<< " % (page_num, page_gen) + b" ".join(fields)
             + b" /Contents [ %s %d 0 R ] >>\nendobj\n" % (refs, new_num))
    xref_at = len(body)
    xref = b"xref\n0 1\n0000000000 65535 f \n"
    for num in sorted(offsets):
        gen = page_gen if num == page_num else 0
        xref += b"%d 1\n%010d %05d n \n" % (num, offsets[num], gen)
    trail = b" ".join(k.encode() + b" " + _unparse(v) for k, v in trailer.items())
    body += xref + b"trailer\n<< /Size %d %s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        new_num + 1, trail, startxref, xref_at)
    return body


# --- delivery variants -----------------------------------------------------------------------

MAIL_HEADER = (b"From: billing@acme-supplies.example\r\nSubject: Invoice F-2024-118\r\n"
               b"Content-Type: application/pdf\r\n\r\n")
HTML_TAIL = (b"<!DOCTYPE html><html><head><title>Download complete</title></head><body>\n"
             + b"<p>Thank you for using our billing portal. Your document is attached above.</p>\n" * 240
             + b"</body></html>\n")[: 16 * 1024]


def delivery_variants(name: str, data: bytes) -> dict[str, bytes]:
    """What the network and mail clients do to a PDF on its way to the folder."""
    stem = name[: -len(".pdf")]
    tail = _EOF_MARK.search(data, data.rfind(b"%%EOF"))
    return {
        f"{stem}.bom.pdf": b"\xef\xbb\xbf" + data,
        f"{stem}.crlf-before.pdf": b"\r\n" + data,
        f"{stem}.mail-header.pdf": MAIL_HEADER + data,
        f"{stem}.nul4k-after.pdf": data + b"\0" * 4096,
        f"{stem}.nul64k-after.pdf": data + b"\0" * 65536,
        f"{stem}.html16k-after.pdf": data + HTML_TAIL,
        f"{stem}.no-final-eof.pdf": _relength(data[: tail.start()]),
    }


def _relength(data: bytes) -> bytes:
    """A linearized file states its length (/L): a producer that writes no final %%EOF states the
    length it wrote. Rewritten in place (same width), so no offset moves."""
    found = re.search(rb"/L\s+(\d+)", data[:1024]) if b"/Linearized" in data[:1024] else None
    if not found:
        return data
    new = str(len(data)).encode()
    width = found.end(1) - found.start(1)
    assert len(new) <= width
    return data[:found.start(1)] + new + b" " * (width - len(new)) + data[found.end(1):]


# --- the corpus ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _images() -> dict[str, bytes]:
    return {
        "photo-exif-thumb.jpg": jpeg_photo(thumbnail=True),
        "photo-progressive.jpg": jpeg_photo(progressive=True, thumbnail=True, seed=SEED + 1),
        "photo-plain.jpg": jpeg_photo(thumbnail=False, seed=SEED + 2, quality=92),
        "scan-rgb.png": png_image(),
        "scan-palette.png": png_image(seed=SEED + 3, palette=True),
    }


@functools.lru_cache(maxsize=1)
def _valid() -> dict[str, bytes]:
    images = _images()
    big_png = io.BytesIO()
    noise_image(360, 300, SEED + 4).save(big_png, "PNG")
    one = reportlab_invoice(pages=1, seed=SEED)
    multi = reportlab_invoice(pages=4, seed=SEED + 5)
    many = reportlab_invoice(pages=40, seed=SEED + 6, lines_per_page=65, compress=False)
    big = reportlab_invoice(pages=2, seed=SEED + 7, image=big_png.getvalue())
    files = {
        "reportlab-1page.pdf": one,
        "reportlab-4pages.pdf": multi,
        "reportlab-40pages-uncompressed.pdf": many,  # > 64 KB
        "reportlab-big-image.pdf": big,  # > 300 KB
        "reportlab-4pages.linearized.pdf": pikepdf_resave(multi, linearize=True),
        "reportlab-big-image.linearized.pdf": pikepdf_resave(big, linearize=True),
        "reportlab-4pages.objstm.pdf": pikepdf_resave(
            multi, object_stream_mode=pikepdf.ObjectStreamMode.generate),
        "reportlab-4pages.linearized-objstm.pdf": pikepdf_resave(
            multi, linearize=True, object_stream_mode=pikepdf.ObjectStreamMode.generate),
        "reportlab-4pages.encrypted.pdf": pikepdf_resave(
            multi, encryption=pikepdf.Encryption(owner="owner-secret", user="", R=6)),
        "reportlab-1page.incremental.pdf": incremental_update(one),
        "reportlab-40pages.incremental.pdf": incremental_update(many),
        "img2pdf-jpeg-scan.pdf": img2pdf_scan(images["photo-plain.jpg"]),
        "img2pdf-png-scan.pdf": img2pdf_scan(images["scan-rgb.png"]),
    }
    files.update(delivery_variants("reportlab-4pages.pdf", multi))
    files.update(delivery_variants("reportlab-4pages.linearized.pdf",
                                   files["reportlab-4pages.linearized.pdf"]))
    files.update(delivery_variants("reportlab-1page.incremental.pdf",
                                   files["reportlab-1page.incremental.pdf"]))
    files.update(images)
    return files


@functools.lru_cache(maxsize=1)
def _edge() -> dict[str, bytes]:
    photo = _images()["photo-plain.jpg"]
    mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0isommp42" + b"\0\0\x08\0mdat" + random.Random(SEED).randbytes(2040)
    return {
        "photo-plain.nul4k-after.jpg": photo + b"\0" * 4096,
        "photo-plain.motion-photo.jpg": photo + mp4,  # a phone "motion photo": a video after EOI
    }


def valid_edge_files() -> dict[str, bytes]:
    """Whole files that decoders read but that carry bytes after the image's end marker (kept apart
    from `valid_files()`, which producers and mail clients make every day)."""
    return dict(_edge())


def valid_files() -> dict[str, bytes]:
    """Every whole file of the corpus: name (extension tells the kind) -> bytes."""
    return dict(_valid())


def plain_files() -> dict[str, bytes]:
    """The valid files as producers wrote them, before any delivery variant touched them (no bytes
    before the start, no padding after the end): the ones that make sense to truncate or preallocate."""
    return {n: d for n, d in _valid().items() if n.count(".") == 1 or n.endswith(
        (".linearized.pdf", ".objstm.pdf", ".linearized-objstm.pdf", ".encrypted.pdf", ".incremental.pdf"))}


def not_supported_files() -> dict[str, bytes]:
    tiff = io.BytesIO()
    scan_image(200, 280).save(tiff, "TIFF", compression="tiff_lzw")
    gif = io.BytesIO()
    scan_image(200, 280).convert("P").save(gif, "GIF")
    return {
        "notes.txt": b"Invoice F-2024-118\nTotal: 1234.00 EUR\n" * 20,
        "scan.tiff": tiff.getvalue(),
        "logo.gif": gif.getvalue(),
        "invoice.docx.zip": b"PK\x03\x04" + bytes(200),
    }


# --- copies in progress ----------------------------------------------------------------------

def preallocated(data: bytes, filled: int) -> bytes:
    """The full length reserved and zero-filled, the first `filled` bytes written (SMB/Windows copy)."""
    filled = max(0, min(filled, len(data)))
    return data[:filled] + b"\0" * (len(data) - filled)


def _pdf_points(data: bytes) -> dict[str, int]:
    size = len(data)
    points: dict[str, int] = {}
    sx = data.rfind(b"startxref")
    num = re.match(rb"startxref\s+(\d+)", data[sx:])
    xref_at = int(num.group(1)) + data.find(b"%PDF-")
    points["before-final-startxref"] = sx
    digits_at = sx + num.start(1)
    points["mid-startxref-number"] = digits_at + max(1, (num.end(1) - num.start(1)) // 2)
    trailer = data.rfind(b"trailer", 0, sx)
    if trailer > xref_at:
        points["before-final-trailer"] = trailer
    points["mid-final-xref"] = (xref_at + (trailer if trailer > xref_at else sx)) // 2
    points["just-before-final-xref"] = xref_at
    before = data.rfind(b"endobj", 0, xref_at)
    if before > 0:
        points["after-last-endobj"] = before + len(b"endobj") + 1
    eofs = [m for m in _EOF_MARK.finditer(data)]
    linearized = b"/Linearized" in data[:1024]
    if linearized and len(eofs) > 1:
        points["after-first-eof"] = eofs[0].end()
        points["first-eof-without-eol"] = eofs[0].start() + 5
    if linearized:
        first_page_end = re.search(rb"/E\s+(\d+)", data[:1024])
        if first_page_end:  # the whole first page has arrived, nothing more
            points["at-first-page-end"] = int(first_page_end.group(1)) + data.find(b"%PDF-")
        first_xref = _OBJ.search(data, data.find(b"endobj") + 6)
        if first_xref and b"/XRef" in data[first_xref.end():first_xref.end() + 40]:
            points["after-first-page-xref-stream"] = data.find(b"endobj", first_xref.end()) + 7
    if not linearized and len(eofs) > 1:  # an incremental update: cut inside the last update
        last_rev_end = eofs[-2].end()
        first_obj = _OBJ.search(data, last_rev_end)
        if first_obj:
            points["inside-update-object"] = first_obj.start() + 12
            points["update-object-header-only"] = first_obj.end()
            points["update-object-number-only"] = first_obj.start() + len(first_obj.group(1)) + 2
    # mid-object: inside the largest object
    objs = list(_OBJ.finditer(data))
    spans = [(data.find(b"endobj", m.end()) - m.end(), m.end()) for m in objs]
    if spans:
        length, at = max(spans)
        points["mid-largest-object"] = at + length // 2
    points["len-64"] = size - 64
    return points


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, total length) of every segment up to and including the first SOS header."""
    out, at = [], 2
    while at + 4 <= len(data):
        code = data[at + 1]
        length = int.from_bytes(data[at + 2:at + 4], "big")
        out.append((at, code, 2 + length))
        if code == 0xDA:
            break
        at += 2 + length
    return out


def _jpeg_points(data: bytes) -> dict[str, int]:
    size = len(data)
    points = {"soi-only": 2, "soi-and-marker": 4}
    segs = _jpeg_segments(data)
    for at, code, length in segs:
        if code == 0xE1 and data[at + 4:at + 10] == b"Exif\0\0":
            thumb_end = data.rfind(b"\xff\xd9", at, at + length) + 2
            if thumb_end > 1:
                points["after-exif-thumbnail-eoi"] = thumb_end
            points["mid-exif"] = at + 20
        if code == 0xDA:
            points["before-first-sos"] = at
            points["after-first-sos-header"] = at + length
    sos = [m.start() for m in re.finditer(rb"\xff\xda", data)]
    if len(sos) > 1:  # progressive: just before a later scan
        points["before-last-scan"] = sos[-1]
    points["half"] = size // 2
    points["len-64"] = size - 64
    points["before-final-eoi"] = size - 2
    points["eoi-ff-only"] = size - 1
    return points


def _png_points(data: bytes) -> dict[str, int]:
    size = len(data)
    points = {"signature-only": 8, "mid-ihdr": 8 + 12}
    at, idats = 8, []
    while at + 8 <= size:
        length = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        if kind == b"IHDR":
            points["after-ihdr"] = at + 12 + length
        if kind == b"IDAT":
            idats.append((at, length))
        if kind == b"IEND":
            points["before-iend"] = at
            points["iend-without-crc"] = at + 8
            break
        at += 12 + length
    if idats:
        first_at, first_len = idats[0]
        points["mid-first-idat"] = first_at + 8 + first_len // 2
        points["after-last-idat"] = idats[-1][0] + 12 + idats[-1][1] if len(idats) > 1 else first_at + 12 + first_len
        if len(idats) > 1:
            points["after-first-idat"] = first_at + 12 + first_len
    points["len-64"] = size - 64
    points["iend-crc-missing-1"] = size - 1
    return points


def _whole_prefix(data: bytes, at: int, kind: str) -> bool:
    """True when `data[:at]` is itself a whole file, or only lacks (part of) the final end marker:
    an earlier revision of an incrementally updated PDF, or the valid "no final %%EOF" variant."""
    if kind != PDF:
        return False
    head = data[:at].rstrip(b"\r\n \t\f\0")
    if not re.search(rb"startxref\s+\d+\s*(?:%(?:%(?:E(?:OF?)?)?)?)?$", head[-64:]):
        return False
    if head[-1:].isdigit() and data[len(head):len(head) + 1].isdigit():
        return False  # the startxref number itself is cut short
    if b"/Linearized" in data[:1024]:  # the first page's end marker is not an end
        return len(head) > data.rfind(b"startxref")
    return True


def truncations(data: bytes, kind: str, count: int = 10) -> dict[str, bytes]:
    """`count` nasty prefixes of `data` (label -> bytes) that are not whole files.

    Never a cut that only drops the trailing `%%EOF`/EOL (that is the valid "no final marker"
    variant) or trailing padding, nor one that leaves an earlier whole revision."""
    size = len(data)
    points = {"1-byte": 1, "half": size // 2}
    points.update({PDF: _pdf_points, JPEG: _jpeg_points, PNG: _png_points}[kind](data))
    chosen: dict[str, int] = {}
    for label, at in points.items():
        if 0 < at < size and at not in chosen.values() and not _whole_prefix(data, at, kind):
            chosen[label] = at
    rng = random.Random(size)
    while len(chosen) < count:  # fill up with spread points
        at = rng.randrange(1, size - 8)
        if at not in chosen.values() and not _whole_prefix(data, at, kind):
            chosen[f"at-{at}"] = at
    order = sorted(chosen.items(), key=lambda item: item[1])
    keep = order if len(order) <= count else _spread(order, count, required=("1-byte", "half"))
    return {label: data[:at] for label, at in keep}


_PRIORITY = ("after-first-eof", "after-first-page-xref-stream", "at-first-page-end", "after-exif-thumbnail-eoi", "before-iend", "before-final-startxref",
             "mid-largest-object", "len-64", "inside-update-object", "update-object-number-only", "mid-startxref-number",
             "before-final-trailer", "after-last-endobj", "first-eof-without-eol", "before-last-scan",
             "iend-without-crc", "before-final-eoi")


def _spread(order: list[tuple[str, int]], count: int, required: tuple[str, ...]) -> list[tuple[str, int]]:
    labels = [label for label, _ in order]
    keep = [label for label in (*required, *_PRIORITY) if label in labels][:count]
    for label in labels:
        if len(keep) >= count:
            break
        if label not in keep:
            keep.append(label)
    return [item for item in order if item[0] in keep]
