-- Sharing: rows that several users see and edit (see docs/design.md "Sharing").
--
-- A *root* table (projects) has a *members* table (project_members: root key, user, role).
-- A root row is seen by its owner and its members. A *shared* table (todos) points at a
-- root through one column (todos.project_id): its rows are seen by whoever sees that root,
-- and a row whose column is NULL stays private to its owner. The members table is itself
-- shared through its root column, so members see the member list. Writes: the root's owner
-- writes the root row and its members; the owner and members whose role is a writer role
-- write the shared rows.
--
-- Declared once, here, with sync_share_root and sync_share; the sync server (sync.catalog)
-- and the RLS policies (sync_share_policies) are both derived from this record.
--
-- The cursor (docs/design.md):
-- - move-in: the member's membership row is stamped with the transaction that granted it;
--   a pull whose window holds that stamp delivers every row of the root, however old;
-- - move-out and deletes: the triggers below write a tombstone for every user who could
--   see the row and no longer can, in the writing transaction, so a pull delivers them as
--   it delivers any tombstone;
-- - a membership change locks its root row FOR UPDATE and a shared row that leaves a root
--   locks the root FOR KEY SHARE (a row that joins one takes that lock through its foreign
--   key), so who-sees-what and which-rows-are-where never change under each other.
-- Idempotent; no superuser needed.

ALTER TABLE sync_tables ADD COLUMN IF NOT EXISTS share_root text;
ALTER TABLE sync_tables ADD COLUMN IF NOT EXISTS share_column text;

CREATE TABLE IF NOT EXISTS sync_roots (
    root_table    text   PRIMARY KEY REFERENCES sync_tables (table_name) ON DELETE CASCADE,
    members_table text   NOT NULL REFERENCES sync_tables (table_name) ON DELETE CASCADE,
    root_column   text   NOT NULL,
    user_column   text   NOT NULL,
    role_column   text   NOT NULL,
    writer_roles  text[] NOT NULL
);

-- Raises unless `tbl.col` is a single-column foreign key to the key of `parent`.
CREATE OR REPLACE FUNCTION sync_check_reference(tbl regclass, col text, parent regclass)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM pg_constraint k
    JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = k.conkey[1]
    JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1]
    JOIN sync_tables pt ON pt.table_name = (SELECT relname FROM pg_class WHERE oid = parent)
    WHERE k.contype = 'f' AND k.conrelid = tbl AND k.confrelid = parent
      AND cardinality(k.conkey) = 1 AND ca.attname = col AND pa.attname = pt.pk_column;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sync_share: %.% must be a foreign key to the key of %', tbl, col, parent
            USING HINT = 'Add: ' || col || ' ... REFERENCES ' || parent::text || ' (key column).';
    END IF;
END
$$;

-- Declares `root` shared through `members`: each members row gives `user_col` access to the
-- root row its `root_col` names, with the role in `role_col`; `writer_roles` may write the
-- root's shared rows. Both tables must be synced (sync_enable) first, the members table
-- with `user_col` as its owner column.
CREATE OR REPLACE FUNCTION sync_share_root(root regclass, members regclass, root_col text,
                                           user_col text, role_col text, writer_roles text[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    root_name    text := (SELECT relname FROM pg_class WHERE oid = root);
    members_name text := (SELECT relname FROM pg_class WHERE oid = members);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sync_tables WHERE table_name = root_name AND share_column IS NULL)
       OR NOT EXISTS (SELECT 1 FROM sync_tables WHERE table_name = members_name
                      AND owner_column = user_col) THEN
        RAISE EXCEPTION 'sync_share_root: sync_enable % first, and % with % as its owner column',
            root_name, members_name, user_col;
    END IF;
    PERFORM sync_check_reference(members, root_col, root);
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = members AND attname = role_col
                   AND atttypid = 'text'::regtype AND attnotnull) THEN
        RAISE EXCEPTION 'sync_share_root: %.% must be text NOT NULL', members_name, role_col;
    END IF;
    INSERT INTO sync_roots (root_table, members_table, root_column, user_column, role_column,
                            writer_roles)
    VALUES (root_name, members_name, root_col, user_col, role_col, writer_roles)
    ON CONFLICT (root_table) DO UPDATE
    SET members_table = excluded.members_table, root_column = excluded.root_column,
        user_column = excluded.user_column, role_column = excluded.role_column,
        writer_roles = excluded.writer_roles;
    UPDATE sync_tables SET share_root = root_name, share_column = NULL
    WHERE table_name = root_name;
    UPDATE sync_tables SET share_root = root_name, share_column = root_col
    WHERE table_name = members_name;
    -- A pull reads a root's rows in (transaction, key) order; see sync_share.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (%I, sync_xid, (%I::text COLLATE "C"))',
                   members_name || '_sync_share', members,
                   root_col, (SELECT pk_column FROM sync_tables WHERE table_name = members_name));
    PERFORM sync_schema_changed();
