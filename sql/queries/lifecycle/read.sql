-- The answer's subscription, read after a write on a Citus cluster (Citus refuses
-- jsonb_build_object, a STABLE function, in an UPDATE's RETURNING). $1 organization, $2 subscription.
SELECT {subscription} FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2
