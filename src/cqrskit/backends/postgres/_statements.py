"""The SQL of appends to the PostgreSQL log, and the parameters it takes
(:class:`._append.Appender` runs it).

One statement checks a stream's version, allocates the positions and inserts the events
(rule 1 of the proof in :mod:`.store`: the allocation is the transaction's first write);
the first keys of the events' data subjects can ride in it. Several streams' appends read
their versions first, then allocate once and insert every row with one statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APPEND",
    "APPEND_ONE",
    "INSERT_ROWS",
    "ROW_ARRAYS",
    "VERSION",
    "VERSIONS",
    "append_params",
    "append_statement",
]

VERSION = "SELECT coalesce(max(stream_version), 0) FROM cqrskit_events WHERE stream_id = %s"

# One statement checks the expected version, allocates positions and inserts: without
# inline projections it is the whole transaction (autocommit, one round trip). ``ok`` is
# empty when the stream is not at the wanted version (NULL: any version), and then
# nothing is allocated nor inserted. The allocation runs (and releases its lock) when the
# MATERIALIZED CTE is first read, before the first row is inserted: a wait on the
# stream-version unique index happens outside the critical section.
_ALLOCATE = """
WITH cur AS MATERIALIZED (
    SELECT coalesce(max(stream_version), 0) AS v FROM cqrskit_events WHERE stream_id = %(stream)s
), ok AS MATERIALIZED (
    SELECT v FROM cur WHERE %(wanted)s::integer IS NULL OR v = %(wanted)s::integer
), alloc AS MATERIALIZED (
    SELECT ok.v, cqrskit_allocate_positions({n}) AS first FROM ok
)"""
_INSERT_MANY = """
INSERT INTO cqrskit_events
    (position, stream_id, stream_version, event_id, type, schema_version, payload, metadata)
SELECT alloc.first + u.n - 1, %(stream)s, alloc.v + u.n, u.event_id, u.type,
       u.schema_version, u.payload, %(meta)s
FROM alloc, unnest(%(ids)s::uuid[], %(types)s::text[], %(schemas)s::int[], %(payloads)s::bytea[])
     WITH ORDINALITY AS u(event_id, type, schema_version, payload, n)
RETURNING position, stream_version, extract(epoch FROM recorded_at)::float8
"""
# The same for one event, with scalar parameters: adapting four one-element arrays cost
# more of a one-event append's client time than the rest of the statement (profiled: the
# array dumpers' type lookups on every call).
_INSERT_ONE = """
INSERT INTO cqrskit_events
    (position, stream_id, stream_version, event_id, type, schema_version, payload, metadata)
SELECT alloc.first, %(stream)s, alloc.v + 1, %(id)s::uuid, %(type)s, %(schema)s::integer,
       %(payload)s::bytea, %(meta)s
FROM alloc
RETURNING position, stream_version, extract(epoch FROM recorded_at)::float8
"""
# The first keys of the append's data subjects (cqrskit.personal), inserted by the append
# statement itself: one round trip, as a plain append, where a transaction of its own
# (BEGIN, the append, the key rows, COMMIT) cost four times the client CPU (measured).
# Reading ``alloc`` orders the key rows after the allocation, which must be the
# transaction's first write, whichever part PostgreSQL runs first, and inserts none when
# the stream is not at the wanted version. A subject keyed meanwhile fails the whole
# statement on ``cqrskit_keys_pkey``: nothing is stored, and the store seals again.
_KEY_ONE = """, made_key AS (
    INSERT INTO cqrskit_keys (subject, key) SELECT %(subject)s, %(key)s::bytea FROM alloc
)"""
_KEYS = """, made_keys AS (
    INSERT INTO cqrskit_keys (subject, key) SELECT k.subject, k.key
    FROM alloc, unnest(%(subjects)s::text[], %(keys)s::bytea[]) AS k(subject, key)
)"""
_KEY_ROWS = ("", _KEY_ONE, _KEYS)
"""The key rows' CTE by the number of keys made: none, one, several."""
_STATEMENTS = {
    (one, made): _ALLOCATE.format(n="1" if one else "%(n)s")
    + key_rows
    + (_INSERT_ONE if one else _INSERT_MANY)
    for one in (True, False)
    for made, key_rows in enumerate(_KEY_ROWS)
}
"""The append statement by (one event?, keys made: 0, 1, 2 for several)."""
APPEND = _STATEMENTS[False, 0]
APPEND_ONE = _STATEMENTS[True, 0]


# Each stream's last version from the end of its (stream_id, stream_version) index: a
# GROUP BY over "stream_id = ANY(...)" scanned every event of the streams (or, without
# statistics, the whole table in parallel): 92 ms on a 1M-event log against 3 ms.
VERSIONS = (
    "SELECT s.stream_id, v.version FROM unnest(%s::text[]) AS s(stream_id)"
    " CROSS JOIN LATERAL (SELECT e.stream_version AS version FROM cqrskit_events e"
    " WHERE e.stream_id = s.stream_id ORDER BY e.stream_version DESC LIMIT 1) v"
)
ROW_ARRAYS = ("positions", "streams", "versions", "ids", "types", "schemas", "payloads")
INSERT_ROWS = """
INSERT INTO cqrskit_events
    (position, stream_id, stream_version, event_id, type, schema_version, payload, metadata)
SELECT u.position, u.stream_id, u.stream_version, u.event_id, u.type, u.schema_version,
       u.payload, %(meta)s
FROM unnest(%(positions)s::bigint[], %(streams)s::text[], %(versions)s::int[],
            %(ids)s::uuid[], %(types)s::text[], %(schemas)s::int[], %(payloads)s::bytea[])
     AS u(position, stream_id, stream_version, event_id, type, schema_version, payload)
RETURNING position, extract(epoch FROM recorded_at)::float8
"""


def append_statement(
    stream_id: str,
    wanted: int | None,
    ids: list[str],
    encoded: list[tuple[str, int, bytes]],
    meta: bytes,
    keys: Mapping[str, bytes] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The append statement for these events and its parameters: :data:`APPEND_ONE` for
    one event, else :data:`APPEND`; with ``keys``, the first keys of data subjects to
    insert with them (``_KEY_ONE``, ``_KEYS``)."""
    if len(encoded) == 1:
        ((type_name, schema, payload),) = encoded
        params: dict[str, Any] = {"stream": stream_id, "wanted": wanted, "meta": meta}
        params.update(id=ids[0], type=type_name, schema=schema, payload=payload)
    else:
        params = append_params(stream_id, wanted, ids, encoded, meta)
    made = 0
    if keys:
        made = min(len(keys), 2)
        if made == 1:
            ((params["subject"], params["key"]),) = keys.items()
        else:
            params.update(subjects=list(keys), keys=list(keys.values()))
    return _STATEMENTS[len(encoded) == 1, made], params


def append_params(
    stream_id: str,
    wanted: int | None,
    ids: list[str],
    encoded: list[tuple[str, int, bytes]],
    meta: bytes,
) -> dict[str, Any]:
    """The parameters of :data:`APPEND`."""
    return {
        "n": len(encoded),
        "stream": stream_id,
        "wanted": wanted,
        "meta": meta,
        "ids": ids,
        "types": [name for name, _, _ in encoded],
        "schemas": [version for _, version, _ in encoded],
        "payloads": [payload for _, _, payload in encoded],
    }
