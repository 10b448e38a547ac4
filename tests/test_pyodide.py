"""The Worker's Python code on the Worker's interpreter: Pyodide 314 under Node.

CPython tests cannot show that `sync`, the vendored packages and the Workers adapter
import and run on Pyodide (no `cryptography`, a stub `ssl`, no `hashlib.pbkdf2_hmac`),
nor that `sync` stays clear of runtime-only and native modules. The harness
(tests/pyodide/harness.mjs) runs each scenario there and reports as JSON.

Missing tooling is built, not skipped: python_modules/ by scripts/vendor.sh (a no-op
when current), node_modules/ by `npm ci` when absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "pyodide" / "harness.mjs"
SCENARIOS = ("runtime", "app", "entry")


def build_tooling() -> None:
    """Vendors python_modules/ and installs node_modules/ if absent; fails the run if not."""
    steps = [["scripts/vendor.sh"]]
    if not (ROOT / "node_modules" / "pyodide" / "package.json").exists():
        steps.append(["npm", "ci", "--no-audit", "--no-fund"])
    for step in steps:
        done = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")


def run_harness(scenario: Path) -> tuple[int, dict, str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the Pyodide tests need it")
    done = subprocess.run(
        [node, str(HARNESS), str(scenario)], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"harness printed no report (exit {done.returncode}):\n{done.stderr}")
    return done.returncode, report, done.stderr


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    build_tooling()
    out = {}
    for name in SCENARIOS:
        code, report, stderr = run_harness(ROOT / "tests" / "pyodide" / f"scenario_{name}.py")
        assert code == 0, f"scenario_{name}: exit {code}\n{stderr}"
        out[name] = report
    return out


def test_runs_on_pyodide_314_without_pbkdf2(reports):
    for report in reports.values():
        runtime = report["runtime"]
        assert runtime["platform"] == "emscripten"
        # The version the Workers runtime maps our compatibility date to (and the dev
        # bundle workerd/bundle.py builds from): production's Python, exactly.
        assert runtime["pyodide"] == "314.0.6"
        assert runtime["python"].startswith("3.14.")
        assert runtime["pbkdf2_hmac"] is False


def test_pg8000_imports_against_the_stub_ssl(reports):
    result = reports["runtime"]["result"]
    assert result["pg8000_connection"] == "Connection"
    assert result["ssl_version"] == "OpenSSL (stub)"
    assert result["ssl_has_socket_classes"] and result["socket_create_connection"]
    assert result["pbkdf2_hmac"] is False
    assert result["scramp_pbkdf2_4096_ms"] > 0


def test_no_forbidden_module_is_imported(reports):
    never = ("sqlite3", "_sqlite3", "lzma", "_lzma", "cryptography", "multiprocessing")
    for name, report in reports.items():
        assert report["ok"] and report["violations"] == [], name
        loaded = set(report["new_modules"])
        assert not loaded & set(never), name
        assert "concurrent.futures.thread" not in loaded, name
        # ssl (the stub) comes only from the libraries that want its names, never from sync.
        assert all(not i.startswith("sync") for i in report["ssl_importers"]), name


def test_sync_imports_nothing_of_the_runtime(reports, webcrypto):
    # The runtime's modules would tie sync to Workers. (threading is allowed for its
    # locks only — the local host's threads share one App —; nothing in sync starts one.)
    # The one exception is sync.signatures, which reaches WebCrypto through `js` on Pyodide.
    off_limits = {"js", "pyodide", "pyodide_js", "_pyodide", "workers"}
    for report in (reports["app"], webcrypto):
        imported = {
            target.split(".")[0]
            for importer, targets in report["imports"].items()
            if importer.startswith("sync") and importer != "sync.signatures"
            for target in targets
        }
        assert "json" in imported  # the map is populated
        assert not imported & off_limits
    # Neither pyjwt nor cryptography is needed by the Worker's own code any more.
    assert not {t.split(".")[0] for t in webcrypto["new_modules"]} & {"jwt", "cryptography"}
    assert set(webcrypto["imports"]["sync.signatures"]) >= {"js", "pyodide.ffi"}


# --- ES256/RS256 through WebCrypto ----------------------------------------------------------

SUPABASE_URL = "https://pyodide-test.supabase.co"


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def webcrypto_cases() -> dict:
    """Real keys and tokens (cryptography and pyjwt, under CPython), and tampered twins."""
    import time
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    es_key = ec.generate_private_key(ec.SECP256R1())
    rs_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**ECAlgorithm.to_jwk(es_key.public_key(), as_dict=True), "kid": "es", "use": "sig"},
            {**RSAAlgorithm.to_jwk(rs_key.public_key(), as_dict=True), "kid": "rs", "alg": "RS256"},
        ]
    }
    now = int(time.time())
    user = str(uuid.uuid4())

    def claims(sub: str = user) -> dict:
        return {
            "sub": sub,
            "aud": "authenticated",
            "iss": SUPABASE_URL + "/auth/v1",
            "iat": now,
            "exp": now + 600,
            "session_id": str(uuid.uuid4()),
        }

    es = jwt.encode(claims(), es_key, "ES256", headers={"kid": "es"})
    rs = jwt.encode(claims(), rs_key, "RS256", headers={"kid": "rs"})

    def tampered(token: str) -> str:
        head, _, sig = token.split(".")
        return f"{head}.{_b64(json.dumps(claims(str(uuid.uuid4()))).encode())}.{sig}"

    def flipped(token: str, byte: int) -> str:
        head, payload, sig = token.split(".")
        raw = bytearray(__import__("base64").urlsafe_b64decode(sig + "=="))
        raw[byte] ^= 0x01
        return f"{head}.{payload}.{_b64(bytes(raw))}"

    tokens = {
        "es256_valid": es,
        "rs256_valid": rs,
        "es256_tampered": tampered(es),
        "rs256_tampered": tampered(rs),
        "es256_flipped_s": flipped(es, 63),
        "rs256_flipped": flipped(rs, 100),
        "es256_short": es[: es.rindex(".") + 1] + _b64(b"\x01" * 63),
        "es256_other_key": jwt.encode(claims(), stranger, "ES256", headers={"kid": "es"}),
        "es256_naming_the_rsa_key": jwt.encode(claims(), es_key, "ES256", headers={"kid": "rs"}),
    }
    return {"supabase_url": SUPABASE_URL, "jwks": jwks, "tokens": tokens, "user": user}


@pytest.fixture(scope="module")
def webcrypto_run(tmp_path_factory) -> tuple[dict, dict]:
    build_tooling()
    work = tmp_path_factory.mktemp("webcrypto")
    shutil.copy(ROOT / "tests" / "pyodide" / "scenario_webcrypto.py", work)
    cases = webcrypto_cases()
    (work / "webcrypto_cases.json").write_text(json.dumps(cases))
    code, report, stderr = run_harness(work / "scenario_webcrypto.py")
    assert code == 0, f"scenario_webcrypto: exit {code}\n{stderr}"
    return cases, report


@pytest.fixture(scope="module")
def webcrypto(webcrypto_run) -> dict:
    return webcrypto_run[1]


def test_es256_and_rs256_verify_through_webcrypto(webcrypto_run):
    cases, report = webcrypto_run
    result = report["result"]
    assert result["on_pyodide"] is True
    outcomes = result["outcomes"]
    assert outcomes["es256_valid"]["user"] == cases["user"]
    assert outcomes["rs256_valid"]["user"] == cases["user"]
    # The keys the Authenticator verified with are WebCrypto's own CryptoKey objects.
    assert result["native_keys"] == {"es": "JsProxy", "rs": "JsProxy"}
    assert result["native_key_types"] == {
        "es": "public ECDSA",
        "rs": "public RSASSA-PKCS1-v1_5",
    }
    assert result["fetched"] == [SUPABASE_URL + "/auth/v1/.well-known/jwks.json"]


def test_tampered_and_foreign_signatures_are_refused_on_webcrypto(webcrypto):
    outcomes = webcrypto["result"]["outcomes"]
    bad_signature = "the access token's signature does not verify"
    for name in (
        "es256_tampered",
        "rs256_tampered",
        "es256_flipped_s",
        "rs256_flipped",
        "es256_short",
        "es256_other_key",
    ):
        assert outcomes[name] == {**outcomes[name], "status": 401, "message": bad_signature}, name
    assert outcomes["es256_naming_the_rsa_key"]["message"] == (
        "the access token was signed by an unknown key"
    )


def test_webcrypto_check_is_cheap(webcrypto):
    # What the native path is for: about a millisecond under Node (most of it Pyodide's
    # await of the promise), where the pure-Python P-256 arithmetic took 5-12 ms on this
    # interpreter. Generous, for a loaded box.
    timings = webcrypto["result"]["verify_ms"]
    assert 0 < timings["ES256"] < 3.0, timings
    assert 0 < timings["RS256"] < 3.0, timings


def test_health(reports):
    health = reports["app"]["result"]["health"]
    assert health["status"] == 200
    assert health["json"] == {"ok": True, "db": "ok"}
    assert len(health["sent"]) == 1


def test_unknown_route(reports):
    missing = reports["app"]["result"]["not_found"]
    assert missing["status"] == 404
    assert missing["json"]["error"]["code"] == "not_found"
    assert missing["sent"] == []


def test_sync_without_token(reports):
    refused = reports["app"]["result"]["no_token"]
    assert refused["status"] == 401
    assert refused["json"] == {
        "success": False,
        "error": {"code": "unauthorized", "message": refused["json"]["error"]["message"]},
    }
    assert refused["sent"] == []


def test_sync_with_token_made_in_pyodide(reports):
    synced = reports["app"]["result"]["sync"]
    assert synced["status"] == 200, synced
    body = synced["json"]
    assert body["success"] is True
    assert body["acceptedIds"] == [] and body["rejected"] == [] and body["pulledChanges"] == []
    assert isinstance(body["newServerTimestamp"], str) and body["newServerTimestamp"]
    assert body["hasMore"] is False
    # The first sync of an isolate reads the registry (BEGIN with the stamp, the catalog's
    # columns, foreign keys and shares), then the pull and COMMIT go as one message.
    sent = [s["sql"] for s in synced["sent"]]
    assert sent[0].startswith("BEGIN") and len(sent) == 5
    assert [p[:11] for p in synced["sent"][-1]["parts"]] == ["WITH cur AS", "COMMIT"]


def test_push_is_one_message(reports):
    """With the registry known, the whole sync is one simple-query message, values in its
    text (no parameters): BEGIN, its bounds, the registry check, the push, the pull,
    COMMIT."""
    pushed = reports["app"]["result"]["push"]
    assert pushed["status"] == 200, pushed
    assert pushed["json"]["acceptedIds"] == [1] and pushed["json"]["rejected"] == []
    assert len(pushed["sent"]) == 1 and pushed["sent"][0]["params"] == []
    parts = pushed["sent"][0]["parts"]
    assert parts[0] == "BEGIN" and parts[1].startswith("SET LOCAL statement_timeout")
    assert parts[2].startswith("SELECT 'v', sync_expect_schema(")
    assert parts[3].startswith("WITH f_todos AS") and parts[4].startswith("WITH cur AS")
    assert parts[5] == "COMMIT"


def test_every_connection_is_closed(reports):
    connections = reports["app"]["result"]["connections"]
    assert connections["opened"] == connections["closed"] == 3


def test_entry_adapter_round_trip(reports):
    result = reports["entry"]["result"]
    assert result["health"]["status"] == 200
    assert result["health"]["json"] == {"ok": True, "db": "ok"}
    assert result["sync"]["status"] == 200
    assert result["sync"]["json"]["success"] is True  # headers lower-cased, body passed on


def test_entry_preflight_has_no_body(reports):
    preflight = reports["entry"]["result"]["preflight"]
    assert preflight["status"] == 204
    assert preflight["null_body"] is True
    assert preflight["headers"]["access-control-allow-origin"] == "https://app.example"


def test_entry_keeps_one_app_until_the_settings_change(reports):
    result = reports["entry"]["result"]
    assert result["health"]["app"] == result["preflight"]["app"] == result["sync"]["app"]
    assert result["reconfigured"]["app"] != result["health"]["app"]


def test_entry_answers_bad_settings_with_a_contract_error(reports):
    broken = reports["entry"]["result"]["misconfigured"]
    assert broken["status"] == 500
    assert broken["json"]["error"]["code"] == "internal"


def test_entry_connects_to_hyperdrive_without_tls(reports):
    arguments = reports["entry"]["result"]["connect_arguments"]
    assert arguments
    for args in arguments:
        assert args == {
            "user": "sync",
            "host": "hyperdrive.local",
            "port": 5432,
            "database": "sync",
            "ssl_context": False,
        }


def test_entry_fetch_json(reports):
    result = reports["entry"]["result"]
    assert result["jwks"] == {"keys": [{"kty": "EC", "kid": "k1"}]}
    assert "HTTP 404" in result["fetch_404"]
    assert result["fetched"] == [
        "GET https://p.supabase.co/auth/v1/.well-known/jwks.json",
        "GET https://p.supabase.co/missing",
    ]


def test_harness_fails_loudly_on_a_forbidden_import(reports, tmp_path):
    scenario = tmp_path / "scenario_forbidden.py"
    scenario.write_text("import lzma\n\n\nasync def main():\n    return None\n")
    code, report, stderr = run_harness(scenario)
    assert code == 1
    assert "__scenario__ imported lzma" in report["violations"]
    assert "FORBIDDEN" in stderr
