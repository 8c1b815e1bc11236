-- checkout.import_seed(): what becomes of each staged source row (src/import_seed.rs stages the
-- source's tables as pg_temp.import_<table>, every column checkout reads, NULL where the source
-- lacks it). Runs with search_path = pg_catalog, pg_temp. Each row ends with an outcome:
-- 'imported' (as itself, same id), 'merged' (into the row into_id names) or 'refused', and a reason
-- for every merge and refusal. Set-based: one statement per rule, in dependency order, so a row
-- refused here takes the rows that need it with it. Statements are separated by "-- step" lines.

-- step: organizations
UPDATE import_organizations s SET name = btrim(s.name), slug = lower(btrim(s.slug)),
  stripe_account_id = nullif(btrim(s.stripe_account_id), ''), metadata = coalesce(s.metadata, '{}') || s.extra;
-- step
UPDATE import_organizations s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.organizations o WHERE o.id = s.id);
-- step
UPDATE import_organizations s SET outcome = 'refused', reason = 'invalid_name'
WHERE s.outcome IS NULL AND (s.name IS NULL OR s.name = '');
-- step
UPDATE import_organizations s SET outcome = 'refused', reason = 'invalid_slug', detail = jsonb_build_object('slug', s.slug)
WHERE s.outcome IS NULL AND s.slug !~ '^[a-z0-9][a-z0-9-]*$';
-- step
UPDATE import_organizations s SET outcome = 'refused', reason = 'duplicate_slug', detail = jsonb_build_object('slug', s.slug, 'organization_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_organizations WHERE outcome IS NULL AND slug IS NOT NULL
      WINDOW w AS (PARTITION BY slug ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.organizations o WHERE o.slug = s.slug));
-- step
UPDATE import_organizations s SET outcome = 'refused', reason = 'duplicate_stripe_account_id', detail = jsonb_build_object('stripe_account_id', s.stripe_account_id, 'organization_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_organizations WHERE outcome IS NULL AND stripe_account_id IS NOT NULL
      WINDOW w AS (PARTITION BY stripe_account_id ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.organizations o WHERE o.stripe_account_id = s.stripe_account_id));
-- step
UPDATE import_organizations SET outcome = 'imported' WHERE outcome IS NULL;
-- step: the organizations a tenant row may name: imported now or already in checkout
CREATE TEMP TABLE import_tenants ON COMMIT DROP AS
SELECT id FROM import_organizations WHERE outcome = 'imported'
UNION SELECT id FROM checkout.organizations;
-- step
ALTER TABLE import_tenants ADD PRIMARY KEY (id);

-- step: users (subscription_changes.changed_by names them)
UPDATE import_users s SET email = regexp_replace(s.email, '^\s+|\s+$', '', 'g'), role = coalesce(lower(btrim(s.role)), 'member');
-- step
UPDATE import_users s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.users u WHERE u.id = s.id);
-- step
UPDATE import_users s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_users s SET outcome = 'refused', reason = 'missing_email'
WHERE s.outcome IS NULL AND (s.email IS NULL OR s.email = '');
-- step
UPDATE import_users s SET outcome = 'refused', reason = 'unknown_role', detail = jsonb_build_object('role', s.role)
WHERE s.outcome IS NULL AND s.role NOT IN ('owner', 'admin', 'member', 'support');
-- step
UPDATE import_users s SET outcome = 'merged', reason = 'email_case_duplicate', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'email', s.email)
FROM (SELECT id, organization_id, lower(email) AS e, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM (SELECT id, organization_id, email, created_at, 0 AS k FROM import_users WHERE outcome IS NULL
            UNION ALL SELECT id, organization_id, email, created_at, -1 FROM checkout.users) x
      WINDOW w AS (PARTITION BY organization_id, lower(email) ORDER BY k, created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1 AND s.outcome IS NULL;
-- step
UPDATE import_users SET outcome = 'imported' WHERE outcome IS NULL;

-- step: customers
UPDATE import_customers s SET email = regexp_replace(s.email, '^\s+|\s+$', '', 'g'), name = btrim(s.name), external_id = nullif(btrim(s.external_id), ''),
  metadata = coalesce(s.metadata, '{}') || s.extra;
-- step: a second run: the row is already in checkout
UPDATE import_customers s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.customers c WHERE c.organization_id = s.organization_id AND c.id = s.id);
-- step: ...or its id is another organization's there
UPDATE import_customers s SET outcome = 'refused', reason = 'id_in_another_organization'
WHERE s.outcome IS NULL AND EXISTS (SELECT 1 FROM checkout.customers c WHERE c.id = s.id);
-- step
UPDATE import_customers s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_customers s SET outcome = 'refused', reason = 'invalid_email', detail = jsonb_build_object('email', s.email)
WHERE s.outcome IS NULL AND NOT coalesce(checkout.email_is_valid(s.email), false);
-- step: refusals come before merges, so a merge never names a refused row
UPDATE import_customers s SET outcome = 'refused', reason = 'duplicate_external_id', detail = jsonb_build_object('external_id', s.external_id, 'customer_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_customers WHERE outcome IS NULL AND deleted_at IS NULL AND external_id IS NOT NULL
      WINDOW w AS (PARTITION BY organization_id, external_id ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.customers c WHERE c.organization_id = s.organization_id
                                          AND c.external_id = s.external_id AND c.deleted_at IS NULL));
-- step: a live customer whose email differs only by case from a live customer already in checkout
UPDATE import_customers s SET outcome = 'merged', reason = 'email_case_duplicate', into_id = c.id,
  detail = jsonb_build_object('into', c.id, 'email', s.email, 'into_email', c.email, 'external_id', s.external_id, 'stripe_customer_id', s.stripe_customer_id)
FROM checkout.customers c
WHERE s.outcome IS NULL AND s.deleted_at IS NULL AND c.organization_id = s.organization_id
  AND lower(c.email) = lower(s.email) AND c.deleted_at IS NULL;
-- step: ...or from another live source customer: the oldest one stays
UPDATE import_customers s SET outcome = 'merged', reason = 'email_case_duplicate', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'email', s.email, 'into_email', d.first_email, 'external_id', s.external_id, 'stripe_customer_id', s.stripe_customer_id)
FROM (SELECT id, first_value(id) OVER w AS first, first_value(email) OVER w AS first_email, row_number() OVER w AS n
      FROM import_customers WHERE outcome IS NULL AND deleted_at IS NULL
      WINDOW w AS (PARTITION BY organization_id, lower(email) ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1;
-- step
UPDATE import_customers SET outcome = 'imported' WHERE outcome IS NULL;
-- step: where each source customer's rows go: itself, the row it merged into, or the same id
-- already in checkout (a second run); NULL when refused
CREATE TEMP TABLE import_customer_target ON COMMIT DROP AS
SELECT DISTINCT ON (x.id) x.id,
       CASE WHEN count(*) OVER (PARTITION BY x.id) > 1 THEN 'refused' ELSE x.outcome END AS outcome,
       CASE WHEN count(*) OVER (PARTITION BY x.id) > 1 THEN 'ambiguous_id' ELSE x.reason END AS reason,
       x.organization_id,
       CASE WHEN count(*) OVER (PARTITION BY x.id) > 1 THEN NULL ELSE x.target END AS target
FROM (SELECT s.id, s.outcome, s.reason, s.organization_id,
             CASE WHEN s.outcome = 'imported' THEN s.id WHEN s.outcome = 'merged' THEN s.into_id END AS target
      FROM import_customers s WHERE s.reason IS DISTINCT FROM 'already_in_checkout'
      UNION ALL
      SELECT c.id, 'refused', 'already_in_checkout', c.organization_id, c.id FROM checkout.customers c) x
ORDER BY x.id, x.target IS NULL;
-- step
CREATE INDEX ON import_customer_target (id);

-- step: products
UPDATE import_products s SET name = btrim(s.name), metadata = coalesce(s.metadata, '{}') || s.extra;
-- step
UPDATE import_products s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.products c WHERE c.organization_id = s.organization_id AND c.id = s.id);
-- step
UPDATE import_products s SET outcome = 'refused', reason = 'id_in_another_organization'
WHERE s.outcome IS NULL AND EXISTS (SELECT 1 FROM checkout.products c WHERE c.id = s.id);
-- step
UPDATE import_products s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_products s SET outcome = 'refused', reason = 'invalid_name'
WHERE s.outcome IS NULL AND (s.name IS NULL OR s.name = '');
-- step
UPDATE import_products SET outcome = 'imported' WHERE outcome IS NULL;

-- step: features
UPDATE import_features s SET key = btrim(s.key), metadata = coalesce(s.metadata, '{}') || s.extra;
-- step
UPDATE import_features s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.features c WHERE c.organization_id = s.organization_id AND c.id = s.id);
-- step
UPDATE import_features s SET outcome = 'refused', reason = 'id_in_another_organization'
WHERE s.outcome IS NULL AND EXISTS (SELECT 1 FROM checkout.features c WHERE c.id = s.id);
-- step
UPDATE import_features s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_features s SET outcome = 'refused', reason = 'invalid_key'
WHERE s.outcome IS NULL AND (s.key IS NULL OR s.key = '');
-- step
UPDATE import_features s SET outcome = 'refused', reason = 'duplicate_key', detail = jsonb_build_object('key', s.key, 'feature_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_features WHERE outcome IS NULL
      WINDOW w AS (PARTITION BY organization_id, key ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.features f WHERE f.organization_id = s.organization_id AND f.key = s.key));
