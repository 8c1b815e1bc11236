-- checkout 0.2.0 -> 0.1.0: the way back (ALTER EXTENSION checkout UPDATE TO '0.1.0').
-- 0.1.0 cannot hold everything 0.2.0 records, so this script
--  * deletes the audit rows of deleted subscriptions (0.1.0's trail has a foreign key to its
--    subscription), and
--  * records change types 0.1.0 does not know (renewed, past_due, converted) as 'updated', keeping
--    the original in metadata.change_type_0_2_0,
-- and drops the lifecycle functions and job, the subscriptions triggers and changed_by_role.
-- Hand-written; tests/e2e/t_upgrade.sh checks that the result equals a fresh 0.1.0.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.1.0'" to load this file. \quit

DROP FUNCTION checkout.end_subscription_periods(integer);
DROP INDEX checkout.idx_subscriptions_cancel_pending;
DROP TRIGGER subscriptions_audit ON checkout.subscriptions;
DROP TRIGGER subscriptions_guard ON checkout.subscriptions;
DROP FUNCTION checkout.audit_subscription_change();
DROP FUNCTION checkout.guard_subscription_update();
DROP FUNCTION checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text);
DROP FUNCTION checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text);
DROP FUNCTION checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text);
DROP FUNCTION checkout.renew_subscription_period(uuid, uuid, timestamptz, uuid, text);
DROP FUNCTION checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text);
DROP FUNCTION checkout.expire_subscription(uuid, uuid, text, uuid, text);
DROP FUNCTION checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text);
DROP FUNCTION checkout.subscription_transitions();
DROP FUNCTION checkout.subscription_transition_allowed(text, text);
DROP FUNCTION checkout.subscription_audit_skipped();
DROP FUNCTION checkout.subscription_change_context();

ALTER TABLE checkout.subscription_changes DROP COLUMN changed_by_role;
DROP FUNCTION checkout.invoking_role();
DELETE FROM checkout.subscription_changes c
WHERE NOT EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.organization_id = c.organization_id AND s.id = c.subscription_id);
UPDATE checkout.subscription_changes
SET metadata = metadata || jsonb_build_object('change_type_0_2_0', change_type), change_type = 'updated'
WHERE change_type IN ('renewed', 'past_due', 'converted', 'deleted');
ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_change_type_check;
ALTER TABLE checkout.subscription_changes ADD CONSTRAINT subscription_changes_change_type_check
  CHECK (change_type IN ('created', 'updated', 'cancelled', 'reactivated', 'expired', 'upgraded', 'downgraded'));
ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_organization_id_fkey;
ALTER TABLE checkout.subscription_changes ADD CONSTRAINT subscription_changes_subscription_id_fkey
  FOREIGN KEY (organization_id, subscription_id) REFERENCES checkout.subscriptions (organization_id, id) ON DELETE CASCADE;
COMMENT ON COLUMN checkout.subscription_changes.change_type IS NULL;

-- sql/maintenance.sql of 0.1.0: run_maintenance() and maintenance_status() without the lifecycle job.
CREATE OR REPLACE FUNCTION checkout.run_maintenance() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_job text;
  v_result jsonb;
  v_summary jsonb := '{}';
BEGIN
  FOREACH v_job IN ARRAY ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                                'expire_reconciliation_leases', 'refresh_product_metrics'] LOOP
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
CREATE OR REPLACE FUNCTION checkout.maintenance_status()
RETURNS TABLE (job text, last_run_at timestamptz, last_result jsonb, last_error text, last_error_at timestamptz,
               next_run_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT j.job, r.last_run_at, r.last_result, r.last_error, r.last_error_at,
         CASE WHEN EXISTS (SELECT 1 FROM pg_stat_activity a
                           WHERE a.backend_type = 'checkout maintenance' AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()))
              THEN coalesce(r.last_run_at, now()) + make_interval(secs => checkout.setting_seconds('checkout.maintenance_interval', 60))
         END
  FROM unnest(ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                    'expire_reconciliation_leases', 'refresh_product_metrics']) AS j(job)
  LEFT JOIN checkout.maintenance_runs r ON r.job = j.job
$$;
DELETE FROM checkout.maintenance_runs WHERE job = 'end_subscription_periods';

