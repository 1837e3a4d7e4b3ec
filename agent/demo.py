"""`demo`: the whole flow against the embedded sandbox, told as a short story.

It runs the real pipeline — the same upload pass as `qonto-agent upload` and the same sync as
`qonto-agent sync` — against a Qonto-compatible sandbox on a free loopback port. No credentials,
no network, and no process left behind.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent import config as configuration
from agent import service
from agent.outbox import sync as mirror
from agent.base.verdict import Verdict
from agent.inbox.filing import iter_files
from agent.samples import SAMPLES, invoice_pdf
from agent.state.ledger import Ledger, UploadOutcome

if TYPE_CHECKING:  # the sandbox is loaded only when the demo runs
    from agent.sandbox.server import Sandbox

ANALYSIS_SECONDS = 1.0  # how long the sandbox takes to "read" an uploaded invoice
EXISTING = 3  # invoices the sandbox organization already holds before the demo uploads


def main(directory: Path | None, verbose: bool = False) -> bool:
    """Run the demo; True when every sample went where it should and the outbox sync completed."""
    workspace = (directory or Path(tempfile.mkdtemp(prefix="qonto-agent-demo-"))).resolve()
    if not verbose:  # the story replaces the log lines; -v shows both
        logging.getLogger("agent").setLevel(logging.ERROR)
    started = time.monotonic()
    from agent.sandbox.server import Sandbox

    with Sandbox(analysis_delay_seconds=ANALYSIS_SECONDS) as sandbox:
        sandbox.seed(EXISTING, without_attachment=0.0)
        print(f"qonto-agent demo — workspace {workspace}\n")
        print(f"1. Started a local Qonto sandbox at {sandbox.base_url}; its organization already "
              f"holds {EXISTING} supplier invoices.")
        cfg = _workspace(workspace, sandbox)
        dropped = _drop_samples(cfg.inbox.path)
        print(f"2. Dropped {len(dropped)} files into {cfg.inbox.path}/: {', '.join(dropped)}.")

        with service.open_client(cfg) as client:
            ledger = Ledger(cfg.state.path, previous=cfg.previous_ledger)
            try:
                summary = service.upload_once(cfg, client, ledger)
                _tell_uploads(cfg, ledger, sandbox)
                _wait_for_analysis(sandbox)
                print("4. Qonto analysed the new invoices: supplier, number, amounts and dates are filled in.")
                report = mirror.sync(cfg, client, ledger)
                _tell_outbox(cfg, report)
            finally:
                ledger.close()
    print(f"\nDone in {time.monotonic() - started:.1f} s. Where to look:")
    print(f"  uploaded files:   {cfg.inbox.path / 'done'}")
    print(f"  refused files:    {cfg.inbox.path / 'error'} (each with a .error.json saying why)")
    print(f"  mirrored outbox:  {cfg.outbox.path} (PDF + JSON per invoice, invoices.csv)")
    print(f"  the agent's view: qonto-agent -c {workspace / 'config.toml'} status")
    return summary.verdict in (Verdict.DONE, Verdict.FAILED) and report.complete


def _workspace(workspace: Path, sandbox: Sandbox) -> configuration.Config:
    document = {
        # the sandbox's requests never count against the host's budget for Qonto
        "qonto": {"base_url": sandbox.base_url, "login": "sandbox-org", "secret_key": "sandbox-secret-key",
                  "rate_limit_file": "state/rate-limit.sqlite"},
        "inbox": {"path": "inbox", "settle_seconds": 0.3, "debounce_seconds": 0.2},
        "outbox": {"path": "outbox"},
        "state": {"path": "state/ledger.sqlite"},
    }
    path = workspace / "config.toml"
    configuration.write_config(path, document, force=True)  # the sandbox's port changes every run
    cfg = configuration.load(path, env={})
    cfg.inbox.path.mkdir(parents=True, exist_ok=True)
    return cfg


def _drop_samples(inbox: Path) -> list[str]:
    names = []
    for sample in SAMPLES:
        (inbox / sample.file_name).write_bytes(invoice_pdf(sample))
        names.append(sample.file_name)
    (inbox / "meeting-notes.pdf").write_text("Notes from Monday's meeting: this is not an invoice.\n")
    names.append("meeting-notes.pdf")
    return names


def _tell_uploads(cfg: configuration.Config, ledger: Ledger, sandbox: Sandbox) -> None:
    uploaded = ledger.recent(UploadOutcome.UPLOADED, limit=100)
    requests = sandbox.count(path_prefix="/v2/supplier_invoices/bulk")
    print(f"3. Uploaded {len(uploaded)} invoices in {requests} request(s) and moved them to inbox/done/:")
    for upload in sorted(uploaded, key=lambda u: u.file_name):
        print(f"     {upload.file_name} → invoice {upload.invoice_id}")
    for sidecar in sorted((cfg.inbox.path / "error").glob("*.error.json")):
        reason = json.loads(sidecar.read_text())
        print(f"   Refused {reason['file']} (moved to inbox/error/): {reason['errors'][0]['detail']}.")
        print(f"     The note beside it says: {reason['hint']}")


def _wait_for_analysis(sandbox: Sandbox, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(inv.get("analyzed_at") is None for inv in sandbox.invoices()):
        time.sleep(0.1)


def _tell_outbox(cfg: configuration.Config, report: mirror.SyncReport) -> None:
    outbox = cfg.outbox.path
    jsons = sorted(outbox.glob("*.json"))
    files = [p for p in iter_files(outbox) if p.suffix != ".json" and p.name != "invoices.csv"]
    print(f"5. Synced {report.listed} invoices from Qonto into {outbox}/: {len(jsons)} JSON files, "
          f"{len(files)} attachments, and invoices.csv with one row each.")
    mine = [p for p in jsons if json.loads(p.read_text()).get("source_file")]
    if mine:
        print(f"   For example {mine[0].name} links back to the dropped file:")
        data = json.loads(mine[0].read_text())
        invoice = data["supplier_invoice"]
        amount = invoice.get("total_amount") or {}
        print(f"     {data['source_file']['name']} → {invoice.get('supplier_name')}, "
              f"{amount.get('value')} {amount.get('currency')}, status {invoice.get('status')}")