END
$$;

-- Declares `tbl` shared through `via_col`, a foreign key to a root table's key: its rows are
-- seen by whoever sees that root row (or only by their owner where via_col is NULL).
CREATE OR REPLACE FUNCTION sync_share(tbl regclass, via_col text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel  text := (SELECT relname FROM pg_class WHERE oid = tbl);
    root text;
BEGIN
    SELECT r.root_table INTO root
    FROM sync_roots r
    JOIN pg_constraint k ON k.conrelid = tbl AND k.contype = 'f'
         AND k.confrelid = r.root_table::regclass
    JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = k.conkey[1]
    WHERE ca.attname = via_col;
    IF root IS NULL OR NOT EXISTS (SELECT 1 FROM sync_tables WHERE table_name = rel) THEN
        RAISE EXCEPTION 'sync_share: % must be synced (sync_enable) and %.% a foreign key to a '
            'root declared with sync_share_root', rel, rel, via_col;
    END IF;
    PERFORM sync_check_reference(tbl, via_col, root::regclass);
    UPDATE sync_tables SET share_root = root, share_column = via_col WHERE table_name = rel;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (%I, sync_xid, (%I::text COLLATE "C"))',
                   rel || '_sync_share', tbl, via_col,
                   (SELECT pk_column FROM sync_tables WHERE table_name = rel));
    PERFORM sync_schema_changed();
END
$$;

-- The statement trigger of 0001, now sharing-aware. Arguments: primary key column, owner
-- column (as sync_enable installs it).
--
-- Private table: a key that disappears for an owner (deleted, or moved to another key or
-- owner) leaves that owner a tombstone; a key that appears drops it.
-- Shared table: a row that is deleted or leaves its root (or owner) leaves a tombstone for
-- everyone who could see it: the root's owner and members (the owner alone for a private
-- row). Someone who still sees the row's new version gets it on their pull, and the pull
-- never sends a tombstone for a key its caller can see. A members row that ends a user's
-- access leaves that user a tombstone for every row of the root.
CREATE OR REPLACE FUNCTION sync_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pk_col    text := TG_ARGV[0];
    owner_col text := TG_ARGV[1];
    gone      text := 'old_rows o';
    appeared  text := 'new_rows n';
    share     record;
    scope     text;
    ended     text;
    viewers   text;
    member    record;
