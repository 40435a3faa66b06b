-- Session ids are stored as the 32 bytes of their SHA-256 instead of 64 hex characters: the
-- key of the sessions index is half as long, so each of its pages holds about twice as many
-- (docs/performance.md). Sessions issued before keep working. SQLite cannot change a column's
-- type, hence the copy.

CREATE TABLE sessions_binary (
    id_hash      BLOB   NOT NULL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    auth_method  TEXT   NOT NULL,
    ip           TEXT,
    user_agent   TEXT
);
INSERT INTO sessions_binary (id_hash, user_id, created_at, expires_at, last_seen_at, auth_method, ip, user_agent)
    SELECT unhex(id_hash), user_id, created_at, expires_at, last_seen_at, auth_method, ip, user_agent
    FROM sessions WHERE unhex(id_hash) IS NOT NULL;
DROP TABLE sessions;
ALTER TABLE sessions_binary RENAME TO sessions;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
