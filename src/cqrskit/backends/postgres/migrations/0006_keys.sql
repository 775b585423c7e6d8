-- Keys per data subject for crypto-shredding (cqrskit/backends/postgres/keys.py): one row
-- per subject ever keyed or forgotten. A forgotten subject keeps its row as a tombstone,
-- key NULL and forgotten_at set, so that it is never given a new key.
CREATE TABLE IF NOT EXISTS cqrskit_keys (
    subject      TEXT PRIMARY KEY,
    key          BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    forgotten_at TIMESTAMPTZ,
    CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
);