-- sql/invariants.sql of 0.1.0.
-- checkout.check_invariants(): what must hold however the writes happened (functions, crashes,
-- kills, timeouts). Returns one row per violation; empty means consistent. Used by the fault,
-- fuzz and stress runs.
CREATE OR REPLACE FUNCTION checkout.check_invariants()
RETURNS TABLE (invariant text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- every subscription has its 'created' audit row
  SELECT 'subscription without its created audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE NOT EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.subscription_id = s.id AND c.change_type = 'created')
  UNION ALL
  -- a trialing subscription has its trial recorded
  SELECT 'trialing subscription without trial_history', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status = 'trialing'
    AND NOT EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.subscription_id = s.id)
  UNION ALL
  -- at most one active or trialing subscription per (organization, customer, product)
  SELECT 'duplicate active subscription', format('customer %s, product %s: %s', customer_id, product_id, count(*))
  FROM checkout.subscriptions WHERE status IN ('active', 'trialing')
  GROUP BY organization_id, customer_id, product_id HAVING count(*) > 1
  UNION ALL
  -- grants belong to the subscription's customer and organization
  SELECT 'grant of another customer''s subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.id = g.subscription_id
  WHERE s.customer_id <> g.customer_id
  UNION ALL
  -- the customer counters equal a recount
  SELECT 'customer counters differ from a recount',
         format('customer %s: count %s (recount %s), active %s (recount %s)', c.id, c.subscription_count, r.n,
                c.has_active_subscription, r.active)
  FROM checkout.customers c
  CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(bool_or(s.status IN ('active', 'trialing')), false) AS active
                      FROM checkout.subscriptions s WHERE s.customer_id = c.id) r
  WHERE c.subscription_count <> r.n OR c.has_active_subscription <> r.active
  UNION ALL
  -- no idempotency key left half-done: checkout never commits one in 'processing'
  SELECT 'idempotency key stuck in processing', format('%s/%s', k.organization_id, k.key)
  FROM checkout.idempotency_keys k WHERE k.status = 'processing'
  UNION ALL
  -- a completed key that answered with a subscription points at one that exists
  SELECT 'completed key names a missing subscription', format('%s/%s', k.organization_id, k.key)
  FROM checkout.idempotency_keys k
  WHERE k.status = 'completed' AND k.operation = 'create_subscription_atomic'
    AND (k.response->>'success')::boolean
    AND NOT EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.id = (k.response->>'subscription_id')::uuid)
  UNION ALL
  -- every customer has its current email recorded as a variant
  SELECT 'customer email not recorded in customer_email_variants', c.id::text
  FROM checkout.customers c
  WHERE NOT EXISTS (SELECT 1 FROM checkout.customer_email_variants v
                    WHERE v.organization_id = c.organization_id AND v.customer_id = c.id AND lower(v.email) = lower(c.email))
$$;
COMMENT ON FUNCTION checkout.check_invariants() IS 'Consistency checks (audit rows, trials, one active subscription, counters, idempotency keys, email variants): one row per violation.';

