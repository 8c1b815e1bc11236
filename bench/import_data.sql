-- A database built by the seed's migrations (schema ref, bench/reference.sql), filled for
-- bench/import.sh: :customers customers in 10 organizations, two subscriptions each (mixed
-- statuses), their email variants, trials for 30 %, a grant and an audit row per subscription, a
-- completed idempotency key per 100 customers, and 1 % dirty rows of the kinds import_seed refuses
-- or merges (emails differing by case, an unknown status, upper-case currencies).
\set ON_ERROR_STOP on
SET search_path = ref, public;
CREATE OR REPLACE FUNCTION pg_temp.u(kind int, n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT (lpad(to_hex(kind), 8, '0') || '-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid $$;
INSERT INTO organizations (id, name) SELECT pg_temp.u(1, g), 'org ' || g FROM generate_series(1, 10) g;
INSERT INTO products (id, organization_id, name) SELECT pg_temp.u(2, g), pg_temp.u(1, g % 10 + 1), 'product ' || g FROM generate_series(0, 199) g;
INSERT INTO features (id, organization_id, key) SELECT pg_temp.u(3, g), pg_temp.u(1, g % 10 + 1), 'feature ' || g FROM generate_series(0, 19) g;
-- every 100th customer repeats customer c-1's email in capitals (merged by the import)
INSERT INTO customers (id, organization_id, email, created_at)
SELECT pg_temp.u(4, c), pg_temp.u(1, c % 10 + 1),
       CASE WHEN c % 100 = 11 THEN 'USER' || (c - 10) || '@EXAMPLE.COM' ELSE 'user' || c || '@example.com' END,
       now() - interval '1 day' * (c % 1000)
FROM generate_series(1, :customers) c;
INSERT INTO customer_email_variants (customer_id, email, email_normalized, email_domain)
SELECT id, email, lower(email), split_part(email, '@', 2) FROM customers;
INSERT INTO subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, interval, interval_count,
                           current_period_start, current_period_end, trial_start, trial_end)
SELECT pg_temp.u(5, c * 2 + k), pg_temp.u(1, c % 10 + 1), pg_temp.u(4, c), pg_temp.u(2, (c % 10) + 10 * ((c / 10 + k * 7) % 20)),
       CASE WHEN c % 100 = 42 AND k = 1 THEN 'bogus_status' ELSE s.status END, 1999,
       CASE WHEN c % 100 = 7 THEN 'USD' ELSE 'usd' END, 'month', 1,
       now() - interval '10 days', now() + interval '20 days',
       CASE WHEN s.status = 'trialing' THEN now() - interval '10 days' END, CASE WHEN s.status = 'trialing' THEN now() + interval '4 days' END
FROM generate_series(1, :customers) c, generate_series(0, 1) k,
     LATERAL (SELECT (ARRAY['active','active','active','active','active','active','trialing','canceled','past_due','incomplete'])[(c + k) % 10 + 1] AS status) s;
INSERT INTO feature_grants (customer_id, feature_id, subscription_id)
SELECT s.customer_id, pg_temp.u(3, (c % 10) + 10 * (c % 2)), s.id
FROM subscriptions s, LATERAL (SELECT ('x' || right(s.customer_id::text, 12))::bit(48)::bigint AS c) n;
INSERT INTO subscription_changes (subscription_id, change_type, new_values, changed_by_type, reason)
SELECT id, 'created', jsonb_build_object('status', status), 'system', 'Payment completed' FROM subscriptions;
INSERT INTO trial_history (customer_id, product_id, trial_start, trial_end)
SELECT pg_temp.u(4, c), pg_temp.u(2, (c % 10) + 10 * ((c / 10) % 20)), now() - interval '30 days', now() - interval '16 days'
FROM generate_series(1, :customers) c WHERE c % 10 < 3;
INSERT INTO idempotency_keys (key, request_hash, status, response, organization_id)
SELECT 'key-' || c, 'h', 'completed', jsonb_build_object('success', true, 'subscription_id', pg_temp.u(5, c * 2)), pg_temp.u(1, c % 10 + 1)
FROM generate_series(1, :customers, 100) c;
VACUUM ANALYZE;