-- step
UPDATE import_features SET outcome = 'imported' WHERE outcome IS NULL;
-- step: products and features a row may name, with their organization
CREATE TEMP TABLE import_catalog ON COMMIT DROP AS
SELECT DISTINCT ON (x.kind, x.id) x.kind, x.id, x.organization_id,
       CASE WHEN count(*) OVER (PARTITION BY x.kind, x.id) > 1 THEN 'refused' ELSE x.outcome END AS outcome,
       CASE WHEN count(*) OVER (PARTITION BY x.kind, x.id) > 1 THEN 'ambiguous_id' ELSE x.reason END AS reason
FROM (SELECT 'product' AS kind, id, organization_id, outcome, reason FROM import_products WHERE reason IS DISTINCT FROM 'already_in_checkout'
      UNION ALL SELECT 'feature', id, organization_id, outcome, reason FROM import_features WHERE reason IS DISTINCT FROM 'already_in_checkout'
      UNION ALL SELECT 'product', id, organization_id, 'refused', 'already_in_checkout' FROM checkout.products
      UNION ALL SELECT 'feature', id, organization_id, 'refused', 'already_in_checkout' FROM checkout.features) x
ORDER BY x.kind, x.id;
-- step
CREATE INDEX ON import_catalog (kind, id);

-- step: subscriptions
UPDATE import_subscriptions s SET status = lower(btrim(s.status)), currency = lower(btrim(s.currency)),
  "interval" = lower(btrim(s."interval")), interval_count = coalesce(s.interval_count, 1),
  cancel_at_period_end = coalesce(s.cancel_at_period_end, false), metadata = coalesce(s.metadata, '{}') || s.extra,
  customer_target = t.target, customer_outcome = t.outcome, customer_reason = t.reason, customer_organization_id = t.organization_id
FROM (SELECT s2.id AS sid, t.target, t.outcome, t.reason, t.organization_id
      FROM import_subscriptions s2 LEFT JOIN import_customer_target t ON t.id = s2.customer_id) t
WHERE t.sid = s.id;
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.subscriptions c WHERE c.organization_id = s.organization_id AND c.id = s.id);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'id_in_another_organization'
WHERE s.outcome IS NULL AND EXISTS (SELECT 1 FROM checkout.subscriptions c WHERE c.id = s.id);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'value_too_long', detail = jsonb_build_object('column', 'idempotency_key')
WHERE s.outcome IS NULL AND length(s.idempotency_key) > 255;
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_subscriptions s SET outcome = 'refused',
  reason = CASE WHEN s.customer_reason IS NULL AND s.customer_outcome IS NULL THEN 'customer_not_found' ELSE 'customer_refused' END,
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_reason', s.customer_reason)
WHERE s.outcome IS NULL AND s.customer_target IS NULL;
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'tenant_mismatch',
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_organization_id', s.customer_organization_id, 'organization_id', s.organization_id)
WHERE s.outcome IS NULL AND s.customer_organization_id IS DISTINCT FROM s.organization_id;
-- step
UPDATE import_subscriptions s SET outcome = 'refused',
  reason = CASE WHEN p.id IS NULL THEN 'product_not_found'
                WHEN p.outcome = 'imported' OR p.reason = 'already_in_checkout' THEN 'tenant_mismatch' ELSE 'product_refused' END,
  detail = jsonb_build_object('product_id', s.product_id, 'product_organization_id', p.organization_id, 'organization_id', s.organization_id)
FROM import_subscriptions s2 LEFT JOIN import_catalog p ON p.kind = 'product' AND p.id = s2.product_id
WHERE s2.id = s.id AND s.outcome IS NULL
  AND (p.id IS NULL OR NOT (p.outcome = 'imported' OR p.reason = 'already_in_checkout') OR p.organization_id <> s.organization_id);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'unknown_status', detail = jsonb_build_object('status', s.status)
