-- The source of t_import.sh: the seed's tables (bench/reference.sql, schema ref) holding what the
-- seed lets in, clean rows and every kind of dirty row of issue 18. Ids name what a row is for.
SET search_path = ref, public;
ALTER TABLE customers ADD COLUMN legacy_tier text; -- a column checkout does not know

INSERT INTO organizations (id, name) VALUES
  ('a0000000-0000-0000-0000-00000000000a', 'Acme'),
  ('a0000000-0000-0000-0000-00000000000b', 'Beta'),
  ('a0000000-0000-0000-0000-00000000000c', '');                          -- refused: no name

INSERT INTO customers (id, organization_id, email, external_id, legacy_tier, created_at, deleted_at) VALUES
  ('c0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'alice@example.com', 'ext-1', 'gold', '2024-01-01', NULL),
  ('c0000000-0000-0000-0000-000000000002', 'a0000000-0000-0000-0000-00000000000a', 'Bob@Example.com', NULL, NULL, '2024-01-02', NULL),
  ('c0000000-0000-0000-0000-000000000003', 'a0000000-0000-0000-0000-00000000000a', 'bob@example.com', 'ext-3', NULL, '2024-02-01', NULL), -- merged into 2
  ('c0000000-0000-0000-0000-000000000004', 'a0000000-0000-0000-0000-00000000000a', 'not-an-email', NULL, NULL, '2024-01-04', NULL),      -- refused
  ('c0000000-0000-0000-0000-000000000005', 'a0000000-0000-0000-0000-00000000000a', '  Carol@Example.com ', NULL, NULL, '2024-01-05', NULL), -- trimmed
  ('c0000000-0000-0000-0000-000000000006', 'a0000000-0000-0000-0000-00000000000b', 'dave@example.com', NULL, NULL, '2024-01-06', NULL),
  ('c0000000-0000-0000-0000-000000000007', 'a0000000-0000-0000-0000-00000000000a', 'BOB@example.com', NULL, NULL, '2023-12-01', '2024-01-01'), -- deleted: kept
  ('c0000000-0000-0000-0000-000000000008', 'a0000000-0000-0000-0000-00000000000a', 'erin@example.com', NULL, NULL, '2024-01-08', NULL),
  ('c0000000-0000-0000-0000-000000000009', 'a0000000-0000-0000-0000-00000000000c', 'zed@example.com', NULL, NULL, '2024-01-09', NULL),  -- org refused
  ('c0000000-0000-0000-0000-000000000010', 'a0000000-0000-0000-0000-00000000000a', E'frank@example.com\t', NULL, NULL, '2024-01-10', NULL); -- a tab trimmed

INSERT INTO products (id, organization_id, name) VALUES
  ('b0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'Pro'),
  ('b0000000-0000-0000-0000-000000000002', 'a0000000-0000-0000-0000-00000000000a', 'Team'),
  ('b0000000-0000-0000-0000-00000000000b', 'a0000000-0000-0000-0000-00000000000b', 'Beta Pro');
INSERT INTO features (id, organization_id, key) VALUES
  ('f0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'sso'),
  ('f0000000-0000-0000-0000-000000000002', 'a0000000-0000-0000-0000-00000000000a', 'seats'),
  ('f0000000-0000-0000-0000-00000000000b', 'a0000000-0000-0000-0000-00000000000b', 'sso');

INSERT INTO subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, interval, interval_count,
                           trial_start, trial_end, current_period_start, current_period_end, created_at) VALUES
  -- clean, currency in capitals
  ('50000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-000000000001', 'active', 1999, 'USD', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  -- customer 3 is merged into 2: an active one of 2 and a trialing one of 3 on product 1; the active stays in force
  ('50000000-0000-0000-0000-000000000002', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000002', 'b0000000-0000-0000-0000-000000000001', 'active', 1999, 'usd', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  ('50000000-0000-0000-0000-000000000003', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000003', 'b0000000-0000-0000-0000-000000000001', 'trialing', 1999, 'usd', 'month', 1, '2024-03-05', '2024-03-19', '2024-03-05', '2024-04-05', '2024-03-05'),
  -- active and trialing for one pair of one customer (seed defect S1)
  ('50000000-0000-0000-0000-000000000004', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-000000000002', 'trialing', 500, 'usd', 'month', 1, '2024-03-01', '2024-03-15', '2024-03-01', '2024-04-01', '2024-03-10'),
  ('50000000-0000-0000-0000-000000000005', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-000000000002', 'active', 500, 'usd', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-02'),
  -- a customer of B under A (seed defect S6)
  ('50000000-0000-0000-0000-000000000006', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000006', 'b0000000-0000-0000-0000-000000000001', 'active', 1999, 'usd', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  -- a status outside the state machine (S10)
  ('50000000-0000-0000-0000-000000000007', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000005', 'b0000000-0000-0000-0000-000000000001', 'bogus_status', 1999, 'usd', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  -- the customer with the invalid email
  ('50000000-0000-0000-0000-000000000008', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000004', 'b0000000-0000-0000-0000-000000000001', 'active', 1999, 'usd', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  -- no amount, no period end (S10), a currency that is not one: what the seed's CHECKs let through
  ('50000000-0000-0000-0000-000000000009', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000005', 'b0000000-0000-0000-0000-000000000002', 'active', NULL, 'usd', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  ('50000000-0000-0000-0000-000000000010', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000005', 'b0000000-0000-0000-0000-000000000001', 'active', 1999, 'usd', 'month', 1, NULL, NULL, '2024-04-01', NULL, '2024-03-01'),
  ('50000000-0000-0000-0000-000000000014', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000005', 'b0000000-0000-0000-0000-000000000002', 'trialing', 1999, 'u$', 'month', 1, NULL, NULL, '2024-03-01', '2024-04-01', '2024-03-01'),
  -- a trial the seed never recorded in trial_history
  ('50000000-0000-0000-0000-000000000011', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000008', 'b0000000-0000-0000-0000-000000000001', 'trialing', 1999, 'usd', 'month', 1, now() - interval '2 days', now() + interval '12 days', now() - interval '2 days', now() + interval '28 days', '2024-03-01'),
  -- canceled without its stamps, with a grant in force
  ('50000000-0000-0000-0000-000000000012', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000008', 'b0000000-0000-0000-0000-000000000002', 'canceled', 500, 'usd', 'month', 1, NULL, NULL, '2024-01-01', '2024-02-01', '2024-01-01'),
  -- trialing without trial dates: what the seed's create left when it refused the trial (S9)
  ('50000000-0000-0000-0000-000000000015', 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000010', 'b0000000-0000-0000-0000-000000000002', 'trialing', 500, 'usd', 'month', 1, NULL, NULL, now() - interval '1 day', now() + interval '29 days', '2024-03-01'),
  -- clean, organization B
  ('50000000-0000-0000-0000-000000000013', 'a0000000-0000-0000-0000-00000000000b', 'c0000000-0000-0000-0000-000000000006', 'b0000000-0000-0000-0000-00000000000b', 'active', 900, 'eur', 'year', 1, NULL, NULL, '2024-03-01', '2025-03-01', '2024-03-01');

INSERT INTO feature_grants (id, customer_id, feature_id, subscription_id, granted_at) VALUES
  ('90000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-000000000001', 'f0000000-0000-0000-0000-000000000001', '50000000-0000-0000-0000-000000000001', '2024-03-01'),
  ('90000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000003', 'f0000000-0000-0000-0000-000000000001', '50000000-0000-0000-0000-000000000003', '2024-03-05'),
  ('90000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-000000000006', 'f0000000-0000-0000-0000-00000000000b', '50000000-0000-0000-0000-000000000013', '2024-03-01'),
  ('90000000-0000-0000-0000-000000000004', 'c0000000-0000-0000-0000-000000000001', 'f0000000-0000-0000-0000-00000000000b', '50000000-0000-0000-0000-000000000001', '2024-03-01'), -- B's feature
  ('90000000-0000-0000-0000-000000000005', 'c0000000-0000-0000-0000-000000000008', 'f0000000-0000-0000-0000-000000000002', '50000000-0000-0000-0000-000000000012', '2024-01-01');

INSERT INTO subscription_changes (id, subscription_id, change_type, new_values, changed_by_type, reason, created_at) VALUES
  ('e0000000-0000-0000-0000-000000000001', '50000000-0000-0000-0000-000000000001', 'created', '{"status": "active"}', 'system', 'Payment completed', '2024-03-01'),
  ('e0000000-0000-0000-0000-000000000002', '50000000-0000-0000-0000-000000000006', 'created', '{"status": "active"}', 'system', 'Payment completed', '2024-03-01'),
  ('e0000000-0000-0000-0000-000000000003', '50000000-0000-0000-0000-000000000001', 'updated', NULL, 'robot', NULL, '2024-03-02');

INSERT INTO trial_history (id, customer_id, product_id, subscription_id, trial_start, trial_end) VALUES
  ('70000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-000000000002', 'b0000000-0000-0000-0000-000000000002', NULL, '2023-06-01', '2023-06-15'),
  ('70000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000003', 'b0000000-0000-0000-0000-000000000002', NULL, '2023-07-01', '2023-07-15'), -- 3 is merged into 2
  ('70000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-000000000003', 'b0000000-0000-0000-0000-000000000001', '50000000-0000-0000-0000-000000000003', '2024-03-05', '2024-03-19');

INSERT INTO customer_email_variants (id, customer_id, email, email_normalized, email_domain) VALUES
  ('d0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-000000000001', 'alice@example.com', 'alice@example.com', 'example.com'),
  ('d0000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000001', 'Alice.Old+x@Gmail.com', 'alice.old@gmail.com', 'gmail.com'),
  ('d0000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-000000000004', 'not-an-email', 'not-an-email@', '');

INSERT INTO idempotency_keys (id, key, request_hash, status, response, organization_id) VALUES
  ('60000000-0000-0000-0000-000000000001', 'order-1', 'h1', 'completed',
   '{"success": true, "subscription_id": "50000000-0000-0000-0000-000000000001"}', 'a0000000-0000-0000-0000-00000000000a'),
  ('60000000-0000-0000-0000-000000000002', 'order-2', 'h2', 'completed', '{"success": true}', NULL),  -- no organization
  ('60000000-0000-0000-0000-000000000003', 'order-3', 'h3', 'processing', NULL, 'a0000000-0000-0000-0000-00000000000a'),
  -- global keys: A's key answering with a subscription refused here (B's customer under A)
  ('60000000-0000-0000-0000-000000000004', 'order-4', 'h4', 'completed',
   '{"success": true, "subscription_id": "50000000-0000-0000-0000-000000000006"}', 'a0000000-0000-0000-0000-00000000000a');

-- A second source with only the columns the seed's statements name, and fewer tables.
DROP SCHEMA IF EXISTS thin CASCADE;
CREATE SCHEMA thin;
CREATE TABLE thin.organizations (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE thin.customers (id uuid PRIMARY KEY, organization_id uuid NOT NULL, email text NOT NULL);
CREATE TABLE thin.products (id uuid PRIMARY KEY, organization_id uuid NOT NULL, name text NOT NULL);
CREATE TABLE thin.subscriptions (id uuid PRIMARY KEY, organization_id uuid, customer_id uuid, product_id uuid, status text,
  amount integer, currency text, interval text, current_period_start timestamptz, current_period_end timestamptz);
INSERT INTO thin.organizations VALUES ('a0000000-0000-0000-0000-0000000000d0', 'Thin');
INSERT INTO thin.customers VALUES ('c0000000-0000-0000-0000-0000000000d1', 'a0000000-0000-0000-0000-0000000000d0', 'thin@example.com');
INSERT INTO thin.products VALUES ('b0000000-0000-0000-0000-0000000000d1', 'a0000000-0000-0000-0000-0000000000d0', 'Thin Pro');
INSERT INTO thin.subscriptions VALUES ('50000000-0000-0000-0000-0000000000d1', 'a0000000-0000-0000-0000-0000000000d0',
  'c0000000-0000-0000-0000-0000000000d1', 'b0000000-0000-0000-0000-0000000000d1', 'active', 100, 'usd', 'month', '2024-01-01', '2024-02-01');

-- The other tables. A live database has more columns than the seed's statements name: some are added
-- here, as a DBA's database would have them.
SET search_path = ref, public;
ALTER TABLE users ADD COLUMN email text;
INSERT INTO users (id, organization_id, email) VALUES
  ('11000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'ops@acme.example'),
  ('11000000-0000-0000-0000-000000000002', 'a0000000-0000-0000-0000-00000000000a', NULL);          -- refused: no email
UPDATE subscription_changes SET changed_by = '11000000-0000-0000-0000-000000000001' WHERE id = 'e0000000-0000-0000-0000-000000000001';
INSERT INTO checkout_sessions (id, customer_id, status, expires_at) VALUES
  ('12000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-000000000001', 'pending', '2030-01-01'), -- organization from the customer
  ('12000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-000000000004', 'pending', '2030-01-01'), -- refused customer
  ('12000000-0000-0000-0000-000000000003', NULL, 'pending', NULL);                                            -- no organization
ALTER TABLE payment_intents ADD COLUMN organization_id uuid, ADD COLUMN customer_id uuid,
  ADD COLUMN stripe_payment_intent_id text, ADD COLUMN currency text, ADD COLUMN status text;
INSERT INTO payment_intents (id, amount, organization_id, customer_id, stripe_payment_intent_id, currency, status) VALUES
  ('13000000-0000-0000-0000-000000000001', 1000, 'a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-000000000001', 'pi_1', 'USD', 'succeeded'),
  ('13000000-0000-0000-0000-000000000002', 500, NULL, NULL, NULL, NULL, NULL);                              -- the seed's shape: no organization
INSERT INTO refunds (id, payment_intent_id, amount, currency, status, created_at) VALUES
  ('14000000-0000-0000-0000-000000000001', 'pi_1', 600, 'usd', 'succeeded', '2024-03-01'),
  ('14000000-0000-0000-0000-000000000002', 'pi_1', 600, 'usd', 'pending', '2024-03-02'),  -- beyond the payment
  ('14000000-0000-0000-0000-000000000003', 'pi_1', 100, 'eur', 'pending', '2024-03-03');  -- another currency
INSERT INTO webhook_events (id, type, status) VALUES ('15000000-0000-0000-0000-000000000001', 'invoice.paid', 'processed');
INSERT INTO reconciliation_queue (id, type, reference_id, status, created_at) VALUES
  ('16000000-0000-0000-0000-000000000001', 'stripe_sync', 'r1', 'pending', '2024-03-01'),
  ('16000000-0000-0000-0000-000000000002', 'stripe_sync', 'r2', 'processing', '2024-03-01'),
  ('16000000-0000-0000-0000-000000000003', 'stripe_sync', 'r3', 'completed', '2024-03-01');
