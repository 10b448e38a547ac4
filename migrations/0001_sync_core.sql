-- Sync bookkeeping shared by every synced table.
--
-- The cursor is built from Postgres transaction ids, never from clocks: each write to a
-- synced row stamps the row with the id of the transaction that made it (sync_xid), and
-- a pull remembers the snapshot it read with. The next pull returns the rows whose
-- transaction was not yet visible in that snapshot, so a transaction that was still
-- running during a pull is picked up by a later one (see docs/design.md).
--
-- Everything here works for a database owner that is not a superuser.

CREATE TABLE IF NOT EXISTS sync_tombstones (
    table_name text        NOT NULL,
    pk         text        NOT NULL,
    user_id    uuid        NOT NULL,
    updated_at timestamptz NOT NULL,
    sync_xid   xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (table_name, pk, user_id)
);

CREATE INDEX IF NOT EXISTS sync_tombstones_pull ON sync_tombstones (user_id, sync_xid);

-- Row trigger on every synced table. Arguments: primary key column, owner column.
-- Stamps inserted and updated rows with the writing transaction's id, and turns deletes
-- into tombstones, so writes made straight in SQL by any program reach the devices too.
-- The sync server writes the tombstone of a pushed delete itself, with the client's delete
-- time, just before deleting the row; sync_bury then leaves that tombstone as it is.
CREATE OR REPLACE FUNCTION sync_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- TG_TABLE_NAME is of type name, whose collation ("C") would keep the planner off
    -- the tombstones' primary key index; a text variable has the default collation.
    tbl       text := TG_TABLE_NAME;
    pk_col    text := TG_ARGV[0];
    owner_col text := TG_ARGV[1];
    old_row   jsonb;
    new_row   jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        old_row := to_jsonb(OLD);
        PERFORM sync_bury(tbl, old_row ->> pk_col, (old_row ->> owner_col)::uuid,
                          greatest((old_row ->> 'updated_at')::timestamptz, statement_timestamp()));
        RETURN OLD;
    END IF;

    NEW.sync_xid := pg_current_xact_id();
    new_row := to_jsonb(NEW);
    IF TG_OP = 'UPDATE' THEN
        old_row := to_jsonb(OLD);
        IF old_row ->> pk_col IS NOT DISTINCT FROM new_row ->> pk_col
           AND old_row ->> owner_col IS NOT DISTINCT FROM new_row ->> owner_col THEN
            RETURN NEW;
        END IF;
        -- The key or the owner changed: for the old owner the old key is gone.
        PERFORM sync_bury(tbl, old_row ->> pk_col, (old_row ->> owner_col)::uuid,
                          greatest((old_row ->> 'updated_at')::timestamptz, statement_timestamp()));
    END IF;
    -- A row (re)appearing for its owner replaces that owner's tombstone for the key.
    DELETE FROM sync_tombstones
     WHERE table_name = tbl
       AND pk = new_row ->> pk_col
       AND user_id = (new_row ->> owner_col)::uuid;
    RETURN NEW;
END
$$;

-- Records that `owner` no longer has row `key` of `tbl`. A tombstone this transaction
-- already wrote (the sync server's, carrying the client's delete time) is kept as it is.
CREATE OR REPLACE FUNCTION sync_bury(tbl text, key text, owner uuid, at timestamptz) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid)
    VALUES (tbl, key, owner, at, pg_current_xact_id())
    ON CONFLICT (table_name, pk, user_id)
    DO UPDATE SET updated_at = greatest(t.updated_at, excluded.updated_at),
                  sync_xid = excluded.sync_xid
    WHERE t.sync_xid <> excluded.sync_xid
$$;

-- TRUNCATE leaves no tombstones, so devices would keep the rows forever: refuse it.
CREATE OR REPLACE FUNCTION sync_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is synced: use DELETE, not TRUNCATE, so devices learn of it',
        TG_TABLE_NAME;
END
$$;

-- Turns sync on for a table: the sync_xid column, the pull index and the triggers.
-- Safe to call again. The table needs a single-column primary key, an owner column of
-- type uuid and an updated_at timestamptz column.
CREATE OR REPLACE FUNCTION sync_enable(tbl regclass, pk_col text, owner_col text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel text := (SELECT relname FROM pg_class WHERE oid = tbl);
BEGIN
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS sync_xid xid8 NOT NULL '
                   'DEFAULT pg_current_xact_id()', tbl);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (%I, sync_xid)',
                   rel || '_sync_pull', tbl, owner_col);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_track BEFORE INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION sync_track(%L, %L)', tbl, pk_col, owner_col);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_refuse_truncate ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_refuse_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()', tbl);
END
$$;
