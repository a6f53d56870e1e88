"""The runs' SQL: the service_runs table and its migrations, the admission and finish functions, and every
statement on it. Statements are named verb first for what they do (SELECT_, INSERT_, UPDATE_, DELETE_,
LOCK_, COUNT_, or the run operation they are: ADMIT_RUN, CLAIM_RUN, FINISH_RUN...); PL/pgSQL functions end
in _FUNCTION; schema changes are MIGRATIONS."""

from __future__ import annotations

# LISTEN/NOTIFY channel; the payload names what changed (see bus.py).
CHANNEL = "service_runs"

# Run admission as one statement: the thread's (and user's) lock, the thread's touch, the multitask and
# per-user checks and the insert, in one round trip and one server-side transaction. Each statement in a
# PL/pgSQL function takes a fresh snapshot, so every check after the lock sees what committed before it.
# A run on an idle thread with nothing claimable queued is inserted already claimed by `p_owner` (when
# given): the creating replica executes it at once, with no claim query and no notification.
# Refusals are errors with the SQLSTATEs below; 'busy' hands an interrupt/rollback on a busy thread to
# RunStore.create's slower path, which cancels what is in flight in the same transaction as the insert.
ADMIT_RUN_FUNCTION = """
CREATE OR REPLACE FUNCTION service_admit_run(
    p_run_id uuid, p_thread_id text, p_user_id text, p_assistant_id text, p_strategy text, p_kwargs jsonb,
    p_metadata jsonb, p_temporary boolean, p_after_seconds float8, p_max_user_runs integer, p_stamp jsonb,
    p_owner text, p_lease_seconds float8, p_watched boolean, p_streamed boolean
) RETURNS TABLE (
    run_id uuid, thread_id text, user_id text, assistant_id text, status text, multitask_strategy text, kwargs jsonb,
    metadata jsonb, output jsonb, error jsonb, temporary boolean, created_at timestamptz, updated_at timestamptz,
    started_at timestamptz, ended_at timestamptz, attempt integer, cancel_reason text, watched boolean,
    streamed boolean, latest_checkpoint_id text, latest_checkpoint_parent text, latest_checkpoint_writes bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    busy boolean;
    active bigint;
    claim boolean;
    joined boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('service_runs'), hashtext(p_thread_id));
    IF p_max_user_runs IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('service_runs/user'), hashtext(p_user_id));
    END IF;
    busy := EXISTS (
        SELECT 1 FROM service_runs WHERE thread_id = p_thread_id AND status IN ('pending', 'running')
    );
    IF p_stamp IS NOT NULL THEN
        -- The stamp's metadata merges into the thread's; on an idle thread its 'config' (the assistant's and
        -- the request's) merges into the thread's config as the Agent Server merges it: the assistant's, the
        -- thread's, the request's, with the assistants' configurable alone (the request's stays the run's).
        UPDATE service_threads t SET metadata = t.metadata || (p_stamp - 'config'), updated_at = now(),
            config = CASE WHEN busy OR NOT p_stamp ? 'config' THEN t.config ELSE
                COALESCE(p_stamp #> '{config,assistant}', '{}') || t.config || COALESCE(p_stamp #> '{config,run}', '{}')
                || jsonb_build_object('configurable', COALESCE(p_stamp #> '{config,assistant,configurable}', '{}')
                    || COALESCE(t.config -> 'configurable', '{}')) END
        WHERE t.thread_id = p_thread_id AND t.user_id = p_user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'thread not found' USING ERRCODE = 'SR404';
        END IF;
    END IF;
    IF busy AND p_strategy = 'reject' THEN
        RAISE EXCEPTION 'thread busy' USING ERRCODE = 'SR409';
    ELSIF busy AND p_strategy <> 'enqueue' THEN
        RAISE EXCEPTION 'thread busy' USING ERRCODE = 'SRBSY';
    END IF;
    IF p_max_user_runs IS NOT NULL THEN
        SELECT count(*) INTO active FROM service_runs WHERE user_id = p_user_id AND status IN ('pending', 'running');
        IF active >= p_max_user_runs THEN
            RAISE EXCEPTION '%', active USING ERRCODE = 'SR429';
        END IF;
    END IF;
    -- Claimable runs already queued go first: a new run does not overtake them.
    claim := p_owner IS NOT NULL AND NOT busy AND p_after_seconds = 0 AND NOT EXISTS (
        SELECT 1 FROM service_runs q WHERE q.status = 'pending' AND q.not_before <= now()
          AND NOT EXISTS (SELECT 1 FROM service_runs x WHERE x.thread_id = q.thread_id AND x.status = 'running')
    );
    IF NOT claim THEN
        PERFORM pg_notify('service_runs', 'queue');
    END IF;
    -- A thread stream is open: the run's events become rows from the first, and its readers hear of it.
    joined := EXISTS (SELECT 1 FROM service_thread_streams s WHERE s.thread_id = p_thread_id AND s.until > now());
    IF joined THEN
        PERFORM pg_notify('service_runs', 'thread:' || p_thread_id);
    END IF;
    RETURN QUERY INSERT INTO service_runs AS r (run_id, thread_id, user_id, assistant_id, multitask_strategy, kwargs,
        metadata, temporary, not_before, status, attempt, lease_owner, lease_expires_at, started_at, watched, streamed)
    VALUES (p_run_id, p_thread_id, p_user_id, p_assistant_id, p_strategy, p_kwargs,
        -- As the Agent Server: the thread's metadata under the run's (RUN_METADATA).
        COALESCE((SELECT t.metadata FROM service_threads t WHERE t.thread_id = p_thread_id), '{}') || p_metadata,
        p_temporary, now() + make_interval(secs => p_after_seconds),
        CASE WHEN claim THEN 'running' ELSE 'pending' END, CASE WHEN claim THEN 1 ELSE 0 END,
        CASE WHEN claim THEN p_owner END,
        CASE WHEN claim THEN now() + make_interval(secs => p_lease_seconds) END,
        CASE WHEN claim THEN clock_timestamp() END,
        p_watched AND NOT claim, (p_streamed AND NOT claim) OR joined)
    RETURNING r.run_id, r.thread_id, r.user_id, r.assistant_id, r.status, r.multitask_strategy, r.kwargs, r.metadata,
        r.output, r.error, r.temporary, r.created_at, r.updated_at, r.started_at, r.ended_at, r.attempt,
        r.cancel_reason, r.watched, r.streamed,
        -- As a claim reads it: the thread's newest checkpoint validates this replica's cached copy.
        CASE WHEN claim THEN (SELECT c.checkpoint_id FROM checkpoints c WHERE c.thread_id = p_thread_id
            AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1) END,
        CASE WHEN claim THEN (SELECT c.parent_checkpoint_id FROM checkpoints c WHERE c.thread_id = p_thread_id
            AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1) END,
        CASE WHEN claim THEN (SELECT count(*) FROM checkpoint_writes w WHERE w.thread_id = p_thread_id
            AND w.checkpoint_ns = '' AND w.checkpoint_id = (SELECT c.checkpoint_id FROM checkpoints c
                WHERE c.thread_id = p_thread_id AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1)) END;
END $$
"""
# The end of a run as one statement: its status and output; its own notification only when someone on
# another replica watches it; and the claimers woken only when its thread has runs queued behind it.
# Under the thread's lock (as run creation), a run enqueued meanwhile is either seen here or created
# after the finish; when the lock is busy (a creation or a sweep holds it), claimers are woken anyway.
# The lock is only tried: a finish must not wait on a sweep or a creation past its lease.
FINISH_RUN_FUNCTION = """
CREATE OR REPLACE FUNCTION service_finish_run(
    p_run_id uuid, p_owner text, p_status text, p_output jsonb, p_error jsonb
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    finished record;
BEGIN
    UPDATE service_runs SET status = p_status, output = p_output, error = p_error, ended_at = clock_timestamp(),
        updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    WHERE run_id = p_run_id AND lease_owner = p_owner AND status = 'running'
    RETURNING thread_id, watched INTO finished;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF finished.watched THEN
        PERFORM pg_notify('service_runs', p_run_id::text);
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('service_runs'), hashtext(finished.thread_id)) OR EXISTS (
        SELECT 1 FROM service_runs p WHERE p.thread_id = finished.thread_id AND p.status = 'pending'
          AND p.not_before <= now()
    ) THEN
        PERFORM pg_notify('service_runs', 'queue');
    END IF;
    RETURN true;
END $$
"""

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS service_runs (
        run_id UUID PRIMARY KEY,
        seq BIGSERIAL NOT NULL,
        thread_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
        multitask_strategy TEXT NOT NULL DEFAULT 'enqueue',
        kwargs JSONB NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        output JSONB,
        error JSONB,
        temporary BOOLEAN NOT NULL DEFAULT false,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        not_before TIMESTAMPTZ NOT NULL DEFAULT now(),
        started_at TIMESTAMPTZ,
        ended_at TIMESTAMPTZ,
        attempt INTEGER NOT NULL DEFAULT 0,
        cancel_reason TEXT,
        lease_owner TEXT,
        lease_expires_at TIMESTAMPTZ
    )
    """,
    # The database's guarantee: at most one running run per thread, across every replica.
    "CREATE UNIQUE INDEX IF NOT EXISTS service_runs_one_running ON service_runs (thread_id) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS service_runs_thread_idx ON service_runs (thread_id, seq)",
    "CREATE INDEX IF NOT EXISTS service_runs_pending_idx ON service_runs (seq) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS service_runs_lease_idx ON service_runs (lease_expires_at) WHERE status = 'running'",
    # The per-user active-runs count on every run creation (quotas): only the user's runs in flight.
    "CREATE INDEX IF NOT EXISTS service_runs_user_active_idx ON service_runs (user_id)"
    " WHERE status IN ('pending', 'running')",
    # Admission asks whether a thread is busy on every run: only the runs in flight, not a thread's history.
    "CREATE INDEX IF NOT EXISTS service_runs_thread_active_idx ON service_runs (thread_id)"
    " WHERE status IN ('pending', 'running')",
    # Someone on another replica than the executing one waits for the run's end (`watched`: its finish
    # notifies) or reads its stream (`streamed`: its events become rows). Nobody else needs either.
    "ALTER TABLE service_runs ADD COLUMN IF NOT EXISTS watched BOOLEAN NOT NULL DEFAULT false",
    "ALTER TABLE service_runs ADD COLUMN IF NOT EXISTS streamed BOOLEAN NOT NULL DEFAULT false",
    # Threads whose stream (GET /threads/{id}/stream) is open somewhere, until when its readers last said so.
    "CREATE TABLE IF NOT EXISTS service_thread_streams (thread_id TEXT PRIMARY KEY, until TIMESTAMPTZ NOT NULL)",
    ADMIT_RUN_FUNCTION,
    FINISH_RUN_FUNCTION,
)

RUN_COLUMNS = """run_id, thread_id, user_id, assistant_id, status, multitask_strategy, kwargs, metadata, output, error,
    temporary, created_at, updated_at, started_at, ended_at, attempt, cancel_reason, watched, streamed"""

ADMIT_RUN = f"""
    SELECT {RUN_COLUMNS}, latest_checkpoint_id, latest_checkpoint_parent, latest_checkpoint_writes
    FROM service_admit_run(%(run_id)s, %(thread_id)s, %(user_id)s, %(assistant_id)s, %(strategy)s, %(kwargs)s,
        %(metadata)s, %(temporary)s, %(after_seconds)s, %(max_user_runs)s, %(stamp)s, %(owner)s, %(lease_seconds)s,
        %(watched)s, %(streamed)s)
