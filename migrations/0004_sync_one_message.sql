-- Two helpers for a sync that is one simple-query message (BEGIN … COMMIT in one round
-- trip, see docs/design.md "One message"). Idempotent; no superuser needed.

-- The message is written against the registry the server last read. A migration may have
-- changed it since: this stops the message before its push runs, with a SQLSTATE of our
-- own, and the server reads the catalog again and re-runs the transaction.
CREATE OR REPLACE FUNCTION sync_expect_schema(expected text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT version::text FROM sync_schema) IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'the synced tables changed (registry version %)', expected
            USING ERRCODE = 'SY409';
    END IF;
END
$$;

-- `snap` with transaction `x` counted as seen. A sync's answer carries everything its own
-- transaction wrote that the client does not already hold, so the cursor it returns can
-- count that transaction as seen: its writes are not sent back on the next pull (no echo).
-- Inside its own transaction, pg_current_snapshot() shows the transaction's own xid as
-- visible when it is below xmax, and not when it is xmax or above; then xmax moves past it,
-- and every xid between the old xmax and it (all still running when the snapshot was
-- taken: none of them had completed) joins the in-progress list.
CREATE OR REPLACE FUNCTION sync_snapshot_with(snap pg_snapshot, x xid8) RETURNS pg_snapshot
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN x IS NULL OR pg_visible_in_snapshot(x, snap) THEN snap
        ELSE (
            pg_snapshot_xmin(snap)::text || ':'
            || greatest(pg_snapshot_xmax(snap)::text::bigint, x::text::bigint + 1)::text || ':'
            || coalesce((
                SELECT string_agg(v::text, ',' ORDER BY v)
                FROM (
                    SELECT xip::text::bigint AS v FROM pg_snapshot_xip(snap) AS xip
                    UNION
                    SELECT generate_series(pg_snapshot_xmax(snap)::text::bigint,
                                           x::text::bigint - 1)
                ) AS running
                WHERE v <> x::text::bigint
            ), '')
        )::pg_snapshot
    END
$$;
