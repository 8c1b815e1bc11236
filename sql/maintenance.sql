-- Maintenance (seed migrations 002, 004, 007): each job is a function that does one bounded batch
-- in the caller's transaction, skips rows other sessions hold (SKIP LOCKED), and says
-- what it did. run_maintenance() runs them all, each in its own subtransaction, and records the
-- outcome in maintenance_runs. The background worker (src/maintenance.rs) or pg_cron calls it.

CREATE TABLE checkout.maintenance_runs (
  job         text PRIMARY KEY,
  last_run_at timestamptz,
  last_result jsonb,
  last_error  text,
  last_error_at timestamptz
);
COMMENT ON TABLE checkout.maintenance_runs IS 'Outcome of the last run of each maintenance job (operational state, not dumped).';

-- On a Citus cluster (checkout.routed_here(false) is true) a row lock across shards is refused. A job
-- there first finds, without locks, the organizations with due rows, then works through them one
-- at a time (the most overdue first) with statements that name the organization (v_org), which
-- Citus runs on its node, SKIP LOCKED as on one server; p_batch bounds the whole run. On one
-- server v_org is NULL and one pass covers every organization.

-- The jobs read their settings through checkout.setting_seconds() and checkout.setting_integer()
-- (src/gucs.rs): native, so calling one loads the library, whose settings then discard a value a
-- non-superuser SET before it was loaded. Their defaults are in src/gucs.rs only.

