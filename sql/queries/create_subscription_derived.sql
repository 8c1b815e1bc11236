-- The writes the subscriptions triggers would do for a new subscription (create_subscription.sql).
, audit AS (
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
