-- checkout.verify(): the seed's "post-migration verification" as a function. One row per expected
-- table, constraint, index, function and trigger: ok = present (and valid), detail = its definition or why not.
-- Loaded last (finalize), so the functions listed here exist. Keep this list in step with the schema.
CREATE FUNCTION checkout.verify()
RETURNS TABLE ("check" text, ok boolean, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $verify$
  WITH expected(kind, name, tbl) AS (
    VALUES
    ('table', 'organizations', NULL),
    ('table', 'users', NULL),
    ('constraint', 'users_pkey', 'users'),
    ('index', 'users_org_email_key', 'users'),
    ('table', 'customers', NULL),
    ('constraint', 'customers_pkey', 'customers'),
    ('index', 'unique_customer_email_per_org', 'customers'),
    ('index', 'unique_external_id_per_org', 'customers'),
    ('index', 'idx_customers_email_org', 'customers'),
    ('index', 'idx_customers_external_id_org', 'customers'),
    ('index', 'idx_customers_stripe_id', 'customers'),
    ('table', 'products', NULL),
    ('constraint', 'products_pkey', 'products'),
    ('table', 'features', NULL),
    ('constraint', 'features_pkey', 'features'),
    ('constraint', 'features_org_key_key', 'features'),
    ('table', 'subscriptions', NULL),
    ('constraint', 'subscriptions_pkey', 'subscriptions'),
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
    ('constraint', 'checkout_sessions_pkey', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_customer_id_fkey', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_product_id_fkey', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_expires', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_customer', 'checkout_sessions'),
    ('index', 'idx_products_metrics_stale', 'products'),
    ('index', 'idx_checkout_sessions_expired', 'checkout_sessions'),
    ('table', 'payment_intents', NULL),
    ('constraint', 'payment_intents_pkey', 'payment_intents'),
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
    ('index', 'idx_feature_grants_feature', 'feature_grants'),
    ('table', 'webhook_events', NULL),
    ('constraint', 'webhook_events_provider_event_key', 'webhook_events'),
    ('index', 'idx_webhook_events_type_status', 'webhook_events'),
    ('index', 'idx_webhook_events_unprocessed', 'webhook_events'),
    ('index', 'idx_webhook_events_processing', 'webhook_events'),
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
    ('constraint', 'check_amount_in_range', 'refunds'),
    ('index', 'refunds_stripe_refund_id_key', 'refunds'),
    ('trigger', 'refunds_guard_status', 'refunds'),
    ('constraint', 'check_amount_in_range', 'subscriptions'),
    ('constraint', 'check_ended_stamped', 'subscriptions'),
    ('constraint', 'check_canceled_stamped', 'subscriptions'),
    ('trigger', 'payments_guard_refunded', 'payment_intents'),
    ('function', 'checkout.guard_payment_refunded()', NULL),
    ('function', 'checkout.restoring(text)', NULL),
    ('function', 'checkout.is_subscription_status(text)', NULL),
    ('function', 'checkout.is_billing_interval(text)', NULL),
    ('function', 'checkout.is_change_type(text)', NULL),
    ('function', 'checkout.is_actor_type(text)', NULL),
    ('function', 'checkout.is_idempotency_status(text)', NULL),
    ('constraint', 'subscriptions_status_check', 'subscriptions'),
    ('constraint', 'subscription_changes_change_type_check', 'subscription_changes'),
    ('index', 'subscriptions_stripe_subscription_id_key', 'subscriptions'),
    ('constraint', 'check_amount_in_range', 'payment_intents'),
    ('constraint', 'check_amount_in_range', 'checkout_sessions'),
    ('index', 'checkout_sessions_stripe_session_id_key', 'checkout_sessions'),
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
    ('function', 'checkout.check_trial_eligibility(uuid, uuid, uuid, text)', NULL),
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
    ('table', 'import_report', NULL),
    ('function', 'checkout.import_seed(text, boolean)', NULL),
    ('function', 'checkout.email_is_valid(text)', NULL),
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
    ('function', 'checkout.claim_webhook_events(integer, text[])', NULL),
    ('function', 'checkout.complete_webhook_event(uuid)', NULL),
    ('function', 'checkout.complete_webhook_event(uuid, integer)', NULL),
    ('function', 'checkout.fail_webhook_event(uuid, text)', NULL),
    ('function', 'checkout.fail_webhook_event(uuid, text, integer)', NULL),
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
    ('trigger', 'subscriptions_stamp_ended', 'subscriptions'),
    ('table', 'maintenance_runs', NULL),
    ('function', 'checkout.distribute()', NULL),
    ('function', 'checkout.distribution_state()', NULL),
    ('function', 'checkout.routed_here(boolean)', NULL)
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
  UNION ALL
  -- Tenant-first keys: a unique key of a tenant table that does not start with organization_id
  -- would be checked across tenants (and cannot be distributed by organization).
  SELECT 'keys: every primary and unique key of a tenant table starts with organization_id',
         coalesce(bool_and(a.attname IS NOT DISTINCT FROM 'organization_id'), true),
         coalesce('not tenant-first: ' || string_agg(i.indexrelid::regclass::text, ', ' ORDER BY i.indexrelid::regclass::text)
                    FILTER (WHERE a.attname IS DISTINCT FROM 'organization_id'), 'all tenant-first')
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indrelid
  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
  WHERE c.relnamespace = 'checkout'::regnamespace AND c.relkind = 'r' AND i.indisunique
    -- the tenants themselves, and the operational tables whose rows may belong to no organization
    AND c.relname NOT IN ('organizations', 'reconciliation_queue', 'maintenance_runs')
  UNION ALL
  -- Citus: single server, installed but not distributed, or how far checkout.distribute() went.
  SELECT 'distribution: ' || d.state, d.ok, d.detail FROM checkout.distribution_state() d
  UNION ALL
  -- A SECURITY DEFINER trigger function PUBLIC may execute could be attached to anyone's table.
  SELECT 'privilege: PUBLIC cannot execute the trigger functions',
         coalesce(bool_and(NOT has_function_privilege('public', p.oid, 'EXECUTE')), true),
         coalesce('executable by PUBLIC: ' || string_agg(p.oid::regprocedure::text, ', ')
                    FILTER (WHERE has_function_privilege('public', p.oid, 'EXECUTE')), 'none executable by PUBLIC')
  FROM pg_proc p
  WHERE p.pronamespace = 'checkout'::regnamespace AND p.prorettype = 'trigger'::regtype
$verify$;
COMMENT ON FUNCTION checkout.verify() IS 'Post-install verification: one row per expected table, constraint, index and function, with ok and detail.';
