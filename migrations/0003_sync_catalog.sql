-- The database is the one place a synced table is declared. `sync_enable` records the table
-- (with its key and owner columns) in `sync_tables`; the server reads its registry from
-- that record and the catalog (columns, types, NOT NULL, defaults, foreign keys), and the
-- client's schema is generated from the same source. So `sync_enable` now refuses what the
-- server could not sync, with a message that says what to change, instead of leaving the
-- mistake to surface as a failed sync.
--
-- `sync_schema.version` stamps the registry: the server reads it in the round trip that
-- opens each sync's transaction and reads its registry again when it changed.
--
-- Idempotent, and no superuser needed. Redefines sync_enable of 0001 with the same
-- signature; tables enabled before this migration are recorded from their triggers.

CREATE TABLE IF NOT EXISTS sync_tables (
    table_name   text        PRIMARY KEY,
    pk_column    text        NOT NULL,
    owner_column text        NOT NULL,
    enabled_at   timestamptz NOT NULL DEFAULT now()
);

-- The column types the server checks values against (sync.schema.TYPES), as format_type
-- prints them.
CREATE OR REPLACE FUNCTION sync_supported_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['uuid', 'text', 'boolean', 'smallint', 'integer', 'bigint',
                 'double precision', 'real', 'jsonb', 'timestamp with time zone']
$$;

