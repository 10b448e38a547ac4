"""Issue #10's "Cost": what sharing costs one user, beside a private-only user of as many rows.

    .venv/bin/python bench/sharing.py          # full size: sharing-results.json, RESULTS.md
    .venv/bin/python bench/sharing.py --quick  # smoke size, into bench/.work/quick/

`make bench` runs `measure` inside its own Postgres; `make bench-sharing` runs this module
alone, which starts its own Postgres and rewrites only the Sharing section of RESULTS.md.

The shared user S is a member of P projects of T todos each, owned by other users; the
private user V holds as many rows of its own (P projects, P*T + P private todos: S sees P
projects, P member rows and P*T todos). While each initial sync runs, a writer thread edits
rows the user sees (others' edits for S, another device's for V), so the pages run against a
moving table as they would in use. Every figure comes from requests over HTTP to the bench
server (real tokens, real Postgres); round trips are the server's own count (bench/wire.py).

Rows are seeded in SQL (untimed) through the triggers, as changes made in SQL directly are.
Whether each pull delivered what the user may see is checked against SQL and reported, never
assumed: until the server reads the sharing declaration, S's figures say they are incomplete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from pg8000.exceptions import DatabaseError  # noqa: E402

from bench import harness  # noqa: E402
from bench.harness import Client, Server, admin  # noqa: E402
from bench.scenarios import percentile  # noqa: E402

TIMES = "\u00d7"
START = "<!-- sharing:begin -->"  # bench/report.py keeps such blocks on a redraw
END = "<!-- sharing:end -->"


@dataclass
class SharingConfig:
    projects: int = 1000
    todos_per_project: int = 100
    ks: list[int] = field(default_factory=lambda: [1, 10, 100])
    growth: int = 10  # the table grows to this many times its rows for the "not the table" runs
    reps: int = 3
    edit_batch: int = 10  # rows per edit of the writer thread during an initial sync
    edit_pause_s: float = 0.05
    rls_reps: int = 3
    rls_cap_s: float = 120.0  # statement_timeout of one RLS page; a page over slow_s runs once
    slow_s: float = 10.0

    @classmethod
    def quick(cls) -> SharingConfig:
        return cls(
            projects=20,
            todos_per_project=10,
            ks=[1, 10],
            growth=3,
            reps=1,
            rls_reps=2,
            rls_cap_s=20.0,
        )


def _median(values: list[float]) -> float | None:
    return percentile(values, 50) if values else None


# -- set-up (SQL, untimed) --------------------------------------------------------------


def _projects(con, owners: list[str], count: int) -> list[str]:
    """`count` projects owned round-robin by `owners`; their ids."""
    rows = con.run(
        "INSERT INTO projects (id, user_id, name, updated_at) "
        "SELECT gen_random_uuid(), (CAST(:o AS uuid[]))[1 + g % cardinality(CAST(:o AS uuid[]))], "
        "'bench ' || g, now() FROM generate_series(1, :n) g RETURNING id::text",
        o="{" + ",".join(owners) + "}",
        n=count,
    )
    return [r[0] for r in rows]


def _todos(con, projects: list[str] | None, per: int, user: str | None = None) -> None:
    """`per` todos in each project, created by its owner; or `per` private todos of `user`."""
    if projects is None:
        con.run(
            "INSERT INTO todos (id, user_id, project_id, title, done, position, updated_at) "
            "SELECT gen_random_uuid(), CAST(:u AS uuid), NULL, 'todo ' || g, g % 3 = 0, g, now() "
            "FROM generate_series(1, :n) g",
            u=user,
            n=per,
        )
        return
    con.run(
        "INSERT INTO todos (id, user_id, project_id, title, done, position, updated_at) "
        "SELECT gen_random_uuid(), p.user_id, p.id, 'todo ' || g, g % 3 = 0, g, now() "
        "FROM projects p CROSS JOIN generate_series(1, :n) g "
        "WHERE p.id = ANY(CAST(:p AS uuid[]))",
        p="{" + ",".join(projects) + "}",
        n=per,
    )


def _members(con, projects: list[str], user: str) -> None:
    con.run(
        "INSERT INTO project_members (id, project_id, user_id, role, updated_at) "
        "SELECT gen_random_uuid(), p, CAST(:u AS uuid), "
        "CASE WHEN o % 2 = 0 THEN 'editor' ELSE 'viewer' END, now() "
        "FROM unnest(CAST(:p AS uuid[])) WITH ORDINALITY AS m(p, o)",
        p="{" + ",".join(projects) + "}",
        u=user,
    )


def _in_tx(url: str, work) -> Any:
    con = admin(url)
    try:
        con.run("BEGIN")
        out = work(con)
        con.run("COMMIT")
        return out
    finally:
        con.close()


VISIBLE_TODOS = (
    "SELECT id::text FROM todos t WHERE (t.project_id IS NULL AND t.user_id = CAST(:u AS uuid)) "
    "OR t.project_id IN (SELECT id FROM projects WHERE user_id = CAST(:u AS uuid) "
    "UNION SELECT project_id FROM project_members WHERE user_id = CAST(:u AS uuid))"
)


def _visible_todo_ids(url: str, user: str) -> list[str]:
    con = admin(url)
    try:
        return [r[0] for r in con.run(VISIBLE_TODOS, u=user)]
    finally:
        con.close()


# -- the measurements (HTTP) ------------------------------------------------------------


class Editor:
    """Edits `edit_batch` of the given todos every `pause` seconds until stopped."""

    def __init__(self, url: str, ids: list[str], batch: int, pause: float, seed: int) -> None:
        self.url, self.ids, self.batch, self.pause = url, ids, batch, pause
        self.rng = random.Random(seed)
        self.edits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        con = admin(self.url)
        try:
            while not self._stop.is_set():
                chosen = self.rng.sample(self.ids, min(self.batch, len(self.ids)))
                con.run(
                    "UPDATE todos SET title = title || '.', updated_at = now() "
                    "WHERE id = ANY(CAST(:ids AS uuid[]))",
                    ids="{" + ",".join(chosen) + "}",
                )
                self.edits += len(chosen)
                self._stop.wait(self.pause)
        finally:
            con.close()

    def __enter__(self) -> Editor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def pull_all(server: Server, client: Client, cursor: str | None, limit: int = 10_000) -> dict:
    """Pages from `cursor` until hasMore is false: time, pages, rows, deletes, round trips."""
    ids, upserts, deletes, statuses = [], {}, {}, []
    started = time.perf_counter()
    for _ in range(limit):
        answer = client.sync([], cursor)
        statuses.append(answer.status)
        if answer.status != 200:
            break
        ids.append(answer.request_id)
        for e in answer.body["pulledChanges"]:
            key = (e["table"], e["row"]["id"])
            (deletes if e["op"] == "delete" else upserts)[key] = True
        cursor = answer.body["newServerTimestamp"]
        if not answer.body["hasMore"]:
            break
    ms = (time.perf_counter() - started) * 1000
    records = server.records(ids)
    trips = [r.get("round_trips") for r in records]
    return {
        "ms": ms,
        "pages": len(ids),
        "statuses": sorted(set(statuses)),
        "upserts": len(upserts),
        "deletes": len(deletes),
        "by_table": _by_table(upserts, deletes),
        "page_ms": [r.get("ms") for r in records],
        "round_trips_per_page": sorted({t for t in trips if t is not None}),
        "cursor": cursor,
        "_keys": upserts,
        "_deleted": deletes,
    }


def _by_table(upserts: dict, deletes: dict) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for (table, _), _v in upserts.items():
        out.setdefault(table, [0, 0])[0] += 1
    for (table, _), _v in deletes.items():
        out.setdefault(table, [0, 0])[1] += 1
    return out


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_") and k != "cursor"}


def _edit(url: str, ids: list[str]) -> None:
    _in_tx(
        url,
        lambda con: con.run(
            "UPDATE todos SET done = NOT done, updated_at = now() "
            "WHERE id = ANY(CAST(:ids AS uuid[]))",
            ids="{" + ",".join(ids) + "}",
        ),
    )


@dataclass
class Subject:
    """One of the two users: its client, cursor and the todo ids it sees."""

    name: str
    user: str
    client: Client
    todo_ids: list[str]
    cursor: str | None = None


def incremental(server: Server, url: str, subject: Subject, k: int, rng: random.Random) -> dict:
    """Someone edits k todos `subject` sees; the time of the pull that delivers them."""
    chosen = rng.sample(subject.todo_ids, min(k, len(subject.todo_ids)))
    _edit(url, chosen)
    got = pull_all(server, subject.client, subject.cursor)
    subject.cursor = got["cursor"]
    delivered = sum(1 for i in chosen if ("todos", i) in got["_keys"])
    return {**_public(got), "k": k, "delivered": delivered, "complete": delivered == len(chosen)}


def measure(url: str, cfg: SharingConfig, log, superuser_url: str | None = None) -> dict:
    """The whole section on a migrated database at `url`; a plain dict for results.json.
    `superuser_url` makes Supabase's client roles for the RLS comparison."""
    rng = random.Random(20261203)
    p, t = cfg.projects, cfg.todos_per_project
    shared, private = str(_uuid(rng)), str(_uuid(rng))
    others = [str(_uuid(rng)) for _ in range(10)]
    single = str(_uuid(rng))  # O: a member of one project as large as all of S's

    def seed(con) -> list[str]:
        projects = _projects(con, others, p)
        _todos(con, projects, t)
        _members(con, projects, shared)
        own = _projects(con, [private], p)
        del own
        _todos(con, None, p * t + p, user=private)
        big = _projects(con, others[:1], 1)
        _todos(con, big, p * t)
        _members(con, big, single)
        return projects

    started = time.perf_counter()
    _in_tx(url, seed)
    _analyze(url)
    log(f"sharing: seeded {p} projects x {t} todos for S, as many rows for V (untimed)")
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "seed_s": round(time.perf_counter() - started, 1),
    }
    with Server(url, 0, True, BENCH_NODELAY="1") as server:
        # A first request of the process reads the registry (extra round trips): not timed
        warm = Client(server.port, str(_uuid(rng)))
        server.record(warm.sync([], None).request_id)
        warm.close()
        subjects = [
            Subject("shared", shared, Client(server.port, shared), _visible_todo_ids(url, shared)),
            Subject(
                "private", private, Client(server.port, private), _visible_todo_ids(url, private)
            ),
            Subject(
                "one project", single, Client(server.port, single), _visible_todo_ids(url, single)
            ),
        ]
        out["visible"] = {
            s.name: {"todos": len(s.todo_ids), **_visible_counts(url, s.user)} for s in subjects
        }
        # Initial sync, with edits going on
        out["initial"] = {}
        for s in subjects:
            with Editor(url, s.todo_ids, cfg.edit_batch, cfg.edit_pause_s, len(s.name)) as ed:
                got = pull_all(server, s.client, None)
            # Rows edited during the sync after their page was read come in the next pull
            # (the pages end at the snapshot the first one took): one more pull, timed apart.
            after = pull_all(server, s.client, got["cursor"])
            s.cursor = after["cursor"]
            missing = sum(1 for i in s.todo_ids if ("todos", i) not in got["_keys"])
            still = sum(
                1
                for i in s.todo_ids
                if ("todos", i) not in got["_keys"] and ("todos", i) not in after["_keys"]
            )
            rows = got["upserts"]
            out["initial"][s.name] = {
                **_public(got),
                "rows": rows,
                "edits_during": ed.edits,
                "missing_todos": missing,
                "catch_up": {k: after[k] for k in ("ms", "pages", "upserts", "deletes")},
                "missing_after_catch_up": still,
                "complete": still == 0 and got["statuses"] == after["statuses"] == [200],
            }
            log(
                f"sharing: initial sync of {s.name}: {got['ms']:.0f} ms, {got['pages']} pages, "
                f"{rows} rows, {missing} visible todos not in it ({still} after one more pull)"
            )
        out["table_todos_base"] = _count(url, "SELECT count(*) FROM todos")
        pair = subjects[:2]  # S and V: the incremental and move figures compare those two
        out["incremental"] = _incremental_runs(server, url, pair, cfg, rng, "base")
        log("sharing: incremental pulls at k=" + ",".join(map(str, cfg.ks)))
        out["move"] = _moves(server, url, subjects[0], subjects[1], cfg, rng, others)
        log("sharing: move-in and move-out")
        out["rls"] = rls_compare(url, shared, cfg, superuser_url)
        log("sharing: derived filter against the RLS policies")
        # The table grows by rows neither user sees; the same k again
        # to `growth` times the todos it holds, in projects of t todos that neither user sees
        base = _count(url, "SELECT count(*) FROM todos")
        count = -(-(cfg.growth - 1) * base // t)
        extra = count * t
        _in_tx(url, lambda con: _todos(con, _projects(con, others, count), t))
        _analyze(url)
        for s in subjects:
            s.cursor = pull_all(server, s.client, s.cursor)["cursor"]
        out["grown_by"] = extra
        out["table_todos"] = _count(url, "SELECT count(*) FROM todos")
        out["incremental_grown"] = _incremental_runs(server, url, pair, cfg, rng, "grown")
        log(f"sharing: incremental pulls again with {out['table_todos']} todos in the table")
        for s in subjects:
            s.client.close()
    return out


def _incremental_runs(server, url, subjects, cfg, rng, label) -> list[dict]:
    runs = []
    for rep in range(cfg.reps):
        for k in cfg.ks:
            for s in subjects:
                runs.append(
                    {
                        "user": s.name,
                        "rep": rep,
                        "table": label,
                        **incremental(server, url, s, k, rng),
                    }
                )
    return runs


def _moves(server, url, s: Subject, v: Subject, cfg, rng, others) -> list[dict]:
    """Move-in: S is added to one more project of T todos; beside it V's other device writes a
    project of T todos. Move-out: S is removed from it; beside it V deletes that many rows."""
    t = cfg.todos_per_project
    runs = []

    def pulled(subject: Subject, kind: str, rep: int, expected: int) -> None:
        """The subject's pull to the end, recorded; complete when it brought `expected`
        rows (move-in) or deletes (move-out)."""
        got = pull_all(server, subject.client, subject.cursor)
        subject.cursor = got["cursor"]
        counted = got["upserts"] if kind == "move_in" else got["deletes"]
        runs.append(
            {
                "kind": kind,
                "user": subject.name,
                "rep": rep,
                "expected": expected,
                **_public(got),
                "complete": counted >= expected,
            }
        )

    for rep in range(cfg.reps):

        def grant(con) -> str:
            (project,) = _projects(con, others, 1)
            _todos(con, [project], t)
            return project

        project = _in_tx(url, grant)
        s.cursor = pull_all(server, s.client, s.cursor)["cursor"]  # nothing of it yet
        _in_tx(url, lambda con, pr=project: _members(con, [pr], s.user))
        pulled(s, "move_in", rep, t + 2)  # the project, its todos, the member row
        own = _in_tx(url, lambda con: _projects(con, [v.user], 1))
        _in_tx(url, lambda con, pr=own: _todos(con, pr, t))
        pulled(v, "move_in", rep, t + 1)
        _in_tx(
            url,
            lambda con, pr=project: con.run(
                "DELETE FROM project_members WHERE project_id = CAST(:p AS uuid) "
                "AND user_id = CAST(:u AS uuid)",
                p=pr,
                u=s.user,
            ),
        )
        pulled(s, "move_out", rep, t + 2)

        def drop(con, pr=own[0]) -> None:
            con.run("DELETE FROM todos WHERE project_id = CAST(:p AS uuid)", p=pr)
            con.run("DELETE FROM projects WHERE id = CAST(:p AS uuid)", p=pr)

        _in_tx(url, drop)
        pulled(v, "move_out", rep, t + 1)
    return runs


# -- derived filters against RLS (SQL) --------------------------------------------------

# One page of todos in the pull's order (transaction, key), the row as JSON text.
PAGE = (
    "SELECT x.sync_xid, row_to_json(x)::text FROM todos x WHERE {where} "
    'ORDER BY x.sync_xid, (x.id::text COLLATE "C") LIMIT 1000'
)
DERIVED = (
    "((x.project_id IS NULL AND x.user_id = CAST(:u AS uuid)) OR x.project_id IN ("
    "SELECT id FROM projects WHERE user_id = CAST(:u AS uuid) "
    "UNION ALL SELECT project_id FROM project_members WHERE user_id = CAST(:u AS uuid)))"
)
# The same visibility as a policy, reading the user from request.jwt.claims as Supabase sets it
HAND_POLICY = (
    "CREATE POLICY bench_sharing_read ON todos FOR SELECT TO authenticated USING ("
    "(project_id IS NULL AND user_id = (current_setting('request.jwt.claims', true)::jsonb"
    "->>'sub')::uuid) OR project_id IN (SELECT id FROM projects WHERE user_id = "
    "(current_setting('request.jwt.claims', true)::jsonb->>'sub')::uuid UNION ALL "
    "SELECT project_id FROM project_members WHERE user_id = "
    "(current_setting('request.jwt.claims', true)::jsonb->>'sub')::uuid))"
)


def _policy_source(url: str) -> str:
    """'migration' when migrations/0007 gave us sync_share_policies(), else 'hand-written'."""
    n = _count(url, "SELECT count(*) FROM pg_proc WHERE proname = 'sync_share_policies'")
    return "migration" if n else "hand-written"


def client_roles(url: str, superuser_url: str | None) -> bool:
    """Supabase's `authenticated` and `anon` roles, made by a superuser (the app role may not)
    and granted to the app role, as Supabase has them; False when they cannot be had."""
    from devtools.pgcluster import supabase_roles

    app = admin(url)
    try:
        me = app.run("SELECT current_user")[0][0]
        if app.run("SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'"):
            return True
    finally:
        app.close()
    if superuser_url is None:
        return False
    supabase_roles(superuser_url, me)
    return True


def rls_compare(url: str, user: str, cfg: SharingConfig, superuser_url: str | None = None) -> dict:
    """A first page and a late page (from the median transaction on) of `user`'s todos, through
    the derived filter (as the table owner) and under the policies (SET LOCAL ROLE
    authenticated + request.jwt.claims), each in a transaction rolled back (the policies are
    made inside it, so nothing of them stays); wall time of the page statement alone on the
    local host, and whether both gave the same rows. A read over `slow_s` is not repeated; one
    over `rls_cap_s` is cancelled (statement_timeout) and recorded as such."""
    out: dict[str, Any] = {"source": _policy_source(url), "runs": [], "cap_s": cfg.rls_cap_s}
    slow: set[tuple[str, str]] = set()
    if not client_roles(url, superuser_url):
        out["skipped"] = "no role 'authenticated' and no superuser to make it"
        return out
    con = admin(url)
    try:
        mid = con.run(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY sync_xid::text::numeric) "
            "FROM todos WHERE id::text IN (" + VISIBLE_TODOS + ")",
            u=user,
        )[0][0]
        claims = json.dumps({"sub": user, "role": "authenticated"})
        for rep in range(cfg.rls_reps):
            for page, lower in (("first", None), ("late", mid)):
                bound = " AND x.sync_xid >= CAST(:x AS text)::xid8" if lower is not None else ""
                for how in ("derived", "rls"):
                    if (page, how) in slow:
                        continue
                    args: dict[str, Any] = {"x": str(lower)} if lower is not None else {}
                    timed_out = False
                    con.run("BEGIN")
                    try:
                        if how == "rls":
                            _policies_on(con, out["source"])
                            con.run("SELECT set_config('request.jwt.claims', :c, true)", c=claims)
                            con.run("SET LOCAL ROLE authenticated")
                            sql = PAGE.format(where="true" + bound)
                        else:
                            sql = PAGE.format(where=DERIVED + bound)
                            args["u"] = user
                        con.run(f"SET LOCAL statement_timeout = {int(cfg.rls_cap_s * 1000)}")
                        started = time.perf_counter()
                        try:
                            rows = con.run(sql, **args)
                        except DatabaseError as error:
                            if error.args[0].get("C") != "57014":  # query_canceled
                                raise
                            rows, timed_out = [], True
                        ms = (time.perf_counter() - started) * 1000
                    finally:
                        con.run("ROLLBACK")
                    if timed_out or ms > cfg.slow_s * 1000:
                        slow.add((page, how))
                    out["runs"].append(
                        {
                            "rep": rep,
                            "page": page,
                            "how": how,
                            "ms": None if timed_out else ms,
                            "timed_out": timed_out,
                            "rows": len(rows),
                            "digest": hash(tuple(r[1] for r in rows)),
                        }
                    )
    finally:
        con.close()
    for page in ("first", "late"):
        digests = {r["digest"] for r in out["runs"] if r["page"] == page and not r["timed_out"]}
        out[f"{page}_same_rows"] = len(digests) == 1
    for r in out["runs"]:
        r.pop("digest")
    return out


