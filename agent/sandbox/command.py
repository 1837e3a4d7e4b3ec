"""`qonto-agent sandbox`: its options, and serving until stopped.

Importing this module loads no part of the sandbox itself: `--help` and the other commands stay light.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import TYPE_CHECKING

from agent.base.errors import ConfigError

if TYPE_CHECKING:
    from agent.sandbox.server import Sandbox

REQUEST_LOG_LIMIT = 10_000  # a sandbox serving for days keeps the latest requests, not all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `sandbox` subcommand's options to `parser`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on, 0 for any (default: 8765)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay before every answer")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a fault per API request, split evenly over 500, 429 and dropped connections",
    )
    seconds = {"type": float, "metavar": "SECONDS"}
    parser.add_argument("--key-window", default=1800.0, help="idempotency key lifetime (default: 1800)", **seconds)
    parser.add_argument("--analysis-delay", default=2.0, help="upload to analysis delay (default: 2)", **seconds)
    parser.add_argument("--url-ttl", default=1800.0, help="attachment URL validity (default: 1800)", **seconds)
    parser.add_argument("--seed-invoices", type=int, default=0, metavar="N", help="start with N invoices")
    parser.add_argument("--login", default="sandbox-org", help="API key login to accept (default: sandbox-org)")
    parser.add_argument("--secret-key", default="sandbox-secret-key", help="API key secret to accept")
    parser.add_argument("--staging-token", default=None, help="require this X-Qonto-Staging-Token header")
    parser.add_argument("--deny-scope", action="append", default=[], metavar="SCOPE",
                        help="answer 403 forbidden where this OAuth scope is needed (repeatable)")


def sandbox_from_args(args: argparse.Namespace) -> Sandbox:
    """The (not yet started) sandbox the command-line options describe."""
    from agent.sandbox.faults import Faults
    from agent.sandbox.server import Sandbox

    share = args.fault_rate / 3
    return Sandbox(
        args.host,
        args.port,
        login=args.login,
        secret_key=args.secret_key,
        staging_token=args.staging_token,
        key_window_seconds=args.key_window,
        analysis_delay_seconds=args.analysis_delay,
        url_ttl_seconds=args.url_ttl,
        denied_scopes=frozenset(args.deny_scope),
        request_log_limit=REQUEST_LOG_LIMIT,
        faults=Faults(latency_seconds=args.latency, error_rate=share, rate_limit_rate=share, drop_rate=share),
    )


def serve(args: argparse.Namespace) -> None:
    """Serve the sandbox until SIGINT or SIGTERM; print what to put in the configuration."""
    sandbox = sandbox_from_args(args)
    try:
        sandbox.start()
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        raise ConfigError(f"Cannot listen on {where} ({exc.strerror}); choose another --port.") from exc
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.seed_invoices:
            sandbox.seed(args.seed_invoices)
        print(_banner(sandbox), flush=True)
        stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.stop()
    print("Sandbox stopped.", flush=True)


def _banner(sandbox: Sandbox) -> str:
    lines = [
        f"Qonto sandbox listening on {sandbox.base_url}",
        "",
        "Put this in config.toml:",
        "",
        "[qonto]",
        f'base_url = "{sandbox.base_url}"',
        f'login = "{sandbox.login}"',
        f'secret_key = "{sandbox.secret_key}"',
    ]
    if sandbox.staging_token is not None:
        lines.append(f'staging_token = "{sandbox.staging_token}"')
    lines += [
        "",
        f"OAuth instead: token_url = \"{sandbox.base_url}/oauth2/token\", client_id = \"{sandbox.client_id}\",",
        f"client_secret = \"{sandbox.client_secret}\", refresh_token = \"{sandbox.refresh_token}\".",
        "",
        f"What it received: {sandbox.base_url}/_sandbox/requests and {sandbox.base_url}/_sandbox/counts",
        "",
        "Press Ctrl+C to stop.",
    ]
    return "\n".join(lines)
