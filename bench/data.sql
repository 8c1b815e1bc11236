-- Benchmark data, identical in schema checkout and in schema ref. psql variables :customers and
-- :with_ref (false: checkout only, for the scale runs).
-- Ids are deterministic (bench_uuid(kind, n)) so pgbench scripts can name rows without lookups:
-- kind 1 organization (1..10), 2 product (0..199, organization p % 10 + 1), 3 feature (0..19,
-- organization f % 10 + 1), 4 customer (1..N, organization c % 10 + 1, user<c>@example.com).
CREATE OR REPLACE FUNCTION public.bench_uuid(kind int, n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT (lpad(to_hex(kind), 8, '0') || '-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid $$;
-- The product of a customer's k-th subscription (same organization as the customer).
CREATE OR REPLACE FUNCTION public.bench_product(c bigint, k int) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT (c % 10) + 10 * ((c / 10 + k * 7) % 20) $$;

\set ON_ERROR_STOP on
\timing on
INSERT INTO checkout.organizations (id, name) SELECT bench_uuid(1, g), 'org ' || g FROM generate_series(1, 10) g;
\if :with_ref
INSERT INTO ref.organizations (id, name) SELECT bench_uuid(1, g), 'org ' || g FROM generate_series(1, 10) g;
\endif
INSERT INTO checkout.products (id, organization_id, name) SELECT bench_uuid(2, g), bench_uuid(1, g % 10 + 1), 'product ' || g FROM generate_series(0, 199) g;
\if :with_ref
INSERT INTO ref.products (id, organization_id, name) SELECT bench_uuid(2, g), bench_uuid(1, g % 10 + 1), 'product ' || g FROM generate_series(0, 199) g;
\endif
INSERT INTO checkout.features (id, organization_id, key) SELECT bench_uuid(3, g), bench_uuid(1, g % 10 + 1), 'feature ' || g FROM generate_series(0, 19) g;
\if :with_ref
INSERT INTO ref.features (id, organization_id, key) SELECT bench_uuid(3, g), bench_uuid(1, g % 10 + 1), 'feature ' || g FROM generate_series(0, 19) g;
\endif
-- customers: checkout's trigger records the email variants; the seed's upsert would have, so ref gets them too
INSERT INTO checkout.customers (id, organization_id, email) SELECT bench_uuid(4, g), bench_uuid(1, g % 10 + 1), 'user' || g || '@example.com' FROM generate_series(1, :customers) g;
\if :with_ref
INSERT INTO ref.customers (id, organization_id, email) SELECT bench_uuid(4, g), bench_uuid(1, g % 10 + 1), 'user' || g || '@example.com' FROM generate_series(1, :customers) g;
\endif
\if :with_ref
INSERT INTO ref.customer_email_variants (customer_id, email, email_normalized, email_domain) SELECT id, email, ref.normalize_email(email), split_part(email, '@', 2) FROM ref.customers;
\endif
-- subscriptions: two per customer, mixed statuses
INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end, trial_start, trial_end)
SELECT bench_uuid(1, c % 10 + 1), bench_uuid(4, c), bench_uuid(2, bench_product(c, k)), s.status, 1999, 'usd', 'month', now() - interval '10 days', now() + interval '20 days',
       CASE WHEN s.status = 'trialing' THEN now() - interval '10 days' END, CASE WHEN s.status = 'trialing' THEN now() + interval '4 days' END
FROM generate_series(1, :customers) c, generate_series(0, 1) k,
     LATERAL (SELECT (ARRAY['active','active','active','active','active','active','trialing','canceled','past_due','incomplete'])[(c + k) % 10 + 1] AS status) s;
\if :with_ref
INSERT INTO ref.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, interval_count, current_period_start, current_period_end, trial_start, trial_end)
\endif
SELECT organization_id, customer_id, product_id, status, amount, currency, interval, interval_count, current_period_start, current_period_end, trial_start, trial_end FROM checkout.subscriptions;
-- trial history for 30% of customers
INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
SELECT bench_uuid(1, c % 10 + 1), bench_uuid(4, c), bench_uuid(2, bench_product(c, 0)), now() - interval '30 days', now() - interval '16 days'
FROM generate_series(1, :customers) c WHERE c % 10 < 3;
\if :with_ref
INSERT INTO ref.trial_history (customer_id, product_id, trial_start, trial_end) SELECT customer_id, product_id, trial_start, trial_end FROM checkout.trial_history;
\endif
VACUUM ANALYZE;
