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

-- The horizon, unchanged (see 0002 and 0003), except for a shortcut taken first: when
-- the snapshot shows no transaction running anywhere on the server, nothing can hold a
-- reader back and the horizon is xmax(S1), which is what the loop below returns in that
-- case anyway; the lock table is not read. A reader of a quiet log (a live projection
-- between commits) mostly finds it so.
CREATE OR REPLACE FUNCTION cqrskit_log_horizon() RETURNS XID8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    snap pg_snapshot := pg_current_snapshot();
    bystanders BIGINT[];
    x XID8;
    this_db OID;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_snapshot_xip(snap)) THEN
        RETURN pg_snapshot_xmax(snap);
    END IF;
    this_db := (SELECT oid FROM pg_database WHERE datname = current_database());
    -- ONE read of the lock table (consistent within one pg_locks call), after the snapshot:
    -- transactions with an id and without the append mark, as 32-bit ids (pg_locks shows
    -- xid, not xid8).
    WITH locks AS MATERIALIZED (
        SELECT locktype, database, virtualtransaction, transactionid, classid, objid, objsubid,
               mode
        FROM pg_locks WHERE granted AND locktype IN ('transactionid', 'advisory')
    )
    SELECT coalesce(array_agg(t.transactionid::text::bigint), '{}') INTO bystanders
    FROM locks t
    WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
      AND NOT EXISTS (
          SELECT 1 FROM locks a
          WHERE a.locktype = 'advisory' AND a.virtualtransaction = t.virtualtransaction
            AND a.database = this_db
            AND a.classid = 1668379251 AND a.objid = 2 AND a.objsubid = 2
      );
    FOR x IN SELECT xip FROM pg_snapshot_xip(snap) AS xip ORDER BY 1 LOOP
        -- Checked after the lock read. Ended: whatever it wrote is in the caller's next
        -- snapshot. Still running: it was running at the lock read, so the read tells
        -- whether it holds the mark; without it (and with an id) it never appends.
        CONTINUE WHEN pg_xact_status(x) IS DISTINCT FROM 'in progress';
        CONTINUE WHEN x::text::bigint % 4294967296 = ANY (bystanders);
        RETURN x;  -- the oldest running transaction that is, or may be, an appender
    END LOOP;
    RETURN pg_snapshot_xmax(snap);
END
$$;
