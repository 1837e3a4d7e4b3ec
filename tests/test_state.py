"""The ledger: attempts, outcomes, pending files and small facts, shared by processes."""

from agent.state.ledger import Ledger, Pending


def test_attempts_keep_their_first_time_until_the_content_settles(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=1.0, now=100.0)
    ledger.finish_attempt("aa", "unknown")
    ledger.begin_attempt("aa", "key-a", "a.pdf", 10, dropped_at=2.0, now=200.0)
    row = ledger.lookup("aa")
    assert (row.outcome, row.attempts, row.first_attempt_at, row.last_attempt_at, row.dropped_at) == \
        ("sending", 2, 100.0, 200.0, 1.0)
    ledger.record_uploaded("aa", "inv-1", now=300.0)
    assert ledger.by_invoice("inv-1").sha256 == "aa"
    assert [u.invoice_id for u in ledger.recent("uploaded")] == ["inv-1"]
    ledger.begin_attempt("aa", "key-forced", "a.pdf", 10, dropped_at=None, now=400.0)  # --force
    assert ledger.lookup("aa").first_attempt_at == 400.0


def test_rejections_and_local_errors_are_kept_for_status(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.begin_attempt("bb", "key-b", "b.pdf", 5, None)
    ledger.record_rejected("bb", [{"code": "invalid", "detail": "corrupted"}], "Send a good copy.")
    ledger.record_local_error(None, None, "empty.pdf", 0, [{"code": "empty", "detail": "0 bytes"}], "Scan again.")
    errors = {u.file_name: u for u in ledger.recent("rejected")}
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
