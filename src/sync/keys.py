"""JWKS entries turned into verification keys, after every rule a key must pass.

The signature itself is checked by the platform's native crypto (sync.signatures). What stays
here is the judgement of an untrusted JWKS document: which members a key must have, which
algorithm it may serve, and bounds that keep a hostile document from costing much — a
modulus size range and a small public exponent. A key that passes is kept in its JWK form
with only its public members, normalised: that is what WebCrypto's `importKey("jwk")`
takes, and what `cryptography` builds its key from.
"""

from __future__ import annotations

import base64
import re
from typing import Any

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # bounds the cost of one verification an untrusted JWKS can impose
MAX_RSA_EXPONENT_BITS = 32  # 65537 is the norm; a huge exponent is a CPU bomb

# NIST P-256 (FIPS 186-4, D.1.2.3): y^2 = x^3 - 3x + b over GF(p). Only used to refuse a
# point that is not on the curve, before any backend sees it.
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class PublicKey:
    """A checked JWKS key: the algorithm it serves and its public JWK members.

    `native` holds the platform's key object once made (a WebCrypto CryptoKey, or a
    `cryptography` public key): made on first use, kept for the key's life in the cache.
    """

    __slots__ = ("alg", "jwk", "native", "size")

    def __init__(self, alg: str, jwk: dict[str, str], size: int) -> None:
        self.alg = alg  # "ES256" or "RS256"
        self.jwk = jwk  # kty and crv/x/y or n/e, base64url without leading zero octets
        self.size = size  # bytes of a valid signature: 64 (r || s), or the modulus' length
        self.native: Any = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and (self.alg, self.jwk) == (other.alg, other.jwk)

    def __hash__(self) -> int:
        return hash((self.alg, tuple(sorted(self.jwk.items()))))

    def __repr__(self) -> str:
        return f"PublicKey({self.alg}, {self.size * 8 if self.alg == 'RS256' else 256} bits)"


def _octets(jwk: dict, name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value) or len(value) % 4 == 1:
        raise ValueError(f"JWK member {name!r} must be unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _rsa(jwk: dict) -> PublicKey:
    n = int.from_bytes(_octets(jwk, "n"), "big")
    e = int.from_bytes(_octets(jwk, "e"), "big")
    bits = n.bit_length()
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise ValueError(f"RSA modulus must be {MIN_RSA_BITS}-{MAX_RSA_BITS} bits, got {bits}")
    if n % 2 == 0:
        raise ValueError("RSA modulus must be odd")
    if not 1 < e < n or e % 2 == 0:
        raise ValueError("RSA exponent must be odd, greater than 1 and less than n")
    if e.bit_length() > MAX_RSA_EXPONENT_BITS:
        raise ValueError(f"RSA exponent must fit in {MAX_RSA_EXPONENT_BITS} bits")
    size = (bits + 7) // 8
    members = {
        "kty": "RSA",
        "n": _b64url(n.to_bytes(size, "big")),
        "e": _b64url(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    }
    return PublicKey("RS256", members, size)


def _ec(jwk: dict) -> PublicKey:
    raw_x, raw_y = _octets(jwk, "x"), _octets(jwk, "y")
    for name, raw in (("x", raw_x), ("y", raw_y)):
        if len(raw) != 32:
            raise ValueError(f"JWK member {name!r} must be 32 bytes, got {len(raw)}")
    x, y = int.from_bytes(raw_x, "big"), int.from_bytes(raw_y, "big")
    if not (x < _P and y < _P):
        raise ValueError("EC coordinates must be in [0, p)")
    # P-256 has cofactor 1: any affine point on the curve is in the prime-order group, and
    # the point at infinity has no affine form to get through.
    if (y * y - x**3 + 3 * x - _B) % _P:
        raise ValueError("EC point is not on curve P-256")
    members = {"kty": "EC", "crv": "P-256", "x": _b64url(raw_x), "y": _b64url(raw_y)}
    return PublicKey("ES256", members, 64)


def public_key_from_jwk(jwk: Any) -> PublicKey:
    """Turn one JWKS entry into a key; ValueError for anything we would not trust.

    A present `alg` must match the only algorithm we pair with the key type, so a
    key published for, say, PS256 is never used for RS256.  Private members are
    refused because their presence means a secret leaked into configuration.
    """
    if not isinstance(jwk, dict):
        raise ValueError("JWK must be a JSON object")
    if "d" in jwk:
        raise ValueError("JWK contains private key material")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"JWK use must be 'sig', got {jwk.get('use')!r}")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("JWK key_ops does not allow verify")
    kty = jwk.get("kty")
    if kty == "RSA":
        expected_alg = "RS256"
    elif kty == "EC":
        if jwk.get("crv") != "P-256":
            raise ValueError(f"unsupported EC curve {jwk.get('crv')!r}, only P-256")
        expected_alg = "ES256"
    else:
        raise ValueError(f"unsupported JWK kty {kty!r}, expected 'RSA' or 'EC'")
    if jwk.get("alg", expected_alg) != expected_alg:
        raise ValueError(f"JWK alg {jwk.get('alg')!r} does not match {expected_alg}")
    return _rsa(jwk) if kty == "RSA" else _ec(jwk)
