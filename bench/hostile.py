"""The hostile section: what one account can make the server pay, and what others feel.

Two measurements, each side by side with its honest counterpart in the same run:

- `worst_batches`: batches an attacker can send (todos under missing or foreign projects,
  changes to another user's rows, rows failing a real constraint so careful mode runs,
  oversized rows) against a valid batch of the same size, from fresh devices on one server.
  Per batch: wall time, statements (every attempt's, from the bench's connection),
  round trips, status, and what the answer said.
- `bystander`: two users syncing small batches in a loop (one on a kept-alive connection,
  one on a new connection per sync), alone, then while one hostile account floods the
  server from another process (hostile batches that also name the bystanders' rows, plus
  ~100 tiny requests piling onto the same rows), then alone again: their latency
  percentiles, every status both sides got, and whether the bystanders' rows held.

The constraint is real: the bench adds a CHECK on `todos.title` to its own database
(`TITLE_CHECK`), which the server knows nothing of, so only Postgres can refuse those rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.data import Rows, changes, iso
from bench.harness import Client, Server, admin, encode
from bench.scenarios import Device, new_device, percentile, seed_project, seed_rows

TITLE_LIMIT = 200
TITLE_CHECK = (
    "ALTER TABLE todos ADD CONSTRAINT bench_title_length "
    f"CHECK (char_length(title) <= {TITLE_LIMIT})"
)
DROP_TITLE_CHECK = "ALTER TABLE todos DROP CONSTRAINT IF EXISTS bench_title_length"

# The section-1 server refuses rows over this many bytes (the smallest MAX_ROW_BYTES the
# settings take), so that an oversized batch still fits in MAX_BODY_BYTES at useful sizes.
MAX_ROW_BYTES = 1024
MAX_BODY_BYTES = 8 * 1024 * 1024  # the server's default, which the bench leaves alone

KINDS = (
    "valid",
    "missing_parent",
    "foreign_parent",
    "foreign_rows",
    "constraint",
    "oversized",
)

# -- section 1: the worst batch against a valid one ---------------------------------------


@dataclass
class Victim:
    """Another user, holding a project and `n` todos, written straight into Postgres."""

    user: str
    project: str
    todos: list[dict[str, Any]]


def _victim(url: str, rows: Rows, n: int) -> Victim:
    user = rows.uuid()
    project = seed_project(url, rows, user)
    todos = rows.todos(n, project)
    seed_rows(url, user, todos)
    return Victim(user, project, todos)


def _fingerprint(url: str, user: str) -> tuple[int, str | None]:
    """What a user holds, in brief: how many todos, and the newest clock among them."""
    con = admin(url)
    try:
        count, newest = con.run(
            "SELECT count(*), max(updated_at)::text FROM todos WHERE user_id = CAST(:u AS uuid)",
            u=user,
        )[0]
    finally:
        con.close()
    return count, newest


def build(
    kind: str, n: int, k: int, device: Device, victim: Victim, rows: Rows
) -> tuple[list[dict], int]:
    """The batch of `kind` with `n` changes (fewer for oversized rows where `n` would not
    fit in the body); returns it and how many todos it should leave the attacker with."""
    if kind == "valid":
        project = rows.uuid()
        head = {"id": project, "name": "bench", "updated_at": iso(rows.base)}
        todos = rows.todos(n - 1, project)
        batch = [{"id": 0, "table": "projects", "op": "insert", "row": head}, *changes(todos)]
        return batch, n - 1
    if kind == "missing_parent":
        return changes([{**r, "project_id": rows.uuid()} for r in rows.todos(n)]), 0
    if kind == "foreign_parent":
        return changes(rows.todos(n, victim.project)), 0
    if kind == "foreign_rows":
        newer = rows.todos(n, victim.project)  # newer clocks than the victim's rows
        batch = []
        for i, (old, new) in enumerate(zip(victim.todos, newer, strict=True)):
            if i % 2:
                row = {"id": old["id"], "updated_at": new["updated_at"]}
                batch.append({"id": i + 1, "table": "todos", "op": "delete", "row": row})
            else:
                row = {**new, "id": old["id"], "title": "taken over"}
                batch.append({"id": i + 1, "table": "todos", "op": "update", "row": row})
        return batch, 0
    if kind == "constraint":
        todos = rows.todos(n, device.project)
        step = max(1, n // k)
        for i in range(0, step * k, step):  # spread out, so bisection has to dig k times
            todos[i]["title"] = "x" * (TITLE_LIMIT + 1)
        return changes(todos), n - k
    if kind == "oversized":
        title = "x" * (MAX_ROW_BYTES + 1)
        sample = len(encode(changes(rows.todos(1, device.project)), device.cursor))
        fit = (MAX_BODY_BYTES - 4096) // (sample + len(title))
        todos = [{**r, "title": title} for r in rows.todos(min(n, fit), device.project)]
        return changes(todos), 0
    raise ValueError(kind)


def one_batch(
    server: Server, url: str, rows: Rows, kind: str, n: int, k: int = 0
) -> dict[str, Any]:
    """Sends one batch of `kind` from a fresh device and checks what it left behind."""
    device = new_device(server, rows)
    victim = _victim(url, rows, n if kind == "foreign_rows" else 0)
    batch, expected = build(kind, n, k, device, victim, rows)
    before = _fingerprint(url, victim.user)
    body = encode(batch, device.cursor)
    answer = device.client.post(body)
    device.client.close()
    record = server.record(answer.request_id, timeout=120)
    stored = _fingerprint(url, device.client.user)[0]
    codes: Counter[str] = Counter()
    accepted = 0
    if answer.status == 200:
        accepted = len(answer.body["acceptedIds"])
        codes.update(r["code"] for r in answer.body["rejected"])
    elif isinstance(answer.body, dict):
        codes[answer.body.get("error", {}).get("code", "?")] += 1
    victim_untouched = _fingerprint(url, victim.user) == before
    # The attacker's project row from set-up is not a todo: `stored` counts todos only.
    applied_ok = stored == (expected if answer.status == 200 else 0)
    return {
        "kind": kind,
        "n": n,
        "k": k,
        "changes": len(batch),
        "status": answer.status,
        "ms": answer.ms,
        "body_bytes": len(body),
        "statements": record.get("wire_statements"),
        "app_statements": record.get("statements"),
        "round_trips": record.get("round_trips"),
        "attempts": record.get("attempts"),
        "server_ms": record.get("ms"),
        "cpu_ms": record.get("cpu_ms"),
        "accepted": accepted,
        "codes": dict(codes),
        "stored": stored,
        "victim_untouched": victim_untouched,
        "ok": victim_untouched and applied_ok,
    }


def worst_batches(
    url: str,
    rows: Rows,
    sizes: list[int],
    ks: list[int],
    reps: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every kind at every size, `reps` times, in an order that rotates per rep so that
    drift hits all alike. One pooled server at RTT 0 with MAX_ROW_BYTES lowered."""
    plan = [(kind, 0) for kind in KINDS if kind != "constraint"]
    plan += [("constraint", k) for k in ks]
    out: list[dict[str, Any]] = []
    with Server(url, 0, True, BENCH_NODELAY="1", MAX_ROW_BYTES=str(MAX_ROW_BYTES)) as server:
        for rep in range(reps):
            order = plan[rep % len(plan) :] + plan[: rep % len(plan)]
            for n in sizes:
                for kind, k in order:
                    if k > n:
                        continue
                    result = one_batch(server, url, rows, kind, n, k)
                    out.append({"rep": rep, **result})
                    log(
                        f"hostile N={n} {kind}{f' k={k}' if k else ''}: {result['status']}, "
                        f"{result['ms']:.0f} ms, {result['statements']} statements"
                        + ("" if result["ok"] else "  ** NOT AS EXPECTED **")
                    )
            server.forget()
    return out


