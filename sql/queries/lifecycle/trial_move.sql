-- A trialing subscription moving to another product ($3) takes that product's trial with it. The
-- audit trigger records it too, but only after the subscription row has entered the pair's unique
-- index; claiming it here first keeps the order create_subscription_atomic follows (trial, then
-- subscription), so a plan change and a create of the same pair queue instead of deadlocking. The
-- values are the trigger's (TRIAL_RECORD_SQL, subscriptions/triggers.rs); a trial held by another subscription is left for the trigger to refuse.
INSERT INTO checkout.trial_history AS t (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end)
SELECT sub.organization_id, sub.customer_id, $3, sub.id,
       LEAST(coalesce(sub.trial_start, pg_catalog.now()), coalesce(sub.trial_end, sub.current_period_end)),
       coalesce(sub.trial_end, sub.current_period_end)
FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2
ON CONFLICT (organization_id, customer_id, product_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id,
  updated_at = EXCLUDED.updated_at
WHERE t.subscription_id IS NULL OR t.subscription_id = EXCLUDED.subscription_id
