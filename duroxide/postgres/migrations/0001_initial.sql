-- duroxide PostgreSQL store, migration 1: tables and stored functions.
--
-- {{s}} is replaced by the quoted schema name and {{chan}} by the
-- NOTIFY channel of the schema. Every time value is milliseconds since the
-- Unix epoch taken from the database clock ({{s}}.now_ms()), so lock expiry
-- is judged by one clock however many processes share the database.

CREATE FUNCTION {{s}}.now_ms() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$;

CREATE TABLE {{s}}.instances (
    instance_id           text PRIMARY KEY,
    orchestration_name    text NOT NULL,
    orchestration_version text NOT NULL DEFAULT '',
    current_execution_id  bigint NOT NULL DEFAULT 1,
    parent_instance_id    text,
    custom_status         text,
    custom_status_version bigint NOT NULL DEFAULT 0,
    created_at            bigint NOT NULL,
    updated_at            bigint NOT NULL
);
CREATE INDEX instances_parent_idx ON {{s}}.instances (parent_instance_id) WHERE parent_instance_id IS NOT NULL;
CREATE INDEX instances_created_idx ON {{s}}.instances (created_at DESC, instance_id DESC);

CREATE TABLE {{s}}.executions (
    instance_id  text NOT NULL,
    execution_id bigint NOT NULL,
    status       text NOT NULL DEFAULT 'Running',
    output       text NOT NULL DEFAULT '',
    started_at   bigint NOT NULL,
    completed_at bigint,
    PRIMARY KEY (instance_id, execution_id)
);

-- event_data is the event's JSON text, stored verbatim (never re-encoded).
CREATE TABLE {{s}}.history (
    instance_id  text NOT NULL,
    execution_id bigint NOT NULL,
    event_id     bigint NOT NULL,
    event_type   text NOT NULL,
    event_data   text NOT NULL,
    created_at   bigint NOT NULL,
    CONSTRAINT history_pkey PRIMARY KEY (instance_id, execution_id, event_id)
);

-- Orchestrator queue. lock_token tags the messages handed out with an
-- instance lock; the lock itself lives in instance_locks. parent_instance_id
-- is set for sub-orchestration starts, so that deleting a parent also finds
-- children that have not run their first turn yet.
CREATE TABLE {{s}}.orchestrator_queue (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id        text NOT NULL,
    work_item          text NOT NULL,
    visible_at         bigint NOT NULL,
    lock_token         text,
    attempt_count      integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    parent_instance_id text,
    created_at         bigint NOT NULL
);
CREATE INDEX orchestrator_queue_instance_idx ON {{s}}.orchestrator_queue (instance_id, id);
CREATE INDEX orchestrator_queue_visible_idx ON {{s}}.orchestrator_queue (visible_at, id);
CREATE INDEX orchestrator_queue_token_idx ON {{s}}.orchestrator_queue (lock_token) WHERE lock_token IS NOT NULL;
CREATE INDEX orchestrator_queue_parent_idx ON {{s}}.orchestrator_queue (parent_instance_id) WHERE parent_instance_id IS NOT NULL;

CREATE TABLE {{s}}.instance_locks (
    instance_id  text PRIMARY KEY,
    lock_token   text NOT NULL UNIQUE,
    locked_until bigint NOT NULL,
    locked_at    bigint NOT NULL
);

CREATE TABLE {{s}}.worker_queue (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id   text NOT NULL,
    execution_id  bigint NOT NULL,
    activity_id   bigint NOT NULL,
    work_item     text NOT NULL,
    visible_at    bigint NOT NULL,
    lock_token    text UNIQUE,
    locked_until  bigint,
    attempt_count integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    created_at    bigint NOT NULL
);
CREATE INDEX worker_queue_visible_idx ON {{s}}.worker_queue (visible_at);
CREATE INDEX worker_queue_activity_idx ON {{s}}.worker_queue (instance_id, execution_id, activity_id);

-- ---------------------------------------------------------------------------
-- Enqueue

