"""The command line: parse and validate arguments, wire the pieces, and turn outcomes and errors
into exit codes. This is the only module that knows the exit codes (DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from agent import __version__, demo, doctor, fleet, initialize, progress, results, service, status, systemd_unit, usage
from agent.outbox import sync as mirror
from agent import config as configuration
from agent import logs, profile_settings
from agent.base.errors import (AgentError, ConfigError, CredentialsError, HTMLAnswerError, LedgerBusy,
                               LedgerError, PermissionDenied, QontoError, RequestRejected)
from agent.base import profile
from agent.base.verdict import Verdict
from agent.inbox.preview import preview
from agent.qonto.client import QontoClient, api_budget
from agent.qonto.ratelimit import RateLimiter
from agent.sandbox import command as sandbox_command
from agent.state.ledger import Ledger

log = logging.getLogger("agent")

EXIT_OK = 0
EXIT_FAILED = 1  # some files or invoices failed permanently
EXIT_USAGE = 2  # usage, configuration, folder or ledger problem a person must fix
EXIT_RETRY_LATER = 3  # transient trouble: nothing lost, run again later
EXIT_CREDENTIALS = 4  # credentials refused
EXIT_NOT_RUNNING = 5  # `status`: `run` is expected to be alive and is not
EXIT_PERSON_NEEDED = 6  # `status`: `run` is paused, or files in error/ are not marked seen
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM on `upload` or `sync`: claims given back, nothing lost

VERDICT_EXIT = {Verdict.DONE: EXIT_OK, Verdict.FAILED: EXIT_FAILED, Verdict.LATER: EXIT_RETRY_LATER,
                Verdict.CREDENTIALS: EXIT_CREDENTIALS, Verdict.FOLDER: EXIT_USAGE}
RUN_EXIT = {service.RunEnd.STOPPED: EXIT_OK, service.RunEnd.ABANDONED: EXIT_OK,
            service.RunEnd.WATCHER_DIED: EXIT_RETRY_LATER, service.RunEnd.CRASHED: EXIT_FAILED,
            service.RunEnd.LEDGER_LOST: EXIT_USAGE, service.RunEnd.LEDGER_BUSY: EXIT_RETRY_LATER}


def exit_code_for(exc: AgentError) -> int:
    """The exit code of an error that ended a command."""
    if isinstance(exc, LedgerBusy):
        return EXIT_RETRY_LATER
    if isinstance(exc, (ConfigError, HTMLAnswerError, LedgerError)):
        return EXIT_USAGE
    if isinstance(exc, (CredentialsError, PermissionDenied)):
        return EXIT_CREDENTIALS
    if isinstance(exc, RequestRejected) or not isinstance(exc, QontoError):
        return EXIT_FAILED
    return EXIT_RETRY_LATER


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after its name; after it (`defaults` False) they
    default to nothing, so a value given before the command is not overwritten."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-c", "--config", type=Path, default=default(None),
                        help="configuration file (default: $QONTO_AGENT_CONFIG, else ./config.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False), help="log details too")
    parser.add_argument("--log-format", choices=("text", "json"), default=default("text"), help="log line format")
    parser.add_argument("--log-file", type=Path, default=default(None),
                        help="write log lines to this file instead of stderr; reopened when logrotate moves it")
    parser.add_argument("--profile", metavar="NAME", default=default(None),
                        help="only this profile of a configuration with [profiles] (default: every profile)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qonto-agent",
        description="Upload the PDF invoices dropped into an inbox folder to Qonto, "
                    "and mirror Qonto's supplier invoices into an outbox folder.",
        epilog="Global options go before or after the command. `qonto-agent COMMAND --help` shows each "
               "command's exit codes and an example.",
    )
    _global_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"qonto-agent {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {name: sub.add_parser(name, parents=[common], help=u.summary, description=u.text,
                                     epilog=u.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
                for name, u in usage.COMMANDS.items()}

    p = commands["init"]
    p.add_argument("--inbox", help="inbox folder (default: inbox, or NAME/inbox with --profile NAME)")
    p.add_argument("--outbox", help="outbox folder (default: outbox, or NAME/outbox with --profile NAME)")
    p.add_argument("--base-url", default=configuration.QontoConfig.base_url, help="Qonto API root")
    p.add_argument("--login", default="", help="API key login (or set QONTO_LOGIN later)")
    p.add_argument("--secret-key", default="", help="API key secret (better: QONTO_SECRET_KEY)")
    p.add_argument("--staging-token", default="", help="for Qonto's sandbox only")
    p.add_argument("--force", action="store_true", help="overwrite an existing configuration file")
    p.add_argument("--systemd", action="store_true",
                   help="also write qonto-agent.service and qonto-agent.env (the secrets) beside the file")
    p.add_argument("--user", type=systemd_unit.service_user, default=systemd_unit.DEFAULT_USER,
                   help="the service's user with --systemd (default: qonto-agent; never root)")
    p.add_argument("--no-input", action="store_true", help="never ask questions, even on a terminal")

    p = commands["upload"]
    p.add_argument("files", nargs="*", metavar="FILE", help="files inside the inbox (default: all of it)")
    p.add_argument("--force", action="store_true", help="send the given files even if their content was uploaded")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would happen to each file; send, move and record nothing")
    p.add_argument("--json", action="store_true", help="print one JSON result on stdout at the end")

    p = commands["sync"]
    p.add_argument("--full", action="store_true", help="ignore the cursor and look at every invoice")
    p.add_argument("--json", action="store_true", help="print one JSON result on stdout at the end")

    p = commands["status"]
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--expect-running", action="store_true",
                   help="exit 5 when `run` is not alive, even if it stopped cleanly")
    p.add_argument("--seen", action="store_true",
                   help="mark the files now in error/ as seen by a person (they no longer make the exit code 6)")

    commands["demo"].add_argument("--dir", type=Path, default=None,
                                  help="workspace folder (default: a new temporary one)")
    sandbox_command.add_arguments(commands["sandbox"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logs.configure(args.verbose, args.log_format, args.log_file)
        return _dispatch(args)
    except AgentError as exc:
        log.error("%s", exc)
        return exit_code_for(exc)
    except KeyboardInterrupt:  # Ctrl-C is how `sandbox` is meant to stop; anything else was cut short
        return EXIT_OK if args.command == "sandbox" else EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        sandbox_command.serve(args)
        return EXIT_OK
    if args.command == "demo":
        return EXIT_OK if demo.main(args.dir, args.verbose) else EXIT_FAILED
    if args.command == "init":
        return _init(args)
    if args.command == "status":
        return _status(args)

    configs = configuration.load_profiles(args.config, only=args.profile)
    for cfg in configs:
        logs.add_secrets(cfg.qonto.secrets())
    # One budget for every organization (Qonto counts per IP); one organization's client makes its
    # own, which it closes when it stops, so requests waiting for their turn give up at once.
    limiter = api_budget(configs[0].qonto) if len(configs) > 1 else None
    try:
        if args.command == "run" and len(configs) > 1:  # several organizations: profiles
            return _exit_run(fleet.run(configs, limiter))
        codes, outputs = [], []
        for cfg in configs:  # one organization after the other, on one budget
            code, output = _one(args, cfg, limiter, alone=len(configs) == 1)
            codes.append(code)
            if output is not None:
                outputs.append({"profile": cfg.profile, **output} if cfg.profile else output)
            if code == EXIT_INTERRUPTED:
                break
        if outputs:
            results.show(outputs[0] if len(outputs) == 1 else outputs)
        return worst(codes)
    finally:
        if limiter is not None:
            limiter.close()


def _one(args: argparse.Namespace, cfg: configuration.Config, limiter: RateLimiter | None,
         alone: bool) -> tuple[int, dict[str, Any] | None]:
    """`check`, `run`, `upload` or `sync` for one organization: the exit code, and the JSON result if asked.
    Unless it is `alone`, an error that ends it is said and the next organization's turn comes."""
    profile.enter(cfg.profile)
    try:
        if args.command == "check":
            return _check(cfg, limiter), None
        with service.open_client(cfg, limiter=limiter) as client:
            ledger = Ledger(cfg.state.path, previous=cfg.previous_ledger)
            try:
                if args.command == "run":
                    return _exit_run(service.run(cfg, client, ledger)), None
                if args.command == "upload":
                    return _upload(args, cfg, client, ledger)
                return _sync(cfg, client, ledger, full=args.full, as_json=args.json,
                             show_progress=progress.wanted(args.log_format))
            finally:
                ledger.close()
    except AgentError as exc:
        if alone:
            raise
        log.error("%s", exc)
        return exit_code_for(exc), results.stopped(args.command, str(exc)) if args.json else None
    finally:
        profile.enter(None)