WHERE s.outcome IS NULL AND NOT coalesce(checkout.is_subscription_status(s.status), false);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'invalid_currency', detail = jsonb_build_object('currency', s.currency)
WHERE s.outcome IS NULL AND (s.currency IS NULL OR s.currency !~ '^[a-z]{3}$');
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'invalid_interval', detail = jsonb_build_object('interval', s."interval", 'interval_count', s.interval_count)
WHERE s.outcome IS NULL AND (NOT coalesce(checkout.is_billing_interval(s."interval"), false) OR s.interval_count < 1);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'invalid_amount', detail = jsonb_build_object('amount', s.amount)
WHERE s.outcome IS NULL AND (s.amount IS NULL OR s.amount < 0 OR s.amount > 999999999999);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'invalid_period',
  detail = jsonb_build_object('current_period_start', s.current_period_start, 'current_period_end', s.current_period_end)
WHERE s.outcome IS NULL AND (s.current_period_start IS NULL OR s.current_period_end IS NULL OR s.current_period_start > s.current_period_end);
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'invalid_trial_dates',
  detail = jsonb_build_object('trial_start', s.trial_start, 'trial_end', s.trial_end)
WHERE s.outcome IS NULL AND s.trial_start > s.trial_end;
-- step
UPDATE import_subscriptions s SET outcome = 'refused', reason = 'duplicate_stripe_subscription_id',
  detail = jsonb_build_object('stripe_subscription_id', s.stripe_subscription_id, 'subscription_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_subscriptions WHERE outcome IS NULL AND stripe_subscription_id IS NOT NULL
      WINDOW w AS (PARTITION BY organization_id, stripe_subscription_id ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.subscriptions c WHERE c.organization_id = s.organization_id
                                          AND c.stripe_subscription_id = s.stripe_subscription_id));
-- step: an ended subscription carries its stamps (CHECKs check_ended_stamped, check_canceled_stamped)
UPDATE import_subscriptions s SET ended_at = coalesce(s.ended_at, s.canceled_at, s.updated_at, now()),
  canceled_at = CASE WHEN s.status = 'canceled' THEN coalesce(s.canceled_at, s.ended_at, s.updated_at, now()) ELSE s.canceled_at END,
  cancel_at_period_end = false
WHERE s.outcome IS NULL AND s.status IN ('canceled', 'expired');
-- step: one active-or-trialing subscription per (organization, customer, product). The one that
-- stays in force: one already in checkout, else an active one over a trialing one, else the newest
-- (created_at, then id). The others are imported ended (expired now), and reported.
UPDATE import_subscriptions s SET status = 'expired', ended_at = now(), cancel_at_period_end = false,
  reason = 'second_active_subscription_ended',
  detail = jsonb_build_object('status', s.status, 'in_force', d.first, 'customer_id', s.customer_target, 'product_id', s.product_id)
FROM (SELECT x.id, first_value(x.id) OVER w AS first, row_number() OVER w AS n
      FROM (SELECT id, organization_id, customer_target, product_id, status, created_at, false AS existing
            FROM import_subscriptions WHERE outcome IS NULL AND status IN ('active', 'trialing')
            UNION ALL
            SELECT c.id, c.organization_id, c.customer_id, c.product_id, c.status, c.created_at, true
            FROM checkout.subscriptions c WHERE c.status IN ('active', 'trialing')
              AND EXISTS (SELECT 1 FROM import_subscriptions i WHERE i.organization_id = c.organization_id
                          AND i.customer_target = c.customer_id AND i.product_id = c.product_id)) x
      WINDOW w AS (PARTITION BY organization_id, customer_target, product_id
                   ORDER BY existing DESC, status = 'active' DESC, created_at DESC NULLS LAST, id DESC)) d
WHERE d.id = s.id AND d.n > 1;
-- step
UPDATE import_subscriptions SET outcome = 'imported' WHERE outcome IS NULL;
-- step: subscriptions a row may name
CREATE TEMP TABLE import_subscription_target ON COMMIT DROP AS
SELECT DISTINCT ON (x.id) x.id, x.organization_id, x.customer_id, x.status, x.ended_at,
       CASE WHEN count(*) OVER (PARTITION BY x.id) > 1 THEN 'refused' ELSE x.outcome END AS outcome,
       CASE WHEN count(*) OVER (PARTITION BY x.id) > 1 THEN 'ambiguous_id' ELSE x.reason END AS reason
FROM (SELECT id, organization_id, customer_target AS customer_id, status, ended_at, outcome, reason FROM import_subscriptions
      WHERE reason IS DISTINCT FROM 'already_in_checkout'
      UNION ALL
      SELECT c.id, c.organization_id, c.customer_id, c.status, c.ended_at, 'refused', 'already_in_checkout' FROM checkout.subscriptions c) x
ORDER BY x.id;
-- step
CREATE INDEX ON import_subscription_target (id);

-- step: checkout sessions: the organization is the row's, else its customer's
UPDATE import_checkout_sessions s SET status = coalesce(lower(btrim(s.status)), 'pending'), currency = lower(btrim(s.currency)),
  metadata = coalesce(s.metadata, '{}') || s.extra, organization_id = coalesce(s.organization_id, x.organization_id),
  expires_at = coalesce(s.expires_at, coalesce(s.created_at, now()) + interval '24 hours'),
  customer_target = x.target, customer_outcome = x.outcome, customer_reason = x.reason, customer_organization_id = x.organization_id
FROM (SELECT c.id AS sid, t.target, t.outcome, t.reason, coalesce(t.organization_id, ic.organization_id) AS organization_id
      FROM import_checkout_sessions c LEFT JOIN import_customer_target t ON t.id = c.customer_id
      LEFT JOIN import_customers ic ON ic.id = c.customer_id) x
WHERE x.sid = s.id;
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.checkout_sessions c WHERE c.id = s.id);
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'no_organization'
WHERE s.outcome IS NULL AND s.organization_id IS NULL;
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused',
  reason = CASE WHEN s.customer_target IS NULL AND s.customer_outcome IS NULL THEN 'customer_not_found'
                WHEN s.customer_target IS NULL THEN 'customer_refused' ELSE 'tenant_mismatch' END,
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_organization_id', s.customer_organization_id, 'organization_id', s.organization_id)
WHERE s.outcome IS NULL AND s.customer_id IS NOT NULL
  AND (s.customer_target IS NULL OR s.customer_organization_id <> s.organization_id);
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused',
  reason = CASE WHEN p.id IS NULL THEN 'product_not_found'
                WHEN p.outcome = 'imported' OR p.reason = 'already_in_checkout' THEN 'tenant_mismatch' ELSE 'product_refused' END,
  detail = jsonb_build_object('product_id', s.product_id, 'product_organization_id', p.organization_id, 'organization_id', s.organization_id)
