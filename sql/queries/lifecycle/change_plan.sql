-- The plan and the grants move together: grants the new plan lacks are revoked, its features
-- granted (a revoked grant of the same feature comes back). $3 product, $4 amount, $5 interval,
-- $6 interval_count, $7 stripe_price_id, $8 feature ids, $9 their metadata. On a Citus cluster its
-- three writes are statements of their own: plan_subscription.sql, plan_revoke.sql, plan_grant.sql.
WITH sub AS (
  UPDATE checkout.subscriptions s SET product_id = $3, amount = $4, "interval" = $5, interval_count = $6,
    stripe_price_id = coalesce($7, s.stripe_price_id)
  WHERE s.organization_id = $1 AND s.id = $2
  RETURNING s.*
), revoked AS (
  UPDATE checkout.feature_grants g SET revoked_at = GREATEST(pg_catalog.now(), g.granted_at) -- GREATEST is syntax, not a function
  FROM sub WHERE g.organization_id = sub.organization_id AND g.subscription_id = sub.id AND g.revoked_at IS NULL
    AND g.feature_id <> ALL ($8)
  RETURNING g.feature_id
), granted AS (
  INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id, metadata)
  SELECT sub.organization_id, sub.customer_id, f.id, sub.id, f.metadata
  FROM sub, unnest($8::uuid[], $9::jsonb[]) AS f(id, metadata) -- multi-array unnest cannot be schema-qualified
  ON CONFLICT (organization_id, subscription_id, feature_id, customer_id) DO UPDATE SET revoked_at = NULL, metadata = EXCLUDED.metadata
)
SELECT {subscription} || pg_catalog.jsonb_build_object('features_revoked',
  (SELECT coalesce(pg_catalog.jsonb_agg(revoked.feature_id ORDER BY revoked.feature_id), '[]') FROM revoked))
FROM sub
