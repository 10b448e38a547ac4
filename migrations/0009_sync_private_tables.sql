-- The sync server's own tables are not for clients. On Supabase, default privileges give
-- `anon` and `authenticated` every new table of the public schema, so supabase-js could
-- read sync_tombstones (every user's deleted keys) or rewrite sync_tables (whose column
-- says who owns a row). sync_lock_internal() revokes what those roles were given and
-- turns on row-level security with no policy, so even a later grant shows them nothing.
-- The tables' owner (the sync server, the migrations, the SECURITY DEFINER triggers) is
-- not subject to it. Idempotent; no superuser needed.

CREATE OR REPLACE FUNCTION sync_lock_internal() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t    text;
    role text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sync_tables', 'sync_tombstones', 'sync_roots', 'sync_grants',
                             'sync_schema', 'sync_migrations'] LOOP
        CONTINUE WHEN to_regclass(t) IS NULL;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        FOREACH role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
                EXECUTE format('REVOKE ALL ON %I FROM %I', t, role);
            END IF;
        END LOOP;
    END LOOP;
END
$$;

SELECT sync_lock_internal();