FROM import_checkout_sessions s2 LEFT JOIN import_catalog p ON p.kind = 'product' AND p.id = s2.product_id
WHERE s2.id = s.id AND s.outcome IS NULL AND s.product_id IS NOT NULL
  AND (p.id IS NULL OR NOT (p.outcome = 'imported' OR p.reason = 'already_in_checkout') OR p.organization_id <> s.organization_id);
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'unknown_status', detail = jsonb_build_object('status', s.status)
WHERE s.outcome IS NULL AND s.status NOT IN ('pending', 'completed', 'expired', 'canceled');
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'value_too_long', detail = jsonb_build_object('column', 'idempotency_key')
WHERE s.outcome IS NULL AND length(s.idempotency_key) > 255;
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'invalid_currency', detail = jsonb_build_object('currency', s.currency)
WHERE s.outcome IS NULL AND s.currency !~ '^[a-z]{3}$';
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'invalid_amount', detail = jsonb_build_object('amount', s.amount)
WHERE s.outcome IS NULL AND (s.amount < 0 OR s.amount > 999999999999);
-- step
UPDATE import_checkout_sessions s SET outcome = 'refused', reason = 'duplicate_stripe_session_id',
  detail = jsonb_build_object('stripe_session_id', s.stripe_session_id, 'checkout_session_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_checkout_sessions WHERE outcome IS NULL AND stripe_session_id IS NOT NULL
      WINDOW w AS (PARTITION BY organization_id, stripe_session_id ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.checkout_sessions c WHERE c.organization_id = s.organization_id
                                          AND c.stripe_session_id = s.stripe_session_id));
-- step
UPDATE import_checkout_sessions SET outcome = 'imported' WHERE outcome IS NULL;

-- step: payments: the organization is the row's, else its customer's, else its subscription's
UPDATE import_payment_intents s SET status = lower(btrim(s.status)), currency = lower(btrim(s.currency)),
  metadata = coalesce(s.metadata, '{}') || s.extra, organization_id = coalesce(s.organization_id, x.organization_id, x.sub_org),
  customer_target = x.target, customer_outcome = x.outcome, customer_reason = x.reason, customer_organization_id = x.organization_id
FROM (SELECT p.id AS pid, t.target, t.outcome, t.reason, coalesce(t.organization_id, ic.organization_id) AS organization_id,
             st.organization_id AS sub_org
      FROM import_payment_intents p
      LEFT JOIN import_customer_target t ON t.id = p.customer_id
      LEFT JOIN import_customers ic ON ic.id = p.customer_id
      LEFT JOIN import_subscription_target st ON st.id = p.subscription_id
        AND (st.outcome = 'imported' OR st.reason = 'already_in_checkout')) x
WHERE x.pid = s.id;
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.payment_intents p WHERE p.id = s.id);
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'no_organization'
WHERE s.outcome IS NULL AND s.organization_id IS NULL;
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_payment_intents s SET outcome = 'refused',
  reason = CASE WHEN s.customer_target IS NULL AND s.customer_outcome IS NULL THEN 'customer_not_found'
                WHEN s.customer_target IS NULL THEN 'customer_refused' ELSE 'tenant_mismatch' END,
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_organization_id', s.customer_organization_id, 'organization_id', s.organization_id)
WHERE s.outcome IS NULL AND s.customer_id IS NOT NULL
  AND (s.customer_target IS NULL OR s.customer_organization_id <> s.organization_id);
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'missing_stripe_payment_intent_id'
WHERE s.outcome IS NULL AND (s.stripe_payment_intent_id IS NULL OR s.stripe_payment_intent_id = '');
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'invalid_amount', detail = jsonb_build_object('amount', s.amount)
WHERE s.outcome IS NULL AND (s.amount IS NULL OR s.amount <= 0 OR s.amount > 999999999999);
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'invalid_currency', detail = jsonb_build_object('currency', s.currency)
WHERE s.outcome IS NULL AND (s.currency IS NULL OR s.currency !~ '^[a-z]{3}$');
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'unknown_status', detail = jsonb_build_object('status', s.status)
WHERE s.outcome IS NULL AND (s.status IS NULL OR s.status NOT IN ('requires_payment_method', 'requires_confirmation',
  'requires_action', 'processing', 'requires_capture', 'canceled', 'succeeded'));
-- step
UPDATE import_payment_intents s SET outcome = 'refused', reason = 'duplicate_stripe_payment_intent_id',
  detail = jsonb_build_object('stripe_payment_intent_id', s.stripe_payment_intent_id, 'payment_intent_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_payment_intents WHERE outcome IS NULL
      WINDOW w AS (PARTITION BY organization_id, stripe_payment_intent_id ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.payment_intents p WHERE p.organization_id = s.organization_id
                                          AND p.stripe_payment_intent_id = s.stripe_payment_intent_id));
-- step: a subscription or session that did not come across is not named (its id kept in metadata)
UPDATE import_payment_intents s SET metadata = s.metadata || jsonb_build_object('seed_subscription_id', s.subscription_id), subscription_id = NULL
WHERE s.outcome IS NULL AND s.subscription_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM import_subscription_target st WHERE st.id = s.subscription_id AND st.organization_id = s.organization_id
                  AND (st.outcome = 'imported' OR st.reason = 'already_in_checkout'));
-- step
UPDATE import_payment_intents s SET metadata = s.metadata || jsonb_build_object('seed_checkout_session_id', s.checkout_session_id), checkout_session_id = NULL
WHERE s.outcome IS NULL AND s.checkout_session_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM import_checkout_sessions c WHERE c.id = s.checkout_session_id AND c.organization_id = s.organization_id AND c.outcome = 'imported')
  AND NOT EXISTS (SELECT 1 FROM checkout.checkout_sessions c WHERE c.id = s.checkout_session_id AND c.organization_id = s.organization_id);
-- step
UPDATE import_payment_intents SET outcome = 'imported' WHERE outcome IS NULL;

-- step: refunds: within their payment (the refunds guard holds it on insert), in its currency
UPDATE import_refunds s SET status = coalesce(lower(btrim(s.status)), 'pending'), currency = lower(btrim(s.currency)),
  initiated_by = lower(btrim(s.initiated_by)), metadata = coalesce(s.metadata, '{}') || s.extra,
  organization_id = coalesce(s.organization_id, x.sub_org, x.pay_org),
  payment_amount = x.amount, payment_currency = x.currency, payment_matches = x.matches