"""
# Admission's refusals (service_admit_run raises them).
SQLSTATE_THREAD_MISSING = "SR404"
SQLSTATE_THREAD_BUSY = "SR409"
SQLSTATE_USER_BUSY = "SR429"
SQLSTATE_NEEDS_CANCEL = "SRBSY"
# The slower path of admission, for an interrupt or rollback of the runs in flight on a thread.
INSERT_RUN = f"""
    INSERT INTO service_runs (run_id, thread_id, user_id, assistant_id, multitask_strategy, kwargs, metadata,
        temporary, not_before, watched, streamed)
    VALUES (%(run_id)s, %(thread_id)s, %(user_id)s, %(assistant_id)s, %(strategy)s, %(kwargs)s,
        COALESCE((SELECT t.metadata FROM service_threads t WHERE t.thread_id = %(thread_id)s), '{{}}') || %(metadata)s,
        %(temporary)s, now() + make_interval(secs => %(after_seconds)s), %(watched)s,
        %(streamed)s OR EXISTS (SELECT 1 FROM service_thread_streams s
            WHERE s.thread_id = %(thread_id)s AND s.until > now()))
    RETURNING {RUN_COLUMNS}
"""
# A thread stream's reader says it reads until `seconds` from now, and reads the runs in flight on the thread
# and those that wrote events after the reader joined (event `after`): a run can end before the reader, on
# another replica, hears of it, and its events are rows (the thread was joined when it was admitted).
JOIN_THREAD = f"""
    WITH joined AS (
        INSERT INTO service_thread_streams (thread_id, until)
        VALUES (%(thread_id)s, now() + make_interval(secs => %(seconds)s))
        ON CONFLICT (thread_id) DO UPDATE SET until = greatest(service_thread_streams.until, EXCLUDED.until)
    )
    SELECT {RUN_COLUMNS} FROM service_runs r
    WHERE thread_id = %(thread_id)s AND (status IN ('pending', 'running')
        OR %(after)s::bigint IS NOT NULL AND streamed AND EXISTS (
            SELECT 1 FROM service_run_events e WHERE e.run_id = r.run_id AND e.id > %(after)s::bigint))
    ORDER BY seq
