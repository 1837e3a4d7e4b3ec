"""The inbox end to end with real files (tests/corpus.py: pikepdf, reportlab, img2pdf, Pillow):
`qonto-agent` as a real process, the sandbox over HTTP, real folders, real writers.

What Qonto holds, what `done/` holds and what was written must be the same bytes; a file that is
not whole is never sent, however it arrives (cut off, preallocated, written slowly by a program
that pauses longer than `settle_seconds`), and its age survives `upload` passes."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from support import make_config, run_agent, sidecar_of, wait_for

import corpus

OLD_MTIME = time.mktime((2020, 1, 2, 3, 4, 5, 0, 0, -1))  # what copies that keep the mtime leave
EXIT_FAILED, EXIT_RETRY_LATER = 1, 3  # agent/cli.py


def filed(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith(".error.json"))


def inbox_left(inbox: Path) -> list[str]:
    return sorted(p.name for p in inbox.iterdir() if p.is_file())


def processing_left(inbox: Path) -> list[str]:
    root = inbox / ".processing"
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if root.exists() else []


def sidecar(inbox: Path, name: str) -> dict:
    return sidecar_of(inbox / "error", name)


def started(agent) -> bool:
    """The agent watches (events first, then its first scan): files written now are seen being written."""
    return "watching" in agent.log()


def invoices_by_name(sandbox) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for inv in sandbox.invoices():
        out.setdefault(inv["file_name"], []).append(inv)
    return out


def ext_of(name: str) -> str:
    return name[name.rfind("."):]


def stem_of(name: str) -> str:
    return name[:name.rfind(".")]


# --- 1. the whole corpus goes in, byte for byte ------------------------------------------------

BEFORE_START = (".bom.", ".crlf-before.", ".mail-header.")  # delivery variants with bytes before `%PDF-`


def corpus_files(before_start: bool) -> dict[str, bytes]:
    files = {**corpus.valid_files(), **corpus.valid_edge_files()}
    assert len(set(files.values())) == len(files), "two corpus files share their bytes: counts would lie"
    return {name: data for name, data in files.items() if any(v in name for v in BEFORE_START) == before_start}


@pytest.mark.parametrize("before_start", [False, True], ids=["as-produced", "bytes-before-pdf-start"])
def test_every_valid_corpus_file_is_uploaded_once_byte_for_byte(tmp_path, sandbox, agents, before_start):
    files = corpus_files(before_start)
    assert len(files) >= 9
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.3, "debounce_seconds": 0.3})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: started(agent), message="the agent watching", on_fail=agent.log)
    for name, data in files.items():
        (inbox / name).write_bytes(data)

    wait_for(lambda: len(filed(inbox / "done")) + len(filed(inbox / "error")) >= len(files)
             and not processing_left(inbox), timeout=45,
             message=f"all {len(files)} corpus files filed",
             on_fail=lambda: f"done={filed(inbox / 'done')}\nerror={filed(inbox / 'error')}\n"
                             f"left={inbox_left(inbox)}\n{agent.log()}")
    refused = {name: sidecar(inbox, name)["errors"] for name in filed(inbox / "error")}
    assert refused == {}, f"valid files refused: {refused}\n{agent.tail(60)}"
    assert filed(inbox / "done") == sorted(files)
    assert sandbox.invoice_count() == len(files)
    by_name = invoices_by_name(sandbox)
    assert sorted(by_name) == sorted(files)
    for name, data in files.items():
        [invoice] = by_name[name]
        assert (inbox / "done" / name).read_bytes() == data, f"{name}: done/ differs from what was written"
        assert sandbox.attachment_bytes(invoice["attachment_id"]) == data, f"{name}: Qonto holds other bytes"
    assert inbox_left(inbox) == []
    assert agent.proc.poll() is None, agent.log()


# --- 2. what is not whole is never sent --------------------------------------------------------

UNFINISHED_SOURCES = (
    "reportlab-4pages.linearized.pdf",  # early first-page %%EOF
    "reportlab-1page.incremental.pdf",  # whole earlier revision inside
    "photo-exif-thumb.jpg",  # an Exif thumbnail's own end marker near the start
    "scan-rgb.png",
)


def unfinished_files() -> dict[str, bytes]:
    """Every truncation of a few plain files, plus preallocated copies (nothing / half / all but the
    last 64 bytes written): name (right extension) -> bytes."""
    plain = corpus.plain_files()
    out: dict[str, bytes] = {}
    for source in UNFINISHED_SOURCES:
        data = plain[source]
        stem, ext = stem_of(source), ext_of(source)
        for label, cut in corpus.truncations(data, corpus.kind_of(source)).items():
            out[f"{stem}.cut-{label}{ext}"] = cut
        for label, filled in (("nothing", 0), ("half", len(data) // 2), ("all-but-64", len(data) - 64)):
            out[f"{stem}.prealloc-{label}{ext}"] = corpus.preallocated(data, filled)
    return out


def test_truncated_and_preallocated_files_are_never_uploaded(tmp_path, sandbox, agents):
    unfinished = unfinished_files()
    assert len(unfinished) >= 40
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.3, "debounce_seconds": 0.3,
                                                   "incomplete_after_seconds": 3})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: started(agent), message="the agent watching", on_fail=agent.log)
    for name, data in unfinished.items():
        (inbox / name).write_bytes(data)
    sentinel = corpus.valid_files()["reportlab-1page.pdf"]
    (inbox / "sentinel.pdf").write_bytes(sentinel)  # dropped last: the agent has seen the others

    wait_for(lambda: filed(inbox / "done") == ["sentinel.pdf"], timeout=20, message="sentinel.pdf in done/",
             on_fail=lambda: f"done={filed(inbox / 'done')}\n{agent.log()}")
    wait_for(lambda: filed(inbox / "error") == sorted(unfinished), timeout=30,
             message=f"all {len(unfinished)} unfinished files in error/",
             on_fail=lambda: f"missing={sorted(set(unfinished) - set(filed(inbox / 'error')))}\n"
                             f"left={inbox_left(inbox)}\n{agent.log()}")
    codes = {name: [e["code"] for e in sidecar(inbox, name)["errors"]] for name in unfinished}
    assert {name: c for name, c in codes.items() if c != ["incomplete"]} == {}
    for name, data in unfinished.items():
        assert (inbox / "error" / name).read_bytes() == data, f"{name}: error/ holds other bytes"
    assert sandbox.invoice_count() == 1
    [invoice] = sandbox.invoices()
    assert invoice["file_name"] == "sentinel.pdf"
    assert sandbox.attachment_bytes(invoice["attachment_id"]) == sentinel
    assert filed(inbox / "done") == ["sentinel.pdf"] and inbox_left(inbox) == []


# --- 3. slow writers that pause longer than settle_seconds ---------------------------------------

PAUSE = 1.5  # each writer's pause, three times settle_seconds (0.5)


def _split(data: bytes, parts: int) -> list[int]:
    """Offsets cutting `data` into `parts` roughly equal pieces (inner cuts only)."""
    return [len(data) * i // parts for i in range(1, parts)]


def open_writer(path: Path, data: bytes, cuts: list[int], pause: float = PAUSE,
                after_chunk: Callable[[Path], None] | None = None) -> None:
    """Write `data` through one open descriptor, pausing at every cut (as a scanner between pages)."""
    bounds = [0, *cuts, len(data)]
    with open(path, "wb") as fh:
        for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
            if i:
                time.sleep(pause)  # the writer's own pace: the thing under test
            fh.write(data[start:end])
            fh.flush()
            if after_chunk:
                after_chunk(path)


def preallocating_writer(path: Path, data: bytes, parts: int = 4) -> None:
    """Windows/SMB style: the full size first (zeros), then filled in chunks, pausing in between."""
    with open(path, "wb") as fh:
        fh.truncate(len(data))
        fh.flush()
        bounds = [0, *_split(data, parts), len(data)]
        for start, end in zip(bounds, bounds[1:]):
            time.sleep(PAUSE)
            os.pwrite(fh.fileno(), data[start:end], start)


def closing_writer(path: Path, data: bytes, cuts: list[int], pause: float) -> None:
    """Closes after every chunk and stamps the old mtime a copy keeps; pauses shorter than settle."""
    bounds = [0, *cuts, len(data)]
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        if i:
            time.sleep(pause)
        with open(path, "ab") as fh:
            fh.write(data[start:end])
        os.utime(path, (OLD_MTIME, OLD_MTIME))


def first_eof_end(data: bytes) -> int:
    """Where the first %%EOF line ends: a whole first revision, or a linearized first page."""
    return re.compile(rb"%%EOF(?:\r\n|\r|\n)?").search(data).end()


def to_old_mtime(path: Path) -> None:
    os.utime(path, (OLD_MTIME, OLD_MTIME))


def test_slow_writers_pausing_longer_than_settle_are_never_sent_half_written(tmp_path, sandbox, agents):
    valid = corpus.valid_files()
    big = valid["reportlab-big-image.pdf"]
    incremental = valid["reportlab-40pages.incremental.pdf"]
    prealloc = valid["reportlab-40pages-uncompressed.pdf"]
    jpeg, png = valid["photo-exif-thumb.jpg"], valid["scan-rgb.png"]
    linearized = valid["reportlab-big-image.linearized.pdf"]
    old = valid["reportlab-4pages.objstm.pdf"]
    # the cut points are whole files (a first revision) or look whole at a glance (linearized first page)
    assert first_eof_end(incremental) < len(incremental) and first_eof_end(linearized) < len(linearized)
    writers: dict[str, tuple[bytes, Callable[[Path, bytes], None]]] = {
        "a-chunked-big.pdf": (big, lambda p, d: open_writer(p, d, _split(d, 4))),
        "b-page-by-page.pdf": (incremental, lambda p, d: open_writer(p, d, [first_eof_end(d)])),
        "c-preallocated.pdf": (prealloc, preallocating_writer),
        "d-photo.jpg": (jpeg, lambda p, d: open_writer(p, d, _split(d, 4))),
        "d-scan.png": (png, lambda p, d: open_writer(p, d, _split(d, 4))),
        "e-linearized.pdf": (linearized, lambda p, d: open_writer(p, d, [first_eof_end(d)])),
        "f-old-mtime.pdf": (old, lambda p, d: open_writer(p, d, _split(d, 3), after_chunk=to_old_mtime)),
    }
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.5, "debounce_seconds": 0.3})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: started(agent), message="the agent watching", on_fail=agent.log)
    failures: list[str] = []

    def write(name: str) -> None:
        data, writer = writers[name]
        try:
            writer(inbox / name, data)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=write, args=(name,), name=name) for name in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures and not any(t.is_alive() for t in threads), failures

    assert_each_sent_once_whole(inbox, sandbox, agent, {name: data for name, (data, _) in writers.items()})


def assert_each_sent_once_whole(inbox: Path, sandbox, agent, final: dict[str, bytes]) -> None:
    """Once every file is filed: one invoice per file, holding its final bytes, as done/ does."""
    wait_for(lambda: len(filed(inbox / "done")) + len(filed(inbox / "error")) >= len(final)
             and not inbox_left(inbox) and not processing_left(inbox), timeout=30,
             message="every slowly written file filed",
             on_fail=lambda: f"done={filed(inbox / 'done')}\nerror={filed(inbox / 'error')}\n"
                             f"left={inbox_left(inbox)}\n{agent.log()}")
    by_name = invoices_by_name(sandbox)
    sent = {name: [len(sandbox.attachment_bytes(inv["attachment_id"])) for inv in invs]
            for name, invs in by_name.items()}
    partial = {name: sizes for name, sizes in sent.items()
               if name not in final or sizes != [len(final[name])]}
    assert partial == {}, f"partial or extra uploads (name -> sizes sent): {partial}\n{agent.tail(80)}"
    assert filed(inbox / "error") == []
    assert filed(inbox / "done") == sorted(final)
    assert sandbox.invoice_count() == len(final)
    for name, data in final.items():
        [invoice] = by_name[name]
        assert sandbox.attachment_bytes(invoice["attachment_id"]) == data, name
        assert (inbox / "done" / name).read_bytes() == data, name


def test_an_old_modification_time_never_shortens_the_settle(tmp_path, sandbox, agents):
    """A writer that closes between chunks and stamps an old mtime each time (a copy keeping the
    source's time), pausing for half of settle_seconds after a first chunk that is a whole PDF
    (the first revision of an incrementally updated one): only the settle holds it back."""
    valid = corpus.valid_files()
    final = {"old-mtime-1page.pdf": valid["reportlab-1page.incremental.pdf"],
             "old-mtime-40pages.pdf": valid["reportlab-40pages.incremental.pdf"]}
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 2.0, "debounce_seconds": 0.1})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: started(agent), message="the agent watching", on_fail=agent.log)
    threads = [threading.Thread(target=closing_writer, args=(inbox / name, data, [first_eof_end(data)], 1.0))
               for name, data in final.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert_each_sent_once_whole(inbox, sandbox, agent, final)


# --- 4. the age of an unfinished file survives `upload` passes ----------------------------------

def test_unfinished_file_goes_to_error_after_its_age_counted_across_upload_passes(tmp_path, sandbox):
    incomplete_after = 6.0
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.3, "debounce_seconds": 0.3,
                                                   "incomplete_after_seconds": incomplete_after})
    inbox = tmp_path / "inbox"
    data = corpus.plain_files()["reportlab-4pages.pdf"]
    cut = corpus.truncations(data, corpus.PDF)["mid-largest-object"]
    (inbox / "cut.pdf").write_bytes(cut)
    waiting_line = "left waiting: cut.pdf — it looks unfinished"

    passes: list[tuple[float, float, object]] = []  # (started, ended, result), monotonic
    first_started = time.monotonic()
    first_ended = None
    while True:
        began = time.monotonic()
        result = run_agent(config, "upload", timeout=60)
        ended = time.monotonic()
        passes.append((began, ended, result))
        first_ended = first_ended or ended
        in_error = filed(inbox / "error") == ["cut.pdf"]
        context = (f"pass {len(passes)} at +{began - first_started:.1f}..+{ended - first_started:.1f}s "
                   f"rc={result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout}")
        if ended - first_started < incomplete_after:
            # first seen no earlier than the first pass started: too young to give up on
            assert not in_error, f"given up on before {incomplete_after:.0f}s: {context}"
        if not in_error:
            assert result.returncode == EXIT_RETRY_LATER, context
            assert inbox_left(inbox) == ["cut.pdf"], context
            assert waiting_line in result.stderr + result.stdout, context
            assert began - first_ended < incomplete_after + 0.5, (
                f"still waiting {began - first_ended:.1f}s after the first pass ended: its age restarts with "
                f"every pass\n{context}")
            assert ended - first_started < 30, f"the passes never gave up on cut.pdf\n{context}"
            continue
        break

    assert len(passes) >= 3, f"too few passes to show the age is carried: {[p[:2] for p in passes]}"
    assert result.returncode == EXIT_FAILED, context
    assert inbox_left(inbox) == [] and (inbox / "error" / "cut.pdf").read_bytes() == cut
    [error] = sidecar(inbox, "cut.pdf")["errors"]
    assert error["code"] == "incomplete", error
    assert "rejected cut.pdf" in result.stderr + result.stdout, context
    assert sandbox.invoice_count() == 0


def test_a_writer_pausing_before_its_first_byte_is_waited_for(tmp_path, sandbox, agents):
    """`scanimage --format=pdf > inbox/scan.pdf`: the shell creates the file, the scan takes longer
    than settle_seconds before the first byte arrives, and the writer holds the file open all along."""
    data = corpus.valid_files()["reportlab-4pages.pdf"]
    config = make_config(tmp_path, sandbox, inbox={"settle_seconds": 0.5, "debounce_seconds": 0.3})
    inbox = tmp_path / "inbox"
    agent = agents(config, "run")
    wait_for(lambda: started(agent), message="the agent watching", on_fail=agent.log)
    with open(inbox / "scan.pdf", "wb") as fh:
        time.sleep(PAUSE)  # the scanner warming up, the file created and empty: the thing under test
        fh.write(data[:len(data) // 2])
        fh.flush()
        time.sleep(PAUSE)
        fh.write(data[len(data) // 2:])
    assert_each_sent_once_whole(inbox, sandbox, agent, {"scan.pdf": data})