BEGIN
    SELECT t.share_root, t.share_column, r.pk_column AS root_pk, r.owner_column AS root_owner,
           m.members_table, m.root_column, m.user_column
    INTO share
    FROM sync_tables t
    LEFT JOIN sync_tables r ON r.table_name = t.share_root
    LEFT JOIN sync_roots m ON m.root_table = t.share_root
    WHERE t.table_name = TG_TABLE_NAME;

    IF share.share_root IS NULL THEN
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
    END IF;

    -- Shared. The root key of a row: its share column, or its own key in the root table.
    scope := coalesce(share.share_column, pk_col);
    gone := '(SELECT o.* FROM old_rows o';
    IF TG_OP = 'UPDATE' THEN
        gone := gone || format(' WHERE NOT EXISTS (SELECT 1 FROM new_rows n '
                               'WHERE n.%1$I = o.%1$I AND n.%2$I = o.%2$I '
                               'AND n.%3$I IS NOT DISTINCT FROM o.%3$I)', pk_col, owner_col, scope);
    END IF;
    gone := gone || ') o';

    IF TG_TABLE_NAME = share.members_table THEN
        -- A membership change locks its roots first, in key order (see the header).
        EXECUTE format('SELECT 1 FROM %1$I r WHERE r.%2$I IN (%3$s) ORDER BY r.%2$I FOR UPDATE OF r',
                       share.share_root, share.root_pk,
                       CASE TG_OP
                           WHEN 'INSERT' THEN format('SELECT %I FROM new_rows', scope)
                           WHEN 'DELETE' THEN format('SELECT %I FROM old_rows', scope)
                           ELSE format('SELECT %1$I FROM new_rows UNION SELECT %1$I FROM old_rows',
                                       scope)
                       END);
    END IF;
    IF TG_OP = 'INSERT' THEN
        RETURN NULL;
    END IF;

    -- Rows that left: lock their roots against a concurrent membership change, then a
    -- tombstone for each user who could see them (their owner, for a private row).
    EXECUTE format('SELECT 1 FROM %1$I r WHERE r.%2$I IN (SELECT o.%3$I FROM %4$s) '
                   'ORDER BY r.%2$I FOR KEY SHARE OF r',
                   share.share_root, share.root_pk, scope, gone);
    EXECUTE format(
        'INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid) '
        'SELECT DISTINCT ON (v.pk, v.viewer) %1$L, v.pk, v.viewer, '
        '       greatest(v.at, statement_timestamp()), pg_current_xact_id() FROM ('
        '  SELECT o.%2$I::text AS pk, o.%3$I AS viewer, o.updated_at AS at FROM %4$s '
        '  WHERE o.%5$I IS NULL OR %6$L::boolean '
        '  UNION ALL SELECT o.%2$I::text, r.%7$I, o.updated_at FROM %4$s '
        '  JOIN %8$I r ON r.%9$I = o.%5$I WHERE NOT %6$L::boolean '
        '  UNION ALL SELECT o.%2$I::text, m.%10$I, o.updated_at FROM %4$s '
        '  JOIN %11$I m ON m.%12$I = o.%5$I'
        ') v ORDER BY v.pk, v.viewer '
        'ON CONFLICT (table_name, pk, user_id) DO UPDATE '
        'SET updated_at = greatest(t.updated_at, excluded.updated_at), sync_xid = excluded.sync_xid '
        'WHERE t.sync_xid <> excluded.sync_xid',
        TG_TABLE_NAME, pk_col, owner_col, gone, scope, TG_TABLE_NAME = share.share_root,
        share.root_owner, share.share_root, share.root_pk, share.user_column,
        share.members_table, share.root_column);

    IF TG_TABLE_NAME <> share.members_table THEN
        RETURN NULL;
    END IF;
    -- Memberships that ended, for users who no longer see the root at all (not its owner,
    -- no other membership row): a tombstone for every row of the root, in every table
    -- shared through it, and for the members rows that went.
    ended := format('(SELECT DISTINCT o.%1$I AS rk, o.%2$I AS member FROM old_rows o',
                    share.root_column, share.user_column);
    IF TG_OP = 'UPDATE' THEN
        ended := ended || format(' WHERE NOT EXISTS (SELECT 1 FROM new_rows n '
                                 'WHERE n.%1$I = o.%1$I AND n.%2$I = o.%2$I)',
                                 share.root_column, share.user_column);
    END IF;
    ended := format(
        '(SELECT e.* FROM %1$s e '
        'WHERE NOT EXISTS (SELECT 1 FROM %2$I r WHERE r.%3$I = e.rk AND r.%4$I = e.member) '
        'AND NOT EXISTS (SELECT 1 FROM %5$I m WHERE m.%6$I = e.rk AND m.%7$I = e.member))',
        ended || ')', share.share_root, share.root_pk, share.root_owner, share.members_table,
        share.root_column, share.user_column);
    FOR member IN
        SELECT s.table_name, s.pk_column, coalesce(s.share_column, s.pk_column) AS scope
        FROM sync_tables s WHERE s.share_root = share.share_root
        ORDER BY s.table_name
    LOOP
        EXECUTE format(
            'INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid) '
            'SELECT %1$L, x.%2$I::text, e.member, statement_timestamp(), pg_current_xact_id() '
            'FROM %3$I x JOIN %4$s e ON x.%5$I = e.rk '
            'ON CONFLICT (table_name, pk, user_id) DO UPDATE '
            'SET updated_at = greatest(t.updated_at, excluded.updated_at), '
            '    sync_xid = excluded.sync_xid '
            'WHERE t.sync_xid <> excluded.sync_xid',
            member.table_name, member.pk_column, member.table_name, ended, member.scope);
    END LOOP;
    EXECUTE format(
        'INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid) '
        'SELECT DISTINCT ON (o.%2$I) %1$L, o.%2$I::text, e.member, statement_timestamp(), '
        '       pg_current_xact_id() '
        'FROM old_rows o JOIN %3$s e ON o.%4$I = e.rk AND o.%5$I = e.member '
        'ORDER BY o.%2$I '
        'ON CONFLICT (table_name, pk, user_id) DO UPDATE '
        'SET updated_at = greatest(t.updated_at, excluded.updated_at), sync_xid = excluded.sync_xid '
        'WHERE t.sync_xid <> excluded.sync_xid',
        TG_TABLE_NAME, pk_col, ended, share.root_column, share.user_column);
    RETURN NULL;
END
$$;