"""
# A waiter or reader on another replica than the executing one: the run's end must notify, or its events be
# rows. Also the waiter's first read of the run.
WATCH_RUN = f"""
    WITH marked AS (
        UPDATE service_runs SET watched = true, streamed = streamed OR %(stream)s
        WHERE run_id = %(run_id)s AND thread_id = %(thread_id)s
        RETURNING {RUN_COLUMNS}
    )
    -- The executing replica starts writing the events at once, not at its next lease renewal.
    SELECT marked.*, CASE WHEN %(stream)s THEN pg_notify(%(channel)s, 'stream:' || marked.run_id::text) END AS read,
        -- A claim that ran while this statement held a pending run's row skipped it (SKIP LOCKED) and may
        -- have gone idle: wake the claimers again, or the run waits for the poll.
        CASE WHEN marked.status = 'pending' THEN pg_notify(%(channel)s, 'queue') END AS requeued
    FROM marked
"""
LOCK_THREAD = "SELECT pg_advisory_xact_lock(hashtext('service_runs'), hashtext(%s))"
# The same lock, tried rather than waited for (retention: a busy thread is skipped, not waited on).
TRY_LOCK_THREAD = "SELECT pg_try_advisory_xact_lock(hashtext('service_runs'), hashtext(%s)) AS locked"
SELECT_THREAD_ACTIVE = "SELECT 1 FROM service_runs WHERE thread_id = %s AND status IN ('pending', 'running') LIMIT 1"
# And the user's lock as well. It serialises run creation per user, so two replicas cannot both admit the
# user's last allowed run. Only this statement waits for both locks (the others wait for the thread's, or
# only try), so whatever order PostgreSQL takes them in, no two transactions wait for each other.
LOCK_THREAD_AND_USER = (
    "SELECT pg_advisory_xact_lock(hashtext('service_runs'), hashtext(%s)),"
    " pg_advisory_xact_lock(hashtext('service_runs/user'), hashtext(%s))"
)
COUNT_ACTIVE_OF_USER = "SELECT count(*) AS n FROM service_runs WHERE user_id = %s AND status IN ('pending', 'running')"
SELECT_ACTIVE_OF_THREAD = "SELECT run_id FROM service_runs WHERE thread_id = %s AND status IN ('pending', 'running')"
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM service_runs WHERE run_id = %s AND thread_id = %s"
SELECT_RUN_BY_ID = f"SELECT {RUN_COLUMNS} FROM service_runs WHERE run_id = %s AND user_id = %s"
SELECT_RUNS_OF_THREAD = f"""
    SELECT {RUN_COLUMNS} FROM service_runs WHERE thread_id = %s AND (%s::text IS NULL OR status = %s)
    ORDER BY seq DESC LIMIT %s OFFSET %s
