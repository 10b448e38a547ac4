"""The auth matrix: HS256 with the project secret, ES256/RS256 from a JWKS served over real
HTTP, and every way a token can be wrong."""

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from conftest import SECRET, Api, build_app, token_for, user_id
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from serve import fetch_json
from sync.app import App
from sync.settings import Settings


class JwksServer:
    """A stand-in Supabase Auth endpoint publishing keys at /auth/v1/.well-known/jwks.json."""

    def __init__(self):
        self.keys: list[dict] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                status = 200 if self.path == "/auth/v1/.well-known/jwks.json" else 404
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish(self, private_key, kid: str, alg: str) -> None:
        algorithm = jwt.algorithms.get_default_algorithms()[alg]
        jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
        self.keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def close(self):
        self.server.shutdown()


@pytest.fixture
def jwks():
    server = JwksServer()
    yield server
    server.close()


def claims(user, issuer=None, **over):
    now = int(time.time())
    base = {
        "sub": user,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 600,
    }
    if issuer:
        base["iss"] = issuer
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def asymmetric_app(database_url, jwks, **env):
    from sync.migrate import connect_url

    settings = Settings.from_env({"SUPABASE_URL": jwks.url, **env})
    return App(settings, lambda: connect_url(database_url), fetch_json, log=lambda _r: None)


def status_with(api, token):
    return api.sync(None, [], token=token).status


def test_valid_hs256_token(api):
    assert status_with(api, token_for(user_id())) == 200


@pytest.mark.parametrize(
    "make",
    [
        lambda u: jwt.encode(claims(u), "another-secret-that-is-long-enough!!", "HS256"),
        lambda u: jwt.encode(claims(u, exp=int(time.time()) - 120), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u, nbf=int(time.time()) + 600), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u, iat=int(time.time()) + 600), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u, aud="anon"), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u, aud=None), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u, exp=None), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u, exp="tomorrow"), SECRET, "HS256"),
        lambda u: jwt.encode(claims(None), SECRET, "HS256"),
        lambda u: jwt.encode(claims("not-a-uuid"), SECRET, "HS256"),
        lambda u: jwt.encode(claims(u), SECRET * 2, "HS384"),
        lambda u: jwt.encode(claims(u), None, "none"),
        lambda u: jwt.encode(claims(u), SECRET, "HS256") + "x",
        lambda u: jwt.encode(claims(u), SECRET, "HS256").rsplit(".", 1)[0] + ".",
        lambda u: "not.a.jwt",
        lambda u: "abc",
        lambda u: "",
    ],
    ids=[
        "wrong-secret",
        "expired",
        "not-yet-valid",
        "issued-in-future",
        "wrong-audience",
        "no-audience",
        "no-expiry",
        "expiry-not-number",
        "no-sub",
        "sub-not-uuid",
        "hs384",
        "alg-none",
        "tampered-signature",
        "empty-signature",
        "garbage",
        "one-part",
        "empty",
    ],
)
def test_bad_tokens_are_401(api, sql, make):
    user = user_id()
    reply = api.sync(None, [], token=make(user) or "x")
    assert reply.status == 401, reply.body
    assert reply.body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer", "Token xyz", "bearer  "])
def test_missing_or_malformed_authorization_header(api, header):
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["authorization"] = header
    reply = api.request("POST", "/api/sync", b'{"lastSyncAt":null,"changes":[]}', headers)
    assert reply.status == 401
    assert reply.body["error"]["code"] == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_leeway_accepts_slightly_expired(api):
    token = jwt.encode(claims(user_id(), exp=int(time.time()) - 5), SECRET, "HS256")
    assert status_with(api, token) == 200


def test_audience_list_containing_authenticated(api):
    token = jwt.encode(claims(user_id(), aud=["other", "authenticated"]), SECRET, "HS256")
    assert status_with(api, token) == 200


def test_issuer_is_checked_when_configured(make_api):
    api = make_api("package", JWT_ISSUER="https://proj.supabase.co/auth/v1")
    good = jwt.encode(claims(user_id(), "https://proj.supabase.co/auth/v1"), SECRET, "HS256")
    bad = jwt.encode(claims(user_id(), "https://evil.supabase.co/auth/v1"), SECRET, "HS256")
    none = jwt.encode(claims(user_id()), SECRET, "HS256")
    assert status_with(api, good) == 200
    assert status_with(api, bad) == 401
    assert status_with(api, none) == 401


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_asymmetric_tokens_from_jwks(database_url, jwks, alg):
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    jwks.publish(key, "key-1", alg)
    app = asymmetric_app(database_url, jwks)
    api = Api(app, "package")
    issuer = jwks.url + "/auth/v1"
    user = user_id()
    token = jwt.encode(claims(user, issuer), key, alg, headers={"kid": "key-1"})
    assert status_with(api, token) == 200
    # Wrong issuer, other key, HS256 when only keys are configured: all refused.
    assert (
        status_with(
            api, jwt.encode(claims(user, "https://x/auth/v1"), key, alg, headers={"kid": "key-1"})
        )
        == 401
    )
    other = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    assert (
        status_with(api, jwt.encode(claims(user, issuer), other, alg, headers={"kid": "key-1"}))
        == 401
    )
    assert status_with(api, jwt.encode(claims(user, issuer), SECRET, "HS256")) == 401