FROM (SELECT r.id AS rid, st.organization_id AS sub_org, p.organization_id AS pay_org, p.amount, p.currency, p.matches
      FROM import_refunds r
      LEFT JOIN import_subscription_target st ON st.id = r.subscription_id
      LEFT JOIN LATERAL (SELECT organization_id, amount, currency, count(*) OVER () AS matches
                         FROM (SELECT organization_id, amount, currency FROM import_payment_intents ip
                               WHERE ip.stripe_payment_intent_id = r.payment_intent_id AND ip.outcome = 'imported'
                               UNION ALL
                               SELECT organization_id, amount, currency FROM checkout.payment_intents cp
                               WHERE cp.stripe_payment_intent_id = r.payment_intent_id) m
                         WHERE m.organization_id = coalesce(r.organization_id, st.organization_id, m.organization_id)
                         LIMIT 1) p ON true) x
WHERE x.rid = s.id;
-- step: a payment id several organizations use, and nothing to say whose
UPDATE import_refunds s SET outcome = 'refused', reason = 'ambiguous_payment', detail = jsonb_build_object('payment_intent_id', s.payment_intent_id)
WHERE s.payment_matches > 1;
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE s.outcome IS NULL AND EXISTS (SELECT 1 FROM checkout.refunds r WHERE r.id = s.id);
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'payment_not_found', detail = jsonb_build_object('payment_intent_id', s.payment_intent_id)
WHERE s.outcome IS NULL AND (s.payment_amount IS NULL OR s.organization_id IS NULL);
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'unknown_status', detail = jsonb_build_object('status', s.status, 'initiated_by', s.initiated_by)
WHERE s.outcome IS NULL AND (s.status NOT IN ('pending', 'succeeded', 'failed', 'canceled')
                             OR s.initiated_by NOT IN ('automatic', 'manual', 'customer_request'));
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'value_too_long', detail = jsonb_build_object('column', 'reason')
WHERE s.outcome IS NULL AND length(s.refund_reason) > 100;
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'invalid_amount', detail = jsonb_build_object('amount', s.amount)
WHERE s.outcome IS NULL AND (s.amount IS NULL OR s.amount <= 0 OR s.amount > 999999999999);
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'currency_mismatch', detail = jsonb_build_object('currency', s.currency, 'payment_currency', s.payment_currency)
WHERE s.outcome IS NULL AND s.currency IS DISTINCT FROM s.payment_currency;
-- step
UPDATE import_refunds s SET outcome = 'refused', reason = 'duplicate_stripe_refund_id', detail = jsonb_build_object('stripe_refund_id', s.stripe_refund_id, 'refund_id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_refunds WHERE outcome IS NULL AND stripe_refund_id IS NOT NULL
      WINDOW w AS (PARTITION BY organization_id, stripe_refund_id ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND (d.n > 1 OR EXISTS (SELECT 1 FROM checkout.refunds r WHERE r.organization_id = s.organization_id
                                          AND r.stripe_refund_id = s.stripe_refund_id));
-- step: refunds that count (pending, succeeded), oldest first, until the payment is used up
UPDATE import_refunds s SET outcome = 'refused', reason = 'exceeds_payment',
  detail = jsonb_build_object('payment_intent_id', s.payment_intent_id, 'payment_amount', s.payment_amount, 'refunded_before', d.total - s.amount)
FROM (SELECT r.id, sum(r.amount) OVER (PARTITION BY r.organization_id, r.payment_intent_id ORDER BY r.created_at NULLS LAST, r.id)
             + coalesce((SELECT sum(c.amount) FROM checkout.refunds c WHERE c.organization_id = r.organization_id
                         AND c.payment_intent_id = r.payment_intent_id AND c.status IN ('pending', 'succeeded')), 0) AS total
      FROM import_refunds r WHERE r.outcome IS NULL AND r.status IN ('pending', 'succeeded')) d
WHERE d.id = s.id AND d.total > s.payment_amount;
-- step
UPDATE import_refunds s SET metadata = s.metadata || jsonb_build_object('seed_subscription_id', s.subscription_id), subscription_id = NULL
WHERE s.outcome IS NULL AND s.subscription_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM import_subscription_target st WHERE st.id = s.subscription_id AND st.organization_id = s.organization_id
                  AND (st.outcome = 'imported' OR st.reason = 'already_in_checkout'));
-- step
UPDATE import_refunds SET outcome = 'imported' WHERE outcome IS NULL;

-- step: feature grants: the organization is the subscription's, else the customer's
UPDATE import_feature_grants s SET metadata = coalesce(s.metadata, '{}') || s.extra,
  granted_at = coalesce(s.granted_at, s.created_at, now()),
  organization_id = coalesce(s.organization_id, x.sub_org, x.customer_org),
  customer_target = x.target, customer_outcome = x.outcome, customer_reason = x.reason, customer_organization_id = x.customer_org
FROM (SELECT g.id AS gid, t.target, t.outcome, t.reason, t.organization_id AS customer_org, st.organization_id AS sub_org
      FROM import_feature_grants g
      LEFT JOIN import_customer_target t ON t.id = g.customer_id
      LEFT JOIN import_subscription_target st ON st.id = g.subscription_id) x
WHERE x.gid = s.id;
-- step
UPDATE import_feature_grants s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.feature_grants g WHERE g.id = s.id);
-- step
UPDATE import_feature_grants s SET outcome = 'refused',
  reason = CASE WHEN s.customer_outcome IS NULL THEN 'customer_not_found' ELSE 'customer_refused' END,
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_reason', s.customer_reason)
WHERE s.outcome IS NULL AND s.customer_target IS NULL;
-- step
UPDATE import_feature_grants s SET outcome = 'refused',
  reason = CASE WHEN st.id IS NULL THEN 'subscription_not_found'
                WHEN NOT (st.outcome = 'imported' OR st.reason = 'already_in_checkout') THEN 'subscription_refused'
                ELSE 'tenant_mismatch' END,
  detail = jsonb_build_object('subscription_id', s.subscription_id, 'subscription_customer_id', st.customer_id,
                              'customer_id', s.customer_target, 'organization_id', s.organization_id)
FROM import_feature_grants s2 LEFT JOIN import_subscription_target st ON st.id = s2.subscription_id
WHERE s2.id = s.id AND s.outcome IS NULL AND s.subscription_id IS NOT NULL
  AND (st.id IS NULL OR NOT (st.outcome = 'imported' OR st.reason = 'already_in_checkout')
       OR st.organization_id <> s.organization_id OR st.customer_id <> s.customer_target);
