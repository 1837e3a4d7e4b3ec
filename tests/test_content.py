"""The content judgement (agent/inbox/content.py) on a corpus of real files (tests/corpus.py):
whole files are whole, cut-off and in-progress copies are not, other formats are not supported."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

import corpus
from agent.inbox.content import Kind, State, judge
from agent.qonto.limits import MAX_FILE_BYTES

VALID = corpus.valid_files()
PLAIN = corpus.plain_files()
PDFS = {name: data for name, data in VALID.items() if corpus.kind_of(name) == corpus.PDF}
IMAGES = {name: data for name, data in VALID.items() if corpus.kind_of(name) != corpus.PDF}

def _case(name: str, label: str):
    return pytest.param(name, label, id=f"{name}:{label}")


def judged(tmp_path: Path, data: bytes, name: str = "file.bin"):
    path = tmp_path / name
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return judge(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


# --- the corpus is honest --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PDFS))
def test_corpus_pdf_opens_in_pikepdf(name):
    with pikepdf.open(io.BytesIO(PDFS[name])) as pdf:
        assert len(pdf.pages) >= 1
        for page in pdf.pages:
            page.get("/Contents")  # resolves
        if ".encrypted." in name:
            assert pdf.is_encrypted
        if ".linearized" in name:
            assert b"/Linearized" in PDFS[name][:1024]


@pytest.mark.parametrize("name", sorted(n for n in PDFS if ".incremental." in n))
def test_corpus_incremental_update_is_seen_by_pikepdf(name):
    data = PDFS[name]
    assert data.count(b"%%EOF") >= 1 and b"/Prev" in data[data.rfind(b"trailer"):]
    with pikepdf.open(io.BytesIO(data)) as pdf:
        contents = pdf.pages[0].obj.Contents
        assert isinstance(contents, pikepdf.Array) and len(contents) == 2
        assert corpus.INCREMENTAL_MARK in contents[1].read_bytes()


def test_corpus_sizes():
    sizes = {name: len(data) for name, data in PDFS.items()}
    assert any(size > 64 * 1024 for size in sizes.values())
    assert any(size > 300 * 1024 for size in sizes.values())
    assert any(size < 8 * 1024 for size in sizes.values())


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_corpus_image_opens_in_pillow(name):
    with Image.open(io.BytesIO(IMAGES[name])) as im:
        im.load()
        assert im.format == {"jpeg": "JPEG", "png": "PNG"}[corpus.kind_of(name)]
        if "progressive" in name:
            assert im.info.get("progressive") or im.info.get("progression")


@pytest.mark.parametrize("name", sorted(n for n in IMAGES if "thumb" in n or "progressive" in n))
def test_corpus_jpeg_exif_thumbnail_is_real(name):
    data = IMAGES[name]
    with Image.open(io.BytesIO(data)) as im:
        exif = im.info["exif"]
    assert exif.startswith(b"Exif\0\0II*\0")
    thumb_at = exif.find(b"\xff\xd8\xff", 6)
    assert thumb_at > 0 and exif.endswith(b"\xff\xd9")
    with Image.open(io.BytesIO(exif[thumb_at:])) as thumb:
        thumb.load()
        assert thumb.size == (120, 170)


def test_corpus_is_deterministic():
    again = {
        "reportlab-1page.pdf": corpus.reportlab_invoice(pages=1),
        "photo-exif-thumb.jpg": corpus.jpeg_photo(thumbnail=True),
        "scan-rgb.png": corpus.png_image(),
    }
    for name, data in again.items():
        assert data == VALID[name], name


def test_truncations_never_only_drop_the_end_marker():
    for name, data in PLAIN.items():
        for label, cut in corpus.truncations(data, corpus.kind_of(name)).items():
            assert 0 < len(cut) < len(data), (name, label)
            rest = data[len(cut):]
            assert rest.strip(b"\r\n \t\0") not in (b"%%EOF", b""), (name, label)


# --- judgements ------------------------------------------------------------------------------

EDGE = corpus.valid_edge_files()


@pytest.mark.parametrize(("name", "label"), [_case(name, "valid") for name in sorted(VALID)])
def test_valid_file_is_complete(tmp_path, name, label):
    verdict = judged(tmp_path, VALID[name], name)
    assert (verdict.state, verdict.kind) == (State.COMPLETE, Kind(corpus.kind_of(name))), verdict.why


@pytest.mark.parametrize("name", sorted(EDGE))
def test_corpus_edge_image_opens_in_pillow(name):
    with Image.open(io.BytesIO(EDGE[name])) as im:
        im.load()


@pytest.mark.parametrize(("name", "label"), [_case(name, "valid") for name in sorted(EDGE)])
def test_valid_edge_file_is_complete(tmp_path, name, label):
    verdict = judged(tmp_path, EDGE[name], name)
    assert (verdict.state, verdict.kind) == (State.COMPLETE, Kind(corpus.kind_of(name))), verdict.why


TRUNCATED = {(name, label): cut for name, data in PLAIN.items()
             for label, cut in corpus.truncations(data, corpus.kind_of(name)).items()}


@pytest.mark.parametrize(("name", "label"), [_case(*key) for key in TRUNCATED])
def test_truncated_file_is_writing(tmp_path, name, label):
    verdict = judged(tmp_path, TRUNCATED[(name, label)], name)
    assert verdict.state == State.WRITING, f"{len(TRUNCATED[(name, label)])} bytes: {verdict}"


def _fill_points(name: str, data: bytes) -> dict[str, int]:
    points = {"0": 0, "300-bytes": 300, "half": len(data) // 2, "all-but-last-kb": len(data) - 1024}
    if b"/Linearized" in data[:1024]:
        if data.count(b"%%EOF") > 1:
            points["through-first-eof"] = data.find(b"%%EOF") + 6
        first_page_end = re.search(rb"/E\s+(\d+)", data[:1024])
        points["through-first-page"] = int(first_page_end.group(1))
    assert all(0 <= filled < len(data) for filled in points.values()), name
    return points


PREALLOCATED = {(name, label): corpus.preallocated(data, filled) for name, data in PLAIN.items()
                for label, filled in _fill_points(name, data).items()}


@pytest.mark.parametrize(("name", "label"), [_case(*key) for key in PREALLOCATED])
def test_preallocated_copy_is_writing(tmp_path, name, label):
    verdict = judged(tmp_path, PREALLOCATED[(name, label)], name)
    assert verdict.state == State.WRITING, verdict


@pytest.mark.parametrize("name", sorted(corpus.not_supported_files()))
def test_other_formats_are_not_supported(tmp_path, name):
    verdict = judged(tmp_path, corpus.not_supported_files()[name], name)
    assert verdict.state == State.NOT_SUPPORTED, verdict


def test_empty_file(tmp_path):
    assert judged(tmp_path, b"").state == State.EMPTY


@pytest.mark.parametrize("extra", [1, 4096])
def test_over_the_limit_is_too_large(tmp_path, extra):
    path = tmp_path / "huge.pdf"
    with open(path, "wb") as f:
        f.write(VALID["reportlab-1page.pdf"])
        f.truncate(MAX_FILE_BYTES + extra)  # sparse: no 10 MB written
    fd = os.open(path, os.O_RDONLY)
    try:
        assert judge(fd, os.fstat(fd).st_size).state == State.TOO_LARGE
    finally:
        os.close(fd)


def test_judge_leaves_the_file_offset_alone(tmp_path):
    path = tmp_path / "a.pdf"
    path.write_bytes(VALID["reportlab-4pages.linearized.pdf"])
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 123, os.SEEK_SET)
        assert judge(fd, os.fstat(fd).st_size).state == State.COMPLETE
        assert os.lseek(fd, 0, os.SEEK_CUR) == 123
    finally:
        os.close(fd)