# When several profiles answer differently, the code that needs a person most is the process's.
_SEVERITY = (EXIT_INTERRUPTED, EXIT_CREDENTIALS, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_PERSON_NEEDED, EXIT_FAILED,
             EXIT_RETRY_LATER, EXIT_OK)


def worst(codes: list[int]) -> int:
    """The exit code of a command over several profiles: the most severe of theirs."""
    return min(codes, key=_SEVERITY.index) if codes else EXIT_OK


def _status(args: argparse.Namespace) -> int:
    """Show the status (of each profile); its exit code is for monitoring (a dead `run` first, then a
    person needed)."""
    path = args.config or configuration.default_config_path()
    if not path.exists():
        raise ConfigError(f"no configuration file at {path}, so there is no agent to describe: pass -c CONFIG "
                          "(or set QONTO_AGENT_CONFIG), or create one with `qonto-agent init`.")
    configs = configuration.load_profiles(path, need_credentials=False, only=args.profile)
    if args.seen:
        for cfg in configs:
            status.mark_seen(cfg)
    many = len(configs) > 1
    data = [_gathered(cfg, many) for cfg in configs]
    if args.json:
        print(json.dumps(data if many else data[0], ensure_ascii=False))  # one line: quick for 50,000 files
    else:
        print(status.render_profiles(data) if many else status.render(data[0]))
    return worst([_status_code(d, args.expect_running) for d in data])


