"""Tests for sync.keys (the JWKS rules) and sync.signatures (the native checks) against real
keys and tokens produced by `cryptography` and pyjwt.

Under CPython the checks run on `cryptography`; the same tokens go through WebCrypto under
Pyodide in tests/test_pyodide.py. Here `cryptography` also signs, as Supabase would.
"""

import ast
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sync import keys, signatures
from sync.keys import PublicKey, public_key_from_jwk

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rsa_jwk(private_key: rsa.RSAPrivateKey) -> dict:
    return RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)


def ec_jwk(private_key: ec.EllipticCurvePrivateKey) -> dict:
    return ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)


def with_signature(token: str, sig: bytes) -> str:
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{b64(sig)}"


def signature_of(token: str) -> bytes:
    return unb64(token.split(".")[2])


def verifies(token: str, key: PublicKey) -> bool:
    """The check the Authenticator makes: the key's signature over `header.payload`."""
    signing_input, _, sig = token.rpartition(".")
    return asyncio.run(signatures.verify(key, signing_input.encode(), unb64(sig)))


def modulus_bytes(key: PublicKey) -> int:
    return len(unb64(key.jwk["n"]))


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=3, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=3072),
        rsa.generate_private_key(public_exponent=65537, key_size=4096),
    ]


@pytest.fixture(scope="module")
def ec_keys() -> list[ec.EllipticCurvePrivateKey]:
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(20)]


# --- valid tokens ---------------------------------------------------------------------------


def test_rs256_tokens_from_pyjwt_verify(rsa_keys):
    for private_key in rsa_keys:
        public_key = public_key_from_jwk(rsa_jwk(private_key))
        assert public_key.alg == "RS256"
        assert public_key.size == private_key.key_size // 8
        for i in range(5):
            claims = {"sub": f"user-{i}", "n": os.urandom(i * 7).hex()}
            assert verifies(jwt.encode(claims, private_key, algorithm="RS256"), public_key)


def test_es256_tokens_from_pyjwt_verify(ec_keys):
    for private_key in ec_keys:
        public_key = public_key_from_jwk(ec_jwk(private_key))
        assert (public_key.alg, public_key.size) == ("ES256", 64)
        for i in range(5):
            claims = {"sub": f"user-{i}", "n": os.urandom(i * 11).hex()}
            token = jwt.encode(claims, private_key, algorithm="ES256", headers={"kid": "k1"})
            assert verifies(token, public_key)


def test_es256_signatures_with_leading_zero_bytes_verify(ec_keys):
    # r || s are fixed-width: a half below 2**248 starts with a zero octet, which a
    # conversion to DER must not get wrong.
    private_key = ec_keys[0]
    public_key = public_key_from_jwk(ec_jwk(private_key))
    found = {"r": 0, "s": 0}
    for i in range(40_000):
        token = jwt.encode({"i": i}, private_key, algorithm="ES256")
        sig = signature_of(token)
        assert len(sig) == 64
        for name, half in (("r", sig[:32]), ("s", sig[32:])):
            if half[0] == 0 and found[name] < 3:
                found[name] += 1
                assert verifies(token, public_key)
        if min(found.values()) == 3:
            break
    assert found == {"r": 3, "s": 3}


def test_rs256_signature_with_leading_zero_byte_verifies(rsa_keys):
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    for i in range(20_000):
        token = jwt.encode({"i": i}, private_key, algorithm="RS256")
        if signature_of(token)[0] == 0:
            assert verifies(token, public_key)
            return
    pytest.fail("no RSA signature with a leading zero byte found")


@pytest.mark.parametrize(
    "scalar", [1, 2, 3, P256_N - 1, P256_N - 2], ids=["1", "2", "3", "n-1", "n-2"]
)
def test_es256_edge_case_private_keys_verify(scalar):
    # Q = G and Q = -G: public keys a JWKS could hold, which pass the curve check.
    private_key = ec.derive_private_key(scalar, ec.SECP256R1())
    public_key = public_key_from_jwk(ec_jwk(private_key))
    other = public_key_from_jwk(
        ec_jwk(ec.derive_private_key(scalar % (P256_N - 1) + 1, ec.SECP256R1()))
    )
    for i in range(10):
        token = jwt.encode({"i": i}, private_key, algorithm="ES256")
        assert verifies(token, public_key)
        assert not verifies(token, other)


