"""URLs from the configuration, read the way the HTTP stack will connect to them.

A URL that two readers take to different hosts is how plain http leaves the machine: the
"http only for loopback" rule read with `urlsplit` sees `localhost` in `http://192.0.2.1\\@localhost/`,
while requests (urllib3's `parse_url`) connects to 192.0.2.1. So the host is taken from urllib3's
parser, and a URL is refused when the two readers disagree, or when it holds userinfo or a backslash.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from agent.base.errors import ConfigError


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): where plain http never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str, key: str, section: str = "qonto") -> None:
    """A URL that every reader takes to the same host: read by urllib3's parser (the one requests
    connects with), without userinfo or backslashes, its host the one `urlsplit` shows too. The URL
    is not repeated in the messages: whatever stands before an "@" may be a password."""
    example = "give a full URL such as " + ("https://thirdparty.qonto.com" if section == "qonto" else
                                             "https://hooks.example.com/qonto-agent")
    where = f"`[{section}] {key}`"
    invalid = f"{where} is not a valid URL: {example}."
    try:
        parts = parse_url(url)
    except LocationParseError:
        raise ConfigError(invalid) from None
    if any(ch.isspace() or not ch.isprintable() for ch in url):  # older urllib3 let spaces through
        raise ConfigError(invalid)
    host = (parts.host or "").strip("[]")
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{where} is not a full http(s) URL: {example}.")
    if "\\" in url:
        raise ConfigError(f"{where} holds a backslash, which programs read differently (one would "
                          f"connect to {host}): remove it and {example}.")
    if parts.auth is not None or "@" in urlsplit(url).netloc:
        credentials = ("credentials go in `login` and `secret_key`" if section == "qonto"
                       else "a webhook's secret goes in its path or query")
        raise ConfigError(f'{where} holds a user name or password before "@": remove it ({credentials}) '
                          f"and {example}.")
    if host != urlsplit(url).hostname:
        raise ConfigError(f"{where} names a host that programs read differently (one would connect to "
                          f"{host}): {example}.")
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigError(
            f"{where} uses http:// to {host}: credentials would travel unencrypted, "
            "so use https:// (plain http is allowed only for loopback, e.g. the local sandbox).")
