-- Row-level security for clients that reach Postgres without the sync server (supabase-js,
-- PostgREST): policies GENERATED from the same declaration the sync server reads
-- (sync_tables owner_column / share_root / share_column and sync_roots), so what a user may
-- see and write is written down once (docs/your-tables.md "Row-level security").
--
-- The sync server is unaffected: it logs in as the tables' owner, and an owner bypasses RLS
-- (no FORCE ROW LEVEL SECURITY here). It applies the same rules itself, in its own
-- set-based statements, rather than running under these policies (docs/design.md).
--
-- Idempotent; no superuser needed. Re-run `SELECT sync_share_policies()` after declaring a
-- table with sync_enable / sync_share_root / sync_share.

-- On plain Postgres, a stand-in for Supabase's auth.uid(), reading the setting Supabase's
-- own reads. On Supabase it exists and is left alone.
DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS auth;
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE
        AS 'SELECT nullif(nullif(current_setting(''request.jwt.claims'', true), '''')::jsonb
                   ->> ''sub'', '''')::uuid';
    END IF;
END
$$;

-- Supabase's client roles, where they are missing and the migrating user may create roles;
-- otherwise a notice (the policies are made all the same and granted once the roles exist).
DO $$
DECLARE
    may boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['authenticated', 'anon'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            CONTINUE;
        END IF;
        IF may THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            -- So the migrating user (the server's login) may SET ROLE to test the policies.
            EXECUTE format('GRANT %I TO %I', name, current_user);
        ELSE
            RAISE NOTICE 'sync policies: role % is missing and % may not create roles; '
                'create it, then run SELECT sync_share_policies()', name, current_user;
        END IF;
    END LOOP;
END
$$;

-- The helpers below run as their owner (the tables' owner, who bypasses RLS), so a policy
-- on a root that reads its members table, and one on the members table that reads the root,
-- never call each other's policies (no "infinite recursion detected in policy"). Each reads
-- only the declaration and answers for auth.uid() alone.

-- The key column and owner column of a synced table, and the key's type (for casts).
CREATE OR REPLACE FUNCTION sync_key_of(tbl text, OUT pk_column text, OUT owner_column text,
                                       OUT pk_type text)
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT t.pk_column, t.owner_column, format_type(a.atttypid, a.atttypmod)
    FROM sync_tables t
    JOIN pg_attribute a ON a.attrelid = t.table_name::regclass AND a.attname = t.pk_column
    WHERE t.table_name = tbl
$$;

-- Whether auth.uid() may reach the root row `key` of `root`: 'see' (owner or any member),
-- 'write' (owner or a member with a writer role), 'own' (owner only).
CREATE OR REPLACE FUNCTION sync_root_access(root text, key text, wanted text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE
    me  uuid := auth.uid();
    k   record;
    r   sync_roots;
    yes boolean;
BEGIN
    SELECT * INTO k FROM sync_key_of(root);
    IF me IS NULL OR key IS NULL OR k.pk_column IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I = $1::%s AND %I = $2)',
                   root, k.pk_column, k.pk_type, k.owner_column)
    INTO yes USING key, me;
    IF yes OR wanted = 'own' THEN
        RETURN yes;
    END IF;
    SELECT * INTO r FROM sync_roots WHERE root_table = root;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I = $1::%s AND %I = $2 '
                   'AND ($3 OR %I = ANY ($4)))',
                   r.members_table, r.root_column, k.pk_type, r.user_column, r.role_column)
    INTO yes USING key, me, wanted = 'see', r.writer_roles;
    RETURN yes;
END
$$;

-- The owner column's stored value of row `key` of `tbl` (text; NULL for a new row): an
-- update may keep a shared row's creator, which a WITH CHECK cannot see otherwise.
CREATE OR REPLACE FUNCTION sync_stored_owner(tbl text, key text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE
    k     record;
    owner text;
BEGIN
    SELECT * INTO k FROM sync_key_of(tbl);
    IF k.pk_column IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT %I::text FROM %I WHERE %I = $1::%s',
                   k.owner_column, tbl, k.pk_column, k.pk_type)
    INTO owner USING key;
    RETURN owner;
END
$$;

-- (Re)generates the sync_* policies of every synced table from the declaration, enables
-- RLS on them and grants the `authenticated` role what supabase-js needs. Idempotent:
-- drops its own policies (named sync_*) first and leaves any other policy alone.
CREATE OR REPLACE FUNCTION sync_share_policies() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t       record;
    p       record;
    me      text := 'auth.uid()';
    owner   text;
    scope   text;
    private text;
    sees    text;
    writes  text;
    kept    text;
    granted boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated');
BEGIN
    -- The bookkeeping triggers write sync_tombstones, which clients may not write: they
    -- run as the owner for everyone (the owner's own writes are unchanged).
    EXECUTE format('ALTER FUNCTION sync_track() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
    -- The helpers run as the owner too, with a search path no caller can change.
    EXECUTE format('ALTER FUNCTION sync_key_of(text) SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION sync_root_access(text, text, text) '
                   'SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION sync_stored_owner(text, text) SET search_path = %I, pg_temp',
                   current_schema());

    FOR t IN
        SELECT s.table_name, s.pk_column, s.owner_column, s.share_root, s.share_column,
               (s.table_name = r.members_table) AS is_members
        FROM sync_tables s
        LEFT JOIN sync_roots r ON r.root_table = s.share_root
        ORDER BY s.table_name
    LOOP
        FOR p IN SELECT policyname FROM pg_policies
                 WHERE schemaname = current_schema() AND tablename = t.table_name
                   AND policyname LIKE 'sync\_%'
        LOOP
            EXECUTE format('DROP POLICY %I ON %I', p.policyname, t.table_name);
        END LOOP;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t.table_name);

        owner := format('%I = %s', t.owner_column, me);
        IF t.share_root IS NULL THEN
            -- Private: the owner alone.
            EXECUTE format('CREATE POLICY sync_owner ON %I FOR ALL USING (%s) WITH CHECK (%s)',
                           t.table_name, owner, owner);
        ELSIF t.share_column IS NULL THEN
            -- A root: seen by its owner and members, written by its owner.
            sees := format('%s OR sync_root_access(%L, %I::text, ''see'')',
                           owner, t.table_name, t.pk_column);
            EXECUTE format('CREATE POLICY sync_select ON %I FOR SELECT USING (%s)',
                           t.table_name, sees);
            EXECUTE format('CREATE POLICY sync_insert ON %I FOR INSERT WITH CHECK (%s)',
                           t.table_name, owner);
            EXECUTE format('CREATE POLICY sync_update ON %I FOR UPDATE USING (%s) '
                           'WITH CHECK (%s)', t.table_name, owner, owner);
            EXECUTE format('CREATE POLICY sync_delete ON %I FOR DELETE USING (%s)',
                           t.table_name, owner);
        ELSIF t.is_members THEN
            -- A members table: seen by whoever sees the root, written by the root's owner.
            sees := format('sync_root_access(%L, %I::text, ''see'')', t.share_root,
                           t.share_column);
            writes := format('sync_root_access(%L, %I::text, ''own'')', t.share_root,
                             t.share_column);
            EXECUTE format('CREATE POLICY sync_select ON %I FOR SELECT USING (%s)',
                           t.table_name, sees);
            EXECUTE format('CREATE POLICY sync_insert ON %I FOR INSERT WITH CHECK (%s)',
                           t.table_name, writes);
            EXECUTE format('CREATE POLICY sync_update ON %I FOR UPDATE USING (%s) '
                           'WITH CHECK (%s)', t.table_name, writes, writes);
            EXECUTE format('CREATE POLICY sync_delete ON %I FOR DELETE USING (%s)',
                           t.table_name, writes);
        ELSE
            -- Shared through a root: a row outside any root is its owner's alone; a row in a
            -- root is seen by whoever sees the root and written by its owner and writers,
            -- both as stored and as written (no moving a row into a root one may not write).
            -- A new row is the writer's own; an update keeps the stored creator (a WITH CHECK sees
            -- only the new row: sync_stored_owner reads the stored one).
            scope := format('%I', t.share_column);
            private := format('(%s IS NULL AND %s)', scope, owner);
            sees := format('%s OR (%s IS NOT NULL AND sync_root_access(%L, %s::text, ''see''))',
                           private, scope, t.share_root, scope);
            writes := format('%s OR (%s IS NOT NULL AND sync_root_access(%L, %s::text, ''write''))',
                             private, scope, t.share_root, scope);
            kept := format('%I::text = sync_stored_owner(%L, %I::text)',
                           t.owner_column, t.table_name, t.pk_column);
            EXECUTE format('CREATE POLICY sync_select ON %I FOR SELECT USING (%s)',
                           t.table_name, sees);
            EXECUTE format('CREATE POLICY sync_insert ON %I FOR INSERT WITH CHECK (%s AND (%s))',
                           t.table_name, owner, writes);
            EXECUTE format('CREATE POLICY sync_update ON %I FOR UPDATE USING (%s) '
                           'WITH CHECK (%s AND (%s))', t.table_name, writes, kept, writes);
            EXECUTE format('CREATE POLICY sync_delete ON %I FOR DELETE USING (%s)',
                           t.table_name, writes);
        END IF;

        IF granted THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO authenticated',
                           t.table_name);
        END IF;
    END LOOP;

    IF NOT granted THEN
        RAISE NOTICE 'sync policies: no role authenticated; policies made, nothing granted';
    END IF;
    -- The stand-in auth schema (ours only where we made it; Supabase grants its own).
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth'
               AND nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)) THEN
        FOREACH owner IN ARRAY ARRAY['authenticated', 'anon'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = owner) THEN
                EXECUTE format('GRANT USAGE ON SCHEMA auth TO %I', owner);
            END IF;
        END LOOP;
    END IF;
END
$$;

SELECT sync_share_policies();