-- Pending sessions past expires_at become expired; expired sessions older than
-- checkout.session_retention (default 1 day, the seed's intent) are deleted.
CREATE FUNCTION checkout.expire_checkout_sessions(p_batch integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_retention interval := make_interval(secs => checkout.setting_seconds('checkout.session_retention'));
  v_expired integer := 0;
  v_deleted integer := 0;
  v_count integer;
BEGIN
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY due), '{}') INTO v_orgs FROM (
      SELECT organization_id, min(expires_at) AS due FROM checkout.checkout_sessions
      WHERE status IN ('pending', 'expired') AND expires_at < now() GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  FOREACH v_org IN ARRAY v_orgs LOOP
    WITH due AS (
      SELECT organization_id, id FROM checkout.checkout_sessions
      WHERE status = 'pending' AND expires_at < now() AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY expires_at LIMIT p_batch - v_expired FOR NO KEY UPDATE SKIP LOCKED)
    UPDATE checkout.checkout_sessions s SET status = 'expired', updated_at = now()
    FROM due WHERE (v_org IS NULL OR s.organization_id = v_org) AND s.organization_id = due.organization_id AND s.id = due.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_expired := v_expired + v_count;
    WITH old AS (
      SELECT organization_id, id FROM checkout.checkout_sessions
      WHERE status = 'expired' AND expires_at < now() - v_retention AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY expires_at LIMIT p_batch - v_deleted FOR UPDATE SKIP LOCKED)
    DELETE FROM checkout.checkout_sessions s USING old
    WHERE (v_org IS NULL OR s.organization_id = v_org) AND s.organization_id = old.organization_id AND s.id = old.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_deleted := v_deleted + v_count;
    EXIT WHEN v_expired >= p_batch AND v_deleted >= p_batch;
  END LOOP;
  RETURN jsonb_build_object('expired', v_expired, 'deleted', v_deleted);
END $$;

-- The seed's name and integer result. Keys past expires_at are deleted, never one being processed
-- (locked by a claim, or marked processing by another writer). Rows that recorded a key keep it.
CREATE FUNCTION checkout.cleanup_expired_idempotency_keys(p_batch integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_deleted integer := 0;
  v_count integer;
BEGIN
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY due), '{}') INTO v_orgs FROM (
      SELECT organization_id, min(expires_at) AS due FROM checkout.idempotency_keys
      WHERE expires_at < now() AND status <> 'processing' GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  FOREACH v_org IN ARRAY v_orgs LOOP
    WITH old AS (
      SELECT organization_id, id FROM checkout.idempotency_keys
      WHERE expires_at < now() AND status <> 'processing' AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY expires_at LIMIT p_batch - v_deleted FOR UPDATE SKIP LOCKED)
    DELETE FROM checkout.idempotency_keys k USING old
    WHERE (v_org IS NULL OR k.organization_id = v_org) AND k.organization_id = old.organization_id AND k.id = old.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_deleted := v_deleted + v_count;
    EXIT WHEN v_deleted >= p_batch;
  END LOOP;
  RETURN v_deleted;
END $$;

-- Reconciliation queue. An item is open while pending, processing or failed; one open item per
-- (organization, type, reference_id): enqueueing it again merges details and keeps the more urgent
-- priority. Another organization's item with the same type and reference is another item.
CREATE FUNCTION checkout.enqueue_reconciliation(p_type text, p_reference_id text, p_details jsonb DEFAULT '{}',
  p_priority integer DEFAULT 5, p_organization_id uuid DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_id uuid;
BEGIN
  IF p_type IS NULL OR p_reference_id IS NULL THEN
    RAISE EXCEPTION 'argument % must not be NULL', CASE WHEN p_type IS NULL THEN 'p_type' ELSE 'p_reference_id' END
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF length(p_type) NOT BETWEEN 1 AND 100 OR length(p_reference_id) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'p_type must be 1 to 100 characters and p_reference_id 1 to 255'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('lengths: %s, %s', length(p_type), length(p_reference_id));
  END IF;
  IF p_priority IS NULL OR p_priority NOT BETWEEN 1 AND 10 THEN
    RAISE EXCEPTION 'p_priority must be 1 (most urgent) to 10' USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('priority: %s', p_priority);
  END IF;
  IF p_details IS NOT NULL AND jsonb_typeof(p_details) <> 'object' THEN
    RAISE EXCEPTION 'p_details must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_organization_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM checkout.organizations WHERE id = p_organization_id) THEN
    RAISE EXCEPTION 'organization not found' USING ERRCODE = 'no_data_found',
      DETAIL = format('organization_id: %s', p_organization_id);
  END IF;
  INSERT INTO checkout.reconciliation_queue AS q (organization_id, type, reference_id, details, priority)
  VALUES (p_organization_id, p_type, p_reference_id, coalesce(p_details, '{}'), p_priority)
  ON CONFLICT (organization_id, type, reference_id) WHERE status IN ('pending', 'processing', 'failed') DO UPDATE
  SET details = q.details || EXCLUDED.details, priority = least(q.priority, EXCLUDED.priority), updated_at = now()
  RETURNING q.id INTO v_id;
  RETURN v_id;
END $$;

-- Hands out up to p_batch due items, most urgent first: pending (and due), failed whose retry time
-- has come, or processing whose lease ran out (its worker died). They become processing, leased to
-- p_worker for checkout.reconciliation_lease (default 5 min). Concurrent claimers never get the same item.
CREATE FUNCTION checkout.claim_reconciliation(p_batch integer, p_worker text) RETURNS SETOF checkout.reconciliation_queue
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF p_batch IS NULL OR p_batch < 0 OR p_worker IS NULL OR p_worker = '' THEN
    RAISE EXCEPTION 'p_batch must be >= 0 and p_worker a non-empty name'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('p_batch: %s, p_worker: %s', p_batch, p_worker);
  END IF;
  RETURN QUERY
  WITH due AS (
    SELECT id FROM checkout.reconciliation_queue
    WHERE (status = 'pending' AND (next_retry_at IS NULL OR next_retry_at <= now()))
       OR (status = 'failed' AND next_retry_at <= now())
       OR (status = 'processing' AND locked_until < now())
    ORDER BY priority, created_at
    LIMIT p_batch FOR UPDATE SKIP LOCKED)
  UPDATE checkout.reconciliation_queue q
  SET status = 'processing', locked_by = p_worker,
      locked_until = now() + make_interval(secs => checkout.setting_seconds('checkout.reconciliation_lease')),
      updated_at = now()
  FROM due WHERE q.id = due.id
  RETURNING q.*;
END $$;

CREATE FUNCTION checkout.complete_reconciliation(p_id uuid) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH done AS (
    UPDATE checkout.reconciliation_queue
    SET status = 'completed', processed_at = now(), locked_by = NULL, locked_until = NULL, updated_at = now()
    WHERE id = p_id AND status = 'processing'
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM done)
$$;

-- A failed attempt: error_count + 1, retried after 15 s + attempt^4 s (River's curve, plus Oban's
-- 15 s floor), times a random jitter factor in [0.9, 1.1], capped at 24 h; after
-- checkout.reconciliation_max_attempts (default 10) attempts the item goes to manual_review.
CREATE FUNCTION checkout.fail_reconciliation(p_id uuid, p_error text) RETURNS checkout.reconciliation_queue
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE checkout.reconciliation_queue
  SET error_count = error_count + 1, error_message = p_error, locked_by = NULL, locked_until = NULL,
      updated_at = now(),
      status = CASE WHEN error_count + 1 >= checkout.setting_integer('checkout.reconciliation_max_attempts')
                    THEN 'manual_review' ELSE 'failed' END,
      next_retry_at = CASE WHEN error_count + 1 >= checkout.setting_integer('checkout.reconciliation_max_attempts')
                    THEN NULL
                    ELSE now() + make_interval(secs => least(86400, (15 + power(error_count + 1, 4)) * (0.9 + random() * 0.2))) END
  WHERE id = p_id AND status IN ('processing', 'pending', 'failed')
  RETURNING *
$$;

-- The maintenance side of the queue: leases that ran out count as a failed attempt ('lease
-- expired'), so a worker that keeps dying on an item sends it to manual_review.
CREATE FUNCTION checkout.expire_reconciliation_leases(p_batch integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_count integer := 0;
  v_id uuid;
BEGIN
  FOR v_id IN
    SELECT id FROM checkout.reconciliation_queue
    WHERE status = 'processing' AND locked_until < now()
    ORDER BY locked_until LIMIT p_batch FOR UPDATE SKIP LOCKED
  LOOP
    PERFORM checkout.fail_reconciliation(v_id, 'lease expired');
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END $$;

-- Products whose metrics are NULL (cleared by every new subscription) or older than a day get:
-- active and trialing subscription counts, and MRR = sum over active subscriptions of the amount
-- per month (day x 30, week x 52/12, month x 1, year / 12, divided by interval_count), rounded,
-- in minor units per currency. The seed's job compared NULL < timestamp and never refreshed them.
CREATE FUNCTION checkout.refresh_product_metrics(p_batch integer DEFAULT 100) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_done integer := 0;
  v_count integer;
BEGIN
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY stalest NULLS FIRST), '{}') INTO v_orgs FROM (
      SELECT organization_id, CASE WHEN bool_or(metrics_last_calculated_at IS NULL) THEN NULL
                              ELSE min(metrics_last_calculated_at) END AS stalest FROM checkout.products
      WHERE metrics_last_calculated_at IS NULL OR metrics_last_calculated_at < now() - interval '1 day'
      GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  FOREACH v_org IN ARRAY v_orgs LOOP
    -- Every table is named with the organization, so that Citus runs the statement on its node.
    WITH stale AS (
      SELECT organization_id, id FROM checkout.products
      WHERE (metrics_last_calculated_at IS NULL OR metrics_last_calculated_at < now() - interval '1 day')
        AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY metrics_last_calculated_at NULLS FIRST LIMIT p_batch - v_done FOR NO KEY UPDATE SKIP LOCKED),
    figures AS (
      SELECT stale.organization_id, stale.id,
        (SELECT count(*) FROM checkout.subscriptions s WHERE (v_org IS NULL OR s.organization_id = v_org)
           AND s.organization_id = stale.organization_id AND s.product_id = stale.id AND s.status = 'active') AS active,
        (SELECT count(*) FROM checkout.subscriptions s WHERE (v_org IS NULL OR s.organization_id = v_org)
           AND s.organization_id = stale.organization_id AND s.product_id = stale.id AND s.status = 'trialing') AS trialing,
        (SELECT coalesce(jsonb_object_agg(currency, mrr), '{}') FROM (
           -- numeric throughout: no amount, however large, can make the job fail (for every product).
           -- A searched CASE: Citus sends a simple one (CASE x WHEN ...) garbled (citusdata/citus#2862).
           SELECT s.currency, round(sum(s.amount::numeric * CASE WHEN s."interval" = 'day' THEN 30 WHEN s."interval" = 'week' THEN 52.0 / 12
                                                     WHEN s."interval" = 'month' THEN 1 ELSE 1.0 / 12 END / s.interval_count)) AS mrr
           FROM checkout.subscriptions s WHERE (v_org IS NULL OR s.organization_id = v_org)
             AND s.organization_id = stale.organization_id AND s.product_id = stale.id AND s.status = 'active'
           GROUP BY s.currency) m) AS mrr
      FROM stale)
    UPDATE checkout.products p
    SET metrics_active_subscriptions = f.active, metrics_trialing_subscriptions = f.trialing,
        metrics_mrr = f.mrr, metrics_last_calculated_at = now()
    FROM figures f WHERE (v_org IS NULL OR p.organization_id = v_org) AND p.organization_id = f.organization_id AND p.id = f.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_done := v_done + v_count;
    EXIT WHEN v_done >= p_batch;
  END LOOP;
  RETURN v_done;
END $$;

-- Runs every job once; a job that fails is recorded (and its work rolled back) and the others run.
CREATE FUNCTION checkout.run_maintenance() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_job text;
  v_result jsonb;
  v_summary jsonb := '{}';
BEGIN
  FOREACH v_job IN ARRAY ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                                'expire_reconciliation_leases', 'end_subscription_periods', 'refresh_product_metrics'] LOOP
    BEGIN
      EXECUTE format('SELECT to_jsonb(checkout.%I())', v_job) INTO v_result;
      INSERT INTO checkout.maintenance_runs AS r (job, last_run_at, last_result) VALUES (v_job, now(), v_result)
      ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at, last_result = EXCLUDED.last_result;
    EXCEPTION WHEN OTHERS THEN
      v_result := jsonb_build_object('error', SQLERRM, 'sqlstate', SQLSTATE);
      INSERT INTO checkout.maintenance_runs AS r (job, last_run_at, last_error, last_error_at) VALUES (v_job, now(), SQLERRM, now())
      ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at, last_error = EXCLUDED.last_error,
                                      last_error_at = EXCLUDED.last_error_at;
    END;
    v_summary := v_summary || jsonb_build_object(v_job, v_result);
  END LOOP;
  RETURN v_summary;
END $$;

-- Per job: last run, last result, last error, and the next run when the background worker runs here.
CREATE FUNCTION checkout.maintenance_status()
RETURNS TABLE (job text, last_run_at timestamptz, last_result jsonb, last_error text, last_error_at timestamptz,
               next_run_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT j.job, r.last_run_at, r.last_result, r.last_error, r.last_error_at,
         CASE WHEN EXISTS (SELECT 1 FROM pg_stat_activity a
                           WHERE a.backend_type = 'checkout maintenance' AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()))
              THEN coalesce(r.last_run_at, now()) + make_interval(secs => checkout.setting_seconds('checkout.maintenance_interval'))
         END
  FROM unnest(ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                    'expire_reconciliation_leases', 'end_subscription_periods', 'refresh_product_metrics']) AS j(job)
  LEFT JOIN checkout.maintenance_runs r ON r.job = j.job
$$;

-- pg_cron, for servers that do not preload checkout: one job running run_maintenance().
CREATE FUNCTION checkout.schedule_with_pg_cron(p_schedule text DEFAULT '* * * * *') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
    RAISE EXCEPTION 'pg_cron is not installed in this database'
      USING ERRCODE = 'feature_not_supported',
            HINT = 'CREATE EXTENSION pg_cron (it must be in shared_preload_libraries), or preload checkout to use its own worker.';
  END IF;
  RETURN cron.schedule('checkout-maintenance', p_schedule, 'SELECT checkout.run_maintenance()');
END $$;

CREATE FUNCTION checkout.unschedule_pg_cron() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
    RETURN false;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'checkout-maintenance') THEN
    RETURN false;
  END IF;
  RETURN cron.unschedule('checkout-maintenance');
END $$;

REVOKE ALL ON FUNCTION checkout.expire_checkout_sessions(integer), checkout.cleanup_expired_idempotency_keys(integer),
  checkout.enqueue_reconciliation(text, text, jsonb, integer, uuid), checkout.claim_reconciliation(integer, text),
  checkout.complete_reconciliation(uuid), checkout.fail_reconciliation(uuid, text),
  checkout.expire_reconciliation_leases(integer), checkout.refresh_product_metrics(integer),
  checkout.run_maintenance(), checkout.maintenance_status(), checkout.schedule_with_pg_cron(text),
  checkout.unschedule_pg_cron() FROM PUBLIC;