-- step
UPDATE import_feature_grants s SET outcome = 'refused', reason = 'tenant_mismatch',
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_organization_id', s.customer_organization_id, 'organization_id', s.organization_id)
WHERE s.outcome IS NULL AND s.customer_organization_id IS DISTINCT FROM s.organization_id;
-- step
UPDATE import_feature_grants s SET outcome = 'refused',
  reason = CASE WHEN f.id IS NULL THEN 'feature_not_found'
                WHEN f.outcome = 'imported' OR f.reason = 'already_in_checkout' THEN 'tenant_mismatch' ELSE 'feature_refused' END,
  detail = jsonb_build_object('feature_id', s.feature_id, 'feature_organization_id', f.organization_id, 'organization_id', s.organization_id)
FROM import_feature_grants s2 LEFT JOIN import_catalog f ON f.kind = 'feature' AND f.id = s2.feature_id
WHERE s2.id = s.id AND s.outcome IS NULL
  AND (f.id IS NULL OR NOT (f.outcome = 'imported' OR f.reason = 'already_in_checkout') OR f.organization_id <> s.organization_id);
-- step
UPDATE import_feature_grants s SET outcome = 'refused', reason = 'invalid_dates',
  detail = jsonb_build_object('granted_at', s.granted_at, 'revoked_at', s.revoked_at)
WHERE s.outcome IS NULL AND s.revoked_at < s.granted_at;
-- step: a grant of an ended subscription is revoked (as the lifecycle revokes it)
UPDATE import_feature_grants s SET revoked_at = greatest(coalesce(st.ended_at, now()), s.granted_at)
FROM import_subscription_target st
WHERE s.outcome IS NULL AND s.revoked_at IS NULL AND st.id = s.subscription_id AND st.status IN ('canceled', 'expired');
-- step: merged customers can bring one grant twice: the first stays (unique_feature_grant)
UPDATE import_feature_grants s SET outcome = 'merged', reason = 'duplicate_grant', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'customer_id', s.customer_id)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_feature_grants WHERE outcome IS NULL AND subscription_id IS NOT NULL
      WINDOW w AS (PARTITION BY organization_id, subscription_id, feature_id, customer_target ORDER BY granted_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1;
-- step
UPDATE import_feature_grants s SET outcome = 'merged', reason = 'duplicate_grant', into_id = g.id,
  detail = jsonb_build_object('into', g.id, 'customer_id', s.customer_id)
FROM checkout.feature_grants g
WHERE s.outcome IS NULL AND g.organization_id = s.organization_id AND g.subscription_id = s.subscription_id
  AND g.feature_id = s.feature_id AND g.customer_id = s.customer_target;
-- step
UPDATE import_feature_grants SET outcome = 'imported' WHERE outcome IS NULL;

-- step: the seed's audit rows: kept with their subscription
UPDATE import_subscription_changes s SET metadata = coalesce(s.metadata, '{}') || s.extra,
  changed_by_type = coalesce(lower(btrim(s.changed_by_type)), 'system'), change_type = lower(btrim(s.change_type)),
  organization_id = st.organization_id, subscription_outcome = st.outcome, subscription_reason = st.reason
FROM import_subscription_changes s2 LEFT JOIN import_subscription_target st ON st.id = s2.subscription_id
WHERE s2.id = s.id;
-- step: changed_by names a user of the organization that came across (the seed's id is kept in metadata otherwise)
UPDATE import_subscription_changes s SET changed_by_target = coalesce(
  (SELECT CASE WHEN u.outcome = 'merged' THEN u.into_id ELSE u.id END FROM import_users u
   WHERE u.id = s.changed_by AND u.organization_id = s.organization_id AND u.outcome IN ('imported', 'merged')),
  (SELECT u.id FROM checkout.users u WHERE u.id = s.changed_by AND u.organization_id = s.organization_id))
WHERE s.changed_by IS NOT NULL;
-- step
UPDATE import_subscription_changes s SET metadata = s.metadata || jsonb_build_object('seed_changed_by', s.changed_by)
WHERE s.changed_by IS NOT NULL AND s.changed_by_target IS NULL;
-- step
UPDATE import_subscription_changes s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.id = s.id);
-- step
UPDATE import_subscription_changes s SET outcome = 'refused',
  reason = CASE WHEN s.subscription_outcome IS NULL THEN 'subscription_not_found' ELSE 'subscription_refused' END,
  detail = jsonb_build_object('subscription_id', s.subscription_id, 'subscription_reason', s.subscription_reason)
WHERE s.outcome IS NULL
  AND NOT coalesce(s.subscription_outcome = 'imported' OR s.subscription_reason = 'already_in_checkout', false);
-- step
UPDATE import_subscription_changes s SET outcome = 'refused', reason = 'unknown_change_type', detail = jsonb_build_object('change_type', s.change_type)
WHERE s.outcome IS NULL AND (NOT coalesce(checkout.is_change_type(s.change_type), false) OR s.change_type = 'imported');
-- step
UPDATE import_subscription_changes s SET outcome = 'refused', reason = 'unknown_actor_type', detail = jsonb_build_object('changed_by_type', s.changed_by_type)
WHERE s.outcome IS NULL AND NOT coalesce(checkout.is_actor_type(s.changed_by_type), false);
-- step: one 'created' row per subscription (check_invariants): later ones are merged into the first
UPDATE import_subscription_changes s SET outcome = 'merged', reason = 'duplicate_created_row', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'subscription_id', s.subscription_id)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM (SELECT id, subscription_id, created_at, 0 AS k FROM import_subscription_changes WHERE outcome IS NULL AND change_type = 'created'
            UNION ALL SELECT c.id, c.subscription_id, c.created_at, -1 FROM checkout.subscription_changes c
            WHERE c.change_type = 'created' AND EXISTS (SELECT 1 FROM import_subscription_changes i WHERE i.subscription_id = c.subscription_id)) x
      WINDOW w AS (PARTITION BY subscription_id ORDER BY k, created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1 AND s.outcome IS NULL;
-- step
UPDATE import_subscription_changes SET outcome = 'imported' WHERE outcome IS NULL;

-- step: the seed's trial history: the organization is the customer's
UPDATE import_trial_history s SET metadata = coalesce(s.metadata, '{}') || s.extra,
  converted = coalesce(s.converted, false), organization_id = x.organization_id,
  customer_target = x.target, customer_outcome = x.outcome, customer_reason = x.reason
FROM (SELECT h.id AS hid, t.target, t.outcome, t.reason, t.organization_id
      FROM import_trial_history h LEFT JOIN import_customer_target t ON t.id = h.customer_id) x
WHERE x.hid = s.id;
-- step
UPDATE import_trial_history s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.id = s.id);
-- step
UPDATE import_trial_history s SET outcome = 'refused',
  reason = CASE WHEN s.customer_outcome IS NULL THEN 'customer_not_found' ELSE 'customer_refused' END,
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_reason', s.customer_reason)
WHERE s.outcome IS NULL AND s.customer_target IS NULL;
-- step
UPDATE import_trial_history s SET outcome = 'refused',
  reason = CASE WHEN p.id IS NULL THEN 'product_not_found'
                WHEN p.outcome = 'imported' OR p.reason = 'already_in_checkout' THEN 'tenant_mismatch' ELSE 'product_refused' END,
  detail = jsonb_build_object('product_id', s.product_id, 'product_organization_id', p.organization_id, 'organization_id', s.organization_id)
