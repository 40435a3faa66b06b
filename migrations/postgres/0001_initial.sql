-- Latchkey schema, PostgreSQL flavour. The SQLite tree has the same version names.
-- Times are Unix seconds; JSON is stored as text.

CREATE TABLE users (
    id               BIGSERIAL PRIMARY KEY,
    email            TEXT    NOT NULL UNIQUE,
    first_name       TEXT,
    last_name        TEXT,
    password_hash    TEXT,
    sso_source       TEXT,
    sso_subject      TEXT,
    is_active        BOOLEAN NOT NULL DEFAULT TRUE,
    is_superuser     BOOLEAN NOT NULL DEFAULT FALSE,
    login_attributes TEXT    NOT NULL DEFAULT '{}',
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    last_login       BIGINT
);

CREATE TABLE groups (
    id   BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO groups (id, name) VALUES (1, 'All Users'), (2, 'Administrators');

CREATE TABLE memberships (
    id       BIGSERIAL PRIMARY KEY,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    UNIQUE (user_id, group_id)
);
CREATE INDEX memberships_group ON memberships (group_id);

CREATE TABLE sessions (
    id_hash      TEXT   PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    auth_method  TEXT   NOT NULL,
    ip           TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE replay_records (
    token_key  TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX replay_records_expires ON replay_records (expires_at);

CREATE TABLE audit_events (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    outcome    TEXT   NOT NULL,
    reason     TEXT,
    actor_id   BIGINT,
    user_id    BIGINT,
    email      TEXT,
    ip         TEXT,
    request_id TEXT,
    details    TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);

CREATE TABLE login_failures (
    id      BIGSERIAL PRIMARY KEY,
    bucket  TEXT   NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX login_failures_bucket ON login_failures (bucket, at);

CREATE TABLE setup_tokens (
    token_hash TEXT   PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- The built-in groups were inserted with explicit ids: move the sequence past them.
SELECT setval(pg_get_serial_sequence('groups', 'id'), 2);
