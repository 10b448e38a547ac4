"""The local host: the Worker's request handling (`App.handle`) served over HTTP/1.1.

`make dev` runs it against an embedded Postgres; it is also a way to run the sync server
outside Cloudflare (behind a TLS-terminating reverse proxy), with DATABASE_URL pointing at
any Postgres. Same code path as the Worker: only this file and src/entry.py know the host.

    DATABASE_URL=postgresql://… SUPABASE_JWT_SECRET=… python src/serve.py

Why a small HTTP/1.1 server of its own, and not `http.server` or an ASGI server: the
standard library's server ignored `Transfer-Encoding`, took duplicate `Content-Length`
headers, answered in HTML and had no bound on connections or buffered bytes. An ASGI server
(uvicorn/h11, granian) frames requests well, but its own refusals are plain text, and the
App's database calls block (pg8000), so one event loop would serialise every request or
need a thread hop per request anyway. Here the framing is strict and every answer,
refusals included, is the contract's JSON error body; each connection has its own thread
(bounded) and its own event loop for `App.handle`.

The rules, so that what a proxy in front sees and what this server sees cannot differ
(no request smuggling):
- The head is CRLF-terminated lines of ASCII tokens: a bare CR or LF, a control character,
  a non-ASCII byte in the request target, whitespace before a header's colon or a folded
  header line is a 400, and the connection is closed.
- A body is framed by exactly one `Content-Length` (ASCII digits only) or by
  `Transfer-Encoding: chunked` (decoded here, with the body cap applied while reading).
  Both at once, two lengths, a list, or another transfer coding: refused, connection closed.
- Statuses and codes of the host's own answers (codes stay within the contract's):
  400 `bad_request` (malformed framing), 408 `bad_request` (too slow), 413
  `payload_too_large`, 414 and 431 `bad_request` (request line or head too long), 501
  `bad_request` (a transfer coding other than chunked), 505 `bad_request` (not HTTP/1.x),
  503 `unavailable` with `Retry-After` (connection or buffer limits reached), 500
  `internal` (a fault of the host itself). The App's own answers (429 with `Retry-After`
  included) pass through unchanged.
- Cost before authentication is bounded: at most `Limits.unauthenticated_body` bytes of a
  body are read before the Authorization header has been verified (`App.auth`, whose
  answer is cached, so the App's own check is cheap). For a larger body a missing or bad
  token is therefore a 401 before the App looks at route or media type.
- Body bytes held at once across all connections are bounded (`Limits.buffer_budget`);
  each read has a timeout, and each head and body a deadline; connections are capped (at
  the cap the longest-idle connection is closed to make room; if none is idle, a quick
  503); the listen backlog is `Limits.backlog`; an idle keep-alive connection is closed
  after `Limits.idle_timeout`.
- Behind a reverse proxy, keep the proxy's idle timeout for upstream connections below
  `Limits.idle_timeout` (15 s), or it may send a request on a connection this side is
  closing.
- Shutdown is signal-safe: SIGINT/SIGTERM only write a byte to a pipe; the main thread
  waits on the pipe, stops accepting, lets requests in flight finish for a short
  grace period (a second signal cuts it short) and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import re
import select
import selectors
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync.app import App
from sync.http import ApiError, Request, Response, cors_headers, error_response
from sync.pg import connect_url, tune_driver
from sync.settings import SETTING_NAMES, Settings

STATIC_HEADERS = {
    # Same-origin isolation lets the demo use SQLite on OPFS.
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cache-control": "no-cache",
}

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one client may cost the host. Defaults suit a small server behind a proxy."""

    # Served at once. Above the App's MAX_INFLIGHT (64), so that its per-user 429s, not
    # this blunt cap, decide who waits; beyond it the longest-idle connection is closed,
    # or (none idle) the newcomer gets a 503.
    max_connections: int = 256
    backlog: int = 128  # connections the kernel holds before accept
    max_request_line: int = 8192  # longer: 414
    max_head_bytes: int = 32768  # the header section; larger: 431
    max_headers: int = 100  # more: 431
    idle_timeout: float = 15.0  # a keep-alive connection waiting for its next request
    read_timeout: float = 10.0  # any one read inside a request
    head_deadline: float = 10.0  # the whole head, from its first byte
    body_deadline: float = 10.0  # the whole body may take this long...
    min_body_rate: int = 100_000  # ...plus its size at this many bytes/s (8 MiB: 94 s)
    write_timeout: float = 60.0  # the whole answer
    unauthenticated_body: int = 64 * 1024  # body bytes read before the token is verified
    # Body bytes held at once, all connections together (the App's parse of a body takes
    # about twice its size again, so the process's memory is a small multiple of this).
    buffer_budget: int = 32 * MiB  # four bodies of the default MAX_BODY_BYTES
    budget_wait: float = 2.0  # how long a body waits for budget before a 503
    drain_limit: int = 64 * MiB  # an unread body is read away (unkept) up to this...
    drain_seconds: float = 10.0  # ...and this long, so the client gets its answer, not a reset
    grace: float = 10.0  # requests in flight may finish this long on shutdown


