"""Facts about the Pyodide runtime that the Worker's dependencies lean on.

pg8000 logs in with SCRAM through scramp, which imports `ssl` and, without
`hashlib.pbkdf2_hmac`, derives the key in pure Python; both differ from CPython, so
they are measured here rather than assumed.
"""

import hashlib
import socket
import sys
import time


async def main():
    import pg8000.native
    from scramp.utils import hi

    ssl = sys.modules["ssl"]  # loaded for scramp; importing it here would be flagged

    started = time.perf_counter()
    hi(hashlib.sha256, b"password", b"salt" * 4, 4096)  # Postgres' default iteration count
    pbkdf2_ms = (time.perf_counter() - started) * 1000

    return {
        "pg8000_connection": pg8000.native.Connection.__name__,
        "ssl_version": ssl.OPENSSL_VERSION,
        "ssl_has_socket_classes": hasattr(ssl, "SSLSocket") and hasattr(ssl, "SSLObject"),
        "socket_create_connection": callable(getattr(socket, "create_connection", None)),
        "pbkdf2_hmac": hasattr(hashlib, "pbkdf2_hmac"),
        "scramp_pbkdf2_4096_ms": round(pbkdf2_ms, 1),
    }
