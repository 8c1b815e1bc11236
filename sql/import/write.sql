-- checkout.import_seed(), a real run: the rows classify.sql imported, written into checkout's
-- tables in dependency order, then what checkout derives from them. The subscriptions audit trigger
-- stays out (the import writes each subscription's 'imported' audit row itself); the email trigger
-- records every customer's current email, as for any insert.

-- step
INSERT INTO checkout.organizations (id, name, slug, stripe_account_id, metadata, created_at, updated_at)
SELECT id, name, slug, stripe_account_id, metadata, coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_organizations WHERE outcome = 'imported';
-- step
INSERT INTO checkout.users (id, organization_id, email, name, role, created_at, updated_at)
SELECT id, organization_id, email, name, role, coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_users WHERE outcome = 'imported';
-- step
INSERT INTO checkout.customers (id, organization_id, email, external_id, name, stripe_customer_id, metadata, deleted_at, created_at, updated_at)
SELECT id, organization_id, email, external_id, name, stripe_customer_id, metadata, deleted_at,
       coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_customers WHERE outcome = 'imported';
-- step
INSERT INTO checkout.products (id, organization_id, name, description, active, stripe_product_id, metadata, created_at, updated_at)
SELECT id, organization_id, name, description, coalesce(active, true), stripe_product_id, metadata,
       coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_products WHERE outcome = 'imported';
-- step
INSERT INTO checkout.features (id, organization_id, key, name, description, metadata, created_at)
SELECT id, organization_id, key, name, description, metadata, coalesce(created_at, now())
FROM import_features WHERE outcome = 'imported';
-- step
INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, stripe_subscription_id, stripe_price_id,
  amount, currency, "interval", interval_count, trial_start, trial_end, current_period_start, current_period_end,
  cancel_at_period_end, canceled_at, ended_at, cancellation_reason, metadata, idempotency_key, product_version_id,
  price_version_id, original_created_at, created_at, updated_at)
SELECT id, organization_id, customer_target, product_id, status, stripe_subscription_id, stripe_price_id,
  amount, currency, "interval", interval_count, trial_start, trial_end, current_period_start, current_period_end,
  cancel_at_period_end, canceled_at, ended_at, cancellation_reason, metadata, idempotency_key, product_version_id,
  price_version_id, coalesce(original_created_at, created_at, now()), coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_subscriptions WHERE outcome = 'imported';
-- step
INSERT INTO checkout.checkout_sessions (id, organization_id, customer_id, product_id, status, stripe_session_id, amount, currency,
  success_url, cancel_url, metadata, idempotency_key, expires_at, completed_at, created_at, updated_at)
SELECT id, organization_id, customer_target, product_id, status, stripe_session_id, amount, currency,
  success_url, cancel_url, metadata, idempotency_key, expires_at, completed_at, coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_checkout_sessions WHERE outcome = 'imported';
-- step
INSERT INTO checkout.payment_intents (id, organization_id, customer_id, subscription_id, checkout_session_id, stripe_payment_intent_id,
  amount, currency, status, metadata, created_at, updated_at)
SELECT id, organization_id, customer_target, subscription_id, checkout_session_id, stripe_payment_intent_id,
  amount, currency, status, metadata, coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_payment_intents WHERE outcome = 'imported';
-- step: oldest first, as the guard sums them
INSERT INTO checkout.refunds (id, organization_id, payment_intent_id, stripe_refund_id, subscription_id, amount, currency, reason,
  status, initiated_by, metadata, created_at, completed_at)
SELECT id, organization_id, payment_intent_id, stripe_refund_id, subscription_id, amount, currency, refund_reason,
  status, initiated_by, metadata, coalesce(created_at, now()), completed_at
FROM import_refunds WHERE outcome = 'imported' ORDER BY created_at NULLS LAST, id;
-- step: the seed's own audit rows
INSERT INTO checkout.subscription_changes (id, organization_id, subscription_id, change_type, old_values, new_values,
  changed_by, changed_by_type, reason, metadata, created_at, changed_by_role)
SELECT id, organization_id, subscription_id, change_type, old_values, new_values, changed_by_target, changed_by_type, change_reason, metadata,
  coalesce(created_at, now()), NULL
FROM import_subscription_changes WHERE outcome = 'imported';
-- step: every imported subscription's own audit row: what came across, and when
-- (stamped with the clock, after every seed row the transaction's now() stamped: it is the last)
INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, new_values, changed_by_type, reason, metadata, created_at)
SELECT c.organization_id, c.id, 'imported', to_jsonb(c.*), 'system',
       CASE WHEN s.reason = 'second_active_subscription_ended'
            THEN 'imported ended: another active or trialing subscription of the pair stays in force' ELSE 'imported' END,
       jsonb_build_object('source_schema', $1::text) || CASE WHEN s.reason IS NOT NULL THEN jsonb_build_object('import', s.detail) ELSE '{}' END,
       clock_timestamp()
FROM import_subscriptions s JOIN checkout.subscriptions c ON c.organization_id = s.organization_id AND c.id = s.id
WHERE s.outcome = 'imported';
-- step
INSERT INTO checkout.feature_grants (id, organization_id, customer_id, feature_id, subscription_id, granted_at, revoked_at, metadata, created_at)
SELECT id, organization_id, customer_target, feature_id, subscription_id, coalesce(granted_at, now()), revoked_at, metadata,
       coalesce(created_at, granted_at, now())
