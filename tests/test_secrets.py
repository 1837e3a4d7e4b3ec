"""No secret in any log line, status output, sidecar, ledger row or outbox file."""

from __future__ import annotations

from pathlib import Path

from support import make_config, run_agent, wait_for, write_pdf

from agent.sandbox.server import Sandbox

SECRET = "PLANTED-SECRET-6a1f93"
STAGING = "PLANTED-STAGING-77c2e4"
WRONG = "PLANTED-WRONG-0b5d11"


def everything_under(root: Path, skip: set[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p not in skip}


def test_a_planted_secret_appears_nowhere_after_a_full_run(tmp_path, agents):
    with Sandbox(login="acme-org", secret_key=SECRET, staging_token=STAGING, analysis_delay_seconds=0.2) as sandbox:
        config = make_config(tmp_path, sandbox, qonto={"login": "acme-org", "secret_key": SECRET,
                                                       "staging_token": STAGING})
        inbox = tmp_path / "inbox"
        agent = agents(config, "run")
        write_pdf(inbox / "invoice.pdf")
        (inbox / "broken.pdf").write_text("not a pdf")
        wait_for(lambda: (inbox / "done" / "invoice.pdf").exists() and (inbox / "error" / "broken.pdf").exists(),
                 message="files filed", on_fail=agent.log)
        wait_for(lambda: all(inv["analyzed_at"] for inv in sandbox.invoices()), message="Qonto's analysis")
        outputs = [run_agent(config, "-v", "sync"), run_agent(config, "status"), run_agent(config, "status", "--json"),
                   run_agent(config, "-v", "check")]
        codes = [r.returncode for r in outputs]  # `status` says a person is needed: broken.pdf is in error/
        assert codes == [0, 6, 6, 0], \
            [r.stderr for r in outputs]
        assert agent.stop() == 0

        (tmp_path / "wrong").mkdir()
        wrong = make_config(tmp_path / "wrong", sandbox, qonto={"login": "acme-org", "secret_key": WRONG, "staging_token": STAGING})
        refused = run_agent(wrong, "-v", "check")
        assert refused.returncode == 4
        outputs.append(refused)

    files = everything_under(tmp_path, skip={config, wrong})
    assert any(p.suffix == ".json" and "outbox" in p.parts for p in files), "the outbox was not written"
    assert any(p.name.endswith(".error.json") for p in files)
    assert any(p.suffix == ".sqlite" for p in files) and any(p.name.endswith(".log") for p in files)
    for secret in (SECRET, STAGING, WRONG):
        for path, data in files.items():
            assert secret.encode() not in data, f"{secret} found in {path}"
        for result in outputs:
            assert secret not in result.stdout + result.stderr


def test_retries_are_our_sentences_and_no_link_reaches_the_log(tmp_path, sandbox):
    """API and storage faults that cause retries, `sync -v`: every log line at every level."""
    sandbox.seed(20, without_attachment=0.0)
    sandbox.faults.rate_limit_rate = 0.3  # both answer with a short Retry-After, honoured: a quick test
    sandbox.faults.storage_error_rate = 0.3
    sandbox.faults.storage_drop_rate = 0.25  # urllib3 used to log these retries with the whole signed link
    sandbox.faults.retry_after_seconds = 0.1
    # Downloads overlap (the sync works on two invoices per API slot), so which requests draw a
    # fault varies: over about 50 downloads in the two syncs, each fault shows with near certainty.
    config = make_config(tmp_path, sandbox, outbox={"concurrency": 1})
    results = [run_agent(config, "-v", "sync", timeout=120),
               run_agent(config, "-v", "--log-format", "json", "sync", "--full", timeout=120)]
    output = "".join(r.stdout + r.stderr for r in results)
    assert "synced 20 invoices" in results[0].stderr, results[0].stderr
    for leak in ("signature=", "X-Amz-", "expires=", "_LimitedRetry", "Retrying (", "Traceback"):
        assert leak not in output, leak
    assert "Qonto answered 429 (rate limited); retry 1 of 5 in 0.1 s" in output
    assert "the attachment storage answered 503; retry 1 of 5 in 0.1 s" in output
    assert "the attachment storage did not answer (the connection failed); retry 1 of 5 in" in output
