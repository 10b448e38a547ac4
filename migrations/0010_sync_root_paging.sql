-- A move-in pages a root's rows in key order (docs/design.md "Sharing"). This index lets a
-- page start at its position inside the root and read only the rows it sends: without it
-- every page of a large root sorts all the root's rows again. One per table shared through
-- a root (the members table included), made now and whenever a table is declared shared.
-- Idempotent; no superuser needed.

CREATE OR REPLACE FUNCTION sync_index_root_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (%I, (%I::text COLLATE "C"))',
                   NEW.table_name || '_sync_root', NEW.table_name, NEW.share_column,
                   NEW.pk_column);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sync_index_root_rows ON sync_tables;
CREATE TRIGGER sync_index_root_rows AFTER INSERT OR UPDATE OF share_column ON sync_tables
    FOR EACH ROW WHEN (NEW.share_column IS NOT NULL) EXECUTE FUNCTION sync_index_root_rows();
-- The tables declared shared before this migration.
UPDATE sync_tables SET share_column = share_column WHERE share_column IS NOT NULL;
