-- The example app (a todo list) that ships with the sync server; tests and the demo use it.
-- On Supabase, user_id would also reference auth.users(id).

CREATE TABLE IF NOT EXISTS projects (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    name       text NOT NULL,
    color      text,
    updated_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS todos (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    project_id uuid REFERENCES projects (id),
    title      text NOT NULL,
    done       boolean NOT NULL DEFAULT false,
    due_at     timestamptz,
    position   double precision,
    tags       jsonb,
    updated_at timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS todos_project_id ON todos (project_id);

CREATE TABLE IF NOT EXISTS user_settings (
    user_id    uuid PRIMARY KEY,
    theme      text,
    language   text,
    updated_at timestamptz NOT NULL
);

SELECT sync_enable('projects', 'id', 'user_id');
SELECT sync_enable('todos', 'id', 'user_id');
SELECT sync_enable('user_settings', 'user_id', 'user_id');