def _policies_on(con, source: str) -> None:
    """Inside the caller's transaction: the policies (0007's generator, or the hand-written
    one on todos) and the grants."""
    if source == "migration":
        con.run("SELECT sync_share_policies()")
    else:
        con.run("GRANT SELECT ON todos, projects, project_members TO authenticated")
        con.run("ALTER TABLE todos ENABLE ROW LEVEL SECURITY")
        con.run(HAND_POLICY)


# -- helpers ----------------------------------------------------------------------------


def _uuid(rng: random.Random):
    import uuid

    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _count(url: str, sql: str, **args: Any) -> int:
    con = admin(url)
    try:
        return con.run(sql, **args)[0][0]
    finally:
        con.close()


def _visible_counts(url: str, user: str) -> dict[str, int]:
    seen = (
        "SELECT id FROM projects WHERE user_id = CAST(:u AS uuid) "
        "UNION SELECT project_id FROM project_members WHERE user_id = CAST(:u AS uuid)"
    )
    return {
        "projects": _count(url, f"SELECT count(*) FROM ({seen}) s", u=user),
        "project_members": _count(
            url, f"SELECT count(*) FROM project_members WHERE project_id IN ({seen})", u=user
        ),
    }


def _tree() -> dict[str, Any]:
    """The commit measured, and whether src/ or migrations/ differed from it."""
    import os
    import subprocess

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT).stdout

    dirty = git("status", "--porcelain", "--", "src", "migrations").split("\n")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": sorted(line[3:] for line in dirty if line.strip()),
        "load_before": os.getloadavg()[0],
    }


