"""Benchmark 8, many organizations: P profiles of F small PDFs each against Qonto's per-IP limit, three ways.

Qonto counts requests per IP address, every organization together. The sandbox (in-process,
loopback, `--latency` per API answer) plays that limit, scaled down `--scale` times so the
contrast shows in minutes on a small machine: Qonto's 1,000 requests per 10 s and 10,000 per
10 min become 200 and 2,000 at scale 5, and the agents' budget (`max_requests_per_10s` 900,
`max_requests_per_10min` 9,000 by default) becomes 180 and 1,800. Each organization's inbox holds
F unique one-page PDFs of about 1 KB before the agents start; the inbox timings and the sync
interval are the defaults, so each `run` syncs its outbox 10 s after uploading, as in production.

The same work, one fresh sandbox each, one after the other:
  (a) one process: one configuration with P profiles, one `run`;
  (b) P agents, one configuration and one `run` each, each with its own rate-limit file: each
      believes it owns the host's budget (every agent before profiles);
  (c) P agents as in (b) sharing one rate-limit file (the host-wide default now).

Measured for each, from the first process start (polled every 0.5 s): the time until every file
is in its done/ and every organization holds exactly its F invoices, and until every invoice is
also mirrored into its outbox; at `--timeout` (300 s) the agents are stopped and what was done by
then is reported (at scale 5 the 10-minute budget carries about 1,600 sync requests: mirroring
2,000 invoices takes more than 10 minutes whichever way, as 10,000 would with Qonto's own limits).
Then: the API requests the sandbox received until the agents stopped and how many it answered 429;
the mirror's successful requests (list pages and attachment links) per invoice mirrored; the sum
of every process's peak RSS (wait4; the peaks need not coincide).
Targets: every file filed with exact counts in all three, and no 429 for (a) and (c).

    python bench/bench_profiles.py [--quick] [--profiles 40] [--files 50] [--scale 5] [--latency 0.05]
                                   [--timeout 300] [--only abc] [--logs DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Agent, conclude, count_pdfs, today, unique_pdf, write_config  # noqa: E402
from support import write_profiles_config  # noqa: E402

from agent.sandbox.faults import Faults  # noqa: E402
from agent.sandbox.server import Sandbox  # noqa: E402

QONTO_LIMITS = ((1000, 10.0), (10000, 600.0))  # per IP address, every organization together
AGENT_LIMITS = (900, 9000)  # the agent's defaults, max_requests_per_10s and max_requests_per_10min
DEFAULT_INBOX = {"settle_seconds": 5.0, "debounce_seconds": 2.0, "max_wait_seconds": 30.0,
                 "poll_interval_seconds": 5.0, "polling": False}
DEFAULT_OUTBOX = {"sync_interval_seconds": 900.0}
MIRROR = ("/v2/supplier_invoices", "/v2/attachments/")  # GET: the sync's list pages and attachment links
BULK = "/v2/supplier_invoices/bulk"


@dataclass(frozen=True)
class Organization:
    """One organization: its profile name, credentials and where its agent files and mirrors."""

    name: str
    login: str
    secret: str
    inbox: Path
    outbox: Path


@dataclass
class Outcome:
    """What one setup measured."""

    label: str
    processes: int
    filed: int
    exact: bool  # every organization holds exactly its files' invoices
    filed_after: float | None  # seconds until every file was filed with exact counts; None: not by the end
    mirrored_after: float | None  # ... and every invoice mirrored too
    window: float  # seconds from the first start until the agents were told to stop
    requests: int
    refused: int  # 429s
    bulk: int
    mirror_requests: int
    mirrored: int  # invoice JSONs in the outboxes when the agents stopped
    peak_mb: float  # the sum of every process's peak RSS

    def times(self, total: int) -> str:
        """When everything was filed and mirrored, or how far it got in its window."""
        inexact = "" if self.exact else " (invoice counts not exact)"
        filed = f"all filed in {self.filed_after:.0f} s" if self.filed_after is not None \
            else f"{self.filed} of {total} filed{inexact} in {self.window:.0f} s"
        mirror = f"all mirrored in {self.mirrored_after:.0f} s" if self.mirrored_after is not None \
            else f"{self.mirrored} mirrored in {self.window:.0f} s"
        return f"{filed}, {mirror}"

    def line(self, total: int) -> str:
        per_invoice = self.mirror_requests / self.mirrored if self.mirrored else float("nan")
        return (f"{self.label}: {self.times(total)}; {self.requests} API requests ({self.bulk} bulk), "
                f"{self.refused} answered 429; {per_invoice:.2f} mirror requests per mirrored invoice; "
                f"peak RSS {self.peak_mb:.0f} MB summed over {self.processes} process(es)")


def organizations(root: Path, count: int) -> list[Organization]:
    names = [f"org{i:02d}" for i in range(count)]
    return [Organization(name, f"{name}-login", f"{name}-secret", root / name / "inbox", root / name / "outbox")
            for name in names]


def write_backlogs(orgs: list[Organization], files: int) -> None:
    """F unique PDFs in every inbox: unique across organizations too, so no upload is a duplicate."""
    for o, org in enumerate(orgs):
        org.inbox.mkdir(parents=True, exist_ok=True)
        for i in range(files):
            (org.inbox / f"{org.name}-{i:03d}.pdf").write_bytes(unique_pdf(o * files + i, 0, tag=org.name))


def one_process(root: Path, base_url: str, orgs: list[Organization], qonto: dict[str, Any]) -> list[Path]:
    """(a): one configuration with a profile per organization; folders as `organizations` placed them."""
    config = write_profiles_config(root, base_url, {o.name: (o.login, o.secret) for o in orgs},
                                   qonto={**qonto, "timeout_seconds": 60}, inbox=DEFAULT_INBOX, outbox=DEFAULT_OUTBOX)
    return [config]


def separate_agents(root: Path, base_url: str, orgs: list[Organization], qonto: dict[str, Any],
                    shared_file: Path | None) -> list[Path]:
    """(b) and (c): a configuration of one organization each; its own rate-limit file, or `shared_file`."""
    configs = []
    for org in orgs:
        own = org.inbox.parent
        limit_file = shared_file or own / "state" / "rate-limit.sqlite"
        configs.append(write_config(own, base_url, qonto={**qonto, "login": org.login, "secret_key": org.secret,
                                                          "rate_limit_file": str(limit_file)},
                                    inbox=DEFAULT_INBOX, outbox=DEFAULT_OUTBOX))
    return configs


def all_filed(sandbox: Sandbox, orgs: list[Organization], files: int) -> bool:
    if any(count_pdfs(org.inbox / "done") < files for org in orgs):
        return False
    return all(sandbox.invoice_count(organization=org.login) == files for org in orgs)


def wait_end_to_end(sandbox: Sandbox, orgs: list[Organization], args: argparse.Namespace, agents: list[Agent],
                    started: float) -> tuple[float | None, float | None]:
    """Seconds from `started` until every file was filed (exact invoice counts), and until every
    invoice was also mirrored; None for what `--timeout` (or every agent exiting) cut short."""
    total = args.profiles * args.files
    filed_after = mirrored_after = None
    while mirrored_after is None and time.monotonic() < started + args.timeout:
        if not any(agent.alive() for agent in agents):
            break
        if filed_after is None and all_filed(sandbox, orgs, args.files):
            filed_after = time.monotonic() - started
        if filed_after is not None and mirrored(orgs) >= total:
            mirrored_after = time.monotonic() - started
        time.sleep(0.5)
    return filed_after, mirrored_after


def stop_all(agents: list[Agent]) -> None:
    """SIGTERM to every process first, then reap each (wait4 keeps its peak RSS); a second SIGTERM
    would stop it at once, so only one that outlives its 10 s gets `stop`'s kill."""
    for agent in agents:
        if agent.alive():
            agent.proc.terminate()
    for agent in agents:
        try:
            agent.wait(15)
        except TimeoutError:
            agent.stop()


