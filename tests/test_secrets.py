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
        assert all(r.returncode == 0 for r in outputs), [r.stderr for r in outputs]
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
