-- The next period starts where this one ends and ends at $3: the caller's end, or by default
-- next_period_end.sql's ($4 true). A caller's end must lie after the current end, or nothing is
-- updated. No function of the row in SET: Citus refuses them in an UPDATE.
UPDATE checkout.subscriptions sub SET status = 'active', current_period_start = sub.current_period_end,
  current_period_end = $3
WHERE sub.organization_id = $1 AND sub.id = $2 AND ($4 OR $3 > sub.current_period_end) RETURNING {subscription}
