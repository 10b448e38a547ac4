"""The local host (src/serve.py) on the wire: raw sockets, so that framing, limits and
timeouts are exercised exactly as a hostile client or a proxy in front would send them.

Every answer here must be the contract's JSON error body or the App's own answer; every
framing the server cannot be sure of is refused and the connection closed, so no byte of
a body is ever read as a request (no smuggling behind a proxy)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET, build_app, clone_database, token_for, user_id
from helpers import change, new_id, todo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve import Limits, Server, serve

ROOT = Path(__file__).resolve().parents[1]
SYNC_BODY = b'{"lastSyncAt":null,"changes":[]}'


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    def error_code(self) -> str:
        assert isinstance(self.body, dict), self.body
        assert self.body["success"] is False
        assert isinstance(self.body["error"]["message"], str) and self.body["error"]["message"]
        return self.body["error"]["code"]


class Client:
    """One raw TCP connection to the host."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.buffer += data
        return True

    def answer(self, timeout: float = 10) -> Answer:
        """The next complete response (status line, headers, Content-Length body)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(max(0.01, deadline - time.monotonic())):
                raise EOFError(f"connection closed; got {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0")) if status >= 200 else 0
        while len(self.buffer) < length:
            if not self._fill(max(0.01, deadline - time.monotonic())):
                raise EOFError("connection closed inside a body")
        raw, self.buffer = self.buffer[:length], self.buffer[length:]
        body: Any = raw
        if headers.get("content-type", "").startswith("application/json") and raw:
            body = json.loads(raw)
        return Answer(status, headers, body)

    def closed(self, timeout: float = 5) -> bool:
        """True when the server closes the connection within `timeout` (after any bytes
        still buffered, which must be none)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._fill(max(0.01, deadline - time.monotonic())):
                    return self.buffer == b""
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    length: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    hdrs = dict(headers or {})
    if length and (body or method == "POST"):
        hdrs.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def sync_head(user: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = f"Bearer {token_for(user)}"
    return {**headers, **(extra or {})}


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.fixture(scope="module")
def database_url(cluster: Any) -> str:
    """One database for this module (its tests use fresh user ids): a clone per test
    would cost more than the framing tests themselves."""
    return clone_database(cluster, "t_host_")


@pytest.fixture
def start(database_url: str, capfd: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Starts a host with given limits and settings; stops it (and checks that nothing
    the tests sent made a traceback) at the end."""
    servers: list[Server] = []

    def make(
        limits: Limits | None = None,
        static_root: Path | None = None,
        log: Any = None,
        **env: str,
    ) -> int:
        app = build_app(database_url, **env)
        if log is not None:
            app.log = log
        server = serve(app, "127.0.0.1", 0, static_root, limits)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


# ---- Transfer-Encoding --------------------------------------------------------------------


def test_chunked_body_is_decoded_and_the_connection_stays_in_step(start, sql):
    port = start()
    user, row_id = user_id(), new_id()
    payload = json.dumps(
        {"lastSyncAt": None, "changes": [change("todos", "insert", todo(row_id, "hi", 0))]}
    ).encode()
    headers = sync_head(user, {"Transfer-Encoding": "chunked"})
    body = (
        b"%x;name=value\r\n%s\r\n" % (10, payload[:10])
        + chunked(payload[10:20], payload[20:])[:-2]
        + b"X-Trailer: yes\r\n\r\n"
    )
    client = Client(port)
    client.send(request("POST", "/api/sync", body, headers, length=False))
    client.send(request("GET", "/api/health"))
    first = client.answer()
    assert first.status == 200, first.body
    assert first.body["success"] is True
    assert client.answer().status == 200  # the next request on the same connection
    assert sql("SELECT title FROM todos WHERE id = :id", id=row_id) == [["hi"]]
    client.close()


def test_chunk_bytes_are_never_parsed_as_a_second_request(start):
    port = start()
    smuggled = b"GET /api/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    client = Client(port)
    client.send(
        request(
            "POST",
            "/api/sync",
            chunked(smuggled),
            sync_head(None, {"Transfer-Encoding": "chunked"}),
            length=False,
        )
    )
    client.sock.shutdown(socket.SHUT_WR)
    answer = client.answer()
    assert answer.status == 401 and answer.error_code() == "unauthorized"
    assert client.closed()  # one answer, not a second one for the chunk's bytes


@pytest.mark.parametrize("length", ["5", "0", "50"])
def test_transfer_encoding_with_content_length_is_refused_and_closed(start, length):
    port = start()
    client = Client(port)
    smuggled = b"GET /api/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    client.send(
        request(
            "POST",
            "/api/sync",
            chunked(b"{}") + smuggled,
            sync_head(user_id(), {"Transfer-Encoding": "chunked", "Content-Length": length}),
            length=False,
        )
    )
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"
    assert answer.headers["connection"] == "close"
    assert client.closed()


@pytest.mark.parametrize("coding", ["gzip", "chunked, gzip", "gzip, chunked", "identity", "x"])
def test_other_transfer_codings_are_501_json(start, coding):
    client = Client(start())
    client.send(
        request("POST", "/api/sync", b"", sync_head(None, {"Transfer-Encoding": coding}), False)
    )
    answer = client.answer()
    assert answer.status == 501 and answer.error_code() == "bad_request"
    assert client.closed()


def test_two_transfer_encoding_headers_are_refused(start):
    client = Client(start())
    head = b"POST /api/sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    client.send(head + chunked(SYNC_BODY))
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"
    assert client.closed()


def test_transfer_encoding_in_http10_is_refused(start):
    client = Client(start())
    client.send(b"POST /api/sync HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"{}"))
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"


def test_chunked_body_over_max_bytes_is_413_before_it_is_read(start):
    port = start(MAX_BODY_BYTES="2048")
    client = Client(port)
    head = request(
        "POST", "/api/sync", b"", sync_head(user_id(), {"Transfer-Encoding": "chunked"}), False
    )
    client.send(head + b"400\r\n" + b" " * 1024 + b"\r\n" + b"800\r\n")  # 1 KiB, then 2 KiB
    answer = client.answer()
    assert answer.status == 413 and answer.error_code() == "payload_too_large"
    assert client.closed()


@pytest.mark.parametrize(
    "size",
    [b"zz", b"+5", b" 5", b"-1", b"0x5", b"1" * 16, "\u0665".encode(), b"", b"5\x00"],
)
def test_malformed_chunk_sizes_are_400(start, size):
    client = Client(start())
    head = request(
        "POST", "/api/sync", b"", sync_head(user_id(), {"Transfer-Encoding": "chunked"}), False
    )
    client.send(head + size + b"\r\n" + b"{}" * 3 + b"\r\n0\r\n\r\n")
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"
    assert client.closed()


def test_a_body_of_tiny_chunks_is_bounded_in_chunks(start):
    client = Client(start(MAX_BODY_BYTES="65536"))  # at most 1024 chunks
    head = request(
        "POST", "/api/sync", b"", sync_head(user_id(), {"Transfer-Encoding": "chunked"}), False
    )
    client.send(head + b"1\r\n \r\n" * 1100 + b"0\r\n\r\n")
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"
    assert "chunks" in answer.body["error"]["message"]


def test_chunk_without_its_crlf_is_400(start):
    client = Client(start())
    head = request(
        "POST", "/api/sync", b"", sync_head(user_id(), {"Transfer-Encoding": "chunked"}), False
    )
    client.send(head + b"2\r\n{}XX0\r\n\r\n")
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"


# ---- Content-Length -----------------------------------------------------------------------


@pytest.mark.parametrize("second", ["32", "5"])
def test_duplicate_content_length_is_refused_and_closed(start, second):
    client = Client(start())
    body = SYNC_BODY + b"GET /api/nope HTTP/1.1\r\n\r\n"
    client.send(
        b"POST /api/sync HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 32\r\nContent-Length: " + second.encode() + b"\r\n\r\n" + body
    )
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"
    assert client.closed()


@pytest.mark.parametrize(
    "value",
    [
        "²".encode(),
        "\uff15".encode(),  # fullwidth 5
        "\u0665".encode(),
        b"+5",
        b"-1",
        b"5,5",
        b"5, 5",
        b"1 2",
        b"0x10",
        b"5\xa0",
        b"",
        b"1e3",
        b"9" * 19,
    ],
)
def test_bad_content_length_values_are_400_json(start, value):
    client = Client(start())
    client.send(b"POST /api/sync HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n{}")
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"
    assert client.closed()


def test_content_length_with_optional_whitespace_is_taken(start):
    client = Client(start())
    client.send(
        b"POST /api/sync HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer "
        + token_for(user_id()).encode()
        + b"\r\nContent-Length: \t 32 \t\r\n\r\n"
        + SYNC_BODY
    )
    assert client.answer().status == 200


# ---- the head -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [b"/api/\x00sync", b"/\x00", b"/\x01", b"/\x1b[31m", b"/\x7f", b"/caf\xc3\xa9", b"/\xff"],
)
def test_control_and_non_ascii_bytes_in_the_path_are_400_json(start, tmp_path, target):
    (tmp_path / "index.html").write_text("<p>demo</p>")
    client = Client(start(static_root=tmp_path))
    client.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = client.answer()
    assert answer.status == 400 and answer.error_code() == "bad_request"


def test_static_names_the_file_system_refuses_are_404_json(start, tmp_path):
    (tmp_path / "index.html").write_text("<p>demo</p>")
    client = Client(start(static_root=tmp_path))
    for path in ["/" + "a" * 300, "/" + "a/" * 2000, "/%00", "/../../etc/passwd", "/..%2f..%2f"]:
        client.send(request("GET", path))
        answer = client.answer()
        assert answer.status == 404 and answer.error_code() == "not_found", path
    client.send(request("GET", "/"))
    page = client.answer()
    assert page.status == 200 and page.body == b"<p>demo</p>"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 50000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"hello\r\n\r\n", 400),
        (b"GET http://other/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\n\n", 400),  # bare LF: refused at once, not at a deadline
        (b"GET /api/health HTTP/1.1\r\nHost: x\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nX-A: b\rc\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nHost : x\r\n\r\n", 400),  # space before the colon
        (b"GET /api/health HTTP/1.1\r\nX-A: b\r\n folded\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nX-A: b\x00c\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400),
    ],
)
def test_malformed_heads_get_a_json_error_and_a_close(start, raw, status):
    client = Client(start())
    client.send(raw)
    answer = client.answer(timeout=3)
    assert answer.status == status
    assert answer.error_code() == "bad_request"
    assert answer.headers["content-type"].startswith("application/json")
    assert client.closed()


def test_refusals_are_logged_without_the_request_content(start):
    records: list[dict[str, Any]] = []
    client = Client(start(log=records.append))
    client.send(
        b"POST /api/sync HTTP/1.1\r\nContent-Length: +5\r\nAuthorization: Bearer secret\r\n\r\n"
    )
    assert client.answer().status == 400
    assert client.closed()
    refused = [r for r in records if r["msg"] == "refused"]
    assert refused == [
        {
            "msg": "refused",
            "method": "POST",
            "path": "/api/sync",
            "status": 400,
            "error": "bad_request",
            "reason": "Content-Length must be ASCII digits",
        }
    ]


def test_http10_connections_close_after_the_answer(start):
    client = Client(start())
    client.send(b"GET /api/health HTTP/1.0\r\n\r\n")
    answer = client.answer()
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert client.closed()


def test_unknown_methods_reach_the_app(start):
    client = Client(start())
    client.send(request("BREW", "/api/sync"))
    answer = client.answer()
    assert answer.status == 405 and answer.error_code() == "method_not_allowed"


def test_pipelined_requests_are_answered_in_order(start):
    client = Client(start())
    client.send(request("GET", "/api/health") + request("GET", "/api/nope") + b"\r\n")
    assert client.answer().status == 200
    assert client.answer().status == 404
    client.send(request("HEAD", "/api/health", headers={"Connection": "close"}))
    head = client.answer()
    assert head.status == 200 and head.headers["connection"] == "close"
    assert client.closed()


def test_refusals_carry_cors_headers_for_allowed_origins(start):
    client = Client(start(ALLOWED_ORIGINS="https://app.example"))
    client.send(
        b"POST /api/sync HTTP/1.1\r\nOrigin: https://app.example\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = client.answer()
    assert answer.status == 400
    assert answer.headers["access-control-allow-origin"] == "https://app.example"


# ---- cost before authentication, and the body budget --------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "Basic eDp5"])
def test_large_body_without_a_valid_token_is_refused_before_it_is_sent(start, authorization):
    client = Client(start())
    headers = {"Content-Type": "application/json", "Content-Length": "4000000"}
    if authorization:
        headers["Authorization"] = authorization
    client.send(request("POST", "/api/sync", b"", headers, length=False))  # the head alone
    answer = client.answer(timeout=3)
    assert answer.status == 401 and answer.error_code() == "unauthorized"


def test_large_body_with_a_valid_token_and_expect_gets_100_continue(start):
    client = Client(start())
    body = SYNC_BODY + b" " * 200_000
    client.send(
        request(
            "POST",
            "/api/sync",
            b"",
            sync_head(user_id(), {"Expect": "100-continue", "Content-Length": str(len(body))}),
            False,
        )
    )
    interim = client.answer(timeout=3)
    assert interim.status == 100
    client.send(body)
    assert client.answer().status == 200


def test_bodies_held_at_once_are_bounded_across_connections(start):
    port = start(Limits(buffer_budget=300_000, budget_wait=0.3), MAX_BODY_BYTES="262144")
    body = SYNC_BODY + b" " * 200_000
    headers = sync_head(user_id())
    first, second = Client(port), Client(port)
    first.send(request("POST", "/api/sync", body, headers)[:-100_000])  # half sent: held
    time.sleep(0.3)
    second.send(request("POST", "/api/sync", body, headers))
    busy = second.answer(timeout=3)
    assert busy.status == 503 and busy.error_code() == "unavailable"
    assert busy.headers["retry-after"] == "1"
    first.send(body[-100_000:])
    assert first.answer().status == 200
    third = Client(port)
    third.send(request("POST", "/api/sync", body, headers))
    assert third.answer().status == 200  # the budget was given back


def test_the_budget_always_fits_one_body_of_the_largest_size(start):
    port = start(Limits(buffer_budget=1000))  # smaller than the body below
    client = Client(port)
    client.send(request("POST", "/api/sync", SYNC_BODY + b" " * 100_000, sync_head(user_id())))
    assert client.answer().status == 200


# ---- slow and idle clients ----------------------------------------------------------------


def trickle(client: Client, data: bytes, every: float) -> tuple[Answer | None, float]:
    """Sends `data` a byte at a time; returns the answer that came meanwhile, and when."""
    started = time.monotonic()
    for byte in data:
        try:
            client.send(bytes([byte]))
            return client.answer(timeout=every), time.monotonic() - started
        except (TimeoutError, EOFError):
            continue
        except OSError:
            break
    return None, time.monotonic() - started


def test_a_head_sent_slowly_is_cut_at_its_deadline(start):
    client = Client(start(Limits(head_deadline=1.0, read_timeout=0.6)))
    client.send(b"GET /api/health HTTP/1.1\r\n")
    answer, after = trickle(client, b"X" * 40, 0.2)  # 8 s of bytes: never a whole head
    assert answer is not None and answer.status == 408 and answer.error_code() == "bad_request"
    assert after < 2


def test_a_stalled_head_is_answered_408(start):
    client = Client(start(Limits(read_timeout=0.5)))
    client.send(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    answer = client.answer(timeout=3)
    assert answer.status == 408 and answer.error_code() == "bad_request"
    assert client.closed()


def test_a_body_sent_slowly_is_cut_at_its_deadline(start):
    client = Client(start(Limits(body_deadline=1.0, read_timeout=0.6)))
    client.send(request("POST", "/api/sync", SYNC_BODY, sync_head(user_id()))[: -len(SYNC_BODY)])
    answer, after = trickle(client, SYNC_BODY, 0.2)
    assert answer is not None and answer.status == 408 and answer.error_code() == "bad_request"
    assert after < 2


def test_idle_keep_alive_connections_are_closed(start):
    port = start(Limits(idle_timeout=0.5))
    client = Client(port)
    client.send(request("GET", "/api/health"))
    assert client.answer().status == 200
    started = time.monotonic()
    assert client.closed(timeout=3)
    assert 0.3 < time.monotonic() - started < 2
    silent = Client(port)
    assert silent.closed(timeout=3)  # never sent a byte


def test_at_the_cap_the_longest_idle_connection_makes_room(start):
    port = start(Limits(max_connections=2))
    older, newer = Client(port), Client(port)
    for client in (older, newer):
        client.send(request("GET", "/api/health"))
        assert client.answer().status == 200  # both served, both kept alive and idle
        time.sleep(0.05)
    third = Client(port)
    third.send(request("GET", "/api/health"))
    assert third.answer(timeout=3).status == 200
    assert older.closed(timeout=3)
    newer.send(request("GET", "/api/health"))
    assert newer.answer().status == 200


def test_connections_are_capped_with_a_quick_503_when_none_is_idle(start):
    port = start(Limits(max_connections=2))
    held = [Client(port), Client(port)]
    for client in held:  # both in the middle of a body: busy, not idle
        client.send(request("POST", "/api/sync", SYNC_BODY, sync_head(user_id()))[:-10])
    time.sleep(0.3)
    third = Client(port)
    third.send(request("GET", "/api/health"))
    busy = third.answer(timeout=2)
    assert busy.status == 503 and busy.error_code() == "unavailable"
    assert busy.headers["retry-after"] == "1"
    assert third.closed()
    for client in held:
        client.send(SYNC_BODY[-10:])
        assert client.answer().status == 200
    fourth = Client(port)
    fourth.send(request("GET", "/api/health"))
    assert fourth.answer().status == 200


def test_listen_backlog_is_raised(start):
    port = start()
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing[2] == str(Limits().backlog), listing  # Send-Q of a listener: its backlog


# ---- answers of the App pass through ------------------------------------------------------


def test_a_429_with_retry_after_passes_through(start, sql):
    port = start(MAX_INFLIGHT_PER_USER="1")
    user = user_id()
    blocker = sql.connect()
    blocker.run("BEGIN")
    blocker.run("LOCK TABLE todos IN ACCESS EXCLUSIVE MODE")
    first = Client(port)
    try:
        first.send(request("POST", "/api/sync", SYNC_BODY, sync_head(user)))
        time.sleep(0.5)  # the first sync now waits on the lock, in flight
        second = Client(port)
        second.send(request("POST", "/api/sync", SYNC_BODY, sync_head(user)))
        limited = second.answer()
        assert limited.status == 429 and limited.error_code() == "rate_limited"
        assert limited.headers["retry-after"].isascii() and int(limited.headers["retry-after"]) > 0
    finally:
        blocker.run("ROLLBACK")
        blocker.close()
    assert first.answer().status in (200, 503)


# ---- signals ------------------------------------------------------------------------------


def spawn_host(database_url: str) -> tuple[subprocess.Popen[str], int]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SUPABASE_JWT_SECRET": SECRET,
        "PORT": "0",
        "LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "serve.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ready: "):
            return proc, int(line.rsplit(":", 1)[1])
    raise AssertionError(f"the host did not start (exit {proc.wait()})")


@pytest.mark.parametrize(
    "signals",
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM,) * 200,
    ],
    ids=["term-term", "int-term", "int-int", "term-burst"],
)
def test_repeated_signals_stop_the_host_promptly(database_url, signals):
    proc, port = spawn_host(database_url)
    idle = Client(port)  # a keep-alive connection must not hold the exit
    idle.send(request("GET", "/api/health"))
    assert idle.answer().status == 200
    partial = Client(port)
    partial.send(b"GET /api/health HTTP/1.1\r\n")  # nor a half-sent request
    time.sleep(0.1)
    started = time.monotonic()
    for sig in signals:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout=10)
    finally:
        proc.kill()
    assert code == 0
    assert time.monotonic() - started < 5
    assert proc.stdout is not None
    assert "stopping" in proc.stdout.read()


def test_a_signal_during_the_callers_start_up_is_kept(database_url):
    """make dev migrates and starts Postgres before it serves: a SIGTERM then must still
    stop it cleanly, once serving has begun, rather than be lost or kill the process."""
    script = (
        "import sys, time; sys.path.insert(0, 'src'); import serve\n"
        "fd = serve.signal_pipe(); print('starting', flush=True); time.sleep(1)\n"
        "serve.run(dict(__import__('os').environ), signals=fd); print('returned', flush=True)\n"
    )
    env = {**os.environ, "DATABASE_URL": database_url, "SUPABASE_JWT_SECRET": SECRET, "PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "starting\n"
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "ready: " in out and "stopping" in out and out.endswith("returned\n")


def test_a_request_in_flight_is_answered_before_the_host_stops(database_url, sql):
    proc, port = spawn_host(database_url)
    blocker = sql.connect()
    blocker.run("BEGIN")
    blocker.run("LOCK TABLE todos IN ACCESS EXCLUSIVE MODE")
    client = Client(port)
    try:
        client.send(request("POST", "/api/sync", SYNC_BODY, sync_head(user_id())))
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None  # waiting for the request in flight
    finally:
        blocker.run("ROLLBACK")
        blocker.close()
    answer = client.answer()
    assert answer.status == 200 and answer.headers["connection"] == "close"
    try:
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()


# ---- any bytes at all ---------------------------------------------------------------------

HOSTILE = [
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"\xff",
    "²".encode(),
    "\uff15".encode(),
    b"\x7f",
    b"0",
    b"9" * 20,
]
NAMES = [
    b"Content-Length",
    b"Transfer-Encoding",
    b"Host",
    b"Authorization",
    b"Expect",
    b"Connection",
    b"X-A",
]
VALUES = [b"5", b"0", b"chunked", b"100-continue", b"close", b"Bearer x.y.z", b"-1", b"5, 5", b""]


@st.composite
def wire_bytes(draw: st.DrawFn) -> bytes:
    """A request that is nearly valid, with hostile bytes put in anywhere."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"BREW", b"G\x00T"]))
    target = draw(st.sampled_from([b"/api/nope", b"/", b"/api/sync", b"/a?b=c"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "]))
    lines = [method + b" " + target + b" " + version]
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(st.sampled_from(NAMES)) + b": " + draw(st.sampled_from(VALUES)))
    data = b"\r\n".join(lines) + b"\r\n\r\n" + draw(st.binary(max_size=40))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(HOSTILE)) + data[at:]
    return data


def test_any_bytes_get_json_answers_or_a_close_and_never_a_500(start):
    port = start(Limits(read_timeout=1.0))

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(wire_bytes())
    def check(data: bytes) -> None:
        client = Client(port)
        client.send(data)
        client.sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                answer = client.answer(timeout=5)
            except EOFError:
                break
            if answer.status == 100:
                continue
            assert answer.status < 500 or answer.status in (501, 505), (data, answer)
            assert answer.headers["content-type"].startswith("application/json"), (data, answer)
            if answer.status >= 400 and answer.body:  # HEAD answers have no body
                answer.error_code()
        client.close()

    check()
    client = Client(port)
    client.send(request("GET", "/api/nope"))
    assert client.answer().status == 404  # still serving
