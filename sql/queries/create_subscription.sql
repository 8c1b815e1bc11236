-- Every write of a creation in one statement, after the tenant check (tenant_check.sql, as one
-- row). When the check fails, or an active/trialing subscription exists for the pair, the insert
-- does nothing and so does every statement fed by it; the result says which. It writes the audit
-- row, counters and metrics the subscriptions triggers would write (subscriptions/triggers.rs, its
-- twin), which stand aside for it (self_audited). A Citus cluster runs
-- create_subscription_values.sql instead, and the triggers write them.
WITH tenant AS (
{tenant}
), sub AS (
  INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, stripe_subscription_id,
    stripe_price_id, amount, currency, "interval", interval_count, trial_start, trial_end,
    current_period_start, current_period_end, metadata, idempotency_key, product_version_id, price_version_id)
  SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18
  FROM tenant WHERE tenant.customer AND tenant.product AND tenant.features = pg_catalog.cardinality($19)
  ON CONFLICT (organization_id, customer_id, product_id) WHERE status IN ('active', 'trialing') DO NOTHING
  RETURNING *
), grants AS (
  INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id, metadata)
  SELECT sub.organization_id, sub.customer_id, f.id, sub.id, f.metadata
  FROM sub, unnest($19::uuid[], $20::jsonb[]) AS f(id, metadata) -- multi-array unnest cannot be schema-qualified
), audit AS (
  INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, new_values, changed_by_type, reason)
  SELECT sub.organization_id, sub.id, 'created', pg_catalog.to_jsonb(sub.*), 'system', 'create_subscription_atomic'
  FROM sub
), customer AS (
  UPDATE checkout.customers c
  SET has_active_subscription = c.has_active_subscription OR sub.status IN ('active', 'trialing'),
      subscription_count = c.subscription_count + 1, updated_at = pg_catalog.now()
  FROM sub WHERE c.organization_id = sub.organization_id AND c.id = sub.customer_id
  RETURNING sub.organization_id, sub.product_id
), product AS (
  -- Fed by the customer step, so the customer row is locked before the product row, the order
  -- every path takes (sql/lifecycle.sql). Only when set: an UPDATE that changes nothing would
  -- still lock the product row.
  UPDATE checkout.products p SET metrics_last_calculated_at = NULL
  FROM customer WHERE p.organization_id = customer.organization_id AND p.id = customer.product_id
    AND p.metrics_last_calculated_at IS NOT NULL
)
SELECT (SELECT id FROM sub), tenant.customer, tenant.product, tenant.features FROM tenant
