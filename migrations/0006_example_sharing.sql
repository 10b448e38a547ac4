-- The example app's sharing: members see a project, its todos and its member list;
-- editors write its todos; only the owner renames or deletes it and manages its members.
CREATE TABLE IF NOT EXISTS project_members (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id),
    user_id    uuid NOT NULL,
    role       text NOT NULL CHECK (role IN ('editor', 'viewer')),
    updated_at timestamptz NOT NULL,
    UNIQUE (project_id, user_id)
);

SELECT sync_enable('project_members', 'id', 'user_id');
SELECT sync_share_root('projects', 'project_members', 'project_id', 'user_id', 'role',
                       ARRAY['editor']);
SELECT sync_share('todos', 'project_id');
