-- Sync bookkeeping shared by every synced table.
--
-- The cursor is built from Postgres transaction ids, never from clocks: each write to a
-- synced row stamps the row with the id of the transaction that made it (sync_xid), and
-- a pull remembers the snapshot it read with. The next pull returns the rows whose
-- transaction was not yet visible in that snapshot, so a transaction that was still
-- running during a pull is picked up by a later one (see docs/design.md).
--
-- Triggers do the bookkeeping, so writes made straight in SQL by any program (an admin
-- dashboard, a cron job) reach the devices too. Everything here works for a database owner
-- that is not a superuser.

CREATE TABLE IF NOT EXISTS sync_tombstones (
    table_name text        NOT NULL,
    pk         text        NOT NULL,
    user_id    uuid        NOT NULL,
    updated_at timestamptz NOT NULL,
    sync_xid   xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (table_name, pk, user_id)
);

-- The pull reads a user's tombstones in (transaction, table, key) order, keys compared
-- byte-wise ("C"), so it can stop after a page.
CREATE INDEX IF NOT EXISTS sync_tombstones_pull
    ON sync_tombstones (user_id, sync_xid, table_name COLLATE "C", pk COLLATE "C");

-- Row trigger, before insert and update: stamps the row with the writing transaction.
CREATE OR REPLACE FUNCTION sync_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.sync_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

-- Statement triggers, after insert, update and delete, set-based over the transition
-- tables `old_rows` / `new_rows`. Arguments: primary key column, owner column.
--
-- A key that disappears for an owner (deleted, or moved to another key or owner) leaves a
-- tombstone dated at least now; a key that appears for an owner drops that owner's
-- tombstone. A tombstone the same transaction already wrote stays as it is: the sync
-- server writes the tombstone of a pushed delete itself, with the client's delete time,
-- just before deleting the row.
CREATE OR REPLACE FUNCTION sync_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pk_col    text := TG_ARGV[0];
    owner_col text := TG_ARGV[1];
    -- With updates, only rows whose key or owner changed count as gone / appeared.
    gone      text := 'old_rows o';
    appeared  text := 'new_rows n';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        gone := format('old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n '
                       'WHERE n.%1$I = o.%1$I AND n.%2$I = o.%2$I)', pk_col, owner_col);
        appeared := format('new_rows n WHERE NOT EXISTS (SELECT 1 FROM old_rows o '
                           'WHERE n.%1$I = o.%1$I AND n.%2$I = o.%2$I)', pk_col, owner_col);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        EXECUTE format(
            'INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid) '
            'SELECT %L, o.%I::text, o.%I, greatest(o.updated_at, statement_timestamp()), '
            '       pg_current_xact_id() FROM %s '
            'ON CONFLICT (table_name, pk, user_id) DO UPDATE '
            'SET updated_at = greatest(t.updated_at, excluded.updated_at), '
            '    sync_xid = excluded.sync_xid '
            'WHERE t.sync_xid <> excluded.sync_xid',
            TG_TABLE_NAME, pk_col, owner_col, gone);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        EXECUTE format(
            'DELETE FROM sync_tombstones t USING (SELECT n.%I AS pk, n.%I AS owner FROM %s) a '
            'WHERE t.table_name = %L AND t.pk = a.pk::text AND t.user_id = a.owner',
            pk_col, owner_col, appeared, TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
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
    -- The pull reads an owner's rows in (transaction, key) order, keys as text compared
    -- byte-wise ("C"), so a page stops after its last row.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (%I, sync_xid, (%I::text COLLATE "C"))',
                   rel || '_sync_pull', tbl, owner_col, pk_col);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_stamp ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_stamp BEFORE INSERT OR UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION sync_stamp()', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track_insert ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_track_insert AFTER INSERT ON %s '
                   'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION sync_track(%L, %L)', tbl, pk_col, owner_col);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track_update ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_track_update AFTER UPDATE ON %s '
                   'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION sync_track(%L, %L)',
                   tbl, pk_col, owner_col);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track_delete ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_track_delete AFTER DELETE ON %s '
                   'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION sync_track(%L, %L)', tbl, pk_col, owner_col);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_refuse_truncate ON %s', tbl);
    EXECUTE format('CREATE TRIGGER sync_refuse_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()', tbl);
END
$$;