# -- section 2: a bystander while one account attacks -------------------------------------


@dataclass
class Tallies:
    """Statuses and latencies of one side, counted from several threads; for refusals
    also their messages (a 503 from the host's connection cap is not one from the
    database)."""

    statuses: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    ok_latencies: list[float] = field(default_factory=list)  # of the answers that were 200
    request_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: Sent) -> None:
        with self.lock:
            self.statuses[sent.status] += 1
            if sent.ms is not None:
                self.latencies.append(sent.ms)
            if sent.status == "200":  # answered by the App, so it has a log record
                self.request_ids.append(sent.request_id)
                self.ok_latencies.append(sent.ms)
            if sent.status != "200":
                error = sent.body.get("error", {}) if isinstance(sent.body, dict) else {}
                self.refusals[f"{sent.status} {error.get('message', '')}"[:90].strip()] += 1


@dataclass
class Sent:
    status: str  # the HTTP status, or the name of what the client raised instead
    ms: float | None
    body: Any
    request_id: str


def _post(client: Client, body: bytes) -> Sent:
    """A request that never raises: a refused or reset connection (or an answer that is
    not JSON) is counted under the exception's name instead of a status."""
    try:
        answer = client.post(body)
    except Exception as error:
        client.close()
        return Sent(type(error).__name__, None, None, "")
    return Sent(str(answer.status), answer.ms, answer.body, answer.request_id)