def _analyze(url: str) -> None:
    con = admin(url)
    try:
        con.run("ANALYZE todos, projects, project_members, sync_tombstones")
    finally:
        con.close()


# -- the RESULTS.md section -------------------------------------------------------------


def _num(v: float | None, digits: int = 0) -> str:
    return "\u2013" if v is None else f"{v:,.{digits}f}".replace(",", " ")


def _timing(runs: list[dict], cap_s: float) -> str:
    """Median of the runs' ms and how many ran; a cancelled run says so."""
    if any(r["timed_out"] for r in runs):
        return f"> {_num(cap_s * 1000)} (cancelled)"
    return f"{_num(_median([r['ms'] for r in runs]), 1)} ({len(runs)} run{'s' * (len(runs) > 1)})"


def _head(*names: str) -> str:
    return "| " + " | ".join(names) + " |\n" + "|---" * len(names) + "|"


def section(res: dict | None) -> str:
    """RESULTS.md's Sharing section from the measured dict (or 'not run')."""
    head = "## Sharing (issue #10): one member of many projects, beside a private-only user\n\n"
    if not res:
        return head + "Not run (`make bench-sharing`).\n"
    meta = res.get("meta", {})
    tree = ""
    if meta.get("commit"):
        tree = (
            f"Measured at {meta['commit']}"
            + (
                f" with uncommitted changes in {', '.join(meta['uncommitted'])}"
                if meta.get("uncommitted")
                else ""
            )
            + f" (load average {meta['load_before']:.1f} before; {meta['duration_s']} s). "
        )
    cfg = res["config"]
    p, t = cfg["projects"], cfg["todos_per_project"]
    lines = [
        head,
        tree
        + f"S is a member of {_num(p)} projects of {_num(t)} todos each, owned by 10 other users; "
        f"V holds as many rows privately; O is a member of one project of {_num(p * t)} todos. "
        f"Seeded in SQL ({res['seed_s']} s, untimed); every "
        "figure below is requests over HTTP to the bench server on 127.0.0.1 (pooled, RTT 0), "
        "real tokens, real Postgres. *Complete* is checked against SQL: did the pull deliver "
        "every row the user may see (or every delete it must get)?\n",
        f"Visible to each, by SQL: {json.dumps(res['visible'])}.\n",
        "### Initial sync (all pages until hasMore is false), others editing meanwhile\n",
        "The pages end at the snapshot the first page took, so a row edited after that, "
        "before its own page was read, leaves the window and comes in the next pull: "
        "*visible todos not in it* counts those, *next pull* is that pull, *missing after it* "
        "must be 0.\n",
        _head(
            "user",
            "time ms",
            "pages",
            "rows",
            "median page ms",
            "round trips / page",
            "edits during",
            "visible todos not in it",
            "next pull: ms / rows",
            "missing after it",
            "complete",
        ),
    ]
    for name, r in res["initial"].items():
        lines.append(
            f"| {name} | {_num(r['ms'])} | {r['pages']} | {_num(r['rows'])} | "
            f"{_num(_median([m for m in r['page_ms'] if m is not None]), 1)} | "
            f"{r['round_trips_per_page']} | {r['edits_during']} | {_num(r['missing_todos'])} | "
            f"{_num(r['catch_up']['ms'], 1)} / {_num(r['catch_up']['upserts'])} | "
            f"{_num(r['missing_after_catch_up'])} | {'yes' if r['complete'] else '**no**'} |"
        )
    lines += [
        "",
        "### Incremental pull after k edited visible todos, before and after the table grows\n\n"
        "Table of "
        f"{_num(res['table_todos_base'])} todos, then grown by {_num(res['grown_by'])} "
        "rows neither user sees "
        f"(to {_num(res['table_todos'])})\n",
        _head(
            "user",
            "k",
            "median ms (base)",
            "median ms (grown)",
            "pages",
            "round trips / page",
            "delivered all k",
        ),
    ]
    for name in ("shared", "private"):
        for k in cfg["ks"]:
            base = [r for r in res["incremental"] if r["user"] == name and r["k"] == k]
            grown = [r for r in res["incremental_grown"] if r["user"] == name and r["k"] == k]
            both = base + grown
            lines.append(
                f"| {name} | {k} | {_num(_median([r['ms'] for r in base]), 1)} | "
                f"{_num(_median([r['ms'] for r in grown]), 1)} | "
                f"{sorted({r['pages'] for r in both})} | "
                f"{sorted({x for r in both for x in r['round_trips_per_page']})} | "
                f"{'yes' if all(r['complete'] for r in both) else '**no**'} |"
            )
    lines += [
        "",
        f"### Move-in and move-out (one project of {t} todos)\n",
        "S: added to one more project (move-in), then removed from it (move-out). V beside it: "
        f"another device of V writes a project with {t} todos, then deletes them.\n",
        _head(
            "what", "user", "median ms", "pages", "rows / deletes delivered (expected)", "complete"
        ),
    ]
    for kind in ("move_in", "move_out"):
        for name in ("shared", "private"):
            runs = [r for r in res["move"] if r["kind"] == kind and r["user"] == name]
            got = sorted({r["upserts"] if kind == "move_in" else r["deletes"] for r in runs})
            lines.append(
                f"| {kind.replace('_', '-')} | {name} | "
                f"{_num(_median([r['ms'] for r in runs]), 1)} | "
                f"{sorted({r['pages'] for r in runs})} | {got} ({runs[0]['expected']}) | "
                f"{'yes' if all(r['complete'] for r in runs) else '**no**'} |"
            )
    rls = res["rls"]
    source = (
        "the policies of migrations/0007_sync_policies.sql"
        if rls["source"] == "migration"
        else "a hand-written policy on todos equivalent to the sharing rules (0007's policies "
        "were not in the tree when this ran); projects and project_members read without RLS "
        "inside it"
    )
    lines += [
        "",
        "### Measure and choose: a todos page through the derived filter against RLS\n",
        "One page of S's todos (1000 rows, in the pull's order, row JSON built by Postgres), "
        "statement wall time over a local connection, each in a rolled-back transaction: "
        "the derived filter (the bench's own statement of the visibility the catalog derives, "
        "the same shape as the RLS read; the server's real pull pages are timed in the initial "
        "sync above) as the table owner, against the same read with no filter under "
        f"`SET LOCAL ROLE authenticated` + `request.jwt.claims`, with {source}. *late*: from "
        "the median transaction of S's todos on.\n",
        _head("page", "derived filter ms", "RLS ms", "rows", "same rows"),
    ]
    if "skipped" in rls:
        lines.append(f"Not measured: {rls['skipped']}.")
    for page in ("first", "late") if "skipped" not in rls else ():
        d = [r for r in rls["runs"] if r["page"] == page and r["how"] == "derived"]
        q = [r for r in rls["runs"] if r["page"] == page and r["how"] == "rls"]
        rows = sorted({r["rows"] for r in rls["runs"] if r["page"] == page})
        lines.append(
            f"| {page} | {_timing(d, rls['cap_s'])} | {_timing(q, rls['cap_s'])} | {rows} | "
            f"{'yes' if rls[f'{page}_same_rows'] else '**no**'} |"
        )
    ratios = []
    for page in ("first", "late") if "skipped" not in rls else ():
        d = [r["ms"] for r in rls["runs"] if r["page"] == page and r["how"] == "derived"]
        q = [r["ms"] for r in rls["runs"] if r["page"] == page and r["how"] == "rls"]
        if d and q and None not in q:
            ratios.append(f"{page} page {_median(q) / _median(d):.0f}{TIMES}")
    if ratios:
        lines.append("\nRLS against the derived filter, medians: " + ", ".join(ratios) + ".")
    lines += [
        "",
        "Reproduce: `make bench-sharing` (this section alone, full size, ~minutes; `QUICK=1` "
        "for a smoke size into bench/.work/quick/), or `make bench` (every section).\n",
    ]
    return "\n".join(lines) + "\n"


