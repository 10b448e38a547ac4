"""RS256 and ES256 JWT verification in pure Python, for pyjwt.

Python Workers run on Pyodide, where the `cryptography` extension that pyjwt's RSA
and EC algorithms depend on is unavailable. Verification only needs big-integer
arithmetic on public values, so nothing here has to be constant-time to be safe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import Algorithm
from jwt.exceptions import InvalidKeyError

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # bounds the cost of one pow() an untrusted JWKS could impose
MAX_RSA_EXPONENT_BITS = 32  # 65537 is the norm; anything near n is a CPU bomb

# DER of DigestInfo{id-sha256, NULL} minus the digest itself (RFC 8017, 9.2 note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

# NIST P-256 (FIPS 186-4, D.1.2.3); the curve is y^2 = x^3 - 3x + b over GF(p).
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class RSAPublicKey:
    n: int
    e: int

    def __post_init__(self) -> None:
        # Checked on construction so that every instance is safe to verify with.
        if not (isinstance(self.n, int) and isinstance(self.e, int)):
            raise ValueError("RSA n and e must be integers")
        bits = self.n.bit_length()
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(f"RSA modulus must be {MIN_RSA_BITS}-{MAX_RSA_BITS} bits, got {bits}")
        if self.n % 2 == 0:
            raise ValueError("RSA modulus must be odd")
        if not 1 < self.e < self.n or self.e % 2 == 0:
            raise ValueError("RSA exponent must be odd, greater than 1 and less than n")
        # Verification is pow(sig, e, n) in pure Python: a huge exponent is a CPU bomb.
        if self.e.bit_length() > MAX_RSA_EXPONENT_BITS:
            raise ValueError(f"RSA exponent must fit in {MAX_RSA_EXPONENT_BITS} bits")


@dataclass(frozen=True)
class ECPublicKey:
    x: int
    y: int

    def __post_init__(self) -> None:
        # P-256 has cofactor 1, so any affine point on the curve is in the prime-order
        # group; the point at infinity has no affine form and cannot get through.
        if not (isinstance(self.x, int) and isinstance(self.y, int)):
            raise ValueError("EC x and y must be integers")
        if not (0 <= self.x < _P and 0 <= self.y < _P):
            raise ValueError("EC coordinates must be in [0, p)")
        if (self.y * self.y - self.x**3 + 3 * self.x - _B) % _P:
            raise ValueError("EC point is not on curve P-256")


PublicKey = RSAPublicKey | ECPublicKey


def _b64url_uint(jwk: dict, name: str, size: int | None = None) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value) or len(value) % 4 == 1:
        raise ValueError(f"JWK member {name!r} must be unpadded base64url")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if size is not None and len(raw) != size:
        raise ValueError(f"JWK member {name!r} must be {size} bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def public_key_from_jwk(jwk: dict) -> PublicKey:
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
    if kty == "RSA":
        return RSAPublicKey(n=_b64url_uint(jwk, "n"), e=_b64url_uint(jwk, "e"))
    return ECPublicKey(x=_b64url_uint(jwk, "x", 32), y=_b64url_uint(jwk, "y", 32))


# P-256 arithmetic in Jacobian coordinates: (X, Y, Z) stands for (X/Z^2, Y/Z^3), which
# defers the costly modular inversion to a single one at the end.  Z == 0 is infinity.
_INFINITY = (1, 1, 0)


def _double(pt: tuple[int, int, int]) -> tuple[int, int, int]:
    x, y, z = pt
    if z == 0 or y == 0:
        return _INFINITY
    delta = z * z % _P
    gamma = y * y % _P
    beta = x * gamma % _P
    alpha = 3 * (x - delta) * (x + delta) % _P  # uses a = -3
    x3 = (alpha * alpha - 8 * beta) % _P
    z3 = ((y + z) ** 2 - gamma - delta) % _P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % _P
    return x3, y3, z3


def _add_affine(pt: tuple[int, int, int], q: tuple[int, int]) -> tuple[int, int, int]:
    x1, y1, z1 = pt
    x2, y2 = q
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % _P
    h = (x2 * z1z1 - x1) % _P
    r = (y2 * z1 * z1z1 - y1) % _P
    if h == 0:
        return _double(pt) if r == 0 else _INFINITY
    hh = h * h % _P
    hhh = h * hh % _P
    v = x1 * hh % _P
    x3 = (r * r - hhh - 2 * v) % _P
    y3 = (r * (v - x3) - y1 * hhh) % _P
    return x3, y3, z1 * h % _P


def _to_affine(pt: tuple[int, int, int]) -> tuple[int, int] | None:
    x, y, z = pt
    if z == 0:
        return None
    zinv = pow(z, -1, _P)
    zinv2 = zinv * zinv % _P
    return x * zinv2 % _P, y * zinv2 * zinv % _P


def _double_mul(u1: int, u2: int, q: tuple[int, int]) -> tuple[int, int] | None:
    """u1*G + u2*Q with one shared doubling chain (Shamir's trick), about 40% fewer
    point operations than two separate multiplications."""
    table = {1: _G, 2: q, 3: _to_affine(_add_affine((*_G, 1), q))}
    acc = _INFINITY
    for i in reversed(range(max(u1.bit_length(), u2.bit_length()))):
        acc = _double(acc)
        point = table.get((u1 >> i & 1) | (u2 >> i & 1) << 1)
        if point is not None:
            acc = _add_affine(acc, point)
    return _to_affine(acc)


class _VerifyOnly(Algorithm):
    """pyjwt plumbing shared by both algorithms; subclasses supply _check."""

    hash_alg = hashlib.sha256
    key_type: type

    def prepare_key(self, key: Any) -> Any:
        if isinstance(key, dict):
            try:
                key = public_key_from_jwk(key)
            except ValueError as exc:
                raise InvalidKeyError(str(exc)) from exc
        if not isinstance(key, self.key_type):
            raise InvalidKeyError(
                f"{type(self).__name__} needs a {self.key_type.__name__}, got {type(key).__name__}"
            )
        return key

    def sign(self, msg: bytes, key: Any) -> bytes:
        raise NotImplementedError("only verification is supported")

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if not (isinstance(msg, bytes) and isinstance(sig, bytes)):
            return False
        if not isinstance(key, self.key_type):
            return False
        return self._check(hashlib.sha256(msg).digest(), key, sig)

    def _check(self, digest: bytes, key: Any, sig: bytes) -> bool:
        raise NotImplementedError

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError("only verification is supported")

    @classmethod
    def from_jwk(cls, jwk: str | dict) -> Any:
        if isinstance(jwk, str):
            try:
                jwk = json.loads(jwk)
            except ValueError as exc:
                raise InvalidKeyError("JWK is not valid JSON") from exc
        return cls().prepare_key(jwk)


class RS256(_VerifyOnly):
    key_type = RSAPublicKey

    def _check(self, digest: bytes, key: RSAPublicKey, sig: bytes) -> bool:
        size = (key.n.bit_length() + 7) // 8
        s = int.from_bytes(sig, "big")
        if len(sig) != size or s >= key.n:
            return False
        # Rebuild the one valid encoding and compare it whole: parsing the padding is
        # where Bleichenbacher-style signature forgeries have crept in before.
        suffix = _SHA256_DIGEST_INFO + digest
        expected = b"\x00\x01" + b"\xff" * (size - len(suffix) - 3) + b"\x00" + suffix
        return hmac.compare_digest(pow(s, key.e, key.n).to_bytes(size, "big"), expected)


class ES256(_VerifyOnly):
    key_type = ECPublicKey

    def _check(self, digest: bytes, key: ECPublicKey, sig: bytes) -> bool:
        if len(sig) != 64:  # JOSE uses fixed-width r || s, not DER
            return False
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        if not (0 < r < _N and 0 < s < _N):
            return False
        w = pow(s, -1, _N)
        e = int.from_bytes(digest, "big")  # SHA-256 is as wide as n: no truncation
        point = _double_mul(e * w % _N, r * w % _N, (key.x, key.y))
        return point is not None and point[0] % _N == r


def new_jws() -> jwt.PyJWS:
    """A PyJWS limited to HS256, RS256 and ES256, with ours taking over the asymmetric two.

    Starting from an HS256-only instance drops pyjwt's own RSA/EC handlers even where
    `cryptography` is installed, so tests exercise the same code the Worker runs.
    """
    jws = jwt.PyJWS(algorithms=["HS256"])
    jws.register_algorithm("RS256", RS256())
    jws.register_algorithm("ES256", ES256())
    return jws
