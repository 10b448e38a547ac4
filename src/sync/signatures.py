"""JWS signature checks with the platform's native crypto.

On Workers (Pyodide) ES256 and RS256 go to WebCrypto (`crypto.subtle`), reached through
Pyodide's `js` module: about 0.1 ms where the same check in pure Python took 4.7 ms of the
request's CPU budget. Under CPython (the local host, the tests) they go to `cryptography`,
pyjwt's own backend. No Pyodide wheel of `cryptography` exists, so which one runs is decided
by the platform, never by what happens to import.

The runtime modules are imported inside the functions: the Workers deploy snapshot captures
module state, and a JS object held at module level would be one of a dead isolate.

Every check refuses a signature of the wrong length before any backend sees it: JWS fixes
ES256's as r || s (64 bytes, not DER) and RS256's as long as the modulus.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from typing import Any

from sync.keys import PublicKey

ON_PYODIDE = sys.platform == "emscripten"


def verify_hs256(secret: bytes, signing_input: bytes, signature: bytes) -> bool:
    """HMAC-SHA256, compared in constant time (the stdlib's C code on both platforms)."""
    expected = hmac.digest(secret, signing_input, hashlib.sha256)
    return hmac.compare_digest(expected, signature)


async def verify(key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """True when `signature` is `key`'s over `signing_input` (the token's `header.payload`)."""
    if not (isinstance(signing_input, bytes) and isinstance(signature, bytes)):
        return False
    if len(signature) != key.size:
        return False
    if ON_PYODIDE:
        return await _webcrypto(key, signing_input, signature)
    return _cryptography(key, signing_input, signature)


# -- WebCrypto (Workers, and Pyodide under Node in the tests) ---------------------------------

_IMPORT_PARAMS = {
    "ES256": {"name": "ECDSA", "namedCurve": "P-256"},
    "RS256": {"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"},
}
_VERIFY_PARAMS = {
    "ES256": {"name": "ECDSA", "hash": "SHA-256"},  # takes r || s, as JWS carries it
    "RS256": {"name": "RSASSA-PKCS1-v1_5"},
}


async def _webcrypto(key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    from pyodide.ffi import to_js  # Pyodide only; see the module's docstring

    if key.native is None:
        # Once per key and isolate: the CryptoKey, and the parameters of its checks, stay
        # with the cached key. Two requests racing here both import it: the same key.
        key.native = await _import(key)
    crypto_key, params = key.native
    subtle = _subtle()
    # Called with `this` given explicitly: workerd refuses a SubtleCrypto method reached
    # through a proxy whose receiver it does not recognise ("Illegal invocation"), which
    # was seen on an isolate's first requests right after its start-up snapshot was made.
    verdict = await subtle.verify.call(
        subtle, params, crypto_key, to_js(signature), to_js(signing_input)
    )
    return verdict is True


def _subtle() -> Any:
    from js import crypto

    return crypto.subtle


def _js_object(members: dict[str, Any]) -> Any:
    """A plain JS object, made by JSON.parse (no converter function passed around)."""
    import json

    from js import JSON

    return JSON.parse(json.dumps(members))


async def _import(key: PublicKey) -> tuple[Any, Any]:
    from pyodide.ffi import to_js

    subtle = _subtle()
    crypto_key = await subtle.importKey.call(
        subtle,
        "jwk",
        _js_object(key.jwk),
        _js_object(_IMPORT_PARAMS[key.alg]),
        False,
        to_js(["verify"]),
    )
    return crypto_key, _js_object(_VERIFY_PARAMS[key.alg])


# -- cryptography (CPython) -------------------------------------------------------------------


def _int(member: str) -> int:
    import base64

    return int.from_bytes(base64.urlsafe_b64decode(member + "=" * (-len(member) % 4)), "big")


def _cryptography_key(key: PublicKey) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    jwk = key.jwk
    if key.alg == "ES256":
        numbers = ec.EllipticCurvePublicNumbers(_int(jwk["x"]), _int(jwk["y"]), ec.SECP256R1())
        return numbers.public_key()
    return rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()


def _cryptography(key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    if key.native is None:
        key.native = _cryptography_key(key)
    try:
        if key.alg == "ES256":
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            der = utils.encode_dss_signature(r, s)
            key.native.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            key.native.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
