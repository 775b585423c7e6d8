-- How many keys were ever destroyed (cqrskit/_sealing.py, ReadKeys): the event store keeps
-- the keys its reads found and its appends made while this count stays the same, and a
-- stream read returns the count in its own snapshot, so that loading an aggregate with
-- sealed events takes no second query for their keys.
--
-- Counted by triggers, in the transaction that destroys the key, whoever runs it (a forget
-- through the event store or the key store, an UPDATE or DELETE by hand), at its COMMIT.
-- A tombstone inserted for a subject that never had a key destroys nothing and is not
-- counted.
CREATE TABLE IF NOT EXISTS cqrskit_keys_destroyed (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    count BIGINT NOT NULL
);
INSERT INTO cqrskit_keys_destroyed (id, count) VALUES (0, 0) ON CONFLICT (id) DO NOTHING;

CREATE OR REPLACE FUNCTION cqrskit_count_key_destroyed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cqrskit_keys_destroyed SET count = count + 1 WHERE id = 0;
    RETURN NULL;
END
$$;

-- Counted at COMMIT (deferred constraint triggers), once the transaction holds every key
-- row it touches: counted at each row, a transaction forgetting X then Y would hold the
-- count's row while it waits for Y's, and one forgetting Y would wait for the count while
-- holding Y (a deadlock). Taken last, the count's row lock waits on nothing but commits.
CREATE CONSTRAINT TRIGGER cqrskit_key_destroyed
    AFTER UPDATE OF key ON cqrskit_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.key IS NOT NULL AND NEW.key IS NULL)
    EXECUTE FUNCTION cqrskit_count_key_destroyed();

CREATE CONSTRAINT TRIGGER cqrskit_key_deleted
    AFTER DELETE ON cqrskit_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.key IS NOT NULL)
    EXECUTE FUNCTION cqrskit_count_key_destroyed();
