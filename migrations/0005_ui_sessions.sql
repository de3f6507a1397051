-- otelephant schema, version 5: the web UI's sign-in sessions.
--
-- Signing in with the query token gives the browser a random session id in a cookie, never the
-- token. Only the id's SHA-256 is kept here (someone who reads this table cannot take over a
-- session), with the digest of the token it was given for, so that a session ends when its
-- token is no longer accepted (rotation), and when it expires. Signing out deletes the row. The
-- table is small and plain, shared by every replica (on Citus, a local table of the
-- coordinator).
CREATE TABLE ui_sessions (
    id_digest         bytea  PRIMARY KEY,
    token_digest      bytea  NOT NULL,
    expires_unix_nano bigint NOT NULL
);
