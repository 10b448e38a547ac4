"""Tests for sync.keys against real keys and tokens produced by `cryptography` and pyjwt.

`cryptography` is only a test oracle here: it signs, our code verifies.
"""

import ast
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sync import keys
from sync.keys import (
    ES256,
    RS256,
    ECPublicKey,
    RSAPublicKey,
    new_jws,
    public_key_from_jwk,
)

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


def hand_made_token(header: dict, payload: dict, secret: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if secret is None else hmac.digest(secret, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(sig)}"


def decode(token: str, key, algorithms: list[str]) -> dict:
    return json.loads(new_jws().decode_complete(token, key=key, algorithms=algorithms)["payload"])


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
        assert isinstance(public_key, RSAPublicKey)
        for i in range(5):
            claims = {"sub": f"user-{i}", "n": os.urandom(i * 7).hex()}
            token = jwt.encode(claims, private_key, algorithm="RS256")
            assert decode(token, public_key, ["RS256"]) == claims
            assert decode(token, public_key, ["ES256", "RS256"]) == claims


def test_es256_tokens_from_pyjwt_verify(ec_keys):
    for private_key in ec_keys:
        public_key = public_key_from_jwk(ec_jwk(private_key))
        assert isinstance(public_key, ECPublicKey)
        for i in range(5):
            claims = {"sub": f"user-{i}", "n": os.urandom(i * 11).hex()}
            token = jwt.encode(claims, private_key, algorithm="ES256", headers={"kid": "k1"})
            assert decode(token, public_key, ["ES256"]) == claims
            assert decode(token, public_key, ["RS256", "ES256"]) == claims


def test_es256_signatures_with_leading_zero_bytes_verify(ec_keys):
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
                assert decode(token, public_key, ["ES256"]) == {"i": i}
        if min(found.values()) == 3:
            break
    assert found == {"r": 3, "s": 3}


def test_rs256_signature_with_leading_zero_byte_verifies(rsa_keys):
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    for i in range(20_000):
        token = jwt.encode({"i": i}, private_key, algorithm="RS256")
        if signature_of(token)[0] == 0:
            assert decode(token, public_key, ["RS256"]) == {"i": i}
            return
    pytest.fail("no RSA signature with a leading zero byte found")


@pytest.mark.parametrize(
    "scalar", [1, 2, 3, P256_N - 1, P256_N - 2], ids=["1", "2", "3", "n-1", "n-2"]
)
def test_es256_edge_case_private_keys_verify(scalar):
    # Q = G and Q = -G hit the doubling and infinity branches of point addition.
    private_key = ec.derive_private_key(scalar, ec.SECP256R1())
    public_key = public_key_from_jwk(ec_jwk(private_key))
    other = public_key_from_jwk(
        ec_jwk(ec.derive_private_key(scalar % (P256_N - 1) + 1, ec.SECP256R1()))
    )
    for i in range(10):
        token = jwt.encode({"i": i}, private_key, algorithm="ES256")
        assert decode(token, public_key, ["ES256"]) == {"i": i}
        with pytest.raises(jwt.InvalidSignatureError):
            decode(token, other, ["ES256"])


def test_jwk_dict_is_accepted_as_key(rsa_keys, ec_keys):
    rs_token = jwt.encode({"a": 1}, rsa_keys[0], algorithm="RS256")
    es_token = jwt.encode({"a": 2}, ec_keys[0], algorithm="ES256")
    assert decode(rs_token, rsa_jwk(rsa_keys[0]), ["RS256"]) == {"a": 1}
    assert decode(es_token, ec_jwk(ec_keys[0]), ["ES256"]) == {"a": 2}
    assert ES256.from_jwk(json.dumps(ec_jwk(ec_keys[0]))) == public_key_from_jwk(ec_jwk(ec_keys[0]))


def test_curve_constants_match_cryptography():
    # Private scalar 1 gives the generator, n - 1 gives its negation.
    g = ec.derive_private_key(1, ec.SECP256R1()).public_key().public_numbers()
    neg_g = ec.derive_private_key(P256_N - 1, ec.SECP256R1()).public_key().public_numbers()
    assert (g.x, g.y) == keys._G
    assert (neg_g.x, neg_g.y) == (g.x, P256_P - g.y)
    assert (keys._N, keys._P) == (P256_N, P256_P)


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
    with pytest.raises(jwt.InvalidSignatureError):
        decode(forged, public_key, [alg])


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
        with pytest.raises(jwt.InvalidSignatureError):
            decode(with_signature(token, bytes(flipped)), public_key, [alg])


def test_signature_by_another_key_fails(rsa_keys, ec_keys):
    rs_token = jwt.encode({"a": 1}, rsa_keys[1], algorithm="RS256")
    es_token = jwt.encode({"a": 1}, ec_keys[1], algorithm="ES256")
    with pytest.raises(jwt.InvalidSignatureError):
        decode(rs_token, public_key_from_jwk(rsa_jwk(rsa_keys[0])), ["RS256"])
    with pytest.raises(jwt.InvalidSignatureError):
        decode(es_token, public_key_from_jwk(ec_jwk(ec_keys[0])), ["ES256"])


def test_es256_out_of_range_and_misshapen_signatures_fail(ec_keys):
    private_key = ec_keys[0]
    public_key = public_key_from_jwk(ec_jwk(private_key))
    token = jwt.encode({"a": 1}, private_key, algorithm="ES256")
    sig = signature_of(token)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")

    def rs(r_: int, s_: int) -> bytes:
        return r_.to_bytes(32, "big") + s_.to_bytes(32, "big")

    der = private_key.sign(b"anything", ec.ECDSA(hashes.SHA256()))
    bad = [
        rs(0, s),
        rs(r, 0),
        rs(0, 0),
        rs(P256_N, s),
        rs(r, P256_N),
        rs(2**256 - 1, s),
        rs(r, 2**256 - 1),
        sig[:-1],
        sig + b"\x00",
        sig[:32] + b"\x00" + sig[32:],  # same r and s values, but not the JOSE layout
        b"\x00" + sig,
        sig[:32],
        b"",
        der,
    ]
    for candidate in bad:
        with pytest.raises(jwt.InvalidSignatureError):
            decode(with_signature(token, candidate), public_key, ["ES256"])
    assert decode(token, public_key, ["ES256"]) == {"a": 1}


def test_rs256_misshapen_signatures_fail(rsa_keys):
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    size = (public_key.n.bit_length() + 7) // 8
    token = jwt.encode({"a": 1}, private_key, algorithm="RS256")
    sig = signature_of(token)
    bad = [
        b"\x00" + sig,  # same integer, wrong length
        sig[:-1],
        b"",
        public_key.n.to_bytes(size, "big"),
        b"\x00" * size,
        b"\xff" * size,
    ]
    for candidate in bad:
        with pytest.raises(jwt.InvalidSignatureError):
            decode(with_signature(token, candidate), public_key, ["RS256"])


def test_rs256_rejects_signature_plus_modulus(rsa_keys):
    # s + n has the same value mod n, so only the s < n check keeps it out.
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    size = (public_key.n.bit_length() + 7) // 8
    for i in range(200):
        token = jwt.encode({"i": i}, private_key, algorithm="RS256")
        shifted = int.from_bytes(signature_of(token), "big") + public_key.n
        if shifted.bit_length() <= size * 8:
            with pytest.raises(jwt.InvalidSignatureError):
                decode(with_signature(token, shifted.to_bytes(size, "big")), public_key, ["RS256"])
            return
    pytest.fail("no signature small enough to add n to")


def test_rs256_rejects_signature_with_wrong_hash_in_digest_info(rsa_keys):
    # A genuine PKCS#1 v1.5 signature over the same bytes but with SHA-384 must not pass.
    private_key = rsa_keys[0]
    public_key = public_key_from_jwk(rsa_jwk(private_key))
    token = jwt.encode({"a": 1}, private_key, algorithm="RS256")
    signing_input = token.rsplit(".", 1)[0].encode()
    sig384 = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA384())
    with pytest.raises(jwt.InvalidSignatureError):
        decode(with_signature(token, sig384), public_key, ["RS256"])