class Refusal(Exception):
    """An answer the host makes itself, before or instead of the App. The connection is
    closed after it: the stream may no longer be in step with the client."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "bad_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error = ApiError(status, code, message, headers)


class Closed(Exception):
    """The client closed (or never began) the request: nothing to answer."""


# ---- the wire: bytes in, with timeouts and deadlines -------------------------------------


BARE_EOL = re.compile(rb"(?<!\r)\n|\r(?=[^\n])")  # a lone LF, or a CR before another byte


class Wire:
    """Buffered reads from one connection. Every read waits at most `read_timeout`, and
    never past the deadline of the request part being read."""

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        self.sock = sock
        self.limits = limits
        self.buffer = bytearray()

    def _fill(self, deadline: float, timeout: float) -> None:
        left = min(timeout, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise TimeoutError from None
        except OSError:
            raise Closed from None
        if not data:
            raise Closed
        self.buffer += data

    def read_head(self) -> bytes:
        """The request head without its final empty line; waits `idle_timeout` for the
        first byte. Empty lines before a request are skipped (RFC 9112 §2.2)."""
        limits = self.limits
        start = time.monotonic()
        while not self.buffer.lstrip(b"\r\n"):
            self.buffer.clear()
            try:
                self._fill(start + limits.idle_timeout, limits.idle_timeout)
            except TimeoutError:
                raise Closed from None
        del self.buffer[: len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))]
        deadline = time.monotonic() + limits.head_deadline
        limit = limits.max_request_line + 2 + limits.max_head_bytes + 2
        searched = 0  # bytes already checked: each byte is scanned about once
        first = -1  # the end of the request line, once seen
        while True:
            start = max(0, searched - 3)
            end = self.buffer.find(b"\r\n\r\n", start)
            if first == -1:
                first = self.buffer.find(b"\n", max(0, searched - 1))
            if (first == -1 and len(self.buffer) > limits.max_request_line + 1) or (
                first > limits.max_request_line + 1
            ):
                raise Refusal(414, f"the request line is over {limits.max_request_line} bytes")
            stop = end + 4 if end != -1 else len(self.buffer)
            if BARE_EOL.search(self.buffer, max(0, searched - 1), stop):
                raise Refusal(400, "lines of the request head must end with CRLF")
            if end != -1:
                if end + 4 > limit:
                    raise Refusal(431, f"the request head is over {limits.max_head_bytes} bytes")
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > limit:
                raise Refusal(431, f"the request head is over {limits.max_head_bytes} bytes")
            searched = len(self.buffer)
            try:
                self._fill(deadline, limits.read_timeout)
            except TimeoutError:
                raise Refusal(408, "the request head was not sent in time") from None
            except Closed:
                if self.buffer:
                    raise Refusal(400, "the connection ended inside the request head") from None
                raise

    def read_exact(self, n: int, deadline: float) -> bytes:
        if n <= 1 << 16 or len(self.buffer) >= n:
            while len(self.buffer) < n:
                self._fill(deadline, self.limits.read_timeout)
            data = bytes(self.buffer[:n])
            del self.buffer[:n]
            return data
        # A large body goes straight into a buffer of its size: the connection's own
        # buffer never grows to (and keeps, while the connection lives) a body's size.
        out = bytearray(n)
        have = len(self.buffer)
        out[:have] = self.buffer
        self.buffer = bytearray()
        view = memoryview(out)
        while have < n:
            left = min(self.limits.read_timeout, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                got = self.sock.recv_into(view[have:], n - have)
            except TimeoutError:
                raise TimeoutError from None
            except OSError:
                raise Closed from None
            if not got:
                raise Closed
            have += got
        view.release()
        return bytes(out)

    def read_line(self, limit: int, deadline: float) -> bytes:
        """One CRLF-terminated line (without it), at most `limit` bytes."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end != -1:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                if end > limit:
                    raise Refusal(400, "a chunk line is too long")
                return line
            if len(self.buffer) > limit:
                raise Refusal(400, "a chunk line is too long")
            self._fill(deadline, self.limits.read_timeout)

    def drain(self, limit: int, seconds: float) -> None:
        """Reads and drops what the client still sends (up to a bound), so that closing
        does not reset the connection before the client has read its answer."""
        self.buffer.clear()
        deadline = time.monotonic() + seconds
        left = limit
        with contextlib.suppress(TimeoutError, Closed):
            while left > 0:
                self._fill(deadline, min(seconds, 1.0))
                left -= len(self.buffer)
                self.buffer.clear()


