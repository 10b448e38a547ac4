"""`make bench` keeps working: its quick mode runs every scenario on small sizes against a
real Postgres and real HTTP, and checks nothing was lost. No timing is asserted here;
bench/RESULTS.md holds the measurements."""

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_quick_mode_runs_and_loses_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["concurrency"], "no concurrency scenario ran"
    assert all(c["lost"] == 0 and c["errors"] == 0 for c in results["concurrency"])
    assert (tmp_path / "RESULTS.md").read_text().startswith("# Sync Worker benchmark")