def _gathered(cfg: configuration.Config, many: bool) -> dict[str, Any]:
    """One organization's status; with profiles, one whose ledger cannot be read is shown with the
    sentence saying why (`{"profile", "error"}`), so that it never hides the others."""
    try:
        return status.gather(cfg)
    except AgentError as exc:
        if not many:
            raise
        return {"profile": cfg.profile, "error": str(exc)}


def _status_code(data: dict[str, Any], expect_running: bool) -> int:
    if "error" in data:
        return EXIT_USAGE
    if not data["run_alive"] and (data["run_expected"] or expect_running):
        return EXIT_NOT_RUNNING
    if data["paused"] or data["errors_unseen"]:
        return EXIT_PERSON_NEEDED
    return EXIT_OK


def _upload(args: argparse.Namespace, cfg: configuration.Config, client: QontoClient,
            ledger: Ledger) -> tuple[int, dict[str, Any] | None]:
    """One pass, or with --dry-run what one pass would do (exit 0: nothing was done)."""
    files = resolve_files(cfg, args.files) if args.files else None
    if args.dry_run:
        previews = preview(cfg, client, ledger, files, force=args.force)
        if not args.json:
            print("\n".join(p.line() for p in previews) or f"nothing to upload in {cfg.inbox.path}")
        return EXIT_OK, results.dry_run(previews) if args.json else None
    with service.interruptible("the upload") as stop, results.FileOutcomes() as outcomes:
        summary = service.upload_once(cfg, client, ledger, files, force=args.force, stop=stop,
                                      show_progress=progress.wanted(args.log_format))
    code = EXIT_INTERRUPTED if summary.interrupted else VERDICT_EXIT[summary.verdict]
    return code, results.upload(summary, outcomes) if args.json else None


