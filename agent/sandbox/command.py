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
    parser.add_argument("--organization", action="append", default=[], type=_organization, metavar="LOGIN:SECRET",
                        help="serve one more organization, with its own API key and invoices (repeatable)")
    parser.add_argument("--ip-rate-limit", action="append", default=[], type=_rate, metavar="REQUESTS/SECONDS",
                        help="answer 429 above this many API requests per client address in any such window, "
                             "as Qonto does (repeatable; Qonto's: 1000/10 and 10000/600)")


def _organization(value: str) -> tuple[str, str]:
    """`LOGIN:SECRET` → (login, secret); the login is what comes before the first `:`."""
    login, colon, secret_key = value.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected LOGIN:SECRET, got {value!r}")
    return login, secret_key


def _rate(value: str) -> tuple[int, float]:
    """`REQUESTS/SECONDS` → (requests, seconds), both positive."""
    count, _, seconds = value.partition("/")
    try:
        limit = int(count), float(seconds)
    except ValueError:
        limit = (0, 0.0)
    if limit[0] < 1 or not limit[1] > 0:
        raise argparse.ArgumentTypeError(f"expected REQUESTS/SECONDS such as 1000/10, got {value!r}")
    return limit


def sandbox_from_args(args: argparse.Namespace) -> Sandbox:
    """The (not yet started) sandbox the command-line options describe."""
    from agent.sandbox.faults import Faults
    from agent.sandbox.server import Sandbox

    share = args.fault_rate / 3
    try:
        return Sandbox(
            args.host,
            args.port,
            login=args.login,
            secret_key=args.secret_key,
            organizations=tuple(args.organization),
            ip_rate_limits=tuple(args.ip_rate_limit),
            staging_token=args.staging_token,
            key_window_seconds=args.key_window,
            analysis_delay_seconds=args.analysis_delay,
            url_ttl_seconds=args.url_ttl,
            denied_scopes=frozenset(args.deny_scope),
            request_log_limit=REQUEST_LOG_LIMIT,
            faults=Faults(latency_seconds=args.latency, error_rate=share, rate_limit_rate=share, drop_rate=share),
        )
    except ValueError as exc:  # an --organization that cannot be an API key, or a login given twice
        raise ConfigError(f"{exc} Fix --organization or --login.") from exc


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
    if sandbox.organizations:
        others = ", ".join(login for login, _ in sandbox.organizations)
        lines += ["", f"Other organizations, each with the secret key you gave: {others}"]
    if sandbox.ip_rate_limits:
        rates = " and ".join(f"{count} per {seconds:g} s" for count, seconds in sandbox.ip_rate_limits)
        lines += ["", f"API requests per client address are limited to {rates} (429 above)."]
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