def test_hs256_is_hmac_sha256():
    secret = os.urandom(32)
    token = jwt.encode({"a": 1}, secret, algorithm="HS256")
    signing_input, _, sig = token.rpartition(".")
    assert signatures.verify_hs256(secret, signing_input.encode(), unb64(sig))
    assert not signatures.verify_hs256(os.urandom(32), signing_input.encode(), unb64(sig))
    assert not signatures.verify_hs256(secret, signing_input.encode() + b"x", unb64(sig))
    assert not signatures.verify_hs256(secret, signing_input.encode(), unb64(sig)[:-1])


# --- invalid signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_tampered_payload_fails(alg, rsa_keys, ec_keys):
    private_key = rsa_keys[0] if alg == "RS256" else ec_keys[0]
    public_key = public_key_from_jwk(
        rsa_jwk(private_key) if alg == "RS256" else ec_jwk(private_key)
    )
    token = jwt.encode({"sub": "alice", "admin": False}, private_key, algorithm=alg)
    head, _, sig = token.split(".")
    forged = f"{head}.{b64(json.dumps({'sub': 'alice', 'admin': True}).encode())}.{sig}"
    assert verifies(token, public_key)
    assert not verifies(forged, public_key)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_any_flipped_signature_bit_fails(alg, rsa_keys, ec_keys):
    private_key = rsa_keys[0] if alg == "RS256" else ec_keys[0]
    public_key = public_key_from_jwk(
        rsa_jwk(private_key) if alg == "RS256" else ec_jwk(private_key)
    )
    token = jwt.encode({"sub": "alice"}, private_key, algorithm=alg)
    sig = signature_of(token)
    for bit in range(0, len(sig) * 8, 7):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verifies(with_signature(token, bytes(flipped)), public_key)


def test_signature_by_another_key_fails(rsa_keys, ec_keys):
    rs_token = jwt.encode({"a": 1}, rsa_keys[1], algorithm="RS256")
    es_token = jwt.encode({"a": 1}, ec_keys[1], algorithm="ES256")
    assert not verifies(rs_token, public_key_from_jwk(rsa_jwk(rsa_keys[0])))
    assert not verifies(es_token, public_key_from_jwk(ec_jwk(ec_keys[0])))


def test_es256_out_of_range_and_misshapen_signatures_fail(ec_keys):
    private_key = ec_keys[0]
    public_key = public_key_from_jwk(ec_jwk(private_key))
    token = jwt.encode({"a": 1}, private_key, algorithm="ES256")
    sig = signature_of(token)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")

    def rs(r_: int, s_: int) -> bytes:
        return r_.to_bytes(32, "big") + s_.to_bytes(32, "big")

    der = private_key.sign(token.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))
    bad = [
        rs(0, s),
        rs(r, 0),
        rs(0, 0),
        rs(P256_N, s),
        rs(r, P256_N),
        rs(r + P256_N, s) if r + P256_N < 2**256 else rs(P256_N + 1, s),
        rs(2**256 - 1, s),
        rs(r, 2**256 - 1),
        sig[:-1],
        sig + b"\x00",
        sig[:32] + b"\x00" + sig[32:],  # same r and s values, but not the JOSE layout
        b"\x00" + sig,
        sig[:32],
        b"",
        der,  # a valid signature over the same bytes, in DER: JWS does not carry DER
    ]
    for candidate in bad:
        assert not verifies(with_signature(token, candidate), public_key), candidate.hex()
    assert verifies(token, public_key)


def test_rs256_misshapen_signatures_fail(rsa_keys):
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    size = modulus_bytes(public_key)
    n = int.from_bytes(unb64(public_key.jwk["n"]), "big")
    token = jwt.encode({"a": 1}, private_key, algorithm="RS256")
    sig = signature_of(token)
    bad = [
        b"\x00" + sig,  # same integer, wrong length
        sig[:-1],
        b"",
        n.to_bytes(size, "big"),
        b"\x00" * size,
        b"\xff" * size,
    ]
    for candidate in bad:
        assert not verifies(with_signature(token, candidate), public_key)


def test_rs256_rejects_signature_plus_modulus(rsa_keys):
    # s + n has the same value mod n, so only the s < n check keeps it out.
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    size = modulus_bytes(public_key)
    n = int.from_bytes(unb64(public_key.jwk["n"]), "big")
    for i in range(200):
        token = jwt.encode({"i": i}, private_key, algorithm="RS256")
        shifted = int.from_bytes(signature_of(token), "big") + n
        if shifted.bit_length() <= size * 8:
            assert not verifies(with_signature(token, shifted.to_bytes(size, "big")), public_key)
            return
    pytest.fail("no signature small enough to add n to")


