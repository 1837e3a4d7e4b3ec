"""The ledger: attempts, outcomes, pending files and small facts, shared by processes."""

import sqlite3

from agent.state.ledger import Attempt, AttemptOutcome, Ledger, MirrorEntry, Pending, UploadOutcome


def test_attempts_keep_their_first_time_until_the_content_settles(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=1.0, now=100.0)
    ledger.finish_attempt("aa", AttemptOutcome.UNKNOWN)
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=2.0, now=200.0)
    row = ledger.lookup("aa")
    assert (row.outcome, row.attempts, row.first_attempt_at, row.last_attempt_at, row.dropped_at) == \
        ("sending", 2, 100.0, 200.0, 1.0)
    ledger.record_uploaded("aa", "inv-1", now=300.0)
    assert ledger.by_invoice("inv-1").sha256 == "aa"
    assert [u.invoice_id for u in ledger.recent(UploadOutcome.UPLOADED)] == ["inv-1"]
    ledger.begin_attempt("aa", "key-forced", "a.pdf", 10, dropped_at=None, now=400.0)  # --force
    assert ledger.lookup("aa").first_attempt_at == 400.0


def test_a_restarted_key_window_counts_from_the_restart_not_the_first_attempt(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=1.0, now=100.0)
    ledger.finish_attempt("aa", AttemptOutcome.UNKNOWN)
    ledger.restart_window("aa", now=900.0)  # Qonto holds no invoice from the first attempt
    assert ledger.lookup("aa").first_attempt_at == 900.0
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=1.0, now=950.0)
    assert (ledger.lookup("aa").first_attempt_at, ledger.lookup("aa").last_attempt_at) == (900.0, 950.0)


def test_rejections_and_local_errors_are_kept_for_status(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.begin_attempt("bb", "key-b", "b.pdf", 5, None)
    ledger.record_rejected("bb", [{"code": "invalid", "detail": "corrupted"}], "Send a good copy.")
    ledger.record_local_error(None, None, "empty.pdf", 0, [{"code": "empty", "detail": "0 bytes"}], "Scan again.")
    errors = {u.file_name: u for u in ledger.recent(UploadOutcome.REJECTED)}
    assert errors["b.pdf"].errors == [{"code": "invalid", "detail": "corrupted"}]
    assert errors["empty.pdf"].hint == "Scan again."


def test_a_second_process_sees_what_the_first_wrote(tmp_path):
    writer, reader = Ledger(tmp_path / "ledger.sqlite"), Ledger(tmp_path / "ledger.sqlite")
    writer.set_pending([Pending("a.pdf", 1.0, "settling")])
    writer.save_cursor("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01Z")
    assert reader.pending() == [Pending("a.pdf", 1.0, "settling")]
    assert reader.cursor() == "2026-01-01T00:00:00.000Z" and reader.heartbeat() is None
    writer.set_pending([])
    assert reader.pending() == []


def test_pending_rows_are_written_whole_or_only_those_that_changed(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.set_pending([Pending("a.pdf", 1.0, "settling"), Pending("b.pdf", 2.0, "settling")])
    ledger.set_pending([Pending("c.pdf", 3.0, "queued for upload"), Pending("a.pdf", 1.0, "uploading")],
                       gone=["b.pdf", "never-listed.pdf"])
    assert ledger.pending() == [Pending("a.pdf", 1.0, "uploading"), Pending("c.pdf", 3.0, "queued for upload")]
    ledger.set_pending([Pending("d.pdf", 4.0, "settling")])  # without `gone`: the whole list
    assert ledger.pending() == [Pending("d.pdf", 4.0, "settling")]


def test_outcomes_are_typed_and_stored_as_the_same_strings(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=None, now=100.0)
    ledger.finish_attempt("aa", AttemptOutcome.FAILED, "TransientError")
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=None, now=200.0)
    ledger.finish_attempt("aa", AttemptOutcome.UNKNOWN)
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=None, now=300.0)
    assert ledger.lookup("aa").outcome is UploadOutcome.SENDING
    ledger.record_uploaded("aa", "inv-1", now=400.0)
    assert ledger.lookup("aa").outcome is UploadOutcome.UPLOADED
    assert ledger.attempts("aa") == [Attempt(100.0, AttemptOutcome.FAILED, "TransientError"),
                                     Attempt(200.0, AttemptOutcome.UNKNOWN, None),
                                     Attempt(300.0, AttemptOutcome.CREATED, None)]
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        assert db.execute("SELECT outcome FROM uploads").fetchall() == [("uploaded",)]
        assert db.execute("SELECT outcome, reason FROM attempts ORDER BY rowid").fetchall() == [
            ("failed", "TransientError"), ("unknown", None), ("created", None)]


def test_a_ledger_from_before_the_reason_column_is_migrated(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE attempts (sha256 TEXT NOT NULL, started_at REAL NOT NULL, outcome TEXT)")
        db.executemany("INSERT INTO attempts VALUES (?, ?, ?)",
                       [("aa", 1.0, "failed: transient"), ("aa", 2.0, "unknown"), ("aa", 3.0, None)])
    ledger = Ledger(path)
    assert ledger.attempts("aa") == [Attempt(1.0, AttemptOutcome.FAILED, "transient"),
                                     Attempt(2.0, AttemptOutcome.UNKNOWN, None), Attempt(3.0, None, None)]
    ledger.close()
    assert Ledger(path).attempts("aa")[0] == Attempt(1.0, AttemptOutcome.FAILED, "transient")  # migrated once


def test_mirror_entries_are_frozen_records(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    entry = MirrorEntry("inv-1", "2026-01-02_acme_inv-1", "2026-01-02T00:00:00.000Z", "att-1", "ab" * 32,
                        "2026-01-02_acme_inv-1.pdf", {"id": "inv-1", "supplier_name": "Acmé"})
    ledger.upsert_mirror(entry)
    assert ledger.mirror_entry("inv-1") == entry and ledger.mirror_entries() == [entry]
    assert ledger.mirror_entry("inv-2") is None and ledger.size("mirror") == 1
