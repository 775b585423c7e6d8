-- Idempotency keys of commands (cqrskit/idempotency.py): stored in the transaction of the
-- command's events, with its answer; a repeat of the key is answered from here.
CREATE TABLE IF NOT EXISTS cqrskit_idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    answer      TEXT NOT NULL,
    position    BIGINT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS cqrskit_idempotency_expiry ON cqrskit_idempotency (expires_at);