def refused_where(label: str, refused: list[Any], started: float) -> None:
    """Which endpoints met the 429s, and when: what a look at a limit overrun starts from."""
    if not refused:
        return
    endpoints: dict[str, int] = {}
    for record in refused:  # refused before routing: the path, its ids left out
        endpoint = f"{record.method} {re.sub('/[0-9a-f-]{36}', '/{id}', record.path)}"
        endpoints[endpoint] = endpoints.get(endpoint, 0) + 1
    spread = ", ".join(f"{count} {endpoint}" for endpoint, count in sorted(endpoints.items(), key=lambda e: -e[1]))
    print(f"{label}: 429s between {refused[0].started_at - started:.0f} s and {refused[-1].started_at - started:.0f} s "
          f"after the start: {spread}", flush=True)


def keep_logs(agents: list[Agent], folder: Path) -> None:
    """Every agent's log, copied out of the temporary folder before it goes (`--logs`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for agent in agents:
        shutil.copyfile(agent.log_path, folder / f"{agent.log_path.parent.name}.log")
    print(f"the agents' logs: {folder}", flush=True)


def mirrored(orgs: list[Organization]) -> int:
    total = 0
    for org in orgs:
        try:
            total += sum(1 for entry in os.scandir(org.outbox) if entry.name.endswith(".json"))
        except FileNotFoundError:
            pass
    return total


def measure(label: str, setup: str, args: argparse.Namespace, scaled: dict[str, Any]) -> Outcome:
    """One setup from scratch: its own temporary folder and sandbox; the agents started together."""
    with tempfile.TemporaryDirectory(prefix=f"bench-profiles-{setup}-") as tmp:
        root = Path(tmp)
        orgs = organizations(root, args.profiles)
        write_backlogs(orgs, args.files)
        with Sandbox(seed=14, organizations=tuple((o.login, o.secret) for o in orgs), ip_rate_limits=scaled["sandbox"],
                     faults=Faults(latency_seconds=args.latency, storage_latency_seconds=0)) as sandbox:
            qonto = dict(scaled["agents"])
            if setup == "a":
                configs = one_process(root, sandbox.base_url, orgs, qonto)
            else:
                configs = separate_agents(root, sandbox.base_url, orgs, qonto,
                                          root / "host-rate-limit.sqlite" if setup == "c" else None)
            started = time.monotonic()
            agents = [Agent(config, "run", log_name="agent.log") for config in configs]
            try:
                filed_after, mirrored_after = wait_end_to_end(sandbox, orgs, args, agents, started)
                window = time.monotonic() - started
                filed = sum(min(count_pdfs(org.inbox / "done"), args.files) for org in orgs)
                exact = all(sandbox.invoice_count(organization=org.login) == args.files for org in orgs)
            finally:
                stop_all(agents)
            failed = [a for a in agents if a.returncode != 0]
            if failed:
                print(f"{label}: {len(failed)} agent(s) exited with {failed[0].returncode}, e.g.:\n{failed[0].tail()}",
                      flush=True)
            log = [r for r in sandbox.request_log() if r.path.startswith("/v2/")]
            in_outboxes = mirrored(orgs)
            refused_where(label, [r for r in log if r.status == 429], started)
            if args.logs:
                keep_logs(agents, args.logs / setup)
    return Outcome(
        label=label, processes=len(agents), filed=filed, exact=exact, filed_after=filed_after,
        mirrored_after=mirrored_after, window=window, requests=len(log),
        refused=sum(1 for r in log if r.status == 429), bulk=sum(1 for r in log if r.path == BULK and r.status == 200),
        mirror_requests=sum(1 for r in log if r.method == "GET" and r.status == 200 and r.path.startswith(MIRROR)),
        mirrored=in_outboxes, peak_mb=sum(a.maxrss_kb or 0 for a in agents) / 1024)


def scaled_limits(scale: float) -> dict[str, Any]:
    """Qonto's per-IP limits and the agents' budget, both divided by `scale`."""
    sandbox = tuple((round(count / scale), seconds) for count, seconds in QONTO_LIMITS)
    per_10s, per_10min = (round(count / scale) for count in AGENT_LIMITS)
    return {"sandbox": sandbox, "agents": {"max_requests_per_10s": per_10s, "max_requests_per_10min": per_10min}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=None, help="organizations (default 40; 10 with --quick)")
    parser.add_argument("--files", type=int, default=None, help="PDFs per organization (default 50; 20 with --quick)")
    parser.add_argument("--scale", type=float, default=5.0, help="Qonto's limits and the agents' budget divided by this")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the sandbox adds to every API answer")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per setup before the figures are taken "
                        "as they stand (default 300; 120 with --quick)")
    parser.add_argument("--only", default="abc", help="which setups to run (default abc)")
    parser.add_argument("--logs", type=Path, default=None, help="copy every agent's log into this folder")
    parser.add_argument("--quick", action="store_true", help="10 profiles x 20 files")
    args = parser.parse_args()
    args.profiles = args.profiles or (10 if args.quick else 40)
    args.files = args.files or (20 if args.quick else 50)
    args.timeout = args.timeout or (120.0 if args.quick else 300.0)
    total = args.profiles * args.files
    scaled = scaled_limits(args.scale)
    (per_10s, _), (per_10min, _) = scaled["sandbox"]
    ours = scaled["agents"]
    scaling = (f"limits scaled 1/{args.scale:g}: sandbox {per_10s}/10 s + {per_10min}/10 min per IP (Qonto 1,000 + "
               f"10,000), agents {ours['max_requests_per_10s']} + {ours['max_requests_per_10min']} (default 900 + 9,000)")
    print(f"{args.profiles} organizations x {args.files} PDFs = {total} files; {scaling}; "
          f"{args.latency * 1000:.0f} ms per API answer; default inbox timings and sync interval", flush=True)
    labels = {"a": "(a) one process, {p} profiles", "b": "(b) {p} agents, own rate-limit files",
              "c": "(c) {p} agents, one shared rate-limit file"}
    outcomes: dict[str, Outcome] = {}
    for setup in args.only:
        outcomes[setup] = measure(labels[setup].format(p=args.profiles), setup, args, scaled)
        print(outcomes[setup].line(total), flush=True)
    return report(outcomes, args, total, scaling)


def report(outcomes: dict[str, Outcome], args: argparse.Namespace, total: int, scaling: str) -> int:
    """The final line: the setups side by side, (b) as the baseline; the targets' verdict."""
    problems = [f"{o.label}: {o.filed} of {total} filed" + ("" if o.exact else ", invoice counts not exact")
                for o in outcomes.values() if o.filed_after is None]
    problems += [f"{outcomes[s].label}: {outcomes[s].refused} requests answered 429"
                 for s in "ac" if s in outcomes and outcomes[s].refused]
    parts = {s: f"{o.times(total)}, {o.requests} requests, {o.refused} 429s, {o.peak_mb:.0f} MB"
             for s, o in outcomes.items()}
    figure = "; ".join(f"{s} {parts[s]}" for s in "ac" if s in parts)
    baseline = f" vs baseline (b) {parts['b']}" if "b" in parts else ""
    ratio = ""
    if "b" in outcomes and "a" in outcomes and outcomes["a"].filed_after and outcomes["b"].filed_after:
        ratio = f": (b) filed in {outcomes['b'].filed_after / outcomes['a'].filed_after:.1f}x the time of (a)"
    return conclude(f"profiles ({today()}, {args.profiles} profiles x {args.files} files, {scaling}): {figure}{baseline}"
                    f"{ratio} (target all filed, exact counts, 0 429s for (a) and (c)", problems)


if __name__ == "__main__":
    sys.exit(main())
