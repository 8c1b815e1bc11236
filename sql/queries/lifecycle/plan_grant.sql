-- On a Citus cluster: the new plan's features are granted, a revoked grant of the same feature
-- comes back ($1 organization, $2 customer, $3 subscription, $4 feature ids, $5 their metadata).
-- Twin of change_plan.sql's `granted`.
INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id, metadata)
SELECT $1, $2, f.id, $3, f.metadata
FROM unnest($4::uuid[], $5::jsonb[]) AS f(id, metadata) -- multi-array unnest cannot be schema-qualified
ON CONFLICT (organization_id, subscription_id, feature_id, customer_id) DO UPDATE SET revoked_at = NULL, metadata = EXCLUDED.metadata
