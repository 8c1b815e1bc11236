-- The floor: create_subscription_atomic's writes as one plain statement, with no checks.
\set c random(1, :N)
\set k random(0, 19)
WITH sub AS (
  INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, interval_count, current_period_start, current_period_end, metadata)
  VALUES (bench_uuid(1, :c % 10 + 1), bench_uuid(4, :c), bench_uuid(2, (:c % 10) + 10 * :k), 'active', 1999, 'usd', 'month', 1, '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', '{}')
  ON CONFLICT (organization_id, customer_id, product_id) WHERE status IN ('active', 'trialing') DO NOTHING
  RETURNING *
), audit AS (
  INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, new_values)
  SELECT organization_id, id, 'created', to_jsonb(sub.*) FROM sub
), grants AS (
  INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id)
  SELECT organization_id, customer_id, bench_uuid(3, :c % 10), id FROM sub
), cust AS (
  UPDATE checkout.customers c SET has_active_subscription = true, subscription_count = c.subscription_count + 1, updated_at = now()
  FROM sub WHERE c.organization_id = sub.organization_id AND c.id = sub.customer_id
)
SELECT id FROM sub;
