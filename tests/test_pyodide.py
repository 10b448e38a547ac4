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


def test_sync_imports_nothing_of_the_runtime(reports):
    # The runtime's modules would tie sync to Workers. (threading is allowed for its
    # locks only — the local host's threads share one App —; nothing in sync starts one.)
    off_limits = {"js", "pyodide", "pyodide_js", "_pyodide", "workers"}
    imported = {
        target.split(".")[0]
        for importer, targets in reports["app"]["imports"].items()
        if importer.startswith("sync")
        for target in targets
    }
    assert "jwt" in imported  # the map is populated
    assert not imported & off_limits


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
    sent = [s["sql"] for s in synced["sent"]]
    assert sent[0].startswith("BEGIN") and sent[-1] == "COMMIT"


def test_push_through_the_set_based_statements(reports):
    pushed = reports["app"]["result"]["push"]
    assert pushed["status"] == 200, pushed
    assert pushed["json"]["acceptedIds"] == [1] and pushed["json"]["rejected"] == []
    sent = [s["sql"] for s in pushed["sent"]]
    assert sent[0].startswith("BEGIN; SET LOCAL statement_timeout") and sent[-1] == "COMMIT"
    assert sent[1].startswith("WITH o0 AS")  # the vet
    assert sent[2].startswith('INSERT INTO "todos"') and sent[3].startswith("WITH cur AS")
    assert pushed["sent"][2]["params"] == ["rows"]


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
