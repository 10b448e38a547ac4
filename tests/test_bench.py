"""`make bench` keeps working: its quick mode runs every scenario on small sizes against a
real Postgres and real HTTP, and checks nothing was lost; its hostile section leaves other
users' rows alone and a bystander unrefused while one account attacks. No timing is asserted here;
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
    hostile = results["hostile"]
    kinds = {b["kind"] for b in hostile["batches"]}
    assert kinds >= {"valid", "missing_parent", "foreign_parent", "foreign_rows", "constraint"}
    # No hostile batch touched the other user's rows or left the attacker other rows than
    # its answer accepted.
    assert all(b["ok"] for b in hostile["batches"]), [b for b in hostile["batches"] if not b["ok"]]
    # The bystanders kept syncing through the attack and were never refused or errored
    # (the quick attack opens fewer connections than the local host's cap), and the
    # attacker's updates and deletes of their rows changed nothing.
    watched = hostile["bystander"]
    for phases in watched["bystanders"].values():
        assert phases["attack"]["requests"] > 0
        assert all(p["errors"] == 0 for p in phases.values()), phases
    assert all(watched["intact"].values()), watched["intact"]
    attacker = watched["attacker"]
    assert sum(side["statuses"].get("429", 0) for side in attacker.values()) > 0
    # Issue #8's section: every sync of the latency table stored what it was sent, its
    # round trips and Postgres' own time were counted, and a device's writes reached the
    # user's other device (guarantee 4), whatever the echo counts say.
    issue8 = results["issue8"]
    assert issue8["latency"] and all(e["ok"] for e in issue8["latency"])
    assert all(e["round_trips"] and e["pg_messages"] > 0 for e in issue8["latency"])
    assert issue8["echo"] and all(e["other_device_got"] == e["n"] for e in issue8["echo"])
    assert {e["method"] for e in issue8["throughput"]} == {
        "push",
        "floor",
        "push_partial",
        "floor_partial",
    }
    # Issue #10's section (bench/sharing.py): every pull it timed delivered what the user
    # may see: the initial syncs, the k edited rows, move-in's rows and move-out's deletes.
    sharing = results["sharing"]
    assert all(r["complete"] for r in sharing["initial"].values()), sharing["initial"]
    runs = sharing["incremental"] + sharing["incremental_grown"] + sharing["move"]
    assert runs and all(r["complete"] for r in runs), [r for r in runs if not r["complete"]]
    assert sharing["rls"].get("first_same_rows") and sharing["rls"].get("late_same_rows")
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Sync Worker benchmark")
    assert "## Sharing (issue #10)" in text
    assert "## Hostile" in text
    assert "## Goals of issue #8" in text and "## Placement" in text


def test_round_trip_counter_counts_one_per_message_exchange(database_url):
    """The bench's round-trip counts (bench/wire.py) are what the latency figures rest on:
    a simple-query message carrying several statements is written once and answered with
    several result sets, so it is ONE round trip; a statement with parameters, sent by the
    hosts' Connection class as Parse/Describe/Bind/Execute and one Sync, is one too."""
    sys.path.insert(0, str(ROOT))
    from bench import wire

    con = wire.Wired(wire.open_connection(database_url), 0.0)
    try:
        wire.reset_tally()
        rows = con.run("BEGIN; SET LOCAL statement_timeout = 5000; SELECT 1; SELECT 2, 3; COMMIT")
        assert wire.tally().round_trips == 1
        assert rows == [[1], [2, 3]]  # pg8000 returns the rows of every result set
        wire.reset_tally()
        assert con.run("SELECT CAST(:x AS int) + 1", x=41) == [[42]]
        assert wire.tally().round_trips == 1
        wire.reset_tally()
        con.run("BEGIN")
        con.run("SELECT CAST(:x AS text)", x="a")
        con.run("COMMIT")
        assert wire.tally().round_trips == 3
        assert wire.tally().statements == 3
    finally:
        con.close()
    assert wire.tally().round_trips == 3  # closing (Terminate, no answer) is not a round trip


def test_latency_knob_delays_a_large_message_before_postgres_sees_it(database_url):
    """The knob's delay stands for the network: Postgres must not start on a message while
    it runs. A message larger than the socket file's buffer (20 KB here; a sync's one
    message is larger than that from a few changes on) pays the whole delay on top of
    Postgres' own time, as a small one does."""
    import time

    sys.path.insert(0, str(ROOT))
    from bench import wire

    con = wire.Wired(wire.open_connection(database_url), 0.2)
    try:
        padding = "/*" + "x" * 20_000 + "*/ "
        for sql in ("SELECT pg_sleep(0.2)", padding + "SELECT pg_sleep(0.2)"):
            started = time.perf_counter()
            con.run(sql)
            assert time.perf_counter() - started >= 0.4, len(sql)
    finally:
        con.close()
