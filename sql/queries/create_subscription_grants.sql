-- The new subscription's feature grants on a Citus cluster ($1 organization, $2 customer,
-- $3 subscription, $4 feature ids, $5 their metadata).
INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id, metadata)
SELECT $1, $2, f.id, $3, f.metadata
FROM unnest($4::uuid[], $5::jsonb[]) AS f(id, metadata) -- multi-array unnest cannot be schema-qualified