FIXED_KEYS = (
    public_key_from_jwk(rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
    public_key_from_jwk(ec_jwk(ec.generate_private_key(ec.SECP256R1()))),
)


@settings(max_examples=150, deadline=None)
@given(sig=st.binary(max_size=600), msg=st.binary(max_size=64))
def test_random_signatures_never_verify_or_raise(sig, msg):
    rsa_key, ec_key = FIXED_KEYS
    assert RS256().verify(msg, rsa_key, sig) is False
    assert ES256().verify(msg, ec_key, sig) is False
    assert ES256().verify(msg, ec_key, sig[:64].rjust(64, b"\x01")) is False


def test_verify_returns_false_for_wrong_types(ec_keys):
    ec_key = public_key_from_jwk(ec_jwk(ec_keys[0]))
    assert ES256().verify(b"m", "not a key", b"\x01" * 64) is False
    assert RS256().verify(b"m", ec_key, b"\x01" * 256) is False
    assert ES256().verify(b"m", ec_key, "a string") is False
    assert ES256().verify("a string", ec_key, b"\x01" * 64) is False


# --- keys -----------------------------------------------------------------------------------


def test_small_rsa_key_is_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        public_key_from_jwk(rsa_jwk(small))
    with pytest.raises(ValueError):
        RSAPublicKey(n=small.public_key().public_numbers().n, e=65537)


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
        {**good, "d": "AQAB"},
        {**good, "kty": "oct"},
        {**good, "kty": None},
    ]
    for jwk_dict in bad_variants:
        with pytest.raises(ValueError):
            public_key_from_jwk(jwk_dict)
    # Optional members that agree are fine; a leading zero octet in n is tolerated.
    key = public_key_from_jwk({**good, "alg": "RS256", "use": "sig", "kid": "x"})
    assert key == public_key_from_jwk({**good, "n": b64(b"\x00" + n)})


