-- checkout 0.4.0 -> 0.3.0: the functions as 0.3.0 had them; the 0.4.0 functions and index dropped.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.3.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION checkout.guard_subscription_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.organization_id <> OLD.organization_id OR NEW.customer_id <> OLD.customer_id THEN
    RAISE EXCEPTION 'a subscription cannot move to another customer or organization'
      USING ERRCODE = 'triggered_action_exception', DETAIL = format('subscription_id: %s', OLD.id),
            HINT = 'Cancel it and create a subscription for the other customer.';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status THEN
    IF NOT checkout.subscription_transition_allowed(OLD.status, NEW.status) THEN
      RAISE EXCEPTION 'subscription status cannot change from % to %', OLD.status, NEW.status
        USING ERRCODE = 'triggered_action_exception', DETAIL = format('subscription_id: %s', OLD.id),
              HINT = format('From %s a subscription may become: %s.', OLD.status,
                            coalesce((SELECT string_agg(t.to_status, ', ') FROM checkout.subscription_transitions() t
                                      WHERE t.from_status = OLD.status), 'nothing (final)'));
    END IF;
    IF OLD.status = 'canceled' AND NEW.current_period_end <= now() THEN
      RAISE EXCEPTION 'a canceled subscription can only be reactivated within its period'
        USING ERRCODE = 'triggered_action_exception',
              DETAIL = format('subscription_id: %s, current_period_end: %s', OLD.id, NEW.current_period_end),
              HINT = 'Create a new subscription instead.';
    END IF;
    IF NEW.status IN ('canceled', 'expired') THEN
      NEW.ended_at := coalesce(NEW.ended_at, now());
      IF NEW.status = 'canceled' THEN
        NEW.canceled_at := coalesce(NEW.canceled_at, now());
      END IF;
    ELSIF OLD.status = 'canceled' THEN
      NEW.canceled_at := NULL;
      NEW.ended_at := NULL;
      NEW.cancellation_reason := NULL;
    END IF;
  END IF;
  IF NEW.status IN ('canceled', 'expired') THEN
    NEW.cancel_at_period_end := false; -- nothing left to cancel
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END $$;

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
  -- an ended subscription grants nothing
  SELECT 'grant in force on an ended subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.id = g.subscription_id
  WHERE s.status IN ('canceled', 'expired') AND g.revoked_at IS NULL
  UNION ALL
  -- every status a subscription is in was reached through an audited change
  SELECT 'subscription status differs from its last audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status IS DISTINCT FROM (
    SELECT coalesce(c.new_values->>'status', c.old_values->>'status') FROM checkout.subscription_changes c
    WHERE c.subscription_id = s.id AND (c.new_values ? 'status') ORDER BY c.created_at DESC, c.change_type = 'created' LIMIT 1)
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

COMMENT ON FUNCTION checkout.check_invariants() IS 'Consistency checks (audit rows, trials, one active subscription, grants of ended subscriptions, counters, idempotency keys, email variants): one row per violation.';

ALTER FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) SET plan_cache_mode = force_generic_plan;

CREATE OR REPLACE FUNCTION checkout.claim_webhook_events(p_batch integer) RETURNS SETOF checkout.webhook_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF p_batch IS NULL OR p_batch < 0 THEN
    RAISE EXCEPTION 'p_batch must be >= 0' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE checkout.webhook_events e SET status = 'stale', updated_at = now()
  WHERE e.status IN ('pending', 'deferred') AND e.object_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM checkout.webhook_events n
                WHERE n.organization_id = e.organization_id AND n.provider = e.provider AND n.object_id = e.object_id
                  AND n.status = 'processed' AND n.event_created_at > e.event_created_at);
  RETURN QUERY
  WITH due AS (
    SELECT e.id FROM checkout.webhook_events e
    WHERE e.status IN ('pending', 'deferred')
      AND NOT EXISTS (SELECT 1 FROM checkout.webhook_events o
                      WHERE o.organization_id = e.organization_id AND o.provider = e.provider AND o.object_id = e.object_id
                        AND o.status IN ('pending', 'deferred', 'processing') AND o.event_created_at < e.event_created_at)
    ORDER BY e.event_created_at, e.created_at
    LIMIT p_batch FOR UPDATE SKIP LOCKED)
  UPDATE checkout.webhook_events e SET status = 'processing', attempts = e.attempts + 1, updated_at = now()
  FROM due WHERE e.id = due.id
  RETURNING e.*;
END $$;

CREATE OR REPLACE FUNCTION checkout.complete_webhook_event(p_id uuid) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH done AS (
    UPDATE checkout.webhook_events SET status = 'processed', processed_at = now(), error_message = NULL, updated_at = now()
    WHERE id = p_id AND status = 'processing' RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM done)
$$;

CREATE OR REPLACE FUNCTION checkout.fail_webhook_event(p_id uuid, p_error text) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE checkout.webhook_events
  SET status = CASE WHEN attempts >= checkout.setting_integer('checkout.reconciliation_max_attempts', 10) THEN 'failed' ELSE 'deferred' END,
      error_message = p_error, updated_at = now()
  WHERE id = p_id AND status = 'processing'
  RETURNING status
$$;

DROP FUNCTION checkout.claim_webhook_events(integer, text[]);
DROP FUNCTION checkout.complete_webhook_event(uuid, integer);
DROP FUNCTION checkout.fail_webhook_event(uuid, text, integer);
DROP INDEX checkout.idx_webhook_events_processing;

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
    ('index', 'idx_subscriptions_cancel_pending', 'subscriptions'),
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
    ('constraint', 'subscription_changes_organization_id_fkey', 'subscription_changes'),
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
    ('function', 'checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text)', NULL),
    ('function', 'checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text)', NULL),
    ('function', 'checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text)', NULL),
    ('function', 'checkout.renew_subscription_period(uuid, uuid, timestamp with time zone, uuid, text)', NULL),
    ('function', 'checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text)', NULL),
    ('function', 'checkout.expire_subscription(uuid, uuid, text, uuid, text)', NULL),
    ('function', 'checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text)', NULL),
    ('function', 'checkout.subscription_transitions()', NULL),
    ('function', 'checkout.subscription_transition_allowed(text, text)', NULL),
    ('function', 'checkout.guard_subscription_update()', NULL),
    ('function', 'checkout.audit_subscription_change()', NULL),
    ('function', 'checkout.end_subscription_periods(integer)', NULL),
    ('trigger', 'subscriptions_guard', 'subscriptions'),
    ('trigger', 'subscriptions_audit', 'subscriptions'),
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
        WHEN 'trigger' THEN (SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
                             WHERE t.tgrelid = to_regclass('checkout.' || e.tbl) AND t.tgname = e.name AND t.tgenabled <> 'D')
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
