-- On a Citus cluster: the grants the new plan lacks are revoked ($1 organization, $2 subscription,
-- $3 the new plan's feature ids). Twin of change_plan.sql's `revoked`.
UPDATE checkout.feature_grants g SET revoked_at = GREATEST(pg_catalog.now(), g.granted_at) -- GREATEST is syntax, not a function
WHERE g.organization_id = $1 AND g.subscription_id = $2 AND g.revoked_at IS NULL AND g.feature_id <> ALL ($3)
RETURNING g.feature_id
