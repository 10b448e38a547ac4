"""Cloudflare Workers entry point: the only module that knows it runs on Workers.

It turns the runtime's request, env and fetch into what `sync` expects, so `sync`
itself runs unchanged under CPython. Two things here exist because of the runtime:

- One request at a time does database work in an isolate (`_guard`). pg8000's socket
  calls are synchronous, yet they yield to the isolate's event loop, so other requests
  run in between; two requests' driver calls interleaving in one isolate crashed Pyodide
  in real workerd ("memory access out of bounds"), which aborts every request of the
  isolate. The App holds the guard around every stretch of driver calls (`exclusive`:
  connect, transaction, close) — correct by construction, as no driver call happens
  anywhere else; the token check and the per-user limits run before it, so they can
  refuse a hog without queueing. Its cost per isolate is in bench/RESULTS.md ("workerd").
- The body is read with a cap (`_read_body`): a declared `Content-Length` over
  MAX_BODY_BYTES is refused without reading anything, and a body without one is read
  chunk by chunk and no further than one byte past the limit. An isolate has 128 MB;
  reading a 60 MB body whole grew workerd by 160 MB.
"""

import asyncio
from urllib.parse import urlsplit

import pg8000.native
import workers

from sync.app import CONTENT_LENGTH, App
from sync.http import ApiError, Request, error_response
from sync.pg import connection_class, tune_driver
from sync.settings import SETTING_NAMES, Settings, SettingsError

# Module state lives as long as the isolate: one App, so its JWKS and token caches
# outlive a request, rebuilt only when the configuration it was built from changes.
_app: App | None = None
_app_config: dict[str, str] | None = None
# Per-isolate caches in the driver: the SCRAM salted password (pure-Python PBKDF2 on
# Pyodide costs ~40 ms of CPU per login otherwise) and statement parsing.
tune_driver()


class IsolateGuard:
    """Admits one request at a time, each waiting on timers of its own request.

    Not an `asyncio.Lock`, which Cloudflare's Hyperdrive page suggests: its waiters sleep
    on a future that the releasing request resolves, so in workerd a waiter's request has
    nothing of its own pending, and the runtime cancels it as hung ("your Worker's code
    had hung", measured: 54 of 64 concurrent syncs); were it woken, it would go on inside
    the releasing request's context. Here a waiter polls with `asyncio.sleep`, whose
    timer belongs to its own request, backing off from 1 ms to `MAX_POLL`.

    A request that holds the guard and is never resumed would block the isolate for good.
    A client going away no longer does that (fetch keeps the work alive with waitUntil),
    but the runtime may still drop a request (waitUntil's own time limit); after `lease`
    seconds the next waiter takes over. The App bounds its own work by
    REQUEST_TIMEOUT_MS, so a live holder is done by then."""

    MAX_POLL = 0.008  # seconds; also the worst added latency of a hand-over

    def __init__(self, lease: float) -> None:
        self.lease = lease
        self.since: float | None = None  # loop time the holder took over, None when free

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.001
        while self.since is not None and loop.time() - self.since < self.lease:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.MAX_POLL)
        if self.since is not None:
            print("sync: a request held the isolate guard past its lease; taking over")
        self.since = loop.time()

    async def __aexit__(self, *exc: object) -> None:
        self.since = None


_guard: IsolateGuard | None = None


def _config(env) -> dict[str, str]:
    values = {name: getattr(env, name, None) for name in SETTING_NAMES}
    return {name: str(value) for name, value in values.items() if value is not None}


def _connector(hyperdrive):
    # Hyperdrive speaks plain Postgres to the Worker and TLS to the origin itself. The
    # class is pg8000's with one round trip per parameterised statement (sync.pg), which
    # also keeps a statement on one pooled server connection.
    def connect() -> pg8000.native.Connection:
        return connection_class()(
            user=hyperdrive.user,
            password=hyperdrive.password,
            host=hyperdrive.host,
            port=int(hyperdrive.port),
            database=hyperdrive.database,
            ssl_context=False,
        )

    return connect


