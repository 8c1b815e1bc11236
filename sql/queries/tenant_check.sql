-- The tenant check, one row: customer found (not deleted), product found, features found, all in
-- the organization ($1 organization, $2 customer, $3 product, and the feature ids (a placeholder)). No row
-- lock: the unique index decides races (ON CONFLICT in create_subscription.sql), and the customer
-- row is locked by the counter update anyway.
SELECT EXISTS (SELECT 1 FROM checkout.customers c
               WHERE c.organization_id = $1 AND c.id = $2 AND c.deleted_at IS NULL) AS customer,
       EXISTS (SELECT 1 FROM checkout.products p WHERE p.organization_id = $1 AND p.id = $3) AS product,
       (SELECT pg_catalog.count(*) FROM checkout.features f WHERE f.organization_id = $1 AND f.id = ANY ({features})) AS features