"""
DELETE_RUN = "DELETE FROM service_runs WHERE run_id = %s AND thread_id = %s AND status NOT IN ('pending', 'running')"
DELETE_FINISHED_OF_THREAD = "DELETE FROM service_runs WHERE thread_id = %s AND status NOT IN ('pending', 'running')"
SELECT_THREAD_STATUS = """
    SELECT
        bool_or(status IN ('pending', 'running')) AS busy,
        (array_agg(status ORDER BY seq DESC))[1] AS last_status,
        (array_agg(error ORDER BY seq DESC))[1] AS last_error
    FROM service_runs WHERE thread_id = %s
"""

# The oldest pending runs of threads that have no running run, and no older pending one (so at most one a
# thread), as many as the claimer has free slots: a queue drains in batches, not one query a run. SKIP
# LOCKED lets every replica claim at once without waiting on each other.
CLAIM_RUN = f"""
    WITH next AS (
        SELECT r.run_id, r.thread_id FROM service_runs r
        WHERE r.status = 'pending' AND r.not_before <= now()
          AND NOT EXISTS (SELECT 1 FROM service_runs x WHERE x.thread_id = r.thread_id AND x.status = 'running')
          AND NOT EXISTS (
              SELECT 1 FROM service_runs y WHERE y.thread_id = r.thread_id AND y.status = 'pending' AND y.seq < r.seq
          )
        ORDER BY r.seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE service_runs r SET status = 'running', attempt = r.attempt + 1, lease_owner = %(owner)s,
        -- The statement's own time, not its transaction's: a claim that waited on the previous run's
        -- finish must not start before it ended.
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s), started_at = clock_timestamp(),
        updated_at = now()
    FROM next LEFT JOIN LATERAL (
        -- The thread's newest checkpoint, read as the lease is taken: it validates this replica's cached copy.
        SELECT c.checkpoint_id, c.parent_checkpoint_id FROM checkpoints c
        WHERE c.thread_id = next.thread_id AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1
    ) AS latest ON true
    WHERE r.run_id = next.run_id
    RETURNING {", ".join("r." + c.strip() for c in RUN_COLUMNS.split(","))},
        extract(epoch FROM now() - r.not_before)::float8 AS queue_seconds,
        latest.checkpoint_id AS latest_checkpoint_id, latest.parent_checkpoint_id AS latest_checkpoint_parent,
        (SELECT count(*) FROM checkpoint_writes w WHERE w.thread_id = r.thread_id AND w.checkpoint_ns = ''
            AND w.checkpoint_id = latest.checkpoint_id) AS latest_checkpoint_writes,
        -- Whether to claim again at once, or to wait for a notification (one empty claim saved per run). Runs
        -- queued behind this one are woken by its finish; delayed ones by the poll.
        EXISTS (SELECT 1 FROM service_runs m WHERE m.status = 'pending' AND m.not_before <= now()
                  AND m.thread_id NOT IN (SELECT thread_id FROM next)) AS more_pending
