-- The subscription a lifecycle call works on, locked: what its checks read, and the answer
-- (subscription.sql) when nothing has to change. $1 organization, $2 subscription.
SELECT sub.status, sub.customer_id, sub.product_id, sub.amount, sub."interval", sub.interval_count,
       sub.cancel_at_period_end, sub.current_period_end > pg_catalog.now(), {subscription}
FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2 FOR NO KEY UPDATE