def test_algorithm_confusion_with_public_key_as_hmac_secret(database_url, jwks):
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.publish(key, "k", "ES256")
    api = Api(asymmetric_app(database_url, jwks), "package")
    public_jwk = json.dumps(jwks.keys[0]).encode()
    forged = hand_signed(
        {"alg": "HS256", "typ": "JWT", "kid": "k"},
        claims(user_id(), jwks.url + "/auth/v1"),
        public_jwk,
    )
    assert status_with(api, forged) == 401


def hand_signed(header: dict, payload: dict, secret: bytes) -> str:
    """An HS256 token made by hand: pyjwt itself refuses to sign with a public key."""

    def part(data: dict) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = part(header) + "." + part(payload)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_jwks_cached_and_refetched_on_unknown_kid(database_url, jwks):
    first = ec.generate_private_key(ec.SECP256R1())
    jwks.publish(first, "old", "ES256")
    app = asymmetric_app(database_url, jwks)
    now = [time.time()]
    app.auth.clock = lambda: now[0]
    api = Api(app, "package")
    issuer = jwks.url + "/auth/v1"
    for _ in range(3):
        user = user_id()
        assert (
            status_with(
                api, jwt.encode(claims(user, issuer), first, "ES256", headers={"kid": "old"})
            )
            == 200
        )
    assert jwks.fetches == 1  # cached
    # Rotation: a new key appears; a token naming it triggers one refetch (once the
    # floor between refetches has passed since the last fetch).
    now[0] += 31
    second = ec.generate_private_key(ec.SECP256R1())
    jwks.publish(second, "new", "ES256")
    assert (
        status_with(
            api, jwt.encode(claims(user_id(), issuer), second, "ES256", headers={"kid": "new"})
        )
        == 200
    )
    assert jwks.fetches == 2
    # Unknown kids do not make the server hammer the JWKS endpoint.
    for i in range(5):
        token = jwt.encode(claims(user_id(), issuer), second, "ES256", headers={"kid": f"x{i}"})
        assert status_with(api, token) == 401
    assert jwks.fetches == 2


def test_jwks_unreachable_is_503(database_url):
    settings = Settings.from_env({"SUPABASE_URL": "http://127.0.0.1:9"})
    from sync.migrate import connect_url

    app = App(settings, lambda: connect_url(database_url), fetch_json, log=lambda _r: None)
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        claims(user_id(), "http://127.0.0.1:9/auth/v1"), key, "ES256", headers={"kid": "k"}
    )
    reply = Api(app, "package").sync(None, [], token=token)
    assert reply.status == 503
    assert reply.body["error"]["code"] == "unavailable"


def test_verified_tokens_are_remembered_but_expiry_still_holds(database_url):
    now = [time.time()]
    app = build_app(database_url)
    app.auth.clock = lambda: now[0]
    token = jwt.encode(claims(user_id(), exp=int(now[0]) + 60), SECRET, "HS256")
    api = Api(app, "package")
    assert status_with(api, token) == 200
    assert hashlib.sha256(token.encode()).digest() in app.auth.remembered
    now[0] += 3600
    assert status_with(api, token) == 401


def test_settings_refuse_to_start_without_a_key():
    from sync.settings import SettingsError

    with pytest.raises(SettingsError):
        Settings.from_env({})
    with pytest.raises(SettingsError):
        Settings.from_env({"SUPABASE_JWT_SECRET": "short"})
    with pytest.raises(SettingsError):
        Settings.from_env({"SUPABASE_JWT_SECRET": SECRET, "CLOCK_SKEW_POLICY": "maybe"})
    with pytest.raises(SettingsError):
        Settings.from_env({"SUPABASE_JWT_SECRET": SECRET, "MAX_CHANGES": "lots"})


def test_token_check_is_local(database_url):
    """HS256 verification makes no network call: no fetcher is even configured."""
    app = build_app(database_url)
    assert app.auth.fetch_json is None
    user = asyncio.run(
        app.auth.user_id(f"Bearer {token_for('6F9619FF-8B86-4D11-B42D-00C04FC964FF')}")
    )
    assert user == "6f9619ff-8b86-4d11-b42d-00c04fc964ff"


# --- the token's structure and algorithm, at the Authenticator (no database involved) -------

ISSUER = "https://unit.supabase.co/auth/v1"


