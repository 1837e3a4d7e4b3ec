"""An overall deadline for one HTTP exchange, beyond the per-read timeout.

`timeout_seconds` bounds each socket read, so a server sending one byte a second never trips it.
While a `Deadline` lasts, every connection its thread opens or reuses reports to it; when it
expires, a timer shuts those sockets down, the blocked read returns at once, the request fails,
and `expired` tells the caller that the deadline, not the network, ended it. `DeadlineAdapter`
plugs the reporting connections into a requests session.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

FACTOR = 3.0  # an exchange may last this many per-read timeouts ...
SLOWEST_BYTES_PER_SECOND = 64 * 1024  # ... plus the time its body takes at this slowest acceptable rate

_current = threading.local()


def deadline_seconds(timeout: float, size: int = 0) -> float:
    """How long an exchange with a body of `size` bytes (sent or received) may last in all."""
    return FACTOR * timeout + size / SLOWEST_BYTES_PER_SECOND


class Deadline:
    """Ends the current thread's HTTP exchange after `seconds`; use as a context manager."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._over = False
        self._outer: Deadline | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._outer = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._over = True
            self._connections.clear()
        _current.deadline = self._outer

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self.expired:
                _shut(connection)
            elif connection not in self._connections:
                self._connections.append(connection)

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self.expired = True
            for connection in self._connections:
                _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    """Shut the connection's socket down under the thread reading it (TLS included: the socket
    below is shut, the TLS object is left to fail its next read)."""
    sock = getattr(connection, "sock", None)
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if isinstance(raw, socket.socket):
        try:
            socket.socket.shutdown(raw, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _report(connection: HTTPConnection) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


class _Reporting:
    """Connections that report to the thread's deadline when they connect and for each request."""

    def connect(self) -> None:
        _report(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _report(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Reporting, HTTPConnection):
    pass


class _HTTPSConnection(_Reporting, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or through an HTTP proxy) obey `Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_reporting_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        _use_reporting_pools(manager)
        return manager


def _use_reporting_pools(manager: Any) -> None:
    """Swap urllib3's standard pools for reporting ones (a SOCKS manager keeps its own)."""
    if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:
        manager.pool_classes_by_scheme = _POOLS
