-- duroxide PostgreSQL store, migration 2: lease owners.
--
-- Every store handle is a lease owner: it heartbeats its row in owners, and
-- records itself on every lock it takes (instance_locks.owner_id,
-- worker_queue.lock_owner). A lock is live while locked_until > now and its
-- owner is alive (alive_until > now); a lock without owner (taken before this
-- migration) lives by its timeout alone. A fetch takes over a lock whose
-- owner is dead, or missing, without counting the lost delivery as an
-- attempt when the owner died while the lock was still valid (locked_until
-- after its last heartbeat).

CREATE TABLE {{s}}.owners (
    owner_id     text PRIMARY KEY,
    heartbeat_at bigint NOT NULL,
    alive_until  bigint NOT NULL
);

ALTER TABLE {{s}}.instance_locks ADD COLUMN owner_id text;
ALTER TABLE {{s}}.worker_queue ADD COLUMN lock_owner text;

-- owner_alive reports whether p_owner holds live leases at p_now (NULL: a
-- lock without owner, alive).
CREATE FUNCTION {{s}}.owner_alive(p_owner text, p_now bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_owner IS NULL OR EXISTS (SELECT 1 FROM {{s}}.owners o
                                      WHERE o.owner_id = p_owner AND o.alive_until > p_now)
$$;

-- lost_lock reports whether a lock of p_owner valid until p_locked_until was
-- lost with its owner: the owner is dead (or gone) and the lock was still
-- valid at its last heartbeat.
CREATE FUNCTION {{s}}.lost_lock(p_owner text, p_locked_until bigint, p_now bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_owner IS NOT NULL AND p_locked_until IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM {{s}}.owners o
                       WHERE o.owner_id = p_owner
                         AND (o.alive_until > p_now OR p_locked_until <= o.heartbeat_at))
$$;

-- heartbeat extends p_owner's liveness to now + p_dead_after_ms and reports
-- whether some owner died since p_since (its work just became fetchable),
-- with the database time to pass as p_since next time.
CREATE FUNCTION {{s}}.heartbeat(p_owner text, p_dead_after_ms bigint, p_since bigint)
RETURNS TABLE (now_ms bigint, owner_died boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    INSERT INTO {{s}}.owners AS o (owner_id, heartbeat_at, alive_until)
    VALUES (p_owner, v_now, v_now + p_dead_after_ms)
    ON CONFLICT (owner_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, alive_until = EXCLUDED.alive_until;
    -- Owners dead for an hour: a missing owner is as dead, so dropping the
    -- row changes nothing but the table's size.
    DELETE FROM {{s}}.owners o WHERE o.alive_until < v_now - 3600000;
    RETURN QUERY SELECT v_now, EXISTS (SELECT 1 FROM {{s}}.owners o
                                       WHERE o.alive_until > p_since AND o.alive_until <= v_now);
END $$;

-- The fetch functions gain the owner argument (default NULL, so that the
-- previous release's calls keep working during a rolling upgrade).
DROP FUNCTION {{s}}.fetch_orchestration_item(bigint);
DROP FUNCTION {{s}}.fetch_work_item(bigint);

-- fetch_orchestration_item: see migration 1. A lock held by a dead owner
-- counts as expired; the messages of that lost lock keep their attempt
-- counts.
CREATE FUNCTION {{s}}.fetch_orchestration_item(p_lock_ms bigint, p_owner text DEFAULT NULL)
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
               coalesce(i.created_at, 0)
        FROM (SELECT 1) AS one
        LEFT JOIN {{s}}.instances i ON i.instance_id = v_cand
        LEFT JOIN {{s}}.executions e
               ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id;
        RETURN;
    END LOOP;
END $$;

-- fetch_work_item: see migration 1. A lock held by a dead owner counts as
-- expired; a delivery lost with its owner is not counted.
CREATE FUNCTION {{s}}.fetch_work_item(p_lock_ms bigint, p_owner text DEFAULT NULL)
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
            WHERE w.visible_at <= v_now
              AND (w.locked_until IS NULL OR w.locked_until <= v_now OR NOT {{s}}.owner_alive(w.lock_owner, v_now))
            ORDER BY w.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {{s}}.worker_queue w
        SET lock_token = v_token, locked_until = v_now + p_lock_ms, lock_owner = p_owner,
            attempt_count = w.attempt_count + CASE WHEN {{s}}.lost_lock(w.lock_owner, w.locked_until, v_now) THEN 0 ELSE 1 END
        FROM c WHERE w.id = c.id
        RETURNING w.work_item, w.lock_token, w.attempt_count;
        IF FOUND THEN
            RETURN;
        END IF;
        EXIT WHEN NOT EXISTS (
            SELECT 1 FROM {{s}}.worker_queue w
            WHERE w.visible_at <= v_now
              AND (w.locked_until IS NULL OR w.locked_until <= v_now OR NOT {{s}}.owner_alive(w.lock_owner, v_now)));
    END LOOP;
END $$;

-- abandon_work_item: see migration 1; also clears the owner.
CREATE OR REPLACE FUNCTION {{s}}.abandon_work_item(p_token text, p_delay_ms bigint, p_ignore_attempt boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {{s}}.now_ms();
BEGIN
    UPDATE {{s}}.worker_queue w
    SET lock_token = NULL,
        locked_until = NULL,
        lock_owner = NULL,
        visible_at = v_now + greatest(p_delay_ms, 0),
        attempt_count = CASE WHEN p_ignore_attempt THEN greatest(w.attempt_count - 1, 0) ELSE w.attempt_count END
    WHERE w.lock_token = p_token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lock token % is invalid', p_token USING ERRCODE = 'DXLCK';
    END IF;
    NULL; -- notified by the store after commit (coalesced)
END $$;