def authenticator(jwks_document: dict, secret: str | None = None):
    """An Authenticator as the App builds it; its JWKS comes through the App's fetch hook."""
    from sync.auth import Authenticator

    env = {"SUPABASE_URL": "https://unit.supabase.co"}
    if secret:
        env["SUPABASE_JWT_SECRET"] = secret

    async def fetch(url):
        assert url == "https://unit.supabase.co/auth/v1/.well-known/jwks.json"
        return json.dumps(jwks_document)

    return Authenticator(Settings.from_env(env), fetch)


def refusal(auth, token: str) -> str | None:
    """None when the token is accepted, else the 401's message."""
    from sync.http import ApiError

    try:
        asyncio.run(auth.user_id(f"Bearer {token}"))
    except ApiError as error:
        assert error.status == 401, error.message
        return error.message
    return None


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def published():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e"},
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r"},
        ]
    }
    return ec_key, rsa_key, document


def test_es256_and_rs256_tokens_and_their_tampered_twins(published):
    ec_key, rsa_key, document = published
    auth = authenticator(document)
    user = user_id()
    for key, alg, kid in ((ec_key, "ES256", "e"), (rsa_key, "RS256", "r")):
        token = jwt.encode(claims(user, ISSUER), key, alg, headers={"kid": kid})
        assert refusal(auth, token) is None
        head, _, sig = token.split(".")
        other = b64url(json.dumps(claims(user_id(), ISSUER)).encode())
        assert refusal(auth, f"{head}.{other}.{sig}") == (
            "the access token's signature does not verify"
        )
        # The key of the other family, named by kid, is no key for this algorithm.
        wrong_kid = jwt.encode(claims(user, ISSUER), key, alg, headers={"kid": "re"[kid == "r"]})
        assert refusal(auth, wrong_kid) == "the access token was signed by an unknown key"


def test_alg_none_and_unlisted_algorithms_are_refused(published):
    *_, document = published
    auth = authenticator(document, secret=SECRET)
    payload = b64url(json.dumps(claims(user_id(), ISSUER)).encode())
    for header in ({"alg": "none"}, {"alg": "None"}, {"alg": ""}, {"typ": "JWT"}, {"alg": 7}):
        token = f"{b64url(json.dumps(header).encode())}.{payload}."
        assert "are not accepted here" in refusal(auth, token)
    for alg in ("ES384", "PS256", "HS512"):
        token = f"{b64url(json.dumps({'alg': alg}).encode())}.{payload}.{b64url(b'x' * 64)}"
        assert "are not accepted here" in refusal(auth, token)


def test_hs256_forged_with_the_public_key_is_refused(published):
    *_, document = published
    public_jwk = json.dumps(document["keys"][0]).encode()
    for secret in (None, SECRET):  # only keys configured; and the secret beside them
        auth = authenticator(document, secret=secret)
        forged = hand_signed({"alg": "HS256", "kid": "e"}, claims(user_id(), ISSUER), public_jwk)
        assert refusal(auth, forged) is not None
    auth = authenticator(document, secret=SECRET)
    assert refusal(auth, jwt.encode(claims(user_id(), ISSUER), SECRET, "HS256")) is None


def test_headers_we_cannot_honour_are_refused(published):
    ec_key, _, document = published
    auth = authenticator(document)
    body = claims(user_id(), ISSUER)
    unreadable = "the access token's header is unreadable"
    for extra in (
        {"crit": ["exp"], "exp": 1},  # a critical extension we do not implement
        {"b64": False, "crit": ["b64"]},  # RFC 7797's unencoded payload
        {"b64": False},
        {"kid": 7},
        {"kid": None},
    ):
        header = {"alg": "ES256", "kid": "e", **extra}
        token = es256_signed(ec_key, json.dumps(header).encode(), json.dumps(body).encode())
        assert refusal(auth, token) == unreadable, extra
    for header_text in (b"[]", b'"alg"', b'{"a" 1}', b"\xff"):
        token = f"{b64url(header_text)}.{b64url(json.dumps(body).encode())}.{b64url(b'x')}"
        assert refusal(auth, token) == unreadable
    # A payload that is JSON but no object, correctly signed.
    token = es256_signed(ec_key, b'{"alg": "ES256", "kid": "e"}', b"[1, 2]")
    assert refusal(auth, token) == "the access token's payload is not an object"


def es256_signed(key, header: bytes, payload: bytes) -> str:
    """A token signed by hand (JWS's r || s), for headers and payloads pyjwt would not make."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = f"{b64url(header)}.{b64url(payload)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_a_jwks_key_that_breaks_a_rule_is_never_used(published):
    ec_key, rsa_key, document = published
    bad = [
        {**document["keys"][0], "key_ops": ["encrypt"]},
        {**document["keys"][1], "alg": "PS256"},
    ]
    auth = authenticator({"keys": bad})
    for key, alg, kid in ((ec_key, "ES256", "e"), (rsa_key, "RS256", "r")):
        token = jwt.encode(claims(user_id(), ISSUER), key, alg, headers={"kid": kid})
        assert refusal(auth, token) == "the access token was signed by an unknown key"
