"""src/entry.py, the Workers adapter, on Pyodide with the vendored workers SDK.

`wrangler dev` cannot run here, so this is the nearest thing: Node's fetch API objects
(Request, Response, Headers) stand in for workerd's, and the two workerd-internal modules
the SDK imports are stubbed. It checks the adapter's half of the contract: the request
handed to `sync`, the response handed back (a 204 carries no body at all), one App per
isolate, the arguments pg8000 gets for Hyperdrive, and the JWKS fetch.
"""

import json
import sys
import types
from typing import ClassVar

from scenario_app import SECRET, StandInConnection, make_token

FAKE_FETCH = """
globalThis.fetched = [];
globalThis.fetch = async (input, init) => {
  const request = new Request(input, init);
  globalThis.fetched.push(`${request.method} ${request.url}`);
  if (request.url.endsWith("/.well-known/jwks.json")) {
    return Response.json({ keys: [{ kty: "EC", kid: "k1" }] });
  }
  return new Response("not here", { status: 404 });
};
"""

HYPERDRIVE = types.SimpleNamespace(
    host="hyperdrive.local", port=5432, user="sync", password="pw", database="sync"
)


class HyperdriveConnection(StandInConnection):
    """Takes pg8000.native.Connection's place and keeps the arguments it was given."""

    arguments: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        super().__init__()
        self.arguments.append({k: v for k, v in kwargs.items() if k != "password"})


def make_env(**overrides):
    values = {
        "SUPABASE_JWT_SECRET": SECRET,
        "MAX_BODY_BYTES": 8388608,  # a TOML number arrives as a JS number
        "ALLOWED_ORIGINS": "https://app.example",
        "HYPERDRIVE": HYPERDRIVE,
    }
    return types.SimpleNamespace(**{**values, **overrides})


def install_runtime_stand_ins():
    import pg8000.native
    from pyodide.code import run_js

    sys.modules["_cloudflare_compat_flags"] = types.SimpleNamespace(
        python_workflows_implicit_dependencies=False,
        python_request_headers_preserve_commas=True,
    )
    sys.modules["_pyodide_entrypoint_helper"] = types.SimpleNamespace(
        patchWaitUntil=lambda ctx: None
    )
    if "pyodide.http" in sys.modules:
        raise RuntimeError("pyodide.http is loaded already and holds the real fetch")
    run_js(FAKE_FETCH)  # before the SDK imports pyodide.http, which binds js.fetch
    pg8000.native.Connection = HyperdriveConnection


async def send(entry, env, method, path, headers=None, body=None):
    import js
    from pyodide.ffi import to_js

    init = {"method": method, "headers": headers or {}}
    if body is not None:
        init["body"] = body
    request = js.Request.new(
        "https://sync.example" + path, to_js(init, dict_converter=js.Object.fromEntries)
    )
    # The runtime's ExecutionContext: waitUntil keeps a request's work alive past its client.
    ctx = types.SimpleNamespace(waitUntil=lambda _work: None)
    response = await entry.Default(ctx, env).fetch(request)
    null_body = response.body is None
    text = await response.text()
    return {
        "status": response.status,
        "headers": {k.lower(): v for k, v in dict(response.headers).items()},
        "json": json.loads(text) if text else None,
        "null_body": null_body,
        "app": id(entry._app),
    }


async def main():
    install_runtime_stand_ins()
    import js

    import entry

    env = make_env()
    sync_body = json.dumps({"lastSyncAt": None, "changes": []})
    results = {
        "health": await send(entry, env, "GET", "/api/health"),
        "preflight": await send(
            entry,
            env,
            "OPTIONS",
            "/api/sync",
            {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        ),
        "sync": await send(
            entry,
            env,
            "POST",
            "/api/sync",
            {"Content-Type": "application/json", "Authorization": f"Bearer {make_token()}"},
            sync_body,
        ),
        "reconfigured": await send(
            entry, make_env(ALLOWED_ORIGINS="https://other.example"), "GET", "/api/health"
        ),
        "misconfigured": await send(
            entry, make_env(SUPABASE_JWT_SECRET="too short"), "GET", "/api/health"
        ),
        "connect_arguments": HyperdriveConnection.arguments,
        "jwks": await entry._fetch_json("https://p.supabase.co/auth/v1/.well-known/jwks.json"),
    }
    try:
        await entry._fetch_json("https://p.supabase.co/missing")
        results["fetch_404"] = "no error"
    except OSError as error:
        results["fetch_404"] = str(error)
    results["fetched"] = list(js.fetched)
    return results
