-- The subscription a lifecycle call works on, locked: what its checks read, the answer
-- (subscription.sql) when nothing has to change, and where a renewal's next period ends by
-- default (interval_count x interval after this one). $1 organization, $2 subscription.
SELECT sub.status, sub.customer_id, sub.product_id, sub.amount, sub."interval", sub.interval_count,
       sub.cancel_at_period_end, sub.current_period_end > pg_catalog.now(), {subscription},
       sub.current_period_end + sub.interval_count * CASE sub."interval"
         WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week' WHEN 'month' THEN interval '1 month'
         ELSE interval '1 year' END
FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2 FOR NO KEY UPDATE