def test_rs256_rejects_signature_with_wrong_hash_in_digest_info(rsa_keys):
    # A genuine PKCS#1 v1.5 signature over the same bytes but with SHA-384 must not pass.
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    token = jwt.encode({"a": 1}, private_key, algorithm="RS256")
    signing_input = token.rsplit(".", 1)[0].encode()
    sig384 = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA384())
    assert not verifies(with_signature(token, sig384), public_key)


FIXED_KEYS = (
    public_key_from_jwk(rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
    public_key_from_jwk(ec_jwk(ec.generate_private_key(ec.SECP256R1()))),
)


@settings(max_examples=150, deadline=None)
@given(sig=st.binary(max_size=600), msg=st.binary(max_size=64))
def test_random_signatures_never_verify_or_raise(sig, msg):
    rsa_key, ec_key = FIXED_KEYS

    def check(key, candidate):
        return asyncio.run(signatures.verify(key, msg, candidate))

    assert check(rsa_key, sig) is False
    assert check(rsa_key, sig[:256].rjust(256, b"\x01")) is False
    assert check(ec_key, sig) is False
    assert check(ec_key, sig[:64].rjust(64, b"\x01")) is False


def test_verify_returns_false_for_wrong_types(ec_keys):
    ec_key = public_key_from_jwk(ec_jwk(ec_keys[0]))
    assert asyncio.run(signatures.verify(ec_key, b"m", "a string")) is False  # type: ignore[arg-type]
    assert asyncio.run(signatures.verify(ec_key, "a string", b"\x01" * 64)) is False  # type: ignore[arg-type]


def test_native_key_is_made_once_and_kept(ec_keys):
    key = public_key_from_jwk(ec_jwk(ec_keys[0]))
    assert key.native is None
    token = jwt.encode({"a": 1}, ec_keys[0], algorithm="ES256")
    assert verifies(token, key)
    native = key.native
    assert native is not None
    assert verifies(token, key) and key.native is native


# --- keys -----------------------------------------------------------------------------------


def test_small_rsa_key_is_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        public_key_from_jwk(rsa_jwk(small))


def test_huge_rsa_key_and_exponent_are_refused():
    n = (1 << 16400) | 1  # over MAX_RSA_BITS; an odd number is all the check needs
    with pytest.raises(ValueError, match="16384"):
        public_key_from_jwk({"kty": "RSA", "n": b64(n.to_bytes(2051, "big")), "e": "AQAB"})
    good = rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    big_e = (1 << 40) + 1
    with pytest.raises(ValueError, match="32 bits"):
        public_key_from_jwk({**good, "e": b64(big_e.to_bytes(6, "big"))})
    assert keys.MAX_RSA_EXPONENT_BITS == 32


def test_rsa_jwk_field_checks(rsa_keys):
    good = rsa_jwk(rsa_keys[0])
    n = unb64(good["n"])
    bad_variants = [
        {**good, "e": b64((65536).to_bytes(3, "big"))},  # even
        {**good, "e": "AQ"},  # 1
        {**good, "e": good["n"]},  # e == n
        {**good, "n": good["n"] + "=="},  # padding is not base64url per RFC 7515
        {**good, "n": good["n"].replace("-", "+").replace("_", "/") + "+/"},
        {**good, "n": good["n"][:-1] + " "},
        {**good, "n": b64(n[:-1] + bytes([n[-1] & 0xFE]))},  # even modulus
        {**good, "n": int.from_bytes(n, "big")},
        {**good, "n": ""},
        {k: v for k, v in good.items() if k != "e"},
        {**good, "alg": "PS256"},
        {**good, "alg": "ES256"},
        {**good, "use": "enc"},
        {**good, "key_ops": ["encrypt"]},
        {**good, "key_ops": "verify"},
        {**good, "d": "AQAB"},
        {**good, "kty": "oct"},
        {**good, "kty": None},
    ]
    for jwk_dict in bad_variants:
        with pytest.raises(ValueError):
            public_key_from_jwk(jwk_dict)
    # Optional members that agree are fine; a leading zero octet in n is tolerated and
    # normalised away, so the key handed to the backend is the same.
    key = public_key_from_jwk(
        {**good, "alg": "RS256", "use": "sig", "kid": "x", "key_ops": ["verify"]}
    )
    assert key == public_key_from_jwk({**good, "n": b64(b"\x00" + n)})
    assert key.jwk == {"kty": "RSA", "n": good["n"], "e": good["e"]}
    assert key.size == 256


def test_ec_jwk_field_checks(ec_keys):
    good = ec_jwk(ec_keys[0])
    y = int.from_bytes(unb64(good["y"]), "big")
    bad_variants = [
        {**good, "y": b64(((y + 1) % P256_P).to_bytes(32, "big"))},  # off the curve
        {**good, "x": b64(P256_P.to_bytes(32, "big"))},  # coordinate == p
        {**good, "x": b64(b"\x00" * 32), "y": b64(b"\x00" * 32)},  # would-be infinity
        {**good, "x": b64(unb64(good["x"])[1:])},  # short coordinate
        {**good, "x": b64(b"\x00" + unb64(good["x"]))},  # long coordinate
        {**good, "crv": "P-384"},
        {**good, "crv": "secp256k1"},
        {k: v for k, v in good.items() if k != "crv"},
        {k: v for k, v in good.items() if k != "y"},
        {**good, "alg": "ES384"},
        {**good, "kty": "OKP"},
        ECAlgorithm.to_jwk(ec_keys[0], as_dict=True),  # private key with "d"
        ec_jwk(ec.generate_private_key(ec.SECP384R1())),
        ec_jwk(ec.generate_private_key(ec.SECP256K1())),
        "not a dict",
        None,
    ]
    for jwk_dict in bad_variants:
        with pytest.raises(ValueError):
            public_key_from_jwk(jwk_dict)
    key = public_key_from_jwk({**good, "kid": "k", "alg": "ES256"})
    assert key.jwk == {"kty": "EC", "crv": "P-256", "x": good["x"], "y": good["y"]}
    assert key == public_key_from_jwk(good) and hash(key) == hash(public_key_from_jwk(good))


def test_curve_check_agrees_with_cryptography():
    # The generator and its negation are on the curve; cryptography says so too.
    for scalar in (1, P256_N - 1):
        numbers = ec.derive_private_key(scalar, ec.SECP256R1()).public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64(numbers.x.to_bytes(32, "big")),
            "y": b64(numbers.y.to_bytes(32, "big")),
        }
        assert public_key_from_jwk(jwk).alg == "ES256"
    assert keys._P == P256_P


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["kty", "crv", "n", "e", "x", "y", "alg", "use", "d", "key_ops"]),
        st.one_of(
            st.sampled_from(["RSA", "EC", "P-256", "RS256", "ES256", "sig", "AQAB"]),
            st.text(max_size=50),
            st.integers(),
            st.none(),
            st.lists(st.integers(), max_size=2),
        ),
    )
)
def test_garbage_jwks_raise_only_value_error(jwk_dict):
    with contextlib.suppress(ValueError):
        assert isinstance(public_key_from_jwk(jwk_dict), PublicKey)


