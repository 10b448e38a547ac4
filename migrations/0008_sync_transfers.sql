-- A root changing owner (an UPDATE of its owner column in SQL: the sync endpoint never
-- changes an owner) moves the root in for the new owner and out for the old one, as a
-- membership granted or ended does (docs/design.md "Sharing").
--
-- - move-in: the new owner gets a row in sync_grants stamped with the transaction; the
--   pull reads it as it reads a membership row, and delivers every row of the root;
-- - move-out: the old owner, unless a membership keeps them in, gets a tombstone for every
--   row of the root in every table shared through it (the root row and member rows too);
-- - the transfer locks its roots FOR UPDATE, as a membership change does, so rows leaving
--   the root (FOR KEY SHARE) never race it.
-- Every root declared with sync_share_root gets the trigger (now, and when declared later).
-- Idempotent; no superuser needed.

CREATE TABLE IF NOT EXISTS sync_grants (
    root_table text  NOT NULL,
    root_key   text  NOT NULL,
    user_id    uuid  NOT NULL,
    sync_xid   xid8  NOT NULL,
    PRIMARY KEY (root_table, root_key, user_id)
);
CREATE INDEX IF NOT EXISTS sync_grants_pull ON sync_grants (user_id, root_table, sync_xid);

-- Statement trigger on a root table. Arguments: primary key column, owner column.
CREATE OR REPLACE FUNCTION sync_track_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pk_col    text := TG_ARGV[0];
    owner_col text := TG_ARGV[1];
    moved     text;
    shared    record;
BEGIN
    moved := format('(SELECT n.%1$I AS rk, n.%2$I AS new_owner, o.%2$I AS old_owner '
                    'FROM new_rows n JOIN old_rows o ON o.%1$I = n.%1$I '
                    'WHERE o.%2$I IS DISTINCT FROM n.%2$I)', pk_col, owner_col);
    EXECUTE format('SELECT 1 FROM %1$I r WHERE r.%2$I IN (SELECT e.rk FROM %3$s e) '
                   'ORDER BY r.%2$I FOR UPDATE OF r', TG_TABLE_NAME, pk_col, moved);
    EXECUTE format(
        'INSERT INTO sync_grants AS g (root_table, root_key, user_id, sync_xid) '
        'SELECT %1$L, e.rk::text, e.new_owner, pg_current_xact_id() FROM %2$s e '
        'ON CONFLICT (root_table, root_key, user_id) DO UPDATE SET sync_xid = excluded.sync_xid',
        TG_TABLE_NAME, moved);
    FOR shared IN
        SELECT s.table_name, s.pk_column, coalesce(s.share_column, s.pk_column) AS scope,
               m.members_table, m.root_column, m.user_column
        FROM sync_tables s JOIN sync_roots m ON m.root_table = s.share_root
        WHERE s.share_root = TG_TABLE_NAME
        ORDER BY s.table_name
    LOOP
        EXECUTE format(
            'INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid) '
            'SELECT %1$L, x.%2$I::text, e.old_owner, statement_timestamp(), pg_current_xact_id() '
            'FROM %3$I x JOIN %4$s e ON x.%5$I = e.rk '
            'WHERE NOT EXISTS (SELECT 1 FROM %6$I m WHERE m.%7$I = e.rk AND m.%8$I = e.old_owner) '
            'ON CONFLICT (table_name, pk, user_id) DO UPDATE '
            'SET updated_at = greatest(t.updated_at, excluded.updated_at), '
            '    sync_xid = excluded.sync_xid '
            'WHERE t.sync_xid <> excluded.sync_xid',
            shared.table_name, shared.pk_column, shared.table_name, moved, shared.scope,
            shared.members_table, shared.root_column, shared.user_column);
    END LOOP;
    RETURN NULL;
END
$$;

-- Arms a root's transfer trigger (a row of sync_roots: the root as declared).
CREATE OR REPLACE FUNCTION sync_arm_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    SELECT s.pk_column, s.owner_column INTO t FROM sync_tables s
    WHERE s.table_name = NEW.root_table;
    EXECUTE format('DROP TRIGGER IF EXISTS sync_transfer ON %I', NEW.root_table);
    EXECUTE format('CREATE TRIGGER sync_transfer AFTER UPDATE ON %I '
                   'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION sync_track_transfer(%L, %L)',
                   NEW.root_table, t.pk_column, t.owner_column);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sync_arm_transfer ON sync_roots;
CREATE TRIGGER sync_arm_transfer AFTER INSERT OR UPDATE ON sync_roots
    FOR EACH ROW EXECUTE FUNCTION sync_arm_transfer();
-- The roots declared before this migration.
UPDATE sync_roots SET root_table = root_table;

-- Like the other bookkeeping triggers, it runs as the tables' owner where
-- sync_share_policies (migrations/0007) has made sync_track do so: clients may not write
-- sync_grants or sync_tombstones themselves.
DO $$
BEGIN
    IF (SELECT prosecdef FROM pg_proc WHERE oid = 'sync_track()'::regprocedure) THEN
        EXECUTE format('ALTER FUNCTION sync_track_transfer() SECURITY DEFINER '
                       'SET search_path = %I, pg_temp', current_schema());
    END IF;
END
$$;