-- sql/verify.sql of 0.1.0.
-- checkout.verify(): the seed's "post-migration verification" as a function. One row per expected
-- table, constraint, index and function: ok = present (and valid), detail = its definition or why not.
-- Loaded last (finalize), so the functions listed here exist. Keep this list in step with the schema.
CREATE OR REPLACE FUNCTION checkout.verify()
RETURNS TABLE ("check" text, ok boolean, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $verify$
  WITH expected(kind, name, tbl) AS (
    VALUES
    ('table', 'organizations', NULL),
    ('table', 'users', NULL),
    ('constraint', 'users_org_id_key', 'users'),
    ('index', 'users_org_email_key', 'users'),
    ('table', 'customers', NULL),
    ('constraint', 'customers_org_id_key', 'customers'),
    ('index', 'unique_customer_email_per_org', 'customers'),
    ('index', 'unique_external_id_per_org', 'customers'),
    ('index', 'idx_customers_email_org', 'customers'),
    ('index', 'idx_customers_external_id_org', 'customers'),
    ('index', 'idx_customers_stripe_id', 'customers'),
    ('table', 'products', NULL),
    ('constraint', 'products_org_id_key', 'products'),
    ('table', 'features', NULL),
    ('constraint', 'features_org_id_key', 'features'),
    ('constraint', 'features_org_key_key', 'features'),
    ('table', 'subscriptions', NULL),
    ('constraint', 'subscriptions_org_id_key', 'subscriptions'),
    ('constraint', 'check_subscription_dates', 'subscriptions'),
    ('constraint', 'check_trial_dates', 'subscriptions'),
    ('constraint', 'check_positive_amount', 'subscriptions'),
    ('constraint', 'subscriptions_customer_id_fkey', 'subscriptions'),
    ('constraint', 'subscriptions_product_id_fkey', 'subscriptions'),
    ('index', 'unique_active_subscription', 'subscriptions'),
    ('index', 'idx_subscriptions_customer_product', 'subscriptions'),
    ('index', 'idx_subscriptions_active', 'subscriptions'),
    ('index', 'idx_subscriptions_ending', 'subscriptions'),
    ('index', 'idx_subscriptions_trial_ending', 'subscriptions'),
    ('index', 'idx_subscriptions_product', 'subscriptions'),
    ('table', 'checkout_sessions', NULL),
    ('constraint', 'checkout_sessions_org_id_key', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_customer_id_fkey', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_product_id_fkey', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_expires', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_customer', 'checkout_sessions'),
    ('index', 'idx_products_metrics_stale', 'products'),
    ('index', 'idx_checkout_sessions_expired', 'checkout_sessions'),
    ('table', 'payment_intents', NULL),
    ('constraint', 'payment_intents_org_id_key', 'payment_intents'),
    ('constraint', 'payment_intents_org_stripe_key', 'payment_intents'),
    ('constraint', 'check_positive_payment_amount', 'payment_intents'),
    ('constraint', 'payment_intents_customer_id_fkey', 'payment_intents'),
    ('constraint', 'payment_intents_subscription_id_fkey', 'payment_intents'),
    ('constraint', 'payment_intents_checkout_session_id_fkey', 'payment_intents'),
    ('index', 'idx_payment_intents_subscription', 'payment_intents'),
    ('index', 'idx_payment_intents_customer', 'payment_intents'),
    ('index', 'idx_payment_intents_session', 'payment_intents'),
    ('table', 'feature_grants', NULL),
    ('constraint', 'unique_feature_grant', 'feature_grants'),
    ('constraint', 'feature_grants_customer_id_fkey', 'feature_grants'),
    ('constraint', 'feature_grants_feature_id_fkey', 'feature_grants'),
    ('constraint', 'feature_grants_subscription_id_fkey', 'feature_grants'),
    ('constraint', 'feature_grants_revoked_after_granted', 'feature_grants'),
    ('index', 'idx_feature_grants_customer', 'feature_grants'),
    ('index', 'idx_feature_grants_subscription', 'feature_grants'),
    ('index', 'idx_feature_grants_feature', 'feature_grants'),
    ('table', 'webhook_events', NULL),
    ('constraint', 'webhook_events_provider_event_key', 'webhook_events'),
    ('index', 'idx_webhook_events_type_status', 'webhook_events'),
    ('index', 'idx_webhook_events_unprocessed', 'webhook_events'),
    ('index', 'idx_webhook_events_object', 'webhook_events'),
    ('table', 'idempotency_keys', NULL),
    ('constraint', 'idempotency_keys_org_key_key', 'idempotency_keys'),
    ('constraint', 'idempotency_keys_completed_has_response', 'idempotency_keys'),
    ('index', 'idx_idempotency_keys_expires', 'idempotency_keys'),
    ('index', 'idx_idempotency_keys_status', 'idempotency_keys'),
    ('table', 'trial_history', NULL),
    ('constraint', 'trial_history_one_per_product', 'trial_history'),
    ('constraint', 'trial_history_dates', 'trial_history'),
    ('constraint', 'trial_history_customer_id_fkey', 'trial_history'),
    ('constraint', 'trial_history_product_id_fkey', 'trial_history'),
    ('constraint', 'trial_history_subscription_id_fkey', 'trial_history'),
    ('index', 'idx_trial_history_customer', 'trial_history'),
    ('index', 'idx_trial_history_product', 'trial_history'),
    ('index', 'idx_trial_history_dates', 'trial_history'),
    ('index', 'idx_trial_history_converted', 'trial_history'),
    ('index', 'idx_trial_history_subscription', 'trial_history'),
    ('table', 'customer_email_variants', NULL),
    ('constraint', 'customer_email_variants_customer_id_fkey', 'customer_email_variants'),
    ('index', 'customer_email_variants_key', 'customer_email_variants'),
    ('index', 'idx_email_variants_normalized', 'customer_email_variants'),
    ('index', 'idx_email_variants_domain', 'customer_email_variants'),
    ('table', 'subscription_changes', NULL),
    ('constraint', 'subscription_changes_subscription_id_fkey', 'subscription_changes'),
    ('constraint', 'subscription_changes_changed_by_fkey', 'subscription_changes'),
    ('index', 'idx_subscription_changes_sub', 'subscription_changes'),
    ('index', 'idx_subscription_changes_type', 'subscription_changes'),
    ('index', 'idx_subscription_changes_date', 'subscription_changes'),
    ('index', 'idx_subscription_changes_changed_by', 'subscription_changes'),
    ('table', 'refunds', NULL),
    ('constraint', 'check_positive_refund_amount', 'refunds'),
    ('constraint', 'refunds_payment_intent_id_fkey', 'refunds'),
    ('constraint', 'refunds_subscription_id_fkey', 'refunds'),
    ('index', 'idx_refunds_payment', 'refunds'),
    ('index', 'idx_refunds_subscription', 'refunds'),
    ('index', 'idx_refunds_status', 'refunds'),
    ('table', 'reconciliation_queue', NULL),
    ('constraint', 'check_reconciliation_priority', 'reconciliation_queue'),
    ('index', 'idx_reconciliation_status', 'reconciliation_queue'),
    ('index', 'idx_reconciliation_retry', 'reconciliation_queue'),
    ('index', 'reconciliation_queue_open_item', 'reconciliation_queue'),
    ('function', 'checkout.verify()', NULL),
    ('function', 'checkout.normalize_email(text)', NULL),
    ('function', 'checkout.email_rules_version()', NULL),
    ('function', 'checkout.renormalize_email_variants()', NULL),
    ('function', 'checkout.check_trial_eligibility(uuid, uuid, text)', NULL),
    ('function', 'checkout.create_subscription_atomic(jsonb, jsonb[], uuid, uuid, uuid, text)', NULL),
    ('function', 'checkout.upsert_customer_atomic(uuid, text, text, text, text, jsonb)', NULL),
    ('function', 'checkout.track_customer_email()', NULL),
    ('function', 'checkout.merge_duplicate_email_variant()', NULL),
    ('function', 'checkout.expire_checkout_sessions(integer)', NULL),
    ('function', 'checkout.cleanup_expired_idempotency_keys(integer)', NULL),
    ('function', 'checkout.enqueue_reconciliation(text, text, jsonb, integer, uuid)', NULL),
    ('function', 'checkout.claim_reconciliation(integer, text)', NULL),
    ('function', 'checkout.complete_reconciliation(uuid)', NULL),
    ('function', 'checkout.fail_reconciliation(uuid, text)', NULL),
    ('function', 'checkout.expire_reconciliation_leases(integer)', NULL),
    ('function', 'checkout.refresh_product_metrics(integer)', NULL),
    ('function', 'checkout.run_maintenance()', NULL),
    ('function', 'checkout.maintenance_status()', NULL),
    ('function', 'checkout.schedule_with_pg_cron(text)', NULL),
    ('function', 'checkout.unschedule_pg_cron()', NULL),
    ('function', 'checkout.check_invariants()', NULL),
    ('function', 'checkout.record_refund(uuid, text, text, bigint, text, text, text, uuid)', NULL),
    ('function', 'checkout.update_refund_status(uuid, text, text)', NULL),
    ('function', 'checkout.guard_refund_status()', NULL),
    ('function', 'checkout.record_webhook_event(uuid, text, text, jsonb, timestamp with time zone, text)', NULL),
    ('function', 'checkout.claim_webhook_events(integer)', NULL),
    ('function', 'checkout.complete_webhook_event(uuid)', NULL),
    ('function', 'checkout.fail_webhook_event(uuid, text)', NULL),
    ('table', 'maintenance_runs', NULL)
  ), found AS (
    SELECT e.kind, e.name,
      CASE e.kind
        WHEN 'table' THEN (SELECT 'table with ' || c.reltuples::bigint || ' rows (estimate)'
                           FROM pg_class c WHERE c.oid = to_regclass('checkout.' || e.name) AND c.relkind = 'r')
        WHEN 'index' THEN (SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
                           WHERE i.indexrelid = to_regclass('checkout.' || e.name)
                             AND i.indrelid = to_regclass('checkout.' || e.tbl) AND i.indisvalid)
        WHEN 'constraint' THEN (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
                                WHERE c.conrelid = to_regclass('checkout.' || e.tbl) AND c.conname = e.name
                                  AND c.convalidated)
        WHEN 'function' THEN (SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = to_regprocedure(e.name))
      END AS definition
    FROM expected e
  )
  SELECT kind || ' ' || name, definition IS NOT NULL,
         coalesce(definition, 'missing or invalid')
  FROM found
  UNION ALL
  SELECT 'privilege: PUBLIC has no CREATE on schema checkout',
         NOT has_schema_privilege('public', 'checkout', 'CREATE'),
         'schema ACL: ' || coalesce((SELECT nspacl::text FROM pg_namespace WHERE nspname = 'checkout'), 'default')
$verify$;
COMMENT ON FUNCTION checkout.verify() IS 'Post-install verification: one row per expected table, constraint, index and function, with ok and detail.';