def _rate_limit(binding):
    """Cloudflare's rate-limiting binding (`[[ratelimits]]` SYNC_RATE_LIMIT in
    wrangler.toml), keyed by user id: a limit across isolates and locations. None when
    the binding is not configured."""
    if binding is None:
        return None

    async def admit(user: str) -> bool:
        from js import Object
        from pyodide.ffi import to_js

        outcome = await binding.limit(to_js({"key": user}, dict_converter=Object.fromEntries))
        return bool(outcome.success)

    return admit


async def _fetch_json(url: str) -> object:
    response = await workers.fetch(url)
    if not response.ok:
        raise OSError(f"GET {url} answered HTTP {response.status}")
    return await response.json()


class Default(workers.WorkerEntrypoint):
    async def fetch(self, request):
        global _app, _app_config, _guard
        config = _config(self.env)
        if _app is None or config != _app_config:
            try:
                settings = Settings.from_env(config)
            except SettingsError as exc:
                print(f"sync: bad configuration: {exc}")  # to the Worker's logs only
                return _to_workers(error_response(ApiError(500, "internal", "misconfigured")))
            # One guard for the isolate's life, whatever the configuration.
            lease = 2 * settings.request_timeout_ms / 1000 + 5
            if _guard is None:
                _guard = IsolateGuard(lease)
            _guard.lease = lease
            guard = _guard
            _app = App(
                settings,
                _connector(self.env.HYPERDRIVE),
                _fetch_json,
                rate_limit=_rate_limit(getattr(self.env, "SYNC_RATE_LIMIT", None)),
                exclusive=lambda: guard,
            )
            _app_config = config

        js_request = getattr(request, "js_object", request)  # SDK wrapper or JS Request
        headers = {name.lower(): value for name, value in js_request.headers}
        body = await _read_body(js_request, headers, _app.settings.max_body_bytes)
        sync_request = Request(
            method=js_request.method,
            path=urlsplit(js_request.url).path,
            headers=headers,
            body=body,
        )
        # The App holds the guard around its database work only (see App.exclusive): the
        # token check and the per-user limits come first, so one user's pile of requests
        # is refused with 429 instead of queueing in front of everyone else's.
        # Run to the end even if the client goes away: the runtime cancels a request whose
        # client disconnects, and a request cancelled inside App.exclusive never leaves it,
        # so every other request of the isolate would wait out the guard's lease (measured
        # in workerd: 52 s). waitUntil keeps the request alive until its work is done.
        work = asyncio.ensure_future(_app.handle(sync_request))
        self.ctx.waitUntil(work)
        response = await work
        return _to_workers(response)


async def _read_body(js_request, headers: dict[str, str], limit: int) -> bytes:
    """The body, or as much of it as shows it is over `limit`: the App answers 413 on a
    declared length over the limit or a body longer than it, after the checks that come
    first (route, method, media type), as on the local host. So an oversized body is
    never held whole: at most the limit plus one chunk is read."""
    declared = headers.get("content-length", "")
    if CONTENT_LENGTH.fullmatch(declared) and int(declared) > limit:
        return b""  # the App refuses on the header alone; the runtime drops the rest
    stream = js_request.body  # JS null (not None) when there is no body
    if getattr(stream, "getReader", None) is None:
        return b""
    reader = stream.getReader()
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await reader.read()
        if chunk.done:
            break
        chunks.append(chunk.value.to_bytes())
        size += len(chunks[-1])
        if size > limit:
            await reader.cancel()
            break
    # Joined once (a growing bytearray would over-allocate and then be copied again).
    return b"".join(chunks)[: limit + 1]


def _to_workers(response) -> workers.Response:
    # A null-body status (204, 304) must not carry even an empty body.
    return workers.Response(response.body or None, status=response.status, headers=response.headers)