# --- runtime constraints --------------------------------------------------------------------


def module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not those inside its functions)."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    return imported


def test_keys_module_imports_only_stdlib():
    assert module_level_imports(Path(keys.__file__)) <= {"__future__", "base64", "re", "typing"}


def test_signatures_import_backends_only_inside_functions():
    # js/pyodide exist only on Workers and cryptography only under CPython; and the deploy
    # snapshot must not capture a JS object at module level.
    imported = module_level_imports(Path(signatures.__file__))
    assert imported <= {"__future__", "hashlib", "hmac", "sys", "typing", "sync.keys"}


BLOCKED_RUN = """
import asyncio, importlib.abc, json, sys, time

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("cryptography", "jwt"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
from sync.auth import Authenticator
from sync.settings import Settings
token, secret = json.loads(sys.stdin.read())
auth = Authenticator(Settings.from_env({"SUPABASE_JWT_SECRET": secret}), None)
user = asyncio.run(auth.user_id("Bearer " + token))
print(json.dumps({"user": user,
                  "loaded": sorted(m for m in sys.modules
                                   if m.split(".")[0] in ("cryptography", "jwt"))}))
"""


def test_the_worker_path_needs_neither_cryptography_nor_pyjwt():
    """What the Worker bundle must do without: sync.auth imports, and HS256 verifies, with
    both blocked (ES256/RS256 go to WebCrypto there: tests/test_pyodide.py)."""
    secret = "s" * 40
    user = "6f9619ff-8b86-4d11-b42d-00c04fc964ff"
    claims = {"sub": user, "aud": "authenticated", "exp": 4_000_000_000}
    token = jwt.encode(claims, secret, algorithm="HS256")
    src = str(Path(keys.__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN],
        input=json.dumps([token, secret]),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=60,
    )
    assert json.loads(result.stdout) == {"user": user, "loaded": []}


def test_hmac_helper_matches_the_stdlib():
    secret, message = os.urandom(32), os.urandom(100)
    mac = hmac.new(secret, message, hashlib.sha256).digest()
    assert signatures.verify_hs256(secret, message, mac)
