-- duroxide PostgreSQL store, migration 5: an activity turn deletes its
-- completed worker rows with a statement that is planned once.
--
-- commit_activity_turn2 (migration 4) deleted them with
-- lock_token = ANY (p_tokens). For that statement the plan cache always
-- found the plan made for the call's array (whose length it then knows)
-- cheaper than the generic one, so it planned the statement again at every
-- call: 29 µs a call, 10 % of the server's CPU in a run of 1,000 seq
-- workflows (pg_stat_statements with track_planning: 3,011 plans for 3,010
-- calls, every other statement of the turn functions planned 15–23 times).
-- A timer fired in process commits with no token at all and planned the
-- statement just the same. One token (an activity's own completion, the
-- common case) is now deleted with lock_token = p_tokens[1], whose generic
-- plan the cache keeps; none deletes nothing; several (completions that
-- arrived together) still use ANY.

CREATE OR REPLACE FUNCTION {{s}}.commit_activity_turn2(
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
    IF cardinality(p_tokens) = 1 THEN
        DELETE FROM {{s}}.worker_queue w
        WHERE w.lock_token = p_tokens[1] AND w.locked_until > v_now;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    ELSIF cardinality(p_tokens) > 1 THEN
        DELETE FROM {{s}}.worker_queue w
        WHERE w.lock_token = ANY (p_tokens) AND w.locked_until > v_now;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    ELSE
        v_n := 0;
    END IF;
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
