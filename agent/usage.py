"""What each command's `--help` says beyond its options: what it does, its exit codes and an
example. Kept apart from the parser so `cli.py` stays about wiring; the codes are cli.py's."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    summary: str  # one line in the command list of `qonto-agent --help`
    description: str
    exits: str  # "CODE meaning" lines
    example: str

    @property
    def text(self) -> str:
        """The description wrapped for a terminal (help is printed as written, to keep the lists)."""
        return "\n".join(textwrap.fill(line, 90) for line in self.description.splitlines())

    @property
    def epilog(self) -> str:
        return f"exit codes:\n{self.exits}\n\nexample:\n  {self.example}"


_CONFIG = "2 configuration, folder or ledger problem a person must fix"
_PASS_EXITS = ("  0 everything handled\n  1 some failed permanently (files in error/)\n"
               f"  {_CONFIG}\n  3 work left for later (transient trouble: run again)\n  4 credentials refused\n"
               "  130 interrupted by Ctrl-C or SIGTERM (claims given back, nothing lost)")

COMMANDS: dict[str, Usage] = {
    "init": Usage(
        "write a configuration file and create the folders",
        "Write a configuration file (asking on a terminal, unless --no-input) and create the inbox and "
        "outbox folders.\nWith credentials given, check them at once, as `check` does.",
        f"  0 written (and checked, when credentials were given)\n  {_CONFIG} (e.g. the file exists: --force)\n"
        "  4 credentials refused",
        "qonto-agent init -c /etc/qonto-agent/config.toml --inbox /srv/scans --outbox /srv/invoices"),
    "check": Usage(
        "validate the configuration and the credentials",
        "Validate the configuration, call Qonto and print the organization's name, then check the folders, "
        "free space, the ledger and read access to invoices and attachments: each problem one line with "
        "the next step.",
        f"  0 ready to run\n  {_CONFIG} (every problem is listed)\n  3 Qonto could not be reached: try again\n"
        "  4 credentials refused",
        "qonto-agent check -c config.toml"),
    "run": Usage(
        "watch the inbox and upload continuously; sync the outbox on a schedule",
        "The agent: watch the inbox and upload what settles, sync the outbox every sync_interval_seconds "
        "and soon after uploads.\nSIGINT or SIGTERM stop it within 10 s.",
        f"  0 stopped by a signal\n  1 stopped on an unexpected error (see the log)\n  {_CONFIG} "
        "(the ledger was lost)\n  3 the file watcher died or the ledger stayed locked: start it again",
        "qonto-agent run -c config.toml --log-format json"),
    "upload": Usage(
        "one pass over the inbox (or the given files), then exit",
        "One pass over the inbox, or over the given files inside it, then exit: for cron and backlogs.\n"
        "Content already uploaded is filed in done/ without sending it again, unless --force.\n"
        "--dry-run prints what the pass would do with each file and does nothing (exit 0); --json prints "
        "one JSON result on stdout.",
        _PASS_EXITS,
        "qonto-agent upload -c config.toml inbox/invoice-2026-001.pdf"),
    "sync": Usage(
        "one outbox sync, then exit",
        "Mirror Qonto's supplier invoices into the outbox once (from the cursor, or all with --full), then "
        "exit. --json prints one JSON result on stdout.",
        _PASS_EXITS.replace("files in error/", "listed in the log"),
        "qonto-agent sync -c config.toml --full"),
    "status": Usage(
        "what waits, what was uploaded, what failed, last sync; exit code for monitoring",
        "What waits in the inbox and why, counts in done/ and error/, the last uploads and errors, the last "
        "sync.\nReads the ledger and the folders only: it works while `run` is busy and when no agent runs.\n"
        "`run` is expected to be alive once it wrote a heartbeat and did not stop cleanly, or with "
        "--expect-running.\nFiles in error/ need a person until `status --seen` marks them seen.\n"
        "With profiles: one line per profile (a list with --json), or one in full with --profile NAME; "
        "the exit code is the most severe of theirs.",
        f"  0 healthy\n  {_CONFIG} (e.g. no configuration file)\n  5 `run` is expected but not alive\n"
        "  6 a person is needed: `run` is paused, or files in error/ are not marked seen",
        "qonto-agent status -c config.toml --expect-running || alert"),
    "demo": Usage(
        "the whole flow against a local sandbox, no credentials needed",
        "Start the embedded sandbox on a free loopback port, make a workspace, drop sample PDFs, then run "
        "the real pipeline: upload, file away, sync to the outbox.",
        "  0 the flow worked\n  1 it did not (the output says where)",
        "qonto-agent demo --dir /tmp/qonto-demo"),
    "sandbox": Usage(
        "serve a local Qonto-compatible API for tests and set-ups",
        "Serve a local Qonto-compatible API until stopped (Ctrl-C), for tests and integration set-ups.",
        f"  0 stopped by Ctrl-C\n  {_CONFIG} (e.g. the port is taken)",
        "qonto-agent sandbox --port 8765 --latency 0.1"),
}
