-- The sessions of one user are found through a chain instead of an index by user, as the
-- audit events are since 0006.
--
-- The `sessions_user` index put each new session next to the same user's older ones, so every
-- returning login changed one page of it per user in the batch, a page the commit then wrote
-- to the log and a checkpoint later copied. Instead each session names the same user's
-- previous one (`user_prev`, 0 for the first) and each user names their newest
-- (`users.last_session_id`), both on pages a login changes anyway: the new session's, which
-- is the table's last, and the user's own row. Ending all of a user's sessions follows the
-- chain from the newest, a look-up by id for each; ending one session (signing out, expiry)
-- first links its newer neighbour to its older one, so the chain always holds every session
-- of the user.
--
-- The links need ids that never change: SQLite may renumber the implicit row ids of a table
-- without an `INTEGER PRIMARY KEY` when the file is vacuumed. Hence the copy into a table
-- with one; the stored keys stay as they are, so nobody is signed out by the upgrade.
CREATE TABLE sessions_chained (
    id           INTEGER PRIMARY KEY,
    id_hash      BLOB   NOT NULL UNIQUE,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_prev    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    auth_method  TEXT   NOT NULL,
    ip           TEXT,
    user_agent   TEXT
);
INSERT INTO sessions_chained (id, id_hash, user_id, user_prev, created_at, expires_at,
                              last_seen_at, auth_method, ip, user_agent)
    SELECT rowid, id_hash, user_id,
           COALESCE(lag(rowid) OVER (PARTITION BY user_id ORDER BY rowid), 0),
           created_at, expires_at, last_seen_at, auth_method, ip, user_agent
    FROM sessions ORDER BY rowid;
DROP TABLE sessions;
ALTER TABLE sessions_chained RENAME TO sessions;
CREATE INDEX sessions_expires ON sessions (expires_at);

ALTER TABLE users ADD COLUMN last_session_id BIGINT;
UPDATE users SET last_session_id = newest.id
    FROM (SELECT user_id, max(id) AS id FROM sessions GROUP BY user_id) AS newest
    WHERE users.id = newest.user_id;