def test_ec_jwk_field_checks(ec_keys):
    good = ec_jwk(ec_keys[0])
    x, y = int.from_bytes(unb64(good["x"]), "big"), int.from_bytes(unb64(good["y"]), "big")
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
    assert public_key_from_jwk(good) == ECPublicKey(x=x, y=y)
    with pytest.raises(ValueError):
        ECPublicKey(x=x, y=(y + 1) % P256_P)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["kty", "crv", "n", "e", "x", "y", "alg", "use", "d"]),
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
        assert isinstance(public_key_from_jwk(jwk_dict), RSAPublicKey | ECPublicKey)


# --- algorithm confusion and registry -------------------------------------------------------


def test_hs256_token_keyed_with_public_key_is_refused(ec_keys, rsa_keys):
    ec_pub = ec_keys[0].public_key()
    pem = ec_pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_text = json.dumps(ec_jwk(ec_keys[0])).encode()
    point = ec_pub.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    our_key = public_key_from_jwk(ec_jwk(ec_keys[0]))
    for secret in (pem, jwk_text, point):
        token = hand_made_token({"alg": "HS256", "typ": "JWT"}, {"sub": "admin"}, secret)
        for key in (our_key, secret, ec_jwk(ec_keys[0])):
            for algorithms in (["ES256"], ["ES256", "RS256"]):
                with pytest.raises(jwt.InvalidAlgorithmError):
                    decode(token, key, algorithms)
    rsa_pem = (
        rsa_keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = hand_made_token({"alg": "HS256"}, {"sub": "admin"}, rsa_pem)
    with pytest.raises(jwt.InvalidAlgorithmError):
        decode(token, public_key_from_jwk(rsa_jwk(rsa_keys[0])), ["RS256"])


def test_alg_none_is_refused(ec_keys):
    our_key = public_key_from_jwk(ec_jwk(ec_keys[0]))
    for header in ({"alg": "none"}, {"alg": "None"}, {"alg": ""}, {"typ": "JWT"}):
        token = hand_made_token(header, {"sub": "admin"}, None)
        for algorithms in (["ES256"], ["RS256", "ES256"], ["none"]):
            with pytest.raises(jwt.InvalidAlgorithmError):
                decode(token, our_key, algorithms)


def test_key_of_the_wrong_family_is_refused(rsa_keys, ec_keys):
    rsa_key = public_key_from_jwk(rsa_jwk(rsa_keys[0]))
    ec_key = public_key_from_jwk(ec_jwk(ec_keys[0]))
    rs_token = jwt.encode({"a": 1}, rsa_keys[0], algorithm="RS256")
    es_token = jwt.encode({"a": 1}, ec_keys[0], algorithm="ES256")
    with pytest.raises(jwt.InvalidKeyError):
        decode(es_token, rsa_key, ["ES256"])
    with pytest.raises(jwt.InvalidKeyError):
        decode(rs_token, ec_key, ["RS256"])
    with pytest.raises(jwt.InvalidKeyError):
        decode(rs_token, ec_jwk(ec_keys[0]), ["RS256"])
    with pytest.raises(jwt.InvalidKeyError):
        decode(es_token, {**ec_jwk(ec_keys[0]), "crv": "P-384"}, ["ES256"])
    with pytest.raises(jwt.InvalidKeyError):
        decode(es_token, b"raw bytes", ["ES256"])


def test_new_jws_registry():
    jws = new_jws()
    assert set(jws.get_algorithms()) == {"HS256", "RS256", "ES256"}
    assert type(jws.get_algorithm_by_name("RS256")) is RS256
    assert type(jws.get_algorithm_by_name("ES256")) is ES256
    assert new_jws() is not jws
    secret = os.urandom(32)
    token = jwt.encode({"a": 1}, secret, algorithm="HS256")
    assert decode(token, secret, ["HS256"]) == {"a": 1}
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, os.urandom(32), ["HS256"])