"""
RENEW_LEASE = """
    UPDATE service_runs SET lease_expires_at = now() + make_interval(secs => %s)
    WHERE run_id = %s AND lease_owner = %s AND status = 'running'
    RETURNING cancel_reason, streamed
"""
FINISH_RUN = "SELECT service_finish_run(%s, %s, %s, %s, %s) AS ours"
# A run handed back (shutdown) or whose lease expired under the 'retry' policy runs again from its checkpoint.
# Whoever waited on this replica now waits from afar: the run's end notifies, its events become rows.
REQUEUE_RUN = """
    UPDATE service_runs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
        watched = true, streamed = true
    WHERE run_id = %s AND lease_owner = %s AND status = 'running'
"""
EXPIRE_LEASES = """
    UPDATE service_runs SET
        status = CASE WHEN %s AND attempt < %s THEN 'pending' ELSE 'error' END,
        error = CASE WHEN %s AND attempt < %s THEN error
            ELSE '{"error": "LeaseExpired", "message": "the replica running this run stopped heartbeating"}' END,
        ended_at = CASE WHEN %s AND attempt < %s THEN NULL ELSE now() END,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE status = 'running' AND lease_expires_at < now()
    RETURNING run_id, thread_id, status
"""
REQUEST_CANCEL = """
    UPDATE service_runs SET cancel_reason = %s, updated_at = now()
    WHERE run_id = ANY(%s) AND status = 'running'
    RETURNING run_id
"""
# A pending run has nothing to keep: interrupt ends it, rollback deletes it.
CANCEL_PENDING = """
    UPDATE service_runs SET status = 'interrupted', cancel_reason = %s, ended_at = now(), updated_at = now()
    WHERE run_id = ANY(%s) AND status = 'pending'
    RETURNING run_id
"""
DELETE_PENDING = "DELETE FROM service_runs WHERE run_id = ANY(%s) AND status = 'pending' RETURNING run_id"
SELECT_CANCELLABLE = """
    SELECT run_id FROM service_runs
    WHERE user_id = %s AND status = ANY(%s) AND (%s::text IS NULL OR thread_id = %s)
      AND (%s::uuid[] IS NULL OR run_id = ANY(%s))
"""
DELETE_FINISHED_TEMPORARY = """
    DELETE FROM service_runs WHERE temporary AND status NOT IN ('pending', 'running')
      AND ended_at < now() - make_interval(secs => %s)
    RETURNING thread_id, user_id
"""
COUNT_BY_STATUS = """
    SELECT status, count(*) AS n FROM service_runs WHERE status IN ('pending', 'running') GROUP BY status
"""
SELECT_OLDEST_PENDING = """
    SELECT coalesce(extract(epoch FROM now() - min(not_before)), 0)::float8 AS age
    FROM service_runs WHERE status = 'pending' AND not_before <= now()
"""