# ---- the head: strict parsing ------------------------------------------------------------

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") (\S+) HTTP/([0-9])\.([0-9])")
TARGET = re.compile(rb"/[\x21-\x7e]*")
HEADER = re.compile(rb"(" + TOKEN + rb"):[ \t]*(.*?)[ \t]*")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
DIGITS = re.compile(rb"[0-9]{1,18}")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;.*)?")
# A second one of these makes the request ambiguous: refused rather than guessed.
SINGLE = frozenset(
    {"content-length", "transfer-encoding", "host", "authorization", "content-type", "expect"}
)


@dataclass
class Head:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str]  # names in lower case, repeated ones joined with ", "

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def keep_alive(self) -> bool:
        """HTTP/1.1 unless the client asks to close; HTTP/1.0 connections always close."""
        tokens = {t.strip(" \t").lower() for t in self.headers.get("connection", "").split(",")}
        return self.version >= (1, 1) and "close" not in tokens


def parse_head(raw: bytes, limits: Limits) -> Head:
    lines = raw.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise Refusal(400, "lines of the request head must end with CRLF")
    match = REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise Refusal(400, "malformed request line")
    method, target, major, minor = match.groups()
    if major != b"1":
        raise Refusal(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not TARGET.fullmatch(target):
        raise Refusal(
            400, "the request target must be a path of visible ASCII (no control characters)"
        )
    if len(lines) - 1 > limits.max_headers:
        raise Refusal(431, f"more than {limits.max_headers} header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = HEADER.fullmatch(line)
        if field is None or not FIELD_VALUE.fullmatch(field.group(2)):
            raise Refusal(400, "malformed header field")
        name = field.group(1).decode("ascii").lower()
        value = field.group(2).decode("latin-1")
        if name in headers:
            if name in SINGLE:
                raise Refusal(400, f"more than one {name} header")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    return Head(method.decode("ascii"), target.decode("ascii"), (int(major), int(minor)), headers)


def body_length(head: Head) -> int | None:
    """The declared body length, None for a chunked body; refuses ambiguous framing."""
    coding = head.headers.get("transfer-encoding")
    length = head.headers.get("content-length")
    if coding is not None:
        if length is not None:
            raise Refusal(400, "a request must not carry both Transfer-Encoding and Content-Length")
        if head.version < (1, 1):
            raise Refusal(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if coding.strip(" \t").lower() != "chunked":
            raise Refusal(501, "only Transfer-Encoding: chunked is supported")
        return None
    if length is None:
        return 0
    if not DIGITS.fullmatch(length.encode("latin-1")):
        raise Refusal(400, "Content-Length must be ASCII digits")
    return int(length)


# ---- answers ------------------------------------------------------------------------------

HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def encode_response(response: Response, head_only: bool, close: bool) -> bytes:
    """Status line, headers and body in one buffer: one send, so no Nagle delay."""
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    for name, value in response.headers.items():
        if name.lower() in ("content-length", "connection", "transfer-encoding", "date"):
            continue
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name) or not HEADER_VALUE.fullmatch(
            value
        ):
            raise ValueError(f"unsendable response header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"date: {formatdate(usegmt=True)}")
    lines.append(f"content-length: {len(response.body)}")
    if close:
        lines.append("connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + response.body


def static_file(root: Path | None, path: str) -> Response | None:
    if root is None or path.startswith("/api/"):
        return None
    try:
        target = (root / path.lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file() or root not in target.parents:
            return None
        body = target.read_bytes()
    except (OSError, ValueError):  # a name too long, or one the file system refuses
        return None
    kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".wasm":
        kind = "application/wasm"
    return Response(200, {"content-type": kind, **STATIC_HEADERS}, body)


# ---- bounded resources --------------------------------------------------------------------


class Budget:
    """Bytes of request bodies held at once, across connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, n: int, timeout: float) -> bool:
        with self._cond:
            if n > self.limit:
                return False
            if not self._cond.wait_for(lambda: self.used + n <= self.limit, timeout):
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


BUSY = {"retry-after": "1"}


# ---- one connection -----------------------------------------------------------------------


class Connection:
    """Serves the requests of one client connection, one after the other."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.wire = Wire(sock, server.limits)
        self.idle = False  # no request under way: may be closed on shutdown or at the cap
        self.idle_since = 0.0
        self.evicted = False
        self.runner: asyncio.Runner | None = None
        self._taken = 0  # bytes of the buffer budget the current request holds

    def run(self) -> None:
        try:
            while self.server.accepting_more(self):
                try:
                    raw = self.wire.read_head()
                except Closed:
                    return
                except Refusal as refusal:
                    self._refuse(refusal, None)
                    return
                finally:
                    self.server.busy(self)
                if not self._request(raw):
                    return
        except OSError:
            pass  # the client went away (reset, broken pipe): nothing to answer
        except Exception as error:  # never a traceback per connection; one log line
            self.server.log({"msg": "host_error", "exception": type(error).__name__})
        finally:
            if self.runner is not None:
                self.runner.close()
            with contextlib.suppress(OSError):
                self.sock.close()
            self.server.gone(self)

    def _run(self, coroutine: Any) -> Any:
        if self.runner is None:
            self.runner = asyncio.Runner()
        return self.runner.run(coroutine)

    def _request(self, raw: bytes) -> bool:
        """Answers one request; True when the connection can carry another."""
        head: Head | None = None
        try:
            head = parse_head(raw, self.server.limits)
            length = body_length(head)
            response, in_step = self._answer(head, length)
        except Refusal as refusal:
            self._refuse(refusal, head)
            return False
        finally:
            self.server.budget.give(self._taken)
            self._taken = 0
        close = not in_step or not head.keep_alive() or self.server.closing
        self._send(response, head.method == "HEAD", close)
        if not in_step:
            self._linger()
        return not close

    def _answer(self, head: Head, length: int | None) -> tuple[Response, bool]:
        """The response, and whether the body was read (the stream is still in step)."""
        server = self.server
        limits = server.limits
        app = server.app
        headers = dict(head.headers)
        if head.method in ("GET", "HEAD") and length == 0:
            response = static_file(server.static_root, head.path)
            if response is not None:
                return response, True
        body = b""
        in_step = True
        if length is None:  # chunked: decoded here; the App sees the length it came to
            body = self._read_chunked(head)
            headers.pop("transfer-encoding", None)
            headers["content-length"] = str(len(body))
        elif length > app.settings.max_body_bytes:
            in_step = False  # not read: the App answers from the declared length (413)
        elif length > 0:
            if length > limits.unauthenticated_body:
                self._authenticate(head)
            if not server.budget.take(length, limits.budget_wait):
                raise Refusal(503, "the server is busy; retry shortly", "unavailable", BUSY)
            self._taken = length
            self._continue(head)
            try:
                body = self.wire.read_exact(length, self._body_deadline(time.monotonic(), length))
            except TimeoutError:
                raise Refusal(408, "the request body was not sent in time") from None
            except Closed:
                raise Refusal(400, "the connection ended inside the request body") from None
        request = Request(head.method, head.path, headers, body)
        try:
            return self._run(app.handle(request)), in_step
        except Exception as error:  # App.handle answers its own errors; this is a host fault
            self.server.log({"msg": "host_error", "exception": type(error).__name__})
            raise Refusal(500, "internal server error", "internal") from None

    def _body_deadline(self, started: float, size: int) -> float:
        """A slow sender is cut off; a big body gets time in proportion to its size."""
        limits = self.server.limits
        return started + limits.body_deadline + size / limits.min_body_rate

    def _continue(self, head: Head) -> None:
        if head.headers.get("expect", "").lower() == "100-continue" and head.version >= (1, 1):
            self.sock.settimeout(self.server.limits.write_timeout)
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _authenticate(self, head: Head) -> None:
        """A large body is read only for a caller with a valid token."""
        try:
            self._run(self.server.app.auth.user_id(head.headers.get("authorization")))
        except ApiError as error:
            raise Refusal(error.status, error.message, error.code, error.headers) from None
        except Exception as error:  # as App.handle would: a 500, the detail in the log only
            self.server.log({"msg": "host_error", "exception": type(error).__name__})
            raise Refusal(500, "internal server error", "internal") from None

    def _read_chunked(self, head: Head) -> bytes:
        limits = self.server.limits
        cap = self.server.app.settings.max_body_bytes
        started = time.monotonic()
        deadline = self._body_deadline(started, 0)
        parts: list[bytes] = []
        total = 0
        authenticated = False
        most = max(1024, cap // 256)  # tiny chunks cost a loop each: bounded in number
        self._continue(head)
        try:
            while True:
                line = self.wire.read_line(4096, deadline)
                size = CHUNK_SIZE.fullmatch(line)
                if size is None or not FIELD_VALUE.fullmatch(line):
                    raise Refusal(400, "malformed chunk size")
                n = int(size.group(1), 16)
                if n == 0:
                    break
                if len(parts) >= most:
                    raise Refusal(400, f"more than {most} chunks")
                if total + n > cap:
                    raise Refusal(413, f"body is over MAX_BODY_BYTES ({cap})", "payload_too_large")
                if total + n > limits.unauthenticated_body and not authenticated:
                    self._authenticate(head)
                    authenticated = True
                if not self.server.budget.take(n, limits.budget_wait):
                    raise Refusal(503, "the server is busy; retry shortly", "unavailable", BUSY)
                self._taken += n
                deadline = self._body_deadline(started, total + n)
                parts.append(self.wire.read_exact(n, deadline))
                total += n
                if self.wire.read_exact(2, deadline) != b"\r\n":
                    raise Refusal(400, "a chunk must end with CRLF")
            for _ in range(limits.max_headers + 1):  # trailer fields: read and dropped
                if not self.wire.read_line(limits.max_request_line, deadline):
                    return b"".join(parts)
            raise Refusal(431, "too many trailer fields")
        except TimeoutError:
            raise Refusal(408, "the request body was not sent in time") from None
        except Closed:
            raise Refusal(400, "the connection ended inside the request body") from None

    def _refuse(self, refusal: Refusal, head: Head | None) -> None:
        error = refusal.error
        record: dict[str, Any] = {"msg": "refused"}  # by the host, before or instead of the App
        if head is not None:
            record |= {"method": head.method, "path": head.path[:200]}
        record |= {"status": error.status, "error": error.code, "reason": error.message}
        self.server.log(record)
        response = error_response(error)
        origin = head.headers.get("origin") if head is not None else None
        response.headers.update(cors_headers(origin, self.server.app.settings.allowed_origins))
        # A client too slow to send its request is not waited for long after the answer.
        slow = refusal.error.status == 408
        with contextlib.suppress(OSError):
            self._send(response, head is not None and head.method == "HEAD", close=True)
            self._linger(1.0 if slow else None)

    def _send(self, response: Response, head_only: bool, close: bool) -> None:
        try:
            data = encode_response(response, head_only, close)
        except ValueError:
            response = error_response(ApiError(500, "internal", "internal server error"))
            data = encode_response(response, head_only, close=True)
        self.sock.settimeout(self.server.limits.write_timeout)
        self.sock.sendall(data)

    def _linger(self, seconds: float | None = None) -> None:
        limits = self.server.limits
        seconds = limits.drain_seconds if seconds is None else min(seconds, limits.drain_seconds)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.wire.drain(limits.drain_limit, seconds)


# ---- the server ---------------------------------------------------------------------------


class Server:
    """Accepts connections and serves each on a thread of its own, up to a cap. The
    interface of `socketserver`'s servers that the callers use: `serve_forever()`,
    `shutdown()`, `server_close()`, `server_address`."""

    def __init__(
        self, app: App, host: str, port: int, static_root: Path | None, limits: Limits
    ) -> None:
        self.app = app
        self.static_root = static_root
        self.limits = limits
        # At least one body of the largest size the App takes must fit.
        self.budget = Budget(max(limits.buffer_budget, app.settings.max_body_bytes))
        self.socket = socket.create_server((host, port), backlog=limits.backlog)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.closing = False
        self._connections: set[Connection] = set()
        self._evicted = 0  # closed to make room, their threads not yet ended
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._running = False
        self._stopped = threading.Event()

    def log(self, record: dict[str, Any]) -> None:
        """The App's log, for what the host itself refuses; a failing log never takes a
        connection down."""
        with contextlib.suppress(Exception):
            self.app.log(record)

    @property
    def active(self) -> int:
        return len(self._connections)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._running = True
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self.closing:
                    for key, _ in selector.select(poll_interval):
                        if key.fileobj is self._wake_r:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(4096)
                        elif not self.closing:
                            self._accept()
        finally:
            self._running = False
            self._stopped.set()

    def _accept(self) -> None:
        try:
            sock, _ = self.socket.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            full = len(self._connections) - self._evicted >= self.limits.max_connections
            if full:
                full = not self._evict_idle()
            if not full:
                connection = Connection(self, sock)
                self._connections.add(connection)
        if full:
            self._turn_away(sock)
            return
        try:
            threading.Thread(target=connection.run, daemon=True).start()
        except RuntimeError:  # no thread to be had: as if at the cap
            self.gone(connection)
            self._turn_away(sock)

    def _evict_idle(self) -> bool:
        """At the cap, the connection idle the longest (between requests, or still
        sending its head) is closed to make room, as nginx reuses idle keep-alive
        connections: idle clients cannot hold every slot. Called under the lock."""
        idle = [c for c in self._connections if c.idle and not c.evicted]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since)
        victim.evicted = True
        victim.idle = False
        self._evicted += 1
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RDWR)
        return True

    def _turn_away(self, sock: socket.socket) -> None:
        """A quick 503 without a thread: read what has arrived, answer, close."""
        response = error_response(
            ApiError(503, "unavailable", "the server is at its connection limit", BUSY)
        )
        data = encode_response(response, head_only=False, close=True)
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.recv(1 << 16)
            sock.send(data)
            sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(BlockingIOError):
                sock.recv(1 << 16)
        sock.close()

    def accepting_more(self, connection: Connection) -> bool:
        """Marks `connection` idle unless the server is closing (then it should end)."""
        with self._lock:
            if self.closing or connection.evicted:
                return False
            connection.idle = True
            connection.idle_since = time.monotonic()
            return True

    def busy(self, connection: Connection) -> None:
        with self._lock:
            connection.idle = False

    def gone(self, connection: Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.discard(connection)
                if connection.evicted:
                    self._evicted -= 1

    def shutdown(self) -> None:
        """Stops serve_forever (from another thread) and waits until it has returned."""
        self.closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._running:
            self._stopped.wait()

    def server_close(self) -> None:
        """Closes the listening socket and the idle connections; requests in flight end
        after their answer (their connections are closed then)."""
        self.closing = True
        self.socket.close()
        with self._lock:
            idle = [c for c in self._connections if c.idle]
        for connection in idle:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._wake_r.close()
        self._wake_w.close()


def serve(
    app: App, host: str, port: int, static_root: Path | None, limits: Limits | None = None
) -> Server:
    return Server(app, host, port, static_root, limits or Limits())


# ---- the process --------------------------------------------------------------------------


async def fetch_json(url: str) -> Any:
    def get() -> Any:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.loads(answer.read())

    return await asyncio.to_thread(get)


def make_app(env: dict[str, str]) -> App:
    url = env.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    settings = Settings.from_env({k: env[k] for k in SETTING_NAMES if k in env})
    tune_driver()
    return App(settings, lambda: connect_url(url), fetch_json)


def signal_pipe() -> int:
    """A pipe that SIGINT and SIGTERM write a byte to; returns its read end.

    The handler takes no lock: a handler that set a threading.Event could interrupt the
    main thread inside that Event's own lock and hang for good (a second SIGTERM during
    shutdown did). The byte is also written by the C-level handler (`set_wakeup_fd`): the
    kernel may deliver a signal to any thread, and then the main thread, blocked in
    select(), would not wake to run a Python handler at all. The pipe stays open for the
    life of the process, so a late signal never writes into a reused descriptor."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)

    def on_signal(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            os.write(write, b"\0")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    return read


def wait_for_signal(fd: int, timeout: float | None = None) -> bool:
    """True once a signal's byte arrived on `fd` (consumed), False on timeout. Wakes at
    least once a second, so that a pending Python-level handler runs in any case."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 1.0 if end is None else min(1.0, end - time.monotonic())
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 4096)
            return True


def run(
    env: dict[str, str],
    notes: tuple[str, ...] = (),
    limits: Limits | None = None,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
    signals: int | None = None,
) -> None:
    """Serves until SIGINT/SIGTERM, then stops cleanly. Prints `notes`, then the URL.

    The signal handlers are installed first, so a signal during start-up also stops it
    cleanly (after start-up) instead of killing the process with its database running.
    A caller with start-up work of its own (migrations, an embedded Postgres) can call
    `signal_pipe()` before it and pass the read end as `signals`, so that a signal then
    is not lost either."""
    if signals is None:
        signals = signal_pipe()
    host = env.get("HOST", "127.0.0.1")
    port = int(env.get("PORT", "8787"))
    static = env.get("STATIC_DIR")
    static_root = Path(static).resolve() if static and Path(static).is_dir() else None
    server = serve(make_app(env), host, port, static_root, limits)
    grace = server.limits.grace
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for note in notes:
        say(note)
    say(f"ready: http://{host}:{server.server_address[1]}")
    wait_for_signal(signals)
    say("stopping …")
    server.shutdown()
    server.server_close()
    end = time.monotonic() + grace
    while server.active and (left := end - time.monotonic()) > 0:
        if wait_for_signal(signals, min(left, 0.05)):
            break  # a second signal: stop waiting for requests in flight


def main() -> None:
    run(dict(os.environ))


if __name__ == "__main__":
    main()
