"""The checkpoint saver's own SQL, beside the stock saver's (langgraph-checkpoint-postgres keeps its SQL as
named constants in one module too): run rollback, payload references, thread copy, sealing delta threads,
and the one-query ancestor walk of delta-channel history."""

from __future__ import annotations

# The service puts each run's ID in its checkpoints' metadata (configurable.run_id), as the Agent Server does.
DELETE_RUN_WRITES = """
    DELETE FROM checkpoint_writes w USING checkpoints c
    WHERE c.metadata->>'run_id' = ANY(%s) AND w.thread_id = c.thread_id
      AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
"""
DELETE_RUN_CHECKPOINTS = "DELETE FROM checkpoints WHERE metadata->>'run_id' = ANY(%s)"
# Every payload reference a thread's rows still hold (the hybrid store's garbage collection after a prune).
SELECT_PAYLOAD_REFERENCES = """
    SELECT blob FROM checkpoint_blobs WHERE thread_id = %(thread_id)s AND type = %(type)s
    UNION ALL
    SELECT blob FROM checkpoint_writes WHERE thread_id = %(thread_id)s AND type = %(type)s
"""
# A thread copy: every checkpoint, blob and write, in one snapshot of the source (REPEATABLE READ).
COPY_THREAD = (
    """
    INSERT INTO checkpoints
        (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata
    FROM checkpoints WHERE thread_id = %(source)s
    """,
    """
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(target)s, checkpoint_ns, channel, version, type, blob FROM checkpoint_blobs WHERE thread_id = %(source)s
    """,
    """
    INSERT INTO checkpoint_writes
        (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
    FROM checkpoint_writes WHERE thread_id = %(source)s
    """,
)
# Sealing a delta thread's latest checkpoint: its channel now has a stored value (the snapshot blob at
# its version), and the count of updates since the last snapshot starts again.
MARK_SNAPSHOT = """
    UPDATE checkpoints
    SET checkpoint = jsonb_set(checkpoint, array['channel_values', %s], 'true'),
        metadata = metadata #- array['counters_since_delta_snapshot', %s]
    WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s
"""
# Delta channels in subgraph namespaces: their reducers are not the root graph's, so they stay unpruned.
SELECT_SUBGRAPH_DELTA_THREADS = """
    SELECT DISTINCT thread_id FROM checkpoints
    WHERE thread_id = ANY(%s) AND checkpoint_ns <> ''
      AND (metadata ? 'counters_since_delta_snapshot' OR metadata ? 'delta_writes_versioned')
"""
SELECT_LATEST_WHERE = "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"

# A checkpoint holds a stored value for channel `ch`: a blob (a snapshot, or a plain value written
# before the channel became a DeltaChannel) or an inline primitive. The stock saver's test, per row.
_SEEDED = """(
    EXISTS (SELECT 1 FROM checkpoint_blobs b
            WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = %(checkpoint_ns)s AND b.channel = ch
              AND b.version = w.versions ->> ch AND b.type <> 'empty')
    OR coalesce(jsonb_typeof(w.inline_values -> ch), 'null') <> 'null'
)"""
# The ancestors of a checkpoint ('c' rows, `depth` 0 for its parent), each with the channels still
# looking for their stored value (`pending`) and those that found it there (`seeds`: version, in a
# blob?, inline value), and their writes to those channels ('w' rows). The stock saver reads pages of
# 1024 checkpoints to walk the same chain, then the writes in a second query; this is one query.
SELECT_DELTA_WALK = f"""
WITH RECURSIVE walk AS (
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint -> 'channel_versions' AS versions,
           c.checkpoint -> 'channel_values' AS inline_values, %(channels)s::text[] AS pending, 0 AS depth
    FROM checkpoints c
    WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = %(checkpoint_ns)s AND c.checkpoint_id = (
        SELECT parent_checkpoint_id FROM checkpoints
        WHERE thread_id = %(thread_id)s AND checkpoint_ns = %(checkpoint_ns)s AND checkpoint_id = %(checkpoint_id)s)
  UNION ALL
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint -> 'channel_versions',
           c.checkpoint -> 'channel_values', left_over.pending, w.depth + 1
    FROM walk w
    CROSS JOIN LATERAL (SELECT array(SELECT ch FROM unnest(w.pending) ch WHERE NOT {_SEEDED}) AS pending) left_over
    -- LATERAL ... LIMIT 1: one primary-key lookup per step (a plain join lets the planner scan
    -- the whole thread at every step when a young table's statistics say it is tiny).
    CROSS JOIN LATERAL (
        SELECT * FROM checkpoints p
        WHERE p.thread_id = %(thread_id)s AND p.checkpoint_ns = %(checkpoint_ns)s
          AND p.checkpoint_id = w.parent_checkpoint_id
        LIMIT 1
    ) c
    -- Nor past `stop`: the target of an earlier walk, whose own ancestors are known (ChainCache).
    WHERE cardinality(left_over.pending) > 0 AND w.checkpoint_id IS DISTINCT FROM %(stop)s::text
),
steps AS MATERIALIZED (
    SELECT w.checkpoint_id, w.pending, w.depth,
           (SELECT jsonb_object_agg(ch, jsonb_build_array(w.versions ->> ch, EXISTS (
                      SELECT 1 FROM checkpoint_blobs b
                      WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = %(checkpoint_ns)s AND b.channel = ch
                        AND b.version = w.versions ->> ch AND b.type <> 'empty'), w.inline_values -> ch))
            FROM unnest(w.pending) ch WHERE {_SEEDED}) AS seeds
    FROM walk w
)
SELECT 'c'::text AS _kind, s.checkpoint_id, NULL::text AS channel, NULL::text AS type, NULL::bytea AS blob,
       NULL::text AS task_id, NULL::text AS task_path, NULL::int AS idx, s.pending, s.seeds, s.depth
FROM steps s
UNION ALL
-- Each step's writes to the channels it is on the chain of: the stock saver's second query, joined.
SELECT 'w', cw.checkpoint_id, cw.channel, cw.type, cw.blob, cw.task_id, cw.task_path, cw.idx, NULL, NULL, NULL
FROM steps s CROSS JOIN LATERAL unnest(s.pending) ch
CROSS JOIN LATERAL (
    SELECT * FROM checkpoint_writes x
    WHERE x.thread_id = %(thread_id)s AND x.checkpoint_ns = %(checkpoint_ns)s
      AND x.checkpoint_id = s.checkpoint_id AND x.channel = ch
    OFFSET 0
) cw
"""
