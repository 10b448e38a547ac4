"""The local host: the Worker's request handling served over HTTP by the standard library.

`make dev` runs it against an embedded Postgres; it is also a way to run the sync server
outside Cloudflare (behind a TLS-terminating reverse proxy), with DATABASE_URL pointing at
any Postgres. Same code path as the Worker: only this file and src/entry.py know the host.

    DATABASE_URL=postgresql://… SUPABASE_JWT_SECRET=… python src/serve.py
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync.app import App
from sync.http import Request, Response
from sync.pg import connect_url, tune_driver
from sync.settings import SETTING_NAMES, Settings

DRAIN_LIMIT = 64 * 1024 * 1024  # oversized bodies up to this are read and dropped

STATIC_HEADERS = {
    # Same-origin isolation lets the demo use SQLite on OPFS.
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cache-control": "no-cache",
}


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


def static_file(root: Path | None, path: str) -> Response | None:
    if root is None or path.startswith("/api/"):
        return None
    target = (root / path.lstrip("/")).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file() or root not in target.parents:
        return None
    kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".wasm":
        kind = "application/wasm"
    return Response(200, {"content-type": kind, **STATIC_HEADERS}, target.read_bytes())


def serve(app: App, host: str, port: int, static_root: Path | None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # answers go out at once, not after a delayed ACK
        timeout = 60  # a client that stops sending is dropped

        def _handle(self) -> None:
            path = self.path.split("?", 1)[0]
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = None
            if self.command in ("GET", "HEAD"):
                response = static_file(static_root, path)
            if response is None:
                body = b""
                length = headers.get("content-length", "0")
                limit = app.settings.max_body_bytes
                if length.isdigit() and 0 < int(length) <= limit:
                    body = self.rfile.read(int(length))
                elif length.isdigit() and int(length) <= DRAIN_LIMIT:
                    # Too large: read it away unkept, so the client (still sending) gets
                    # the 413 rather than a reset connection.
                    left = int(length)
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 16))
                        if not chunk:
                            break
                        left -= len(chunk)
                else:
                    self.close_connection = True  # an unread body makes the stream unusable
                request = Request(self.command, path, headers, body)
                response = asyncio.run(app.handle(request))
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the app writes one structured line per request

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def run(env: dict[str, str], notes: tuple[str, ...] = ()) -> None:
    """Serves until SIGINT/SIGTERM, then stops cleanly. Prints `notes`, then the URL."""
    host = env.get("HOST", "127.0.0.1")
    port = int(env.get("PORT", "8787"))
    static = env.get("STATIC_DIR")
    static_root = Path(static).resolve() if static and Path(static).is_dir() else None
    server = serve(make_app(env), host, port, static_root)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for note in notes:
        print(note, flush=True)
    print(f"ready: http://{host}:{server.server_address[1]}", flush=True)
    stop.wait()
    print("stopping …", flush=True)
    server.shutdown()
    server.server_close()


def main() -> None:
    run(dict(os.environ))


if __name__ == "__main__":
    main()