FROM import_feature_grants WHERE outcome = 'imported';
-- step
INSERT INTO checkout.trial_history (id, organization_id, customer_id, product_id, subscription_id, trial_start, trial_end, converted,
  conversion_date, cancellation_reason, metadata, created_at, updated_at)
SELECT id, organization_id, customer_target, product_id, subscription_id, trial_start, trial_end, converted,
  conversion_date, cancellation_reason, metadata, coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_trial_history WHERE outcome = 'imported';
-- step: a trial the seed granted on a subscription but never recorded (its trial_history was
-- optional). A trialing row without trial dates (the seed's create left those when it refused the
-- trial) is on trial for its period.
INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end, metadata)
SELECT DISTINCT ON (s.organization_id, s.customer_target, s.product_id)
       s.organization_id, s.customer_target, s.product_id, s.id,
       least(coalesce(s.trial_start, s.current_period_start), coalesce(s.trial_end, s.current_period_end)),
       coalesce(s.trial_end, s.current_period_end), '{"derived": "subscription"}'
FROM import_subscriptions s
WHERE s.outcome = 'imported' AND (s.trial_end IS NOT NULL OR s.status = 'trialing')
  AND NOT EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.organization_id = s.organization_id
                  AND t.customer_id = s.customer_target AND t.product_id = s.product_id)
ORDER BY s.organization_id, s.customer_target, s.product_id, s.status = 'trialing' DESC, s.trial_start, s.id;
-- step: a trialing subscription names its trial (check_invariants)
UPDATE checkout.trial_history t SET subscription_id = s.id, updated_at = now()
FROM import_subscriptions s
WHERE s.outcome = 'imported' AND s.status = 'trialing' AND t.organization_id = s.organization_id
  AND t.customer_id = s.customer_target AND t.product_id = s.product_id AND t.subscription_id IS DISTINCT FROM s.id;
-- step
INSERT INTO checkout.customer_email_variants (id, organization_id, customer_id, email, email_normalized, email_domain, rules_version, created_at)
SELECT id, organization_id, customer_target, email, checkout.normalize_email(email), split_part(checkout.normalize_email(email), '@', 2),
       checkout.email_rules_version(), coalesce(created_at, now())
FROM import_customer_email_variants WHERE outcome = 'imported';
-- step: keys keep their answers; operation and request are unknown, so a retry replays the answer
-- whatever its parameters (src/idempotency.rs)
INSERT INTO checkout.idempotency_keys (id, organization_id, key, operation, request_hash, request_params, response, status,
  created_at, updated_at, expires_at, error_message, retry_count)
SELECT id, organization_id, key, NULL, NULL, request_params, response, status, coalesce(created_at, now()),
  coalesce(updated_at, created_at, now()), coalesce(expires_at, coalesce(created_at, now()) + interval '24 hours'),
  error_message, coalesce(retry_count, 0)
FROM import_idempotency_keys WHERE outcome = 'imported';
-- step: counters true to the table, for every customer the import gave subscriptions
UPDATE checkout.customers c SET subscription_count = r.n, has_active_subscription = r.active, updated_at = now()
FROM (SELECT s.organization_id, s.customer_id, count(*) AS n, bool_or(s.status IN ('active', 'trialing')) AS active
      FROM checkout.subscriptions s
      WHERE EXISTS (SELECT 1 FROM import_subscriptions i WHERE i.outcome = 'imported' AND i.organization_id = s.organization_id
                    AND i.customer_target = s.customer_id)
      GROUP BY s.organization_id, s.customer_id) r
WHERE c.organization_id = r.organization_id AND c.id = r.customer_id
  AND (c.subscription_count, c.has_active_subscription) IS DISTINCT FROM (r.n, r.active);
-- step: product metrics are stale where subscriptions came in (maintenance recomputes them)
UPDATE checkout.products p SET metrics_last_calculated_at = NULL
WHERE p.metrics_last_calculated_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM import_subscriptions i WHERE i.outcome = 'imported' AND i.organization_id = p.organization_id AND i.product_id = p.id);
-- step
INSERT INTO checkout.webhook_events (id, organization_id, provider, provider_event_id, type, object_id, status, payload,
  event_created_at, attempts, error_message, processed_at, created_at, updated_at)
SELECT id, organization_id, provider, provider_event_id, type, object_id, status, payload,
  event_created_at, attempts, error_message, processed_at, coalesce(created_at, now()), coalesce(updated_at, created_at, now())
FROM import_webhook_events WHERE outcome = 'imported';
-- step
INSERT INTO checkout.reconciliation_queue (id, organization_id, type, reference_id, status, priority, error_message, error_count,
  details, created_at, updated_at, processed_at, next_retry_at)
SELECT id, organization_id, type, reference_id, status, priority, error_message, error_count,
  details, coalesce(created_at, now()), coalesce(updated_at, created_at, now()), processed_at, next_retry_at
FROM import_reconciliation_queue WHERE outcome = 'imported';
