-- duroxide PostgreSQL store, migration 3: local dispatch (duroxide.LocalDispatcher).
--
-- write_turn holds what every turn commit writes; ack_turn is
-- ack_orchestration_item plus leases on new worker messages taken for the
-- committing handle and the KeepExecutions prune in the same call;
-- commit_activity_turn acks locked worker messages and commits the turn
-- built from their completions in one transaction, without a trip through
-- the orchestrator queue. The functions of migrations 1 and 2 stay for
-- processes of the previous release during a rolling upgrade.

-- write_turn writes a turn of p_instance (execution p_execution, not 0):
-- instance and execution rows, history, status, custom status, worker
-- messages (those with a token in p_w_token are inserted locked by p_owner
-- until p_lock_until, as a fetch would, attempt 1), cancelled activities,
-- orchestrator messages, the removal of cancelled timers' untagged
-- TimerFired messages and the KeepExecutions prune. p_known: the caller
-- checked that p_execution is the instance's current, running execution
-- and holds its row lock, so only the rows a turn changes are written.
CREATE FUNCTION {{s}}.write_turn(
    p_instance       text,
    p_now            bigint,
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
    p_w_token        text[],
    p_lock_until     bigint,
    p_owner          text,
    p_o_instance     text[],
    p_o_data         text[],
    p_o_visible_at   bigint[],
    p_o_parent       text[],
    p_c_instance     text[],
    p_c_execution    bigint[],
    p_c_activity     bigint[],
    p_ct_ids         bigint[],
    p_keep           integer,
    p_known          boolean
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_terminal boolean := p_status IN ('Completed', 'Failed', 'Cancelled', 'ContinuedAsNew');
BEGIN
    IF p_known THEN
        -- A running execution, checked and row-locked by the caller: only
        -- what a turn of it changes.
        UPDATE {{s}}.instances i
        SET updated_at = p_now,
            custom_status = CASE WHEN p_set_custom THEN p_custom ELSE i.custom_status END,
            custom_status_version = i.custom_status_version + CASE WHEN p_set_custom THEN 1 ELSE 0 END
        WHERE i.instance_id = p_instance;
    ELSE
    INSERT INTO {{s}}.instances AS i (instance_id, orchestration_name, orchestration_version,
                                      current_execution_id, parent_instance_id, created_at, updated_at)
    VALUES (p_instance, p_name, p_version, p_execution, nullif(p_parent, ''), p_now, p_now)
    ON CONFLICT (instance_id) DO UPDATE SET
        orchestration_name = coalesce(nullif(EXCLUDED.orchestration_name, ''), i.orchestration_name),
        orchestration_version = coalesce(nullif(EXCLUDED.orchestration_version, ''), i.orchestration_version),
        current_execution_id = greatest(i.current_execution_id, EXCLUDED.current_execution_id),
        parent_instance_id = coalesce(i.parent_instance_id, EXCLUDED.parent_instance_id),
        updated_at = p_now;

    INSERT INTO {{s}}.executions (instance_id, execution_id, status, started_at)
    VALUES (p_instance, p_execution, 'Running', p_now)
    ON CONFLICT DO NOTHING;
    END IF;

    INSERT INTO {{s}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at)
    SELECT p_instance, p_execution, ev.id, ev.kind, ev.data, p_now
    FROM unnest(p_ev_ids, p_ev_types, p_ev_data) AS ev(id, kind, data);

    IF coalesce(p_status, '') <> '' AND NOT (p_known AND p_status = 'Running') THEN
        UPDATE {{s}}.executions e
        SET status = p_status,
            output = coalesce(p_output, ''),
            completed_at = CASE WHEN v_terminal THEN coalesce(e.completed_at, p_now) ELSE NULL END
        WHERE e.instance_id = p_instance AND e.execution_id = p_execution;
    END IF;

    IF p_set_custom AND NOT p_known THEN
        UPDATE {{s}}.instances i
        SET custom_status = p_custom, custom_status_version = i.custom_status_version + 1
        WHERE i.instance_id = p_instance;
    END IF;

    IF cardinality(p_w_data) > 0 THEN
        INSERT INTO {{s}}.worker_queue (instance_id, execution_id, activity_id, work_item, visible_at,
                                        lock_token, locked_until, lock_owner, attempt_count, created_at)
        SELECT w.inst, w.exec, w.act, w.data, p_now,
               w.tok, CASE WHEN w.tok IS NULL THEN NULL ELSE p_lock_until END,
               CASE WHEN w.tok IS NULL THEN NULL ELSE p_owner END,
               CASE WHEN w.tok IS NULL THEN 0 ELSE 1 END, p_now
        FROM unnest(p_w_instance, p_w_execution, p_w_activity, p_w_data, p_w_token) AS w(inst, exec, act, data, tok);
    END IF;

    IF cardinality(p_c_instance) > 0 THEN
        DELETE FROM {{s}}.worker_queue w
        USING unnest(p_c_instance, p_c_execution, p_c_activity) AS c(inst, exec, act)
        WHERE w.instance_id = c.inst AND w.execution_id = c.exec AND w.activity_id = c.act;
    END IF;

    IF cardinality(p_o_data) > 0 THEN
        INSERT INTO {{s}}.orchestrator_queue (instance_id, work_item, visible_at, parent_instance_id, created_at)
        SELECT o.inst, o.data, CASE WHEN o.vis > 0 THEN o.vis ELSE p_now END, nullif(o.parent, ''), p_now
        FROM unnest(p_o_instance, p_o_data, p_o_visible_at, p_o_parent) AS o(inst, data, vis, parent);
    END IF;

    IF cardinality(p_ct_ids) > 0 THEN
        DELETE FROM {{s}}.orchestrator_queue q
        WHERE q.instance_id = p_instance AND q.lock_token IS NULL
          AND q.work_item::jsonb ->> 'kind' = 'TimerFired'
          AND (q.work_item::jsonb ->> 'exec')::bigint = p_execution
          AND (q.work_item::jsonb ->> 'id')::bigint = ANY (p_ct_ids);
    END IF;

    IF p_keep > 0 THEN
        PERFORM {{s}}.prune_executions(p_instance, p_keep, 0);
    END IF;
END $$;

-- ack_turn: ack_orchestration_item (migration 1) with local dispatch and
-- the KeepExecutions prune. Lock lost: SQLSTATE DXLCK.
CREATE FUNCTION {{s}}.ack_turn(
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
    p_w_token        text[],
    p_lock_ms        bigint,
    p_owner          text,
    p_o_instance     text[],
    p_o_data         text[],
    p_o_visible_at   bigint[],
    p_o_parent       text[],
    p_c_instance     text[],
    p_c_execution    bigint[],
    p_c_activity     bigint[],
    p_ct_ids         bigint[],
    p_keep           integer
) RETURNS boolean -- whether the instance has visible messages left (arrived during the turn)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      bigint := {{s}}.now_ms();
    v_instance text;
BEGIN
    SELECT l.instance_id INTO v_instance
    FROM {{s}}.instance_locks l
    WHERE l.lock_token = p_token AND l.locked_until > v_now
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid or expired', p_token USING ERRCODE = 'DXLCK';
    END IF;

    IF p_execution <> 0 THEN
        PERFORM {{s}}.write_turn(v_instance, v_now, p_execution, p_name, p_version, p_parent, p_status, p_output,
            p_set_custom, p_custom, p_ev_ids, p_ev_types, p_ev_data,
            p_w_instance, p_w_execution, p_w_activity, p_w_data, p_w_token, v_now + p_lock_ms, p_owner,
            p_o_instance, p_o_data, p_o_visible_at, p_o_parent,
            p_c_instance, p_c_execution, p_c_activity, p_ct_ids, p_keep, false);
    END IF;

    DELETE FROM {{s}}.orchestrator_queue q WHERE q.lock_token = p_token;
    DELETE FROM {{s}}.instance_locks l WHERE l.lock_token = p_token;

    RETURN EXISTS (SELECT 1 FROM {{s}}.orchestrator_queue q
                   WHERE q.instance_id = v_instance AND q.visible_at <= v_now);
END $$;

-- commit_activity_turn deletes the worker messages locked with p_tokens
-- (all of them, else DXLCK and nothing changes), the queued TimerFired
-- messages of the timers p_timers (all of them, else DXCNF), and writes a turn of
-- p_instance computed from their completions by a runtime that keeps the
-- instance in memory. The turn is only valid on the history it was computed
-- from, so it fails with DXCNF, changing nothing, when the instance is
-- locked (a turn in progress somewhere), is being fetched, or its current
-- execution is not p_execution, not running, or has events after
-- p_last_event. Orchestrator messages of the instance are left alone.
CREATE FUNCTION {{s}}.commit_activity_turn(
    p_instance       text,
    p_tokens         text[],
    p_timers         bigint[],
    p_last_event     bigint,
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
    p_w_token        text[],
    p_lock_ms        bigint,
    p_owner          text,
    p_o_instance     text[],
    p_o_data         text[],
    p_o_visible_at   bigint[],
    p_o_parent       text[],
    p_c_instance     text[],
    p_c_execution    bigint[],
    p_c_activity     bigint[],
    p_ct_ids         bigint[],
    p_keep           integer
) RETURNS boolean -- whether the instance has visible orchestrator messages
LANGUAGE plpgsql AS $$
DECLARE
    v_now  bigint := {{s}}.now_ms();
    v_n    bigint;
    v_ok   boolean;
BEGIN
    DELETE FROM {{s}}.worker_queue w
    WHERE w.lock_token = ANY (p_tokens) AND w.locked_until > v_now;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> cardinality(p_tokens) THEN
        RAISE EXCEPTION 'a worker lock token is invalid or expired' USING ERRCODE = 'DXLCK';
    END IF;

    -- Excludes fetch_orchestration_item for this instance until commit; a
    -- lock it committed before is visible to the next statement.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('{{chan}}:' || p_instance, 0)) THEN
        RAISE EXCEPTION 'instance % is being fetched', p_instance USING ERRCODE = 'DXCNF';
    END IF;
    IF EXISTS (SELECT 1 FROM {{s}}.instance_locks l
               WHERE l.instance_id = p_instance AND l.locked_until > v_now) THEN
        RAISE EXCEPTION 'instance % is locked', p_instance USING ERRCODE = 'DXCNF';
    END IF;
    SELECT i.current_execution_id = p_execution AND e.status = 'Running'
           AND coalesce((SELECT max(h.event_id) FROM {{s}}.history h
                         WHERE h.instance_id = p_instance AND h.execution_id = p_execution), 0) = p_last_event
    INTO v_ok
    FROM {{s}}.instances i
    JOIN {{s}}.executions e ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
    WHERE i.instance_id = p_instance
    FOR UPDATE OF i;
    IF v_ok IS NOT TRUE THEN
        RAISE EXCEPTION 'instance % changed', p_instance USING ERRCODE = 'DXCNF';
    END IF;

    IF cardinality(p_timers) > 0 THEN
        DELETE FROM {{s}}.orchestrator_queue q
        WHERE q.instance_id = p_instance AND q.lock_token IS NULL
          AND q.work_item::jsonb ->> 'kind' = 'TimerFired'
          AND (q.work_item::jsonb ->> 'exec')::bigint = p_execution
          AND (q.work_item::jsonb ->> 'id')::bigint = ANY (p_timers);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n <> cardinality(p_timers) THEN
            RAISE EXCEPTION 'a fired timer of instance % is not queued', p_instance USING ERRCODE = 'DXCNF';
        END IF;
    END IF;

    PERFORM {{s}}.write_turn(p_instance, v_now, p_execution, p_name, p_version, p_parent, p_status, p_output,
        p_set_custom, p_custom, p_ev_ids, p_ev_types, p_ev_data,
        p_w_instance, p_w_execution, p_w_activity, p_w_data, p_w_token, v_now + p_lock_ms, p_owner,
        p_o_instance, p_o_data, p_o_visible_at, p_o_parent,
        p_c_instance, p_c_execution, p_c_activity, p_ct_ids, p_keep, true);

    RETURN EXISTS (SELECT 1 FROM {{s}}.orchestrator_queue q
                   WHERE q.instance_id = p_instance AND q.visible_at <= v_now);
