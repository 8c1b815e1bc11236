-- Cancel at the end of the period ($3 true, $4 the reason, $5 now), or undo that ($3 false).
-- now() as a parameter: Citus refuses a function inside CASE in an UPDATE.
UPDATE checkout.subscriptions sub SET cancel_at_period_end = $3,
  canceled_at = CASE WHEN $3 THEN $5 END, cancellation_reason = CASE WHEN $3 THEN $4 END
WHERE sub.organization_id = $1 AND sub.id = $2 RETURNING {subscription}
