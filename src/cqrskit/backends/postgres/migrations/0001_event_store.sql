-- The event log and its snapshots. Why each event carries the id of the transaction that
-- wrote it, and why positions are allocated by cqrskit_allocate_positions(): see the proof
-- in cqrskit/store/postgres.py (gap-free reading without a table lock).

CREATE SEQUENCE cqrskit_events_position_seq AS BIGINT NO CYCLE;

CREATE TABLE cqrskit_events (
    -- From cqrskit_allocate_positions(): increases with the writing transaction's id.
    position        BIGINT PRIMARY KEY,
    -- The writing transaction's id: a reader only returns rows whose transaction is
    -- older than every transaction still running (see read_all).
    txid            XID8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       TEXT NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_id        UUID NOT NULL,
    type            TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         BYTEA NOT NULL,
    metadata        BYTEA NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Optimistic concurrency: two appends that read the same stream version collide
    -- here; the second waits for the first to commit, then fails (a ConcurrencyError).
    -- Also the index of read_stream and of the stream-version lookup.
    CONSTRAINT cqrskit_events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT cqrskit_events_event_id_key UNIQUE (event_id)
);

ALTER SEQUENCE cqrskit_events_position_seq OWNED BY cqrskit_events.position;

-- Gives the calling transaction its id and n consecutive positions, both inside one short
-- critical section (a session-level advisory lock held for microseconds, released before
-- returning: NOT until commit, so commits, and their fsyncs, still run in parallel and
-- group-commit). Consequence: between two append transactions, the one with the smaller
-- id has all the smaller positions, so (transaction id) order and position order agree.
CREATE FUNCTION cqrskit_allocate_positions(n INTEGER) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    first BIGINT;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        -- An id taken before the critical section could be older than positions
        -- allocated meanwhile by others: the ordering argument would not hold.
        RAISE EXCEPTION 'cqrskit_allocate_positions must be the first write of its transaction';
    END IF;
    PERFORM pg_advisory_lock(1668379251, 1);  -- (classid "cqrs", 1): the allocation lock
    PERFORM pg_current_xact_id();              -- assigns this transaction's id, in order
    first := nextval('cqrskit_events_position_seq');
    IF n > 1 THEN
        PERFORM setval('cqrskit_events_position_seq', first + n - 1);
    END IF;
    PERFORM pg_advisory_unlock(1668379251, 1);
    RETURN first;
END
$$;

CREATE TABLE cqrskit_snapshots (
    stream_id   TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    state       BYTEA NOT NULL
);