FROM import_trial_history s2 LEFT JOIN import_catalog p ON p.kind = 'product' AND p.id = s2.product_id
WHERE s2.id = s.id AND s.outcome IS NULL
  AND (p.id IS NULL OR NOT (p.outcome = 'imported' OR p.reason = 'already_in_checkout') OR p.organization_id <> s.organization_id);
-- step
UPDATE import_trial_history s SET outcome = 'refused', reason = 'invalid_trial_dates',
  detail = jsonb_build_object('trial_start', s.trial_start, 'trial_end', s.trial_end)
WHERE s.outcome IS NULL AND (s.trial_start IS NULL OR s.trial_end IS NULL OR s.trial_start > s.trial_end);
-- step: a trial names its subscription only when that one came across (the seed's id is kept in metadata)
UPDATE import_trial_history s SET metadata = s.metadata || jsonb_build_object('seed_subscription_id', s.subscription_id), subscription_id = NULL
WHERE s.outcome IS NULL AND s.subscription_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM import_subscription_target st WHERE st.id = s.subscription_id AND st.organization_id = s.organization_id
                  AND st.customer_id = s.customer_target AND (st.outcome = 'imported' OR st.reason = 'already_in_checkout'));
-- step: one trial per (organization, customer, product): the earliest stays
UPDATE import_trial_history s SET outcome = 'merged', reason = 'duplicate_trial', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'customer_id', s.customer_id, 'product_id', s.product_id)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_trial_history WHERE outcome IS NULL
      WINDOW w AS (PARTITION BY organization_id, customer_target, product_id ORDER BY trial_start, id)) d
WHERE d.id = s.id AND d.n > 1;
-- step
UPDATE import_trial_history s SET outcome = 'merged', reason = 'duplicate_trial', into_id = t.id,
  detail = jsonb_build_object('into', t.id, 'customer_id', s.customer_id, 'product_id', s.product_id)
FROM checkout.trial_history t
WHERE s.outcome IS NULL AND t.organization_id = s.organization_id AND t.customer_id = s.customer_target AND t.product_id = s.product_id;
-- step
UPDATE import_trial_history SET outcome = 'imported' WHERE outcome IS NULL;

-- step: the seed's email variants (its normalizer was wrong, defect S8: checkout recomputes the
-- canonical form). The customer's current email is recorded by checkout itself when the customer
-- is written, so a variant of it is merged into that record.
UPDATE import_customer_email_variants s SET email = regexp_replace(s.email, '^\s+|\s+$', '', 'g'), organization_id = x.organization_id,
  customer_target = x.target, customer_outcome = x.outcome, customer_reason = x.reason, customer_email = x.email
FROM (SELECT v.id AS vid, t.target, t.outcome, t.reason, t.organization_id, coalesce(c.email, cc.email) AS email
      FROM import_customer_email_variants v
      LEFT JOIN import_customer_target t ON t.id = v.customer_id
      LEFT JOIN import_customers c ON c.id = t.target AND c.outcome = 'imported'
      LEFT JOIN checkout.customers cc ON cc.id = t.target) x
WHERE x.vid = s.id;
-- step
UPDATE import_customer_email_variants s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.customer_email_variants v WHERE v.id = s.id);
-- step
UPDATE import_customer_email_variants s SET outcome = 'refused',
  reason = CASE WHEN s.customer_outcome IS NULL THEN 'customer_not_found' ELSE 'customer_refused' END,
  detail = jsonb_build_object('customer_id', s.customer_id, 'customer_reason', s.customer_reason)
WHERE s.outcome IS NULL AND s.customer_target IS NULL;
-- step
UPDATE import_customer_email_variants s SET outcome = 'refused', reason = 'invalid_email', detail = jsonb_build_object('email', s.email)
WHERE s.outcome IS NULL AND NOT coalesce(checkout.email_is_valid(s.email), false);
-- step
UPDATE import_customer_email_variants s SET outcome = 'merged', reason = 'current_email', into_id = s.customer_target,
  detail = jsonb_build_object('customer_id', s.customer_target, 'email', s.email)
WHERE s.outcome IS NULL AND lower(s.email) = lower(s.customer_email);
-- step
UPDATE import_customer_email_variants s SET outcome = 'merged', reason = 'duplicate_variant', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'customer_id', s.customer_target, 'email', s.email)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_customer_email_variants WHERE outcome IS NULL
      WINDOW w AS (PARTITION BY organization_id, customer_target, lower(email) ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1;
-- step
UPDATE import_customer_email_variants s SET outcome = 'merged', reason = 'duplicate_variant', into_id = v.id,
  detail = jsonb_build_object('into', v.id, 'customer_id', s.customer_target, 'email', s.email)
FROM checkout.customer_email_variants v
WHERE s.outcome IS NULL AND v.organization_id = s.organization_id AND v.customer_id = s.customer_target AND lower(v.email) = lower(s.email);
-- step
UPDATE import_customer_email_variants SET outcome = 'imported' WHERE outcome IS NULL;

-- step: idempotency keys, per organization, with their answers
UPDATE import_idempotency_keys s SET status = lower(btrim(s.status)),
  request_params = coalesce(s.request_params, '{}') || s.extra
    || CASE WHEN s.request_hash IS NOT NULL THEN jsonb_build_object('seed_request_hash', s.request_hash) ELSE '{}' END;
-- step
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'no_organization', detail = jsonb_build_object('key', s.key)
WHERE s.organization_id IS NULL;
-- step
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE s.outcome IS NULL AND EXISTS (SELECT 1 FROM checkout.idempotency_keys k WHERE k.organization_id = s.organization_id AND k.key = s.key);
-- step
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id, 'key', s.key)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'invalid_key', detail = jsonb_build_object('key', s.key)
WHERE s.outcome IS NULL AND (s.key IS NULL OR length(s.key) NOT BETWEEN 1 AND 255);
-- step: a key whose call never finished has no answer to give
UPDATE import_idempotency_keys s SET outcome = 'refused',
  reason = CASE WHEN s.status = 'processing' THEN 'still_processing'
                WHEN s.status = 'completed' THEN 'completed_without_response' ELSE 'unknown_status' END,
  detail = jsonb_build_object('key', s.key, 'status', s.status)
