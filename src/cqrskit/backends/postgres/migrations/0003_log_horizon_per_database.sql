-- Only appenders to THIS database hold its readers back.
--
-- An advisory lock belongs to one database (pg_locks.database), and so does the append
-- mark of 0002. Counting marks of any database made an append in one database wait, to be
-- readable, for appends in flight in every other database of the server (seen under
-- concurrent test databases: a read right after an acknowledged append missed it). A
-- transaction appending to another database never writes a row here, so for this log it
-- is a bystander like any other: ignored. The rest of the proof is unchanged (see
-- cqrskit/store/postgres.py).

CREATE OR REPLACE FUNCTION cqrskit_log_horizon() RETURNS XID8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    snap pg_snapshot := pg_current_snapshot();
    bystanders BIGINT[];
    x XID8;
    this_db OID := (SELECT oid FROM pg_database WHERE datname = current_database());
BEGIN
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
