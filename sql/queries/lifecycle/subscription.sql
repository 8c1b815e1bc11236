pg_catalog.jsonb_build_object('subscription_id', sub.id, 'status', sub.status, 'product_id', sub.product_id,
  'amount', sub.amount, 'currency', sub.currency, 'interval', sub."interval", 'interval_count', sub.interval_count,
  'cancel_at_period_end', sub.cancel_at_period_end, 'canceled_at', sub.canceled_at, 'ended_at', sub.ended_at,
  'current_period_start', sub.current_period_start, 'current_period_end', sub.current_period_end)
