"""HTTP plumbing: a threading server that can drop every connection, and a keep-alive handler
that reads bodies (plain or chunked) and hands each request to the sandbox."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from agent.sandbox.answers import Request, Response, api_error

if TYPE_CHECKING:
    from agent.sandbox.server import Sandbox


class Server(ThreadingHTTPServer):
    """One thread per connection; remembers open connections so `stop()` can close them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        """Note a connection opening or closing, so `close_connections()` knows what is open."""
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection down, as a server going away would."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay silent: a client that went away mid-answer is not the sandbox's problem."""


def _shutdown(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; hands each request to the sandbox and writes its answer."""

    protocol_version = "HTTP/1.1"
    server_version = "qonto-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: tests and `qonto-agent sandbox` read the request log instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        started = time.monotonic()
        sandbox = self.server.sandbox
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query, keep_blank_values=True)
        trace_id = uuid.uuid4().hex
        try:
            body = self._read_body()
        except ValueError:
            request = Request(self.command, path, query, self.headers, b"", trace_id, self.client_address[0])
            self.close_connection = True
            response: Response | None = api_error(request, 400, "invalid", "The request body could not be read")
        else:
            request = Request(self.command, path, query, self.headers, body, trace_id, self.client_address[0])
            response = self._answer(sandbox, request)
        # Logged before answering: a client that has its answer finds the request in the log.
        sandbox.record(request, response.status if response is not None else None, started)
        if response is None:
            self.close_connection = True
            _shutdown(self.connection)
        else:
            self._write(response, trace_id)

    @staticmethod
    def _answer(sandbox: Sandbox, request: Request) -> Response | None:
        try:
            return sandbox.respond(request)
        except Exception as exc:  # a sandbox bug must still produce an answer a client can read
            return api_error(request, 500, "internal_server_error", f"Sandbox failure: {exc!r}")

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked); ValueError when it cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(self._read_chunks())
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) != length:
            raise ValueError("the body is shorter than its Content-Length")
        return body

    def _read_chunks(self) -> Iterator[bytes]:
        """The chunks of a chunked body; int() raises ValueError on a malformed size line."""
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0], 16)
            if size == 0:
                break
            yield self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields

    def _write(self, response: Response, trace_id: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Tyk-Trace-Id", trace_id)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.stream is None:
            self.wfile.write(response.body)
            return
        try:
            for chunk in response.stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up on a slow or endless body
            self.close_connection = True
