-- Where a renewal's next period ends when the caller gives no end: interval_count x interval
-- after this one. A statement of its own (only renew needs it): Citus refuses this arithmetic,
-- a STABLE function of the row, inside an UPDATE. $1 organization, $2 subscription (locked).
SELECT sub.current_period_end + sub.interval_count * CASE sub."interval"
         WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week' WHEN 'month' THEN interval '1 month'
         ELSE interval '1 year' END
FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2
