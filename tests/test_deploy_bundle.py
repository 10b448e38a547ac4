"""The bundle `wrangler deploy` would upload, built offline with --dry-run.

`wrangler dev` cannot run a Python Worker here (it downloads Pyodide), so this is how
the deployable artifact is checked: the entry module, every `sync` module and the
vendored packages must be in it, and nothing stray (bytecode, the vendor stamp).
Wrangler 4.x needs Node 22, which the `node` npm package provides in node_modules/.bin.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "node_modules" / ".bin"

VENDORED = (
    "pg8000/native.py",
    "pg8000/core.py",
    "scramp/core.py",
    "asn1crypto/x509.py",
    "dateutil/parser/_parser.py",
    "jwt/api_jwt.py",
    "jwt/algorithms.py",
    "workers/__init__.py",  # the SDK; from 2026-04-21 the runtime expects it vendored
)


def build_tooling() -> None:
    """Vendors python_modules/ and installs node_modules/ if absent; fails the run if not."""
    steps = [["scripts/vendor.sh"]]
    if not (NODE_BIN / "wrangler").exists():
        steps.append(["npm", "ci", "--no-audit", "--no-fund"])
    for step in steps:
        done = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, str]:
    build_tooling()
    outdir = tmp_path_factory.mktemp("bundle")
    env = {
        **os.environ,
        "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "WRANGLER_SEND_METRICS": "false",
        "NO_COLOR": "1",
    }
    started = time.monotonic()
    done = subprocess.run(
        ["npx", "wrangler", "deploy", "--dry-run", "--outdir", str(outdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    print(f"wrangler deploy --dry-run took {elapsed:.1f} s")
    return outdir, output


def test_runs_on_node_22():
    version = subprocess.run(
        [str(NODE_BIN / "node"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("v22.")


def test_bundle_has_the_entry_module(bundle):
    outdir, _ = bundle
    assert (outdir / "entry.py").read_text() == (ROOT / "src" / "entry.py").read_text()


def test_bundle_has_every_sync_module(bundle):
    outdir, output = bundle
    modules = sorted(p.name for p in (ROOT / "src" / "sync").glob("*.py"))
    assert "app.py" in modules
    for name in modules:
        assert (outdir / "sync" / name).is_file(), name
        assert re.search(rf"sync/{re.escape(name)}\s*│\s*python", output), name


def test_bundle_has_the_vendored_packages(bundle):
    outdir, output = bundle
    vendored = outdir / "python_modules"
    for path in VENDORED:
        assert (vendored / path).is_file(), path
    # scramp reads its own version through importlib.metadata at import time.
    assert list(vendored.glob("scramp-*.dist-info/METADATA"))
    assert "Vendored Modules" in output


def test_bundle_leaves_out_bytecode_and_the_vendor_stamp(bundle):
    outdir, _ = bundle
    assert not list(outdir.rglob("*.pyc"))
    assert not (outdir / "python_modules" / ".vendored").exists()


def test_bundle_fits_the_free_plan(bundle):
    _, output = bundle
    match = re.search(r"gzip:\s*([\d.]+)\s*KiB", output)
    assert match, output
    # 3 MB compressed was the Free plan's Worker size limit; a conservative budget.
    assert float(match[1]) < 3 * 1024
