-- A log read in one round trip: the horizon, then the rows below it.
--
-- The proof in cqrskit/store/postgres.py needs the rows to be read with a snapshot taken
-- AFTER the horizon was computed. Two statements from the client give that; so does one
-- call of this function, because in READ COMMITTED every query that a VOLATILE PL/pgSQL
-- function runs takes a fresh snapshot: the RETURN QUERY below starts after
-- cqrskit_log_horizon() has returned. Under REPEATABLE READ or SERIALIZABLE every query of
-- the transaction shares one snapshot, older than the horizon: refused.

CREATE FUNCTION cqrskit_read_log(after BIGINT, max_rows INTEGER)
RETURNS TABLE (
    event_position BIGINT, stream_id TEXT, stream_version INTEGER, event_id TEXT, type TEXT,
    schema_version INTEGER, payload BYTEA, metadata BYTEA, recorded_at FLOAT8
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    horizon XID8;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'cqrskit_read_log needs READ COMMITTED (its second query needs a newer snapshot)';
    END IF;
    horizon := cqrskit_log_horizon();
    RETURN QUERY
        SELECT e.position, e.stream_id, e.stream_version, e.event_id::text, e.type,
               e.schema_version, e.payload, e.metadata,
               extract(epoch FROM e.recorded_at)::float8
        FROM cqrskit_events e
        WHERE e.txid < horizon AND e.position > after
        ORDER BY e.position
        LIMIT max_rows;
END
$$;
