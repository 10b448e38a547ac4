"""SCRAM login cost, runnable under CPython and under Pyodide (bench/pyodide_run.mjs).

Times the PBKDF2 step of a SCRAM-SHA-256 login at Postgres' default 4096 iterations — scramp's
pure-Python loop, hashlib's C version where it exists, the fallback of src/sync/scram.py and a
cache hit — and the whole client side of a login (scramp.ScramClient against an in-memory
scramp server), without and with `sync.scram` installed. Pure CPU: no network involved.
"""

from __future__ import annotations

import hashlib
import statistics
import time

ITERATIONS = 4096  # Postgres' scram_iterations default
REPEAT = 7


def _median_ms(fn, repeat: int = REPEAT) -> float:
    fn()  # warm-up (first call imports, fills caches)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 3)


def _client_login(password: str, auth_info) -> None:
    """One SCRAM exchange; only the client's steps are what a Worker pays, but the server's
    steps here are cheap (its keys are precomputed), so the whole exchange is timed."""
    from scramp import ScramClient, ScramMechanism

    server = ScramMechanism("SCRAM-SHA-256").make_server(lambda _user: auth_info)
    client = ScramClient(["SCRAM-SHA-256"], "sync", password)
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    server.set_client_final(client.get_client_final())
    client.set_server_final(server.get_server_final())


def main() -> dict:
    from scramp import ScramMechanism
    from scramp.utils import pbkdf2_hmac_pure_python

    from sync import scram

    password, salt = b"a-long-random-hyperdrive-password", b"0123456789abcdef"
    native = hasattr(hashlib, "pbkdf2_hmac")
    result: dict = {"pbkdf2_hmac_available": native, "iterations": ITERATIONS, "ms": {}}
    ms = result["ms"]
    ms["scramp_pure_loop"] = _median_ms(
        lambda: pbkdf2_hmac_pure_python(hashlib.sha256, password, salt, ITERATIONS)
    )
    if native:
        ms["hashlib_pbkdf2_hmac"] = _median_ms(
            lambda: hashlib.pbkdf2_hmac("sha256", password, salt, ITERATIONS)
        )
    ms["sync_scram_pure"] = _median_ms(
        lambda: scram.pbkdf2_pure("sha256", password, salt, ITERATIONS)
    )
    scram.clear()
    ms["sync_scram_cache_hit"] = _median_ms(
        lambda: scram.salted_password(hashlib.sha256, password, salt, ITERATIONS)
    )
    same = scram.salted_password(hashlib.sha256, password, salt, ITERATIONS) == (
        pbkdf2_hmac_pure_python(hashlib.sha256, password, salt, ITERATIONS)
    )
    result["same_key"] = same

    # The whole client side of a login, as pg8000 runs it (what scramp picks on this runtime).
    text = password.decode()
    auth_info = ScramMechanism("SCRAM-SHA-256").make_auth_info(text, iteration_count=ITERATIONS)
    was_installed = scram.installed()
    scram.uninstall()
    ms["login_without_cache"] = _median_ms(lambda: _client_login(text, auth_info))
    scram.install()
    scram.clear()
    ms["login_with_cache"] = _median_ms(lambda: _client_login(text, auth_info))
    if not was_installed:
        scram.uninstall()
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
