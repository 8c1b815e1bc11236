-- The plan change's first write on a Citus cluster, where each write is a statement of its own:
-- Citus runs a modifying CTE joined to another table (change_plan.sql) on every shard. Twin of
-- change_plan.sql's `sub`; change both. $8 and $9, the features, are for plan_grant.sql.
UPDATE checkout.subscriptions sub SET product_id = $3, amount = $4, "interval" = $5, interval_count = $6,
  stripe_price_id = coalesce($7, sub.stripe_price_id)
WHERE sub.organization_id = $1 AND sub.id = $2
RETURNING sub.id