@dataclass
class Bystander:
    """A user syncing small batches: each sync one new todo and one update of a row it
    held from the start (a row the attacker's batches name too), then the pull."""

    device: Device
    held: list[dict[str, Any]]
    reconnect: bool  # a new connection for every sync (else one kept-alive connection)
    next_id: int = 1


def _bystander_loop(
    who: Bystander, rows: Rows, rows_lock: threading.Lock, stop: threading.Event, out: Tallies
) -> None:
    device = who.device
    while not stop.is_set() and len(out.latencies) < 100_000:
        with rows_lock:
            todo = rows.todos(1, device.project)
        mine = who.held[who.next_id % len(who.held)]
        update = {**mine, "title": f"mine {who.next_id}", "updated_at": iso(datetime.now(UTC))}
        batch = changes(todo, who.next_id) + changes([update], who.next_id + 1, op="update")
        who.next_id += 2
        if who.reconnect:
            device.client.close()  # http.client opens a new connection for the next request
        sent = _post(device.client, encode(batch, device.cursor))
        out.add(sent)
        if sent.status == "200":
            device.cursor = sent.body["newServerTimestamp"]
        time.sleep(0.01)


TITLES_HELD = "held"
HELD = 4  # rows each bystander holds from the start, and updates in turn
BYSTANDERS = {"kept-alive": False, "new connection": True}


def _bystander(server: Server, rows: Rows, reconnect: bool) -> Bystander:
    device = new_device(server, rows)
    held = [
        {**r, "title": f"{TITLES_HELD} {i}"} for i, r in enumerate(rows.todos(HELD, device.project))
    ]
    answer = device.client.sync(changes(held, 10**6), device.cursor)
    if answer.status != 200 or len(answer.body["acceptedIds"]) != HELD:
        raise RuntimeError(f"bystander set-up failed: {answer.status}")
    server.record(answer.request_id)
    device.cursor = answer.body["newServerTimestamp"]
    return Bystander(device, held, reconnect)


def _intact(url: str, who: Bystander) -> bool:
    """The bystander's held rows are all there and carry its own last writes."""
    con = admin(url)
    try:
        found = con.run(
            "SELECT title FROM todos WHERE user_id = CAST(:u AS uuid) AND id::text = ANY(:ids)",
            u=who.device.client.user,
            ids=[r["id"] for r in who.held],
        )
    finally:
        con.close()
    return len(found) == len(who.held) and all(
        t[0].startswith("mine") or t[0].startswith(TITLES_HELD) for t in found
    )


def _rows_locked(rows: Rows, lock: threading.Lock, count: int, project: str) -> list[dict]:
    with lock:
        return rows.todos(count, project)


@dataclass(frozen=True)
class Attack:
    """What the attacking process needs: where, as whom, and how hard."""

    port: int
    auth: str  # the attacker's Authorization header (the token is signed by this process)
    user: str
    project: str
    hot: list[dict[str, Any]]  # the attacker's rows that every request piles onto
    foreign: list[dict[str, Any]]  # the bystanders' rows, which its batches also name
    batch_threads: int
    tiny_threads: int
    n: int
    k: int
    pause: float
    seed: int


def _attack_batch(attack: Attack, rows: Rows, lock: threading.Lock) -> bytes:
    """The attacker's heavy batch: updates of its hot rows (ON CONFLICT locks them for the
    whole transaction, stale or not), k new rows that fail the CHECK (so careful mode
    runs), the rest new rows under projects that do not exist; and, on top, updates and
    deletes of the bystanders' held rows (which must neither apply nor lock)."""
    fresh = _rows_locked(rows, lock, attack.n, attack.project)
    updates = [{**new, "id": old["id"]} for old, new in zip(attack.hot, fresh, strict=False)]
    bad = [{**row, "title": "x" * (TITLE_LIMIT + 1)} for row in fresh[len(updates) :][: attack.k]]
    with lock:
        orphans = [{**r, "project_id": rows.uuid()} for r in fresh[len(updates) + attack.k :]]
    batch = changes(updates, op="update") + changes(bad + orphans, first_id=len(updates) + 1)
    now = iso(datetime.now(UTC))  # newer than the bystanders' writes so far
    taken = [{**r, "title": "taken over", "updated_at": now} for r in attack.foreign[::2]]
    batch += changes(taken, first_id=len(batch) + 1, op="update")
    gone = [{"id": r["id"], "updated_at": now} for r in attack.foreign[1::2]]
    batch += changes(gone, first_id=len(batch) + 1, op="delete")
    return encode(batch, None)