def splice(markdown: str, text: str) -> str:
    """RESULTS.md with its Sharing section (between the markers) replaced, or appended."""
    block = f"{START}\n{text}{END}\n"
    if START in markdown and END in markdown:
        before, rest = markdown.split(START, 1)
        return before + block + rest.split(END, 1)[1].lstrip("\n")
    return markdown.rstrip("\n") + "\n\n" + block


def main() -> int:
    parser = argparse.ArgumentParser(description="issue #10's sharing benchmark alone")
    parser.add_argument("--quick", action="store_true", help="smoke size")
    parser.add_argument("--out", type=Path, help="default bench/ (quick: bench/.work/quick)")
    args = parser.parse_args()
    cfg = SharingConfig.quick() if args.quick else SharingConfig()
    out = args.out or (harness.WORK / "quick" if args.quick else ROOT / "bench")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(text: str) -> None:
        harness.say(f"[{time.perf_counter() - started:6.1f}s] {text}")

    with harness.postgres(durable=not args.quick) as (cluster, url):
        log(f"Postgres up on 127.0.0.1:{cluster.port}, migrated")
        res = measure(url, cfg, log, cluster.url(user="postgres"))
    res["meta"] = {
        "duration_s": round(time.perf_counter() - started, 1),
        "quick": args.quick,
        **_tree(),
    }
    (out / "sharing-results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    target = out / "RESULTS.md"
    with contextlib.suppress(FileNotFoundError):
        text = target.read_text()
        target.write_text(splice(text, section(res)))
        log(f"wrote {target} (Sharing section) and {out / 'sharing-results.json'}")
        return 0
    target.write_text(splice("", section(res)))
    log(f"wrote {target} and {out / 'sharing-results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
