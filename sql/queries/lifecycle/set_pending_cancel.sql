-- Cancel at the end of the period ($3 true, $4 the reason), or undo that ($3 false).
UPDATE checkout.subscriptions sub SET cancel_at_period_end = $3,
  canceled_at = CASE WHEN $3 THEN pg_catalog.now() END, cancellation_reason = CASE WHEN $3 THEN $4 END
WHERE sub.organization_id = $1 AND sub.id = $2 RETURNING {subscription}