def _attack(attack: Attack, stop: Any, pipe: Any) -> None:
    """The hostile account, in a process of its own (started with spawn), so that its
    hundred threads contend for this process's interpreter lock and not the bystander's
    client's: what the bystander feels is then the server's doing (and the shared cores').
    Runs until `stop` is set, then sends its tallies down `pipe`."""
    Client._ids = iter(range(10**9, 10**12))  # request ids apart from the bench process's
    rows = Rows(attack.seed)
    lock = threading.Lock()
    sides = {"batch": Tallies(), "tiny": Tallies()}

    def client() -> Client:
        made = Client(attack.port, attack.user)
        made.auth = attack.auth
        return made

    def heavy() -> None:
        me = client()
        while not stop.is_set():
            sent = _post(me, _attack_batch(attack, rows, lock))
            sides["batch"].add(sent)
            if sent.status != "200":
                stop.wait(attack.pause)
        me.close()

    def tiny(i: int) -> None:
        me = client()
        row = attack.hot[i % len(attack.hot)]
        while not stop.is_set():
            fresh = {**row, "title": f"tiny {i}", "updated_at": iso(datetime.now(UTC))}
            sent = _post(me, encode(changes([fresh], op="update"), None))
            sides["tiny"].add(sent)
            if sent.status != "200":
                stop.wait(attack.pause)
        me.close()

    threads = [threading.Thread(target=heavy, daemon=True) for _ in range(attack.batch_threads)]
    threads += [
        threading.Thread(target=tiny, args=(i,), daemon=True) for i in range(attack.tiny_threads)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    pipe.send("started")
    stop.wait()
    for thread in threads:
        thread.join(120)
    pipe.send(
        {
            "seconds": time.perf_counter() - began,
            "sides": {name: _stats(t) for name, t in sides.items()},
        }
    )


def bystander(
    url: str,
    rows: Rows,
    seconds: float,
    batch_threads: int,
    tiny_threads: int,
    attack_n: int,
    attack_k: int,
    pause: float,
    log: Callable[[str], None],
    parts: bool = True,
) -> dict[str, Any]:
    """Two bystanders (one on a kept-alive connection, one opening a new connection per
    sync) alone, under attack, and alone again, on one pooled server (RTT 0, default
    settings). The attacker is one account: `batch_threads` connections looping
    heavy batches and `tiny_threads` connections each looping a one-row update of the same
    few hot rows; after a refusal an attacker waits only `pause` seconds, whatever
    Retry-After says. With `parts`, two more phases follow the attack: its heavy batches
    alone, then its tiny requests alone."""
    lock = threading.Lock()
    context = multiprocessing.get_context("spawn")
    with Server(url, 0, True, BENCH_NODELAY="1") as server:
        attacker = new_device(server, rows)
        hot = rows.todos(8, attacker.project)
        answer = attacker.client.sync(changes(hot), attacker.cursor)
        if answer.status != 200 or len(answer.body["acceptedIds"]) != len(hot):
            raise RuntimeError(f"attacker set-up failed: {answer.status}")
        server.record(answer.request_id)
        attacker.client.close()
        bystanders = {
            kind: _bystander(server, rows, reconnect) for kind, reconnect in BYSTANDERS.items()
        }
        attack = Attack(
            server.port,
            attacker.client.auth,
            attacker.client.user,
            attacker.project,
            hot,
            [r for who in bystanders.values() for r in who.held],
            batch_threads,
            tiny_threads,
            attack_n,
            attack_k,
            pause,
            seed=rows.rng.getrandbits(32),
        )
        phases: dict[str, dict[str, Tallies]] = {}

        def measured(name: str, length: float) -> None:
            stop = threading.Event()
            threads = []
            for kind, who in bystanders.items():
                tallies = phases.setdefault(kind, {})[name] = Tallies()
                threads.append(
                    threading.Thread(
                        target=_bystander_loop,
                        args=(who, rows, lock, stop, tallies),
                        daemon=True,
                    )
                )
            for thread in threads:
                thread.start()
            time.sleep(length)
            stop.set()
            for thread in threads:
                thread.join(120)
            for kind in bystanders:
                log(f"bystander ({kind}) {name}: {_summary(phases[kind][name])}")

        def under_attack(name: str, heavy: int, tiny: int) -> dict[str, Any]:
            """One attacking process with `heavy` and `tiny` connections, for one phase."""
            stop = context.Event()
            ours, theirs = context.Pipe()
            part = dataclasses.replace(attack, batch_threads=heavy, tiny_threads=tiny)
            process = context.Process(target=_attack, args=(part, stop, theirs), daemon=True)
            process.start()
            try:
                if not ours.poll(60) or ours.recv() != "started":
                    raise RuntimeError("the attacking process did not start")
                time.sleep(min(1.0, seconds / 4))  # the pile-up forms first
                measured(name, seconds)
                stop.set()
                if not ours.poll(180):
                    raise RuntimeError("the attacking process did not report")
                attacked = ours.recv()
            finally:
                stop.set()
                process.join(10)
                if process.is_alive():
                    process.kill()
                    process.join()
            sides = attacked["sides"]
            log(
                f"attacker ({name}): heavy {sides['batch']['statuses']}, "
                f"tiny {sides['tiny']['statuses']} in {attacked['seconds']:.1f} s"
            )
            return {"batch_threads": heavy, "tiny_threads": tiny, **attacked}

        measured("alone", seconds)
        attacks = {"attack": under_attack("attack", batch_threads, tiny_threads)}
        if parts:  # each half of the attack alone, to tell what the bystander feels most
            attacks["attack_heavy"] = under_attack("attack_heavy", batch_threads, 0)
            attacks["attack_tiny"] = under_attack("attack_tiny", 0, tiny_threads)
        attacked, sides = attacks["attack"], attacks["attack"]["sides"]
        measured("after", seconds / 2)
        for who in bystanders.values():
            who.device.client.close()
        intact = {kind: _intact(url, who) for kind, who in bystanders.items()}
        stats = {
            kind: {
                name: {**_stats(t, ok_only=True), **_inside(server, t)}
                for name, t in by_phase.items()
            }
            for kind, by_phase in phases.items()
        }
        server.forget()
    return {
        "seconds": seconds,
        "attack_s": attacked["seconds"],
        "batch_threads": batch_threads,
        "tiny_threads": tiny_threads,
        "attack_n": attack_n,
        "attack_k": attack_k,
        "pause_s": pause,
        "hot_rows": len(hot),
        "held_rows": HELD,
        "bystanders": stats,
        "intact": intact,
        "attacker": sides,
        "attacks": attacks,
    }


def _inside(server: Server, tallies: Tallies) -> dict[str, Any]:
    """The server's own time for the bystander's requests (App.handle, from the log): the
    rest of the client's time is the HTTP host, queueing for a thread or the CPU."""
    ms = [r.get("ms", 0.0) for r in server.records(tallies.request_ids)]
    if not ms:
        return {}
    return {
        "app_p50_ms": percentile(ms, 50),
        "app_p99_ms": percentile(ms, 99),
    }


def _stats(tallies: Tallies, ok_only: bool = False) -> dict[str, Any]:
    """Counts and latency percentiles: of every answer, or with `ok_only` of the syncs
    answered 200 (a bystander's wait for a sync that worked; a quick refusal is not a
    fast sync)."""
    ms = tallies.ok_latencies if ok_only else tallies.latencies
    statuses = dict(tallies.statuses)
    out: dict[str, Any] = {
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "refusals": dict(tallies.refusals.most_common(8)),
    }
    if ms:
        out.update(
            p50_ms=percentile(ms, 50),
            p95_ms=percentile(ms, 95),
            p99_ms=percentile(ms, 99),
            max_ms=max(ms),
            mean_ms=statistics.fmean(ms),
        )
    out["errors"] = sum(v for s, v in statuses.items() if s != "200")
    return out


def _summary(tallies: Tallies) -> str:
    s = _stats(tallies, ok_only=True)
    if "p99_ms" not in s:
        return f"{s['requests']} requests, statuses {s['statuses']}"
    return (
        f"{s['requests']} syncs, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms (of 200s), "
        f"statuses {s['statuses']}"
    )


# -- the section --------------------------------------------------------------------------


def measure(url: str, rows: Rows, cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Both measurements, with the bench's CHECK constraint in place only meanwhile."""
    con = admin(url)
    try:
        con.run(TITLE_CHECK)
    finally:
        con.close()
    try:
        batches = worst_batches(url, rows, cfg.hostile_sizes, cfg.hostile_ks, cfg.hostile_reps, log)
        watched = bystander(
            url,
            rows,
            cfg.bystander_seconds,
            cfg.attack_batch_threads,
            cfg.attack_tiny_threads,
            cfg.attack_n,
            cfg.attack_k,
            cfg.attack_pause_s,
            log,
            cfg.attack_parts,
        )
    finally:
        with contextlib.closing(admin(url)) as con:
            con.run(DROP_TITLE_CHECK)
    return {
        "title_limit": TITLE_LIMIT,
        "max_row_bytes": MAX_ROW_BYTES,
        "batches": batches,
        "bystander": watched,
    }