CREATE FUNCTION {{s}}.enqueue_orchestrator(p_instance text, p_item text, p_delay_ms bigint, p_parent text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    INSERT INTO {{s}}.orchestrator_queue (instance_id, work_item, visible_at, parent_instance_id, created_at)
    VALUES (p_instance, p_item, v_now + greatest(p_delay_ms, 0), nullif(p_parent, ''), v_now);
    NULL; -- notified by the store after commit (coalesced)
END $$;

CREATE FUNCTION {{s}}.enqueue_worker(p_instance text, p_execution bigint, p_activity bigint, p_item text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    INSERT INTO {{s}}.worker_queue (instance_id, execution_id, activity_id, work_item, visible_at, created_at)
    VALUES (p_instance, p_execution, p_activity, p_item, v_now, v_now);
    NULL; -- notified by the store after commit (coalesced)
END $$;

-- ---------------------------------------------------------------------------
-- Orchestrator queue

-- fetch_orchestration_item walks the visible messages in visibility order. For each
-- instance not locked in the statement's snapshot it
--   1. takes a transaction-scoped advisory lock on the instance without
--      waiting (another fetch busy with the same instance: skip it);
--   2. upserts the instance lock, overwriting only an expired one (a live
--      lock committed meanwhile by another fetch: skip the instance);
--   3. tags every visible message of the instance and bumps its attempt
--      count (none left, e.g. consumed by an ack meanwhile: undo, skip).
-- Losing any of these races moves on to the next candidate instead of
-- returning nothing. It returns no row when nothing can be locked.
CREATE FUNCTION {{s}}.fetch_orchestration_item(p_lock_ms bigint)
RETURNS TABLE (
    instance_id           text,
    lock_token            text,
    attempt_count         integer,
    messages              text[],
    instance_exists       boolean,
    orchestration_name    text,
    orchestration_version text,
    execution_id          bigint,
    execution_status      text,
    last_event_id         bigint,
    created_at            bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now      bigint := {{s}}.now_ms();
    v_token    text;
    v_cand     text;
    v_tried    text[] := '{}';
    v_n        bigint;
    v_attempt  integer;
    v_messages text[];
BEGIN
    FOR v_cand IN
        SELECT q.instance_id
        FROM {{s}}.orchestrator_queue q
        WHERE q.visible_at <= v_now
          AND NOT EXISTS (SELECT 1 FROM {{s}}.instance_locks l
                          WHERE l.instance_id = q.instance_id AND l.locked_until > v_now)
        -- (visible_at, id) order walks the index and stops at the first
        -- candidates instead of sorting every visible message.
        ORDER BY q.visible_at, q.id
        LIMIT 64
    LOOP
        CONTINUE WHEN v_cand = ANY (v_tried);
        v_tried := v_tried || v_cand;

        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended('{{chan}}:' || v_cand, 0));

        v_token := gen_random_uuid()::text;
        INSERT INTO {{s}}.instance_locks AS l (instance_id, lock_token, locked_until, locked_at)
        VALUES (v_cand, v_token, v_now + p_lock_ms, v_now)
        ON CONFLICT (instance_id) DO UPDATE
            SET lock_token = EXCLUDED.lock_token,
                locked_until = EXCLUDED.locked_until,
                locked_at = EXCLUDED.locked_at
            WHERE l.locked_until <= v_now;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        CONTINUE WHEN v_n = 0;

        WITH tagged AS (
            UPDATE {{s}}.orchestrator_queue q
            SET lock_token = v_token, attempt_count = q.attempt_count + 1
            WHERE q.instance_id = v_cand AND q.visible_at <= v_now
            RETURNING q.id, q.work_item, q.attempt_count
        )
        SELECT array_agg(t.work_item ORDER BY t.id), max(t.attempt_count), count(*)
        INTO v_messages, v_attempt, v_n
        FROM tagged t;

        IF v_n = 0 THEN
            DELETE FROM {{s}}.instance_locks l WHERE l.lock_token = v_token;
            CONTINUE;
        END IF;

        RETURN QUERY
        SELECT v_cand, v_token, v_attempt, v_messages,
               i.instance_id IS NOT NULL,
               coalesce(i.orchestration_name, ''),
               coalesce(i.orchestration_version, ''),
               coalesce(i.current_execution_id, 0),
               coalesce(e.status, ''),
               coalesce((SELECT max(h.event_id) FROM {{s}}.history h
                         WHERE h.instance_id = v_cand AND h.execution_id = i.current_execution_id), 0),
               coalesce(i.created_at, 0)
        FROM (SELECT 1) AS one
        LEFT JOIN {{s}}.instances i ON i.instance_id = v_cand
        LEFT JOIN {{s}}.executions e
               ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id;
        RETURN;
    END LOOP;
END $$;

-- ack_orchestration_item commits one turn (or, for execution 0, discards
-- the batch). Lock lost: SQLSTATE DXLCK.
-- A duplicate event id violates history_pkey (23505) and rolls back all.
CREATE FUNCTION {{s}}.ack_orchestration_item(
    p_token          text,
    p_execution      bigint,
    p_name           text,
    p_version        text,
    p_parent         text,
    p_status         text,
    p_output         text,
    p_set_custom     boolean,
    p_custom         text,
    p_ev_ids         bigint[],
    p_ev_types       text[],
    p_ev_data        text[],
    p_w_instance     text[],
    p_w_execution    bigint[],
    p_w_activity     bigint[],
    p_w_data         text[],
    p_o_instance     text[],
    p_o_data         text[],
    p_o_visible_at   bigint[],
    p_o_parent       text[],
    p_c_instance     text[],
    p_c_execution    bigint[],
    p_c_activity     bigint[]
) RETURNS boolean -- whether the instance has visible messages left (arrived during the turn)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      bigint := {{s}}.now_ms();
    v_instance text;
    v_terminal boolean := p_status IN ('Completed', 'Failed', 'Cancelled', 'ContinuedAsNew');
BEGIN
    -- Row lock on the instance lock: a concurrent ack with the same token
    -- waits here and then finds the row gone.
    SELECT l.instance_id INTO v_instance
    FROM {{s}}.instance_locks l
    WHERE l.lock_token = p_token AND l.locked_until > v_now
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid or expired', p_token USING ERRCODE = 'DXLCK';
    END IF;

    -- Execution 0 discards the batch: delete the tagged messages, release
    -- the lock, write nothing else.
    IF p_execution = 0 THEN
        DELETE FROM {{s}}.orchestrator_queue q WHERE q.lock_token = p_token;
        DELETE FROM {{s}}.instance_locks l WHERE l.lock_token = p_token;
        RETURN EXISTS (SELECT 1 FROM {{s}}.orchestrator_queue q
                       WHERE q.instance_id = v_instance AND q.visible_at <= v_now);
    END IF;

    INSERT INTO {{s}}.instances AS i (instance_id, orchestration_name, orchestration_version,
                                      current_execution_id, parent_instance_id, created_at, updated_at)
    VALUES (v_instance, p_name, p_version, p_execution, nullif(p_parent, ''), v_now, v_now)
    ON CONFLICT (instance_id) DO UPDATE SET
        orchestration_name = coalesce(nullif(EXCLUDED.orchestration_name, ''), i.orchestration_name),
        orchestration_version = coalesce(nullif(EXCLUDED.orchestration_version, ''), i.orchestration_version),
        current_execution_id = greatest(i.current_execution_id, EXCLUDED.current_execution_id),
        parent_instance_id = coalesce(i.parent_instance_id, EXCLUDED.parent_instance_id),
        updated_at = v_now;

    INSERT INTO {{s}}.executions (instance_id, execution_id, status, started_at)
    VALUES (v_instance, p_execution, 'Running', v_now)
    ON CONFLICT DO NOTHING;

    INSERT INTO {{s}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at)
    SELECT v_instance, p_execution, ev.id, ev.kind, ev.data, v_now
    FROM unnest(p_ev_ids, p_ev_types, p_ev_data) AS ev(id, kind, data);

    IF coalesce(p_status, '') <> '' THEN
        UPDATE {{s}}.executions e
        SET status = p_status,
            output = coalesce(p_output, ''),
            completed_at = CASE WHEN v_terminal THEN coalesce(e.completed_at, v_now) ELSE NULL END
        WHERE e.instance_id = v_instance AND e.execution_id = p_execution;
    END IF;

    IF p_set_custom THEN
        UPDATE {{s}}.instances i
        SET custom_status = p_custom, custom_status_version = i.custom_status_version + 1
        WHERE i.instance_id = v_instance;
    END IF;

    IF cardinality(p_w_data) > 0 THEN
        INSERT INTO {{s}}.worker_queue (instance_id, execution_id, activity_id, work_item, visible_at, created_at)
        SELECT w.inst, w.exec, w.act, w.data, v_now, v_now
        FROM unnest(p_w_instance, p_w_execution, p_w_activity, p_w_data) AS w(inst, exec, act, data);
        NULL; -- notified by the store after commit (coalesced)
    END IF;

    IF cardinality(p_c_instance) > 0 THEN
        DELETE FROM {{s}}.worker_queue w
        USING unnest(p_c_instance, p_c_execution, p_c_activity) AS c(inst, exec, act)
        WHERE w.instance_id = c.inst AND w.execution_id = c.exec AND w.activity_id = c.act;
    END IF;

    IF cardinality(p_o_data) > 0 THEN
        INSERT INTO {{s}}.orchestrator_queue (instance_id, work_item, visible_at, parent_instance_id, created_at)
        SELECT o.inst, o.data, CASE WHEN o.vis > 0 THEN o.vis ELSE v_now END, nullif(o.parent, ''), v_now
        FROM unnest(p_o_instance, p_o_data, p_o_visible_at, p_o_parent) AS o(inst, data, vis, parent);
        NULL; -- notified by the store after commit (coalesced)
    END IF;

    DELETE FROM {{s}}.orchestrator_queue q WHERE q.lock_token = p_token;
    DELETE FROM {{s}}.instance_locks l WHERE l.lock_token = p_token;

    -- Messages that arrived during the turn are fetchable now (the store
    -- announces them after the commit).
    RETURN EXISTS (SELECT 1 FROM {{s}}.orchestrator_queue q
                   WHERE q.instance_id = v_instance AND q.visible_at <= v_now);
END $$;

CREATE FUNCTION {{s}}.abandon_orchestration_item(p_token text, p_delay_ms bigint, p_ignore_attempt boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    DELETE FROM {{s}}.instance_locks l WHERE l.lock_token = p_token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid', p_token USING ERRCODE = 'DXLCK';
    END IF;
    UPDATE {{s}}.orchestrator_queue q
    SET lock_token = NULL,
        visible_at = CASE WHEN p_delay_ms > 0 THEN v_now + p_delay_ms ELSE q.visible_at END,
        attempt_count = CASE WHEN p_ignore_attempt THEN greatest(q.attempt_count - 1, 0) ELSE q.attempt_count END
    WHERE q.lock_token = p_token;
    NULL; -- notified by the store after commit (coalesced)
END $$;

CREATE FUNCTION {{s}}.renew_orchestration_item_lock(p_token text, p_extend_ms bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    UPDATE {{s}}.instance_locks l
    SET locked_until = v_now + p_extend_ms
    WHERE l.lock_token = p_token AND l.locked_until > v_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid or expired', p_token USING ERRCODE = 'DXLCK';
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- Worker queue

-- fetch_work_item locks the oldest visible, unlocked or lock-expired message.
-- SKIP LOCKED passes over rows other fetches are taking; a row taken by a
-- fetch that committed after this statement's snapshot makes the statement
-- return nothing, so it is retried a few times while work seems available.
CREATE FUNCTION {{s}}.fetch_work_item(p_lock_ms bigint)
RETURNS TABLE (work_item text, lock_token text, attempt_count integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now   bigint := {{s}}.now_ms();
    v_token text := gen_random_uuid()::text;
BEGIN
    FOR i IN 1..5 LOOP
        RETURN QUERY
        WITH c AS (
            SELECT w.id FROM {{s}}.worker_queue w
            WHERE w.visible_at <= v_now AND (w.locked_until IS NULL OR w.locked_until <= v_now)
            ORDER BY w.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {{s}}.worker_queue w
        SET lock_token = v_token, locked_until = v_now + p_lock_ms, attempt_count = w.attempt_count + 1
        FROM c WHERE w.id = c.id
        RETURNING w.work_item, w.lock_token, w.attempt_count;
        IF FOUND THEN
            RETURN;
        END IF;
        EXIT WHEN NOT EXISTS (
            SELECT 1 FROM {{s}}.worker_queue w
            WHERE w.visible_at <= v_now AND (w.locked_until IS NULL OR w.locked_until <= v_now));
    END LOOP;
END $$;

CREATE FUNCTION {{s}}.ack_work_item(p_token text, p_instance text, p_item text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    DELETE FROM {{s}}.worker_queue w WHERE w.lock_token = p_token AND w.locked_until > v_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid or expired', p_token USING ERRCODE = 'DXLCK';
    END IF;
    IF p_item IS NOT NULL THEN
        INSERT INTO {{s}}.orchestrator_queue (instance_id, work_item, visible_at, created_at)
        VALUES (p_instance, p_item, v_now, v_now);
        NULL; -- notified by the store after commit (coalesced)
    END IF;
END $$;

CREATE FUNCTION {{s}}.renew_work_item_lock(p_token text, p_extend_ms bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    UPDATE {{s}}.worker_queue w
    SET locked_until = v_now + p_extend_ms
    WHERE w.lock_token = p_token AND w.locked_until > v_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid or expired', p_token USING ERRCODE = 'DXLCK';
    END IF;
END $$;

CREATE FUNCTION {{s}}.abandon_work_item(p_token text, p_delay_ms bigint, p_ignore_attempt boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    UPDATE {{s}}.worker_queue w
    SET lock_token = NULL,
        locked_until = NULL,
        visible_at = v_now + greatest(p_delay_ms, 0),
        attempt_count = CASE WHEN p_ignore_attempt THEN greatest(w.attempt_count - 1, 0) ELSE w.attempt_count END
    WHERE w.lock_token = p_token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid', p_token USING ERRCODE = 'DXLCK';
    END IF;
    NULL; -- notified by the store after commit (coalesced)
END $$;

-- next_visible_in returns, for queue 'o' or 'w', how many milliseconds from
-- now the earliest not-yet-visible message becomes visible (NULL: none).
CREATE FUNCTION {{s}}.next_visible_in(p_queue text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
    v_at  bigint;
BEGIN
    IF p_queue = 'o' THEN
        SELECT min(q.visible_at) INTO v_at FROM {{s}}.orchestrator_queue q WHERE q.visible_at > v_now;
    ELSE
        SELECT min(w.visible_at) INTO v_at FROM {{s}}.worker_queue w WHERE w.visible_at > v_now;
    END IF;
    RETURN v_at - v_now;
END $$;

-- ---------------------------------------------------------------------------
-- Management

-- delete_instances deletes the given instances and all their descendants
-- (including sub-orchestrations whose start is still queued). Errors:
-- DXNFD unknown id, DXSUB a listed sub-orchestration whose parent is not
-- deleted with it, DXRUN a running instance without p_force.
--
-- It first deletes the instance locks of the whole tree, which waits for
-- in-flight acks of those instances and makes later acks fail (no zombie
-- re-creation); the tree is recomputed until no ack added a child meanwhile.
CREATE FUNCTION {{s}}.delete_instances(p_ids text[], p_force boolean)
RETURNS TABLE (instances_deleted bigint, executions_deleted bigint, events_deleted bigint, queue_messages_deleted bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_set      text[];
    v_frontier text[];
    v_next     text[];
    v_locked   text[] := '{}';
    v_bad      text;
    v_i        bigint;
    v_e        bigint;
    v_h        bigint;
    v_q        bigint;
    v_w        bigint;
BEGIN
    SELECT x INTO v_bad FROM unnest(p_ids) AS x
    WHERE NOT EXISTS (SELECT 1 FROM {{s}}.instances i WHERE i.instance_id = x)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'instance % not found', v_bad USING ERRCODE = 'DXNFD';
    END IF;

    LOOP
        v_set := ARRAY(SELECT DISTINCT x FROM unnest(p_ids) AS x);
        v_frontier := v_set;
        LOOP
            v_next := ARRAY(
                SELECT DISTINCT c.id FROM (
                    SELECT i.instance_id AS id FROM {{s}}.instances i WHERE i.parent_instance_id = ANY (v_frontier)
                    UNION ALL
                    SELECT q.instance_id FROM {{s}}.orchestrator_queue q WHERE q.parent_instance_id = ANY (v_frontier)
                ) c
                WHERE NOT (c.id = ANY (v_set)));
            EXIT WHEN cardinality(v_next) = 0;
            v_set := v_set || v_next;
            v_frontier := v_next;
        END LOOP;
        EXIT WHEN v_set <@ v_locked;
        DELETE FROM {{s}}.instance_locks l
        WHERE l.instance_id IN (SELECT k.instance_id FROM {{s}}.instance_locks k
                                WHERE k.instance_id = ANY (v_set) AND NOT (k.instance_id = ANY (v_locked))
                                ORDER BY k.instance_id FOR UPDATE);
        v_locked := v_set;
    END LOOP;

    SELECT x INTO v_bad FROM unnest(p_ids) AS x
    JOIN {{s}}.instances i ON i.instance_id = x
    JOIN {{s}}.instances p ON p.instance_id = i.parent_instance_id
    WHERE NOT (p.instance_id = ANY (v_set))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'instance % is a sub-orchestration', v_bad USING ERRCODE = 'DXSUB';
    END IF;

    IF NOT p_force THEN
        SELECT i.instance_id INTO v_bad
        FROM {{s}}.instances i
        JOIN {{s}}.executions e ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
        WHERE i.instance_id = ANY (v_set) AND e.status = 'Running'
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'instance % is running', v_bad USING ERRCODE = 'DXRUN';
        END IF;
    END IF;

    DELETE FROM {{s}}.orchestrator_queue q WHERE q.instance_id = ANY (v_set);
    GET DIAGNOSTICS v_q = ROW_COUNT;
    DELETE FROM {{s}}.worker_queue w WHERE w.instance_id = ANY (v_set);
    GET DIAGNOSTICS v_w = ROW_COUNT;
    DELETE FROM {{s}}.history h WHERE h.instance_id = ANY (v_set);
    GET DIAGNOSTICS v_h = ROW_COUNT;
    DELETE FROM {{s}}.executions e WHERE e.instance_id = ANY (v_set);
    GET DIAGNOSTICS v_e = ROW_COUNT;
    DELETE FROM {{s}}.instances i WHERE i.instance_id = ANY (v_set);
    GET DIAGNOSTICS v_i = ROW_COUNT;
    -- A fetch that tagged queue rows deleted above has committed by now (the
    -- deletes waited for it): drop the lock it took as well.
    DELETE FROM {{s}}.instance_locks l WHERE l.instance_id = ANY (v_set);

    NULL; -- notified by the store after commit (coalesced)
    RETURN QUERY SELECT v_i, v_e, v_h, v_q + v_w;
END $$;

-- delete_instances_bulk deletes up to p_limit terminal root instances
-- (oldest first) matching the filters, with their descendants.
CREATE FUNCTION {{s}}.delete_instances_bulk(p_ids text[], p_completed_before bigint, p_limit integer)
RETURNS TABLE (instances_deleted bigint, executions_deleted bigint, events_deleted bigint, queue_messages_deleted bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_roots text[];
BEGIN
    v_roots := ARRAY(
        SELECT i.instance_id
        FROM {{s}}.instances i
        JOIN {{s}}.executions e ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
        WHERE i.parent_instance_id IS NULL
          AND e.status <> 'Running'
          AND (cardinality(p_ids) = 0 OR i.instance_id = ANY (p_ids))
          AND (p_completed_before <= 0 OR (e.completed_at IS NOT NULL AND e.completed_at < p_completed_before))
        ORDER BY i.created_at, i.instance_id
        LIMIT p_limit);
    IF cardinality(v_roots) = 0 THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM {{s}}.delete_instances(v_roots, true);
END $$;

-- prune_executions deletes old, non-running, non-current executions.
-- DXNFD for an unknown instance.
CREATE FUNCTION {{s}}.prune_executions(p_instance text, p_keep_last integer, p_completed_before bigint)
RETURNS TABLE (executions_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_current bigint;
    v_ids     bigint[];
    v_e       bigint;
    v_h       bigint;
BEGIN
    SELECT i.current_execution_id INTO v_current FROM {{s}}.instances i
    WHERE i.instance_id = p_instance FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % not found', p_instance USING ERRCODE = 'DXNFD';
    END IF;

    SELECT array_agg(e.execution_id) INTO v_ids
    FROM (
        SELECT e.execution_id, e.status, e.completed_at,
               row_number() OVER (ORDER BY e.execution_id DESC) AS rn
        FROM {{s}}.executions e WHERE e.instance_id = p_instance
    ) e
    WHERE e.execution_id <> v_current
      AND e.status <> 'Running'
      AND e.rn > greatest(p_keep_last, 1)
      AND (p_completed_before <= 0 OR (e.completed_at IS NOT NULL AND e.completed_at < p_completed_before));

    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint;
        RETURN;
    END IF;
    DELETE FROM {{s}}.history h WHERE h.instance_id = p_instance AND h.execution_id = ANY (v_ids);
    GET DIAGNOSTICS v_h = ROW_COUNT;
    DELETE FROM {{s}}.executions e WHERE e.instance_id = p_instance AND e.execution_id = ANY (v_ids);
    GET DIAGNOSTICS v_e = ROW_COUNT;
    RETURN QUERY SELECT v_e, v_h;
END $$;
