"""Cloudflare Workers entry point: the only module that knows it runs on Workers.

It turns the runtime's request, env and fetch into what `sync` expects, so `sync`
itself runs unchanged under CPython.
"""

from urllib.parse import urlsplit

import pg8000.native
import workers

from sync.app import App
from sync.http import ApiError, Request, error_response
from sync.pg import tune_driver
from sync.settings import SETTING_NAMES, Settings, SettingsError

# Module state lives as long as the isolate: one App, so its JWKS and token caches
# outlive a request, rebuilt only when the configuration it was built from changes.
_app: App | None = None
_app_config: dict[str, str] | None = None
# Per-isolate caches in the driver: the SCRAM salted password (pure-Python PBKDF2 on
# Pyodide costs ~40 ms of CPU per login otherwise) and statement parsing.
tune_driver()


def _config(env) -> dict[str, str]:
    values = {name: getattr(env, name, None) for name in SETTING_NAMES}
    return {name: str(value) for name, value in values.items() if value is not None}


def _connector(hyperdrive):
    # Hyperdrive speaks plain Postgres to the Worker and TLS to the origin itself.
    def connect() -> pg8000.native.Connection:
        return pg8000.native.Connection(
            user=hyperdrive.user,
            password=hyperdrive.password,
            host=hyperdrive.host,
            port=int(hyperdrive.port),
            database=hyperdrive.database,
            ssl_context=False,
        )

    return connect


async def _fetch_json(url: str) -> object:
    response = await workers.fetch(url)
    if not response.ok:
        raise OSError(f"GET {url} answered HTTP {response.status}")
    return await response.json()


class Default(workers.WorkerEntrypoint):
    async def fetch(self, request):
        global _app, _app_config
        config = _config(self.env)
        if _app is None or config != _app_config:
            try:
                settings = Settings.from_env(config)
            except SettingsError as exc:
                print(f"sync: bad configuration: {exc}")  # to the Worker's logs only
                return _to_workers(error_response(ApiError(500, "internal", "misconfigured")))
            _app = App(settings, _connector(self.env.HYPERDRIVE), _fetch_json)
            _app_config = config

        js_request = getattr(request, "js_object", request)  # SDK wrapper or JS Request
        body = (await js_request.arrayBuffer()).to_bytes()
        response = await _app.handle(
            Request(
                method=js_request.method,
                path=urlsplit(js_request.url).path,
                headers={name.lower(): value for name, value in js_request.headers},
                body=body,
            )
        )
        return _to_workers(response)


def _to_workers(response) -> workers.Response:
    # A null-body status (204, 304) must not carry even an empty body.
    return workers.Response(response.body or None, status=response.status, headers=response.headers)