WHERE s.outcome IS NULL AND (NOT coalesce(checkout.is_idempotency_status(s.status), false) OR s.status = 'processing'
                             OR (s.status = 'completed' AND s.response IS NULL));
-- step
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'invalid_retry_count', detail = jsonb_build_object('key', s.key, 'retry_count', s.retry_count)
WHERE s.outcome IS NULL AND s.retry_count < 0;
-- step: the seed's keys were global: an answer may name another organization's subscription, or one refused here
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'answer_not_imported',
  detail = jsonb_build_object('key', s.key, 'subscription_id', s.response->>'subscription_id')
WHERE s.outcome IS NULL AND s.response ? 'subscription_id' AND s.response->>'subscription_id' IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM import_subscription_target st WHERE st.id::text = s.response->>'subscription_id'
                  AND st.organization_id = s.organization_id AND (st.outcome = 'imported' OR st.reason = 'already_in_checkout'));
-- step
UPDATE import_idempotency_keys s SET outcome = 'refused', reason = 'duplicate_key', detail = jsonb_build_object('key', s.key, 'id', d.first)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM import_idempotency_keys WHERE outcome IS NULL
      WINDOW w AS (PARTITION BY organization_id, key ORDER BY created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1;
-- step
UPDATE import_idempotency_keys SET outcome = 'imported' WHERE outcome IS NULL;

-- step: webhook events, per organization and provider event
UPDATE import_webhook_events s SET provider = coalesce(lower(btrim(s.provider)), 'stripe'), status = coalesce(lower(btrim(s.status)), 'pending'),
  payload = coalesce(s.payload, '{}'), attempts = coalesce(s.attempts, 0);
-- step
UPDATE import_webhook_events s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.webhook_events w WHERE w.id = s.id);
-- step
UPDATE import_webhook_events s SET outcome = 'refused', reason = 'no_organization'
WHERE s.outcome IS NULL AND s.organization_id IS NULL;
-- step
UPDATE import_webhook_events s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_webhook_events s SET outcome = 'refused', reason = 'invalid_attempts', detail = jsonb_build_object('attempts', s.attempts)
WHERE s.outcome IS NULL AND s.attempts < 0;
-- step
UPDATE import_webhook_events s SET outcome = 'refused', reason = 'missing_event_id', detail = jsonb_build_object('type', s.type)
WHERE s.outcome IS NULL AND (s.provider_event_id IS NULL OR s.provider_event_id = '' OR s.type IS NULL);
-- step
UPDATE import_webhook_events s SET outcome = 'refused',
  reason = CASE WHEN s.status = 'processing' THEN 'still_processing' ELSE 'unknown_status' END, detail = jsonb_build_object('status', s.status)
WHERE s.outcome IS NULL AND s.status NOT IN ('pending', 'processed', 'failed', 'deferred', 'stale');
-- step
UPDATE import_webhook_events s SET outcome = 'merged', reason = 'duplicate_event', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'provider_event_id', s.provider_event_id)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM (SELECT id, organization_id, provider, provider_event_id, created_at, 0 AS k FROM import_webhook_events WHERE outcome IS NULL
            UNION ALL SELECT id, organization_id, provider, provider_event_id, created_at, -1 FROM checkout.webhook_events) x
      WINDOW w AS (PARTITION BY organization_id, provider, provider_event_id ORDER BY k, created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1 AND s.outcome IS NULL;
-- step
UPDATE import_webhook_events SET outcome = 'imported' WHERE outcome IS NULL;

-- step: the reconciliation queue (an item may have no organization)
UPDATE import_reconciliation_queue s SET status = coalesce(lower(btrim(s.status)), 'pending'), priority = coalesce(s.priority, 5),
  error_count = coalesce(s.error_count, 0), details = coalesce(s.details, '{}') || s.extra;
-- step
UPDATE import_reconciliation_queue s SET outcome = 'refused', reason = 'already_in_checkout'
WHERE EXISTS (SELECT 1 FROM checkout.reconciliation_queue q WHERE q.id = s.id);
-- step
UPDATE import_reconciliation_queue s SET outcome = 'refused', reason = 'organization_not_imported', detail = jsonb_build_object('organization_id', s.organization_id)
WHERE s.outcome IS NULL AND s.organization_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM import_tenants t WHERE t.id = s.organization_id);
-- step
UPDATE import_reconciliation_queue s SET outcome = 'refused', reason = 'missing_reference', detail = jsonb_build_object('type', s.type, 'reference_id', s.reference_id)
WHERE s.outcome IS NULL AND (s.type IS NULL OR s.reference_id IS NULL);
-- step
UPDATE import_reconciliation_queue s SET outcome = 'refused', reason = 'value_too_long', detail = jsonb_build_object('type', s.type)
WHERE s.outcome IS NULL AND (length(s.type) > 100 OR length(s.reference_id) > 255);
-- step
UPDATE import_reconciliation_queue s SET outcome = 'refused', reason = 'unknown_status', detail = jsonb_build_object('status', s.status, 'priority', s.priority)
WHERE s.outcome IS NULL AND (s.status NOT IN ('pending', 'processing', 'completed', 'failed', 'manual_review') OR s.priority NOT BETWEEN 1 AND 10
                             OR s.error_count < 0);
-- step: an item the seed was processing has no lease here: it is pending again, and reported
UPDATE import_reconciliation_queue s SET status = 'pending', reason = 'processing_released', detail = jsonb_build_object('status', 'processing')
WHERE s.outcome IS NULL AND s.status = 'processing';
-- step: one open item per (organization, type, reference)
UPDATE import_reconciliation_queue s SET outcome = 'merged', reason = 'duplicate_open_item', into_id = d.first,
  detail = jsonb_build_object('into', d.first, 'type', s.type, 'reference_id', s.reference_id)
FROM (SELECT id, first_value(id) OVER w AS first, row_number() OVER w AS n
      FROM (SELECT id, organization_id, type, reference_id, created_at, 0 AS k FROM import_reconciliation_queue
            WHERE outcome IS NULL AND status IN ('pending', 'processing', 'failed')
            UNION ALL SELECT id, organization_id, type, reference_id, created_at, -1 FROM checkout.reconciliation_queue
            WHERE status IN ('pending', 'processing', 'failed')) x
      WINDOW w AS (PARTITION BY organization_id, type, reference_id ORDER BY k, created_at NULLS LAST, id)) d
WHERE d.id = s.id AND d.n > 1 AND s.outcome IS NULL;
-- step
UPDATE import_reconciliation_queue SET outcome = 'imported' WHERE outcome IS NULL;