END $$;

-- fetch_orchestration_item2 is fetch_orchestration_item (migration 2) that
-- also reports whether another instance had visible, unlocked messages when
-- it fetched, so that a runtime wakes another dispatcher only then (an
-- empty fetch is a write transaction like any other).
CREATE FUNCTION {{s}}.fetch_orchestration_item2(p_lock_ms bigint, p_owner text)
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
    created_at            bigint,
    more_visible          boolean
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
    v_old      text;
    v_lost     boolean;
BEGIN
    FOR v_cand IN
        SELECT q.instance_id
        FROM {{s}}.orchestrator_queue q
        WHERE q.visible_at <= v_now
          AND NOT EXISTS (SELECT 1 FROM {{s}}.instance_locks l
                          WHERE l.instance_id = q.instance_id AND l.locked_until > v_now
                            AND {{s}}.owner_alive(l.owner_id, v_now))
        ORDER BY q.visible_at, q.id
        LIMIT 64
    LOOP
        CONTINUE WHEN v_cand = ANY (v_tried);
        v_tried := v_tried || v_cand;

        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended('{{chan}}:' || v_cand, 0));

        -- The lock being replaced, if any: its token tags the messages of
        -- its delivery, lost if its owner died while holding it.
        SELECT l.lock_token, {{s}}.lost_lock(l.owner_id, l.locked_until, v_now)
        INTO v_old, v_lost
        FROM {{s}}.instance_locks l WHERE l.instance_id = v_cand;

        v_token := gen_random_uuid()::text;
        INSERT INTO {{s}}.instance_locks AS l (instance_id, lock_token, locked_until, locked_at, owner_id)
        VALUES (v_cand, v_token, v_now + p_lock_ms, v_now, p_owner)
        ON CONFLICT (instance_id) DO UPDATE
            SET lock_token = EXCLUDED.lock_token,
                locked_until = EXCLUDED.locked_until,
                locked_at = EXCLUDED.locked_at,
                owner_id = EXCLUDED.owner_id
            WHERE l.locked_until <= v_now OR NOT {{s}}.owner_alive(l.owner_id, v_now);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        CONTINUE WHEN v_n = 0;

        WITH tagged AS (
            UPDATE {{s}}.orchestrator_queue q
            SET lock_token = v_token,
                attempt_count = q.attempt_count + CASE WHEN v_lost AND q.lock_token = v_old THEN 0 ELSE 1 END
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
               coalesce(i.created_at, 0),
               EXISTS (SELECT 1 FROM {{s}}.orchestrator_queue q
                       WHERE q.visible_at <= v_now AND q.instance_id <> v_cand
                         AND NOT EXISTS (SELECT 1 FROM {{s}}.instance_locks l
                                         WHERE l.instance_id = q.instance_id AND l.locked_until > v_now
                                           AND {{s}}.owner_alive(l.owner_id, v_now)))
        FROM (SELECT 1) AS one
        LEFT JOIN {{s}}.instances i ON i.instance_id = v_cand
        LEFT JOIN {{s}}.executions e
               ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id;
        RETURN;
    END LOOP;
END $$;


-- heartbeat2 is heartbeat (migration 2) that also counts the other live
-- owners: a handle that is the schema's only user skips its pg_notify calls
-- (nobody else listens).
CREATE FUNCTION {{s}}.heartbeat2(p_owner text, p_dead_after_ms bigint, p_since bigint)
RETURNS TABLE (now_ms bigint, owner_died boolean, others_alive integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    INSERT INTO {{s}}.owners AS o (owner_id, heartbeat_at, alive_until)
    VALUES (p_owner, v_now, v_now + p_dead_after_ms)
    ON CONFLICT (owner_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, alive_until = EXCLUDED.alive_until;
    DELETE FROM {{s}}.owners o WHERE o.alive_until < v_now - 3600000;
    RETURN QUERY SELECT v_now,
        EXISTS (SELECT 1 FROM {{s}}.owners o WHERE o.alive_until > p_since AND o.alive_until <= v_now),
        (SELECT count(*)::integer FROM {{s}}.owners o WHERE o.owner_id <> p_owner AND o.alive_until > v_now);
END $$;

-- start_turn creates p_instance with the first turn of its execution 1,
-- computed by a runtime that was handed the start directly (no queue
-- message). It returns false, writing nothing, when the instance exists,
-- and fails with DXCNF when a queued start of it is being processed.
CREATE FUNCTION {{s}}.start_turn(
    p_instance       text,
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
    p_w_token        text[],
    p_lock_ms        bigint,
    p_owner          text,
    p_o_instance     text[],
    p_o_data         text[],
    p_o_visible_at   bigint[],
    p_o_parent       text[],
    p_c_instance     text[],
    p_c_execution    bigint[],
    p_c_activity     bigint[],
    p_ct_ids         bigint[],
    p_keep           integer
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('{{chan}}:' || p_instance, 0)) THEN
        RAISE EXCEPTION 'instance % is being fetched', p_instance USING ERRCODE = 'DXCNF';
    END IF;
    IF EXISTS (SELECT 1 FROM {{s}}.instances i WHERE i.instance_id = p_instance) THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM {{s}}.instance_locks l
               WHERE l.instance_id = p_instance AND l.locked_until > v_now) THEN
        RAISE EXCEPTION 'instance % is locked', p_instance USING ERRCODE = 'DXCNF';
    END IF;
    PERFORM {{s}}.write_turn(p_instance, v_now, p_execution, p_name, p_version, p_parent, p_status, p_output,
        p_set_custom, p_custom, p_ev_ids, p_ev_types, p_ev_data,
        p_w_instance, p_w_execution, p_w_activity, p_w_data, p_w_token, v_now + p_lock_ms, p_owner,
        p_o_instance, p_o_data, p_o_visible_at, p_o_parent,
        p_c_instance, p_c_execution, p_c_activity, p_ct_ids, p_keep, false);
    RETURN true;
END $$;
