"""ES256 and RS256 tokens through WebCrypto on Pyodide: the Worker's path for asymmetric keys.

tests/test_pyodide.py signs the tokens under CPython with real keys (`cryptography`, as
Supabase would) and writes them, with their JWKS, to `webcrypto_cases.json` beside a copy of
this file. Here the same `sync.auth.Authenticator` the App uses checks each of them, its
JWKS handed over through the fetch hook, and `sync.signatures` reaches `crypto.subtle` (Node
has it, as workerd does).
"""

import json
import statistics
import time
from pathlib import Path

from sync import signatures
from sync.auth import Authenticator
from sync.http import ApiError
from sync.keys import public_key_from_jwk
from sync.settings import Settings


def b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cpu_ms() -> float:
    """The process' CPU time (Node's, every thread: WebCrypto's work runs on libuv's pool)."""
    from js import process

    usage = process.cpuUsage()
    return (usage.user + usage.system) / 1000


async def main():
    cases = json.loads((Path(__file__).parent / "webcrypto_cases.json").read_text())
    fetched = []

    async def fetch_json(url):
        fetched.append(url)
        return json.dumps(cases["jwks"])

    auth = Authenticator(Settings.from_env({"SUPABASE_URL": cases["supabase_url"]}), fetch_json)
    outcomes = {}
    for name, token in cases["tokens"].items():
        started = time.perf_counter()
        try:
            outcome = {"user": await auth.user_id(f"Bearer {token}")}
        except ApiError as error:
            outcome = {"status": error.status, "message": error.message}
        outcome["ms"] = round((time.perf_counter() - started) * 1000, 3)
        outcomes[name] = outcome

    # The check alone, warm (key imported), per algorithm: what a never-seen token costs.
    timings = {}
    for alg, kid in (("ES256", "es"), ("RS256", "rs")):
        jwk = next(k for k in cases["jwks"]["keys"] if k["kid"] == kid)
        key = public_key_from_jwk(jwk)
        token = cases["tokens"][f"{alg.lower()}_valid"]
        signing_input, _, sig = token.rpartition(".")
        data, signature = signing_input.encode(), b64decode(sig)
        assert await signatures.verify(key, data, signature)  # imports the key
        samples, cpu = [], []
        for _ in range(50):
            started, cpu_started = time.perf_counter(), cpu_ms()
            ok = await signatures.verify(key, data, signature)
            samples.append((time.perf_counter() - started) * 1000)
            cpu.append(cpu_ms() - cpu_started)
            assert ok is True
        timings[alg] = round(statistics.median(samples), 3)
        timings[alg + "_cpu"] = round(statistics.median(cpu), 3)

    return {
        "on_pyodide": signatures.ON_PYODIDE,
        "outcomes": outcomes,
        # WebCrypto's CryptoKey objects, as the Authenticator keeps them with its keys.
        "native_keys": {kid: type(key.native[0]).__name__ for kid, key in auth.jwks.items()},
        "native_key_types": {
            kid: f"{key.native[0].type} {key.native[0].algorithm.name}"
            for kid, key in auth.jwks.items()
        },
        "fetched": fetched,
        "verify_ms": timings,
    }
