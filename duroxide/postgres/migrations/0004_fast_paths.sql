-- duroxide PostgreSQL store, migration 4: fetches that do not read leased
-- work.
--
-- fetch_work_item (migration 2) scans the worker queue in id order and asks,
-- row by row, whether the row's lease expired or its owner died. Most rows
-- of a busy queue are leased by live owners (local dispatch inserts them
-- leased), so every fetch read all of them. fetch_work_item2 takes an
-- unleased message through a partial index that holds only those, and
-- falls back to the full scan only when a lease can be taken over (expired,
-- or its owner is not alive), found through a partial index of the leased
-- rows with the live owners read once.

CREATE INDEX worker_queue_ready_idx ON {{s}}.worker_queue (id) WHERE locked_until IS NULL;
CREATE INDEX worker_queue_leased_idx ON {{s}}.worker_queue (locked_until) WHERE locked_until IS NOT NULL;

CREATE FUNCTION {{s}}.fetch_work_item2(p_lock_ms bigint, p_owner text)
RETURNS TABLE (work_item text, lock_token text, attempt_count integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now   bigint := {{s}}.now_ms();
    v_token text := gen_random_uuid()::text;
    v_live  text[];
BEGIN
    RETURN QUERY
    WITH c AS (
        SELECT w.id FROM {{s}}.worker_queue w
        WHERE w.locked_until IS NULL AND w.visible_at <= v_now
        ORDER BY w.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {{s}}.worker_queue w
    SET lock_token = v_token, locked_until = v_now + p_lock_ms, lock_owner = p_owner,
        attempt_count = w.attempt_count + 1
    FROM c WHERE w.id = c.id
    RETURNING w.work_item, w.lock_token, w.attempt_count;
    IF FOUND THEN
        RETURN;
    END IF;
    -- Leases that can be taken over: expired, or held by an owner that is
    -- not alive (dead, closed or reclaimed: gone from owners).
    SELECT coalesce(array_agg(o.owner_id), '{}') INTO v_live
    FROM {{s}}.owners o WHERE o.alive_until > v_now;
    IF EXISTS (SELECT 1 FROM {{s}}.worker_queue w
               WHERE w.locked_until IS NOT NULL
                 AND (w.locked_until <= v_now OR (w.lock_owner IS NOT NULL AND NOT w.lock_owner = ANY (v_live)))) THEN
        RETURN QUERY SELECT * FROM {{s}}.fetch_work_item(p_lock_ms, p_owner);
    END IF;
END $$;

-- start_turn2 and commit_activity_turn2 are start_turn and
-- commit_activity_turn (migration 3) with fewer statements per call, the
-- common case written out instead of a call of write_turn: a start inserts
-- its instance and execution rows with their final values, and an activity
-- turn checks and touches its instance row in one UPDATE. What few turns
-- write (cancelled activities and timers, the KeepExecutions prune) is done
-- by write_turn_rest, called only then.

CREATE FUNCTION {{s}}.write_turn_rest(
    p_instance       text,
    p_now            bigint,
    p_execution      bigint,
    p_c_instance     text[],
    p_c_execution    bigint[],
    p_c_activity     bigint[],
    p_ct_ids         bigint[],
    p_keep           integer
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_c_instance) > 0 THEN
        DELETE FROM {{s}}.worker_queue w
        USING unnest(p_c_instance, p_c_execution, p_c_activity) AS c(inst, exec, act)
        WHERE w.instance_id = c.inst AND w.execution_id = c.exec AND w.activity_id = c.act;
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

CREATE FUNCTION {{s}}.start_turn2(
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
    v_now    bigint := {{s}}.now_ms();
    v_status text := coalesce(nullif(p_status, ''), 'Running');
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

    INSERT INTO {{s}}.instances (instance_id, orchestration_name, orchestration_version, current_execution_id,
                                 parent_instance_id, custom_status, custom_status_version, created_at, updated_at)
    VALUES (p_instance, p_name, p_version, p_execution, nullif(p_parent, ''),
            CASE WHEN p_set_custom THEN p_custom END, CASE WHEN p_set_custom THEN 1 ELSE 0 END, v_now, v_now);
    INSERT INTO {{s}}.executions (instance_id, execution_id, status, output, started_at, completed_at)
    VALUES (p_instance, p_execution, v_status, coalesce(p_output, ''), v_now,
            CASE WHEN v_status IN ('Completed', 'Failed', 'Cancelled', 'ContinuedAsNew') THEN v_now END);
    INSERT INTO {{s}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at)
    SELECT p_instance, p_execution, ev.id, ev.kind, ev.data, v_now
    FROM unnest(p_ev_ids, p_ev_types, p_ev_data) AS ev(id, kind, data);
    IF cardinality(p_w_data) > 0 THEN
        INSERT INTO {{s}}.worker_queue (instance_id, execution_id, activity_id, work_item, visible_at,
                                        lock_token, locked_until, lock_owner, attempt_count, created_at)
        SELECT w.inst, w.exec, w.act, w.data, v_now,
               w.tok, CASE WHEN w.tok IS NULL THEN NULL ELSE v_now + p_lock_ms END,
               CASE WHEN w.tok IS NULL THEN NULL ELSE p_owner END,
               CASE WHEN w.tok IS NULL THEN 0 ELSE 1 END, v_now
        FROM unnest(p_w_instance, p_w_execution, p_w_activity, p_w_data, p_w_token) AS w(inst, exec, act, data, tok);
    END IF;
    IF cardinality(p_o_data) > 0 THEN
        INSERT INTO {{s}}.orchestrator_queue (instance_id, work_item, visible_at, parent_instance_id, created_at)
        SELECT o.inst, o.data, CASE WHEN o.vis > 0 THEN o.vis ELSE v_now END, nullif(o.parent, ''), v_now
        FROM unnest(p_o_instance, p_o_data, p_o_visible_at, p_o_parent) AS o(inst, data, vis, parent);
    END IF;
    IF cardinality(p_c_instance) > 0 OR cardinality(p_ct_ids) > 0 OR p_keep > 0 THEN
        PERFORM {{s}}.write_turn_rest(p_instance, v_now, p_execution, p_c_instance, p_c_execution, p_c_activity, p_ct_ids, p_keep);
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION {{s}}.commit_activity_turn2(
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
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now  bigint := {{s}}.now_ms();
    v_n    bigint;
BEGIN
    DELETE FROM {{s}}.worker_queue w
    WHERE w.lock_token = ANY (p_tokens) AND w.locked_until > v_now;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> cardinality(p_tokens) THEN
        RAISE EXCEPTION 'a worker lock token is invalid or expired' USING ERRCODE = 'DXLCK';
    END IF;

    IF NOT pg_try_advisory_xact_lock(hashtextextended('{{chan}}:' || p_instance, 0)) THEN
        RAISE EXCEPTION 'instance % is being fetched', p_instance USING ERRCODE = 'DXCNF';
    END IF;
    IF EXISTS (SELECT 1 FROM {{s}}.instance_locks l
               WHERE l.instance_id = p_instance AND l.locked_until > v_now) THEN
        RAISE EXCEPTION 'instance % is locked', p_instance USING ERRCODE = 'DXCNF';
    END IF;
    -- The check of migration 3's SELECT … FOR UPDATE and the turn's update
    -- of the instance row in one statement.
    UPDATE {{s}}.instances i
    SET updated_at = v_now,
        custom_status = CASE WHEN p_set_custom THEN p_custom ELSE i.custom_status END,
        custom_status_version = i.custom_status_version + CASE WHEN p_set_custom THEN 1 ELSE 0 END
    WHERE i.instance_id = p_instance AND i.current_execution_id = p_execution
      AND EXISTS (SELECT 1 FROM {{s}}.executions e
                  WHERE e.instance_id = p_instance AND e.execution_id = p_execution AND e.status = 'Running')
      AND coalesce((SELECT max(h.event_id) FROM {{s}}.history h
                    WHERE h.instance_id = p_instance AND h.execution_id = p_execution), 0) = p_last_event;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n = 0 THEN
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

    INSERT INTO {{s}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at)
    SELECT p_instance, p_execution, ev.id, ev.kind, ev.data, v_now
    FROM unnest(p_ev_ids, p_ev_types, p_ev_data) AS ev(id, kind, data);
    IF coalesce(p_status, '') NOT IN ('', 'Running') THEN
        UPDATE {{s}}.executions e
        SET status = p_status,
            output = coalesce(p_output, ''),
            completed_at = CASE WHEN p_status IN ('Completed', 'Failed', 'Cancelled', 'ContinuedAsNew')
                                THEN coalesce(e.completed_at, v_now) END
        WHERE e.instance_id = p_instance AND e.execution_id = p_execution;
    END IF;
    IF cardinality(p_w_data) > 0 THEN
        INSERT INTO {{s}}.worker_queue (instance_id, execution_id, activity_id, work_item, visible_at,
                                        lock_token, locked_until, lock_owner, attempt_count, created_at)
        SELECT w.inst, w.exec, w.act, w.data, v_now,
               w.tok, CASE WHEN w.tok IS NULL THEN NULL ELSE v_now + p_lock_ms END,
               CASE WHEN w.tok IS NULL THEN NULL ELSE p_owner END,
               CASE WHEN w.tok IS NULL THEN 0 ELSE 1 END, v_now
        FROM unnest(p_w_instance, p_w_execution, p_w_activity, p_w_data, p_w_token) AS w(inst, exec, act, data, tok);
    END IF;
    IF cardinality(p_o_data) > 0 THEN
        INSERT INTO {{s}}.orchestrator_queue (instance_id, work_item, visible_at, parent_instance_id, created_at)
        SELECT o.inst, o.data, CASE WHEN o.vis > 0 THEN o.vis ELSE v_now END, nullif(o.parent, ''), v_now
        FROM unnest(p_o_instance, p_o_data, p_o_visible_at, p_o_parent) AS o(inst, data, vis, parent);
    END IF;
    IF cardinality(p_c_instance) > 0 OR cardinality(p_ct_ids) > 0 OR p_keep > 0 THEN
        PERFORM {{s}}.write_turn_rest(p_instance, v_now, p_execution, p_c_instance, p_c_execution, p_c_activity, p_ct_ids, p_keep);
    END IF;

    RETURN EXISTS (SELECT 1 FROM {{s}}.orchestrator_queue q
                   WHERE q.instance_id = p_instance AND q.visible_at <= v_now);
END $$;
