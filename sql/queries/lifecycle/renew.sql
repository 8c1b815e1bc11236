-- The next period starts where this one ends; it lasts interval_count x interval unless the
-- caller gives its end ($3, which must lie after the current end, or nothing is updated).
UPDATE checkout.subscriptions sub SET status = 'active', current_period_start = sub.current_period_end,
  current_period_end = coalesce($3, sub.current_period_end + sub.interval_count * CASE sub."interval"
    WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week' WHEN 'month' THEN interval '1 month'
    ELSE interval '1 year' END)
WHERE sub.organization_id = $1 AND sub.id = $2 AND ($3 IS NULL OR $3 > sub.current_period_end) RETURNING {subscription}
