-- Readers are held back only by in-flight APPENDS, not by every transaction on the server.
--
-- 0001 let readers see rows of transactions older than the snapshot's xmin: correct, but
-- any long write transaction anywhere on the server (another database, a read-model batch,
-- a bulk load) held every reader back. Here an appending transaction is marked by a shared
-- transaction-level advisory lock, taken BEFORE it gets its transaction id, and
-- cqrskit_log_horizon() ignores running transactions that provably are not appenders.
-- See the proof in cqrskit/store/postgres.py.

CREATE OR REPLACE FUNCTION cqrskit_allocate_positions(n INTEGER) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    first BIGINT;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        -- An id taken before the critical section could be older than positions
        -- allocated meanwhile by others: the ordering argument would not hold. This also
        -- makes "has an id but no append mark" mean "will never append".
        RAISE EXCEPTION 'cqrskit_allocate_positions must be the first write of its transaction';
    END IF;
    -- The append mark: shared (appenders never wait for each other), held until commit,
    -- taken before this transaction has an id.
    PERFORM pg_advisory_xact_lock_shared(1668379251, 2);
    PERFORM pg_advisory_lock(1668379251, 1);  -- the allocation lock, held for microseconds
    PERFORM pg_current_xact_id();              -- assigns this transaction's id, in order
    first := nextval('cqrskit_events_position_seq');
    IF n > 1 THEN
        PERFORM setval('cqrskit_events_position_seq', first + n - 1);
    END IF;
    PERFORM pg_advisory_unlock(1668379251, 1);
    RETURN first;
END
$$;

-- Rows with txid < cqrskit_log_horizon() are final: every transaction that could add a row
-- below it has ended by the time the function returns. The caller reads the rows in a LATER
-- statement (a newer snapshot, which sees all of them): see cqrskit/store/postgres.py.
CREATE FUNCTION cqrskit_log_horizon() RETURNS XID8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    snap pg_snapshot := pg_current_snapshot();
    bystanders BIGINT[];
    x XID8;
BEGIN
    -- ONE read of the lock table (consistent within one pg_locks call), after the snapshot:
    -- transactions with an id and without the append mark, as 32-bit ids (pg_locks shows
    -- xid, not xid8).
    WITH locks AS MATERIALIZED (
        SELECT locktype, virtualtransaction, transactionid, classid, objid, objsubid, mode
        FROM pg_locks WHERE granted AND locktype IN ('transactionid', 'advisory')
    )
    SELECT coalesce(array_agg(t.transactionid::text::bigint), '{}') INTO bystanders
    FROM locks t
    WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
      AND NOT EXISTS (
          SELECT 1 FROM locks a
          WHERE a.locktype = 'advisory' AND a.virtualtransaction = t.virtualtransaction
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
