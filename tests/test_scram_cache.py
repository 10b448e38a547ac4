"""The per-isolate SCRAM cache (src/sync/scram.py): same derived key as scramp and hashlib,
bounded, and real logins still work through it, also on the pure-Python path Pyodide takes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pg8000.native
import pytest
import scramp.core
from scramp.utils import pbkdf2_hmac_pure_python

from devtools.pgcluster import Cluster
from sync import scram
from sync.migrate import connect_url

CASES = [
    (hashlib.sha256, b"pencil", b"QSXCR+Q6sek8bf92", 4096),
    (hashlib.sha256, b"x" * 100, b"long password, over one block", 3),  # key is hashed first
    (hashlib.sha1, b"pencil", b"salt", 17),
    (hashlib.sha512, "pässwörd".encode(), b"\x00\xff" * 8, 1),
]


@pytest.fixture
def cache() -> Iterator[None]:
    scram.clear()
    scram.install()
    yield
    scram.uninstall()
    scram.clear()


@pytest.mark.parametrize(("hf", "password", "salt", "iterations"), CASES)
def test_same_key_as_scramp_and_hashlib(hf, password, salt, iterations, cache) -> None:
    expected = hashlib.pbkdf2_hmac(hf().name, password, salt, iterations)
    assert pbkdf2_hmac_pure_python(hf, password, salt, iterations) == expected
    assert scram.pbkdf2_pure(hf().name, password, salt, iterations) == expected
    assert scram.salted_password(hf, password, salt, iterations) == expected  # miss
    assert scram.salted_password(hf, password, salt, iterations) == expected  # hit
    assert scram.stats() == {"hits": 1, "misses": 1, "entries": 1}


def test_a_hit_does_no_pbkdf2(cache, monkeypatch: pytest.MonkeyPatch) -> None:
    args = (hashlib.sha256, b"pencil", b"salt" * 4, 4096)
    first = scram.salted_password(*args)
    monkeypatch.setattr(scram, "pbkdf2", lambda *a: pytest.fail("recomputed on a hit"))
    assert scram.salted_password(*args) == first
    # Another password, salt or count is another key, never a stale one.
    monkeypatch.undo()
    assert scram.salted_password(hashlib.sha256, b"other", b"salt" * 4, 4096) != first
    assert scram.salted_password(hashlib.sha256, b"pencil", b"SALT" * 4, 4096) != first
    assert scram.salted_password(hashlib.sha256, b"pencil", b"salt" * 4, 4095) != first


def test_bounded(cache) -> None:
    for i in range(scram.MAX_ENTRIES * 3):
        scram.salted_password(hashlib.sha256, b"pw", b"salt-%d" % i, 2)
    assert scram.stats()["entries"] == scram.MAX_ENTRIES
    # The newest stay.
    hits = scram.stats()["hits"]
    scram.salted_password(hashlib.sha256, b"pw", b"salt-%d" % (scram.MAX_ENTRIES * 3 - 1), 2)
    assert scram.stats()["hits"] == hits + 1


def test_install_is_idempotent_and_undone() -> None:
    original = scramp.core.hi
    scram.install()
    scram.install()
    assert scram.installed() and scramp.core.hi is scram.salted_password
    scram.uninstall()
    assert scramp.core.hi is original and not scram.installed()


def _login(cluster: Cluster, password: str | None = None) -> list[list[object]]:
    if password is None:
        con = connect_url(cluster.url())
    else:
        con = pg8000.native.Connection(
            "sync", password=password, host="127.0.0.1", port=cluster.port, database="sync"
        )
    try:
        return con.run("SELECT current_user")
    finally:
        con.close()


def test_real_login_through_the_cache(cluster: Cluster, cache) -> None:
    assert _login(cluster) == [["sync"]]
    assert scram.stats() == {"hits": 0, "misses": 1, "entries": 1}
    assert _login(cluster) == [["sync"]]
    assert scram.stats() == {"hits": 1, "misses": 1, "entries": 1}
    # A wrong password is a different key: a miss, and the server refuses it.
    with pytest.raises(pg8000.native.DatabaseError):
        _login(cluster, password="not-the-password")
    assert scram.stats()["misses"] == 2
    assert _login(cluster) == [["sync"]]


def test_real_login_on_the_pure_python_path(
    cluster: Cluster, cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Pyodide: no hashlib.pbkdf2_hmac, so both scramp and the cache go pure Python."""
    monkeypatch.delattr(hashlib, "pbkdf2_hmac")
    assert _login(cluster) == [["sync"]]
    assert _login(cluster) == [["sync"]]
    assert scram.stats() == {"hits": 1, "misses": 1, "entries": 1}