-- Raises, with a message naming the table and the fix, when `tbl` cannot be synced with
-- `pk_col` as its key and `owner_col` as its owner.
CREATE OR REPLACE FUNCTION sync_check_table(tbl regclass, pk_col text, owner_col text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel    text := (SELECT relname FROM pg_class WHERE oid = tbl);
    col    record;
    pk     int2[];
    found  boolean;
BEGIN
    IF rel !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'sync_enable: table name % is not a plain lower-case identifier', rel
            USING HINT = 'Synced names must match [a-z_][a-z0-9_]*: rename the table.';
    END IF;
    IF (SELECT relnamespace FROM pg_class WHERE oid = tbl) <> current_schema()::regnamespace THEN
        RAISE EXCEPTION 'sync_enable: table % is not in the current schema (%)',
            tbl, current_schema();
    END IF;
    FOR col IN
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
               a.attnotnull AS notnull, a.attgenerated AS generated, a.attidentity AS identity
        FROM pg_attribute a
        WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname <> 'sync_xid'
        ORDER BY a.attnum
    LOOP
        IF col.name !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
            RAISE EXCEPTION 'sync_enable: column %.% is not a plain lower-case identifier',
                rel, col.name USING HINT = 'Rename the column to match [a-z_][a-z0-9_]*.';
        END IF;
        IF NOT col.type = ANY (sync_supported_types()) THEN
            RAISE EXCEPTION 'sync_enable: column %.% has type %, which sync does not support',
                rel, col.name, col.type
                USING HINT = 'Supported: ' || array_to_string(sync_supported_types(), ', ')
                    || '. Change the column type (e.g. varchar -> text, numeric -> double '
                    || 'precision, timestamp -> timestamptz, json -> jsonb), or keep the '
                    || 'column in another table.';
        END IF;
        IF col.generated <> '' OR col.identity = 'a' THEN
            RAISE EXCEPTION 'sync_enable: column %.% is generated, and clients write every column',
                rel, col.name
                USING HINT = 'Drop GENERATED ALWAYS (an identity BY DEFAULT is fine).';
        END IF;
    END LOOP;

    SELECT conkey INTO pk FROM pg_constraint WHERE conrelid = tbl AND contype = 'p';
    IF pk IS NULL OR array_length(pk, 1) <> 1
       OR (SELECT attname FROM pg_attribute WHERE attrelid = tbl AND attnum = pk[1]) <> pk_col
    THEN
        RAISE EXCEPTION 'sync_enable: the primary key of % must be the single column %', rel, pk_col
            USING HINT = 'Declare it: ' || pk_col || ' ... PRIMARY KEY.';
    END IF;
    SELECT true INTO found FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = pk_col
      AND format_type(a.atttypid, a.atttypmod) IN ('uuid', 'text', 'integer', 'bigint');
    IF found IS NULL THEN
        RAISE EXCEPTION 'sync_enable: the key %.% must be uuid, text, integer or bigint', rel, pk_col;
    END IF;
    SELECT true INTO found FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = owner_col AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid = 'uuid'::regtype AND a.attnotnull;
    IF found IS NULL THEN
        RAISE EXCEPTION 'sync_enable: % needs an owner column % uuid NOT NULL', rel, owner_col
            USING HINT = 'The owner holds the user id from the token (usually user_id).';
    END IF;
    SELECT true INTO found FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'updated_at' AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid = 'timestamptz'::regtype AND a.attnotnull;
    IF found IS NULL THEN
        RAISE EXCEPTION 'sync_enable: % needs a column updated_at timestamptz NOT NULL', rel
            USING HINT = 'It is the last-write-wins clock the client sets.';
    END IF;
END
$$;

-- Turns sync on for a table: checks it, then the sync_xid column, the pull index and the
-- triggers (as in 0001), and records it in sync_tables. Safe to call again.
CREATE OR REPLACE FUNCTION sync_enable(tbl regclass, pk_col text, owner_col text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel text := (SELECT relname FROM pg_class WHERE oid = tbl);
BEGIN
    PERFORM sync_check_table(tbl, pk_col, owner_col);
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS sync_xid xid8 NOT NULL '
                   'DEFAULT pg_current_xact_id()', tbl);
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
    INSERT INTO sync_tables (table_name, pk_column, owner_column) VALUES (rel, pk_col, owner_col)
    ON CONFLICT (table_name) DO UPDATE
    SET pk_column = excluded.pk_column, owner_column = excluded.owner_column
    WHERE (sync_tables.pk_column, sync_tables.owner_column)
          IS DISTINCT FROM (excluded.pk_column, excluded.owner_column);
    PERFORM sync_schema_changed();
END
$$;

-- Turns sync off for a table (the rows and the table stay): it leaves the registry, its
-- triggers and pull index go. Its tombstones go too, so a later sync_enable starts clean.
CREATE OR REPLACE FUNCTION sync_disable(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel text := (SELECT relname FROM pg_class WHERE oid = tbl);
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS sync_stamp ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track_insert ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track_update ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_track_delete ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS sync_refuse_truncate ON %s', tbl);
    EXECUTE format('DROP INDEX IF EXISTS %I', rel || '_sync_pull');
    DELETE FROM sync_tombstones WHERE table_name = rel;
    DELETE FROM sync_tables WHERE table_name = rel;
    PERFORM sync_schema_changed();
END
$$;

-- Tables enabled before this migration: recorded from their triggers' arguments
-- (sync_track(pk, owner)), as sync_enable records them from now on.
INSERT INTO sync_tables (table_name, pk_column, owner_column)
SELECT c.relname,
       split_part(encode(g.tgargs, 'escape'), '\000', 1),
       split_part(encode(g.tgargs, 'escape'), '\000', 2)
FROM pg_trigger g
JOIN pg_class c ON c.oid = g.tgrelid
WHERE g.tgname = 'sync_track_insert' AND c.relnamespace = current_schema()::regnamespace
ON CONFLICT (table_name) DO NOTHING;

-- The registry's version: bumped by sync_enable and sync_disable, and by `make migrate`
-- after each migration it applies. The server reads it in the round trip that opens each
-- sync's transaction (one row, by key: ~0.1 ms) and reads its registry again when it moved.
-- Changed a synced table by hand, outside a migration? Call sync_schema_changed().
CREATE TABLE IF NOT EXISTS sync_schema (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint  NOT NULL
);
INSERT INTO sync_schema (id, version) VALUES (true, 1) ON CONFLICT (id) DO NOTHING;

CREATE OR REPLACE FUNCTION sync_schema_changed() RETURNS bigint
LANGUAGE sql AS $$
    UPDATE sync_schema SET version = version + 1 WHERE id RETURNING version
$$;
