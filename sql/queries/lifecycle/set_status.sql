-- A new status; the state-machine trigger decides whether it may. $3 status, $4 cancellation reason.
UPDATE checkout.subscriptions sub SET status = $3, cancellation_reason = coalesce($4, sub.cancellation_reason)
WHERE sub.organization_id = $1 AND sub.id = $2 RETURNING {subscription}