def test_signing_is_not_supported(ec_keys):
    with pytest.raises(NotImplementedError):
        ES256().sign(b"m", public_key_from_jwk(ec_jwk(ec_keys[0])))
    with pytest.raises(NotImplementedError):
        RS256().sign(b"m", None)


# --- runtime constraints --------------------------------------------------------------------


KEYS_SOURCE = Path(keys.__file__)
ALLOWED_IMPORTS = {"__future__", "base64", "dataclasses", "hashlib", "hmac", "json", "re"}
ALLOWED_IMPORTS |= {"typing", "jwt", "jwt.algorithms", "jwt.exceptions"}


def test_keys_module_imports_only_stdlib_and_pyjwt():
    imported = set()
    for node in ast.walk(ast.parse(KEYS_SOURCE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


BLOCKED_RUN = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "cryptography":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
from jwt.algorithms import has_crypto
from sync.keys import new_jws, public_key_from_jwk
cases = json.loads(sys.stdin.read())
jws = new_jws()
out = [json.loads(jws.decode_complete(t, key=public_key_from_jwk(k), algorithms=[a])["payload"])
       for t, k, a in cases]
print(json.dumps({"has_crypto": has_crypto, "out": out,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "cryptography")}))
"""


def test_verification_works_without_cryptography(rsa_keys, ec_keys):
    cases = [
        [jwt.encode({"r": 1}, rsa_keys[0], algorithm="RS256"), rsa_jwk(rsa_keys[0]), "RS256"],
        [jwt.encode({"e": 2}, ec_keys[0], algorithm="ES256"), ec_jwk(ec_keys[0]), "ES256"],
    ]
    src = str(KEYS_SOURCE.parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=60,
    )
    assert json.loads(result.stdout) == {
        "has_crypto": False,
        "out": [{"r": 1}, {"e": 2}],
        "loaded": [],
    }
