-- create_subscription_atomic's insert on a Citus cluster, after the tenant check ran on its own:
-- from VALUES, which Citus routes to the tenant's shard (an INSERT ... SELECT that reads no
-- distributed table is executed by a task for every shard). The triggers write the audit row,
-- counters and metrics. No row: an active or trialing subscription holds the pair.
INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, stripe_subscription_id,
  stripe_price_id, amount, currency, "interval", interval_count, trial_start, trial_end,
  current_period_start, current_period_end, metadata, idempotency_key, product_version_id, price_version_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (organization_id, customer_id, product_id) WHERE status IN ('active', 'trialing') DO NOTHING
RETURNING id