def _sync(cfg: configuration.Config, client: QontoClient, ledger: Ledger, *, full: bool, as_json: bool,
          show_progress: bool) -> tuple[int, dict[str, Any] | None]:
    with (service.interruptible("the sync") as stop,
          progress.shown("invoices", show_progress, "listing invoices") as bar):
        report = mirror.sync(cfg, client, ledger, full=full, progress=bar and bar.show, cancel=stop)
    output = results.sync(report, interrupted=stop.is_set()) if as_json else None
    if stop.is_set():
        log.warning("sync interrupted: what was written stays, and the next sync finishes the window")
        return EXIT_INTERRUPTED, output
    return VERDICT_EXIT[report.verdict], output


def _exit_run(end: service.RunEnd) -> int:
    if end is service.RunEnd.ABANDONED or end in (service.RunEnd.LEDGER_BUSY, service.RunEnd.LEDGER_LOST):
        # a worker thread may be stuck in a request or on the ledger's lock: do not wait for it
        logging.shutdown()
        os._exit(RUN_EXIT[end])
    return RUN_EXIT[end]


def resolve_files(config: configuration.Config, files: list[str]) -> list[Path]:
    """Files named on the command line must be inside the inbox (they are filed into its done/)."""
    out = []
    inbox = config.inbox.path.resolve()
    for name in files:
        path = Path(name).absolute()
        try:
            path.parent.resolve().relative_to(inbox)
        except ValueError:
            raise ConfigError(f"{name} is not inside the inbox {config.inbox.path}: move it there first, "
                              "or drop it in the inbox and run `qonto-agent upload`.") from None
        if not path.is_file():
            raise ConfigError(f"{name} is not a file: give the path of a file inside the inbox.")
        out.append(config.inbox.path / path.parent.resolve().relative_to(inbox) / path.name)
    return out


def _init(args: argparse.Namespace) -> int:
    """Write the configuration (with --profile, add a profile to it), then check what can be checked."""
    path = args.config or configuration.default_config_path()
    folder = f"{args.profile}/" if args.profile else ""
    answers = initialize.Answers(args.inbox or f"{folder}inbox", args.outbox or f"{folder}outbox", args.base_url,
                                 args.login, args.secret_key, args.staging_token)
    if sys.stdin.isatty() and not args.no_input:
        answers = initialize.ask(answers)
    configs = initialize.write(path, answers, force=args.force, profile=args.profile)
    for cfg in configs:
        print(f"wrote {path}{f' (profile {cfg.profile})' if cfg.profile else ''}: "
              f"inbox {cfg.inbox.path}, outbox {cfg.outbox.path}")
    if args.systemd:  # the secrets move to qonto-agent.env: `configs` keep them for the check below
        print(systemd_unit.write(path, configuration.load_profiles(path, need_credentials=False),
                                 user=args.user, force=args.force))
    try:
        for cfg in configs:
            configuration.check_credentials(cfg.qonto)
    except AgentError:
        variables = ("QONTO_LOGIN", "QONTO_SECRET_KEY")
        if args.profile:
            variables = tuple(profile_settings.env_name(args.profile, v) for v in variables)
        print(f"next: set {' and '.join(variables)} (or edit the file), then run `qonto-agent check`")
        return EXIT_OK
    return worst([_check(cfg) for cfg in configs])


def _check(cfg: configuration.Config, limiter: RateLimiter | None = None) -> int:
    """The credentials, then everything else a run needs (doctor.py); exit 2 when a person must fix one."""
    logs.add_secrets(cfg.qonto.secrets())
    problems = doctor.local_problems(cfg)
    for problem in problems:  # said first: they need no network, and stand even if the credentials fail
        log.error("%s", problem)
    with service.open_client(cfg, retry=doctor.check_retry(), limiter=limiter) as client:
        org = doctor.organization(client, cfg.qonto.api_root)
        name = org.get("legal_name") or org.get("name") or org.get("slug")
        print(f"OK: connected to Qonto as {name} ({cfg.qonto.api_root})")
        remote = doctor.remote_problems(client)
    for problem in remote:
        log.error("%s", problem)
    if problems or remote:
        return EXIT_USAGE
    print("OK: folders, free space, ledger and read access to invoices and attachments")
    return EXIT_OK
