-- At least one row in every checkout table (used by the dump/restore test).
INSERT INTO checkout.organizations (id, name, slug) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'Org A', 'org-a'), ('a0000000-0000-0000-0000-000000000002', 'Org B', 'org-b');
INSERT INTO checkout.users (id, organization_id, email) VALUES
  ('e0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'admin@a.example');
INSERT INTO checkout.customers (id, organization_id, email, external_id, metadata) VALUES
  ('c0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'Alice@Example.com', 'ext-1', '{"plan": "pro"}'),
  ('c0000000-0000-0000-0000-0000000000b1', 'a0000000-0000-0000-0000-000000000002', 'alice@example.com', NULL, '{}');
UPDATE checkout.customers SET email = 'alice.new@example.com' WHERE id = 'c0000000-0000-0000-0000-0000000000a1';
INSERT INTO checkout.products (id, organization_id, name) VALUES
  ('b0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'Pro');
INSERT INTO checkout.features (id, organization_id, key) VALUES
  ('f0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'sso');
INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, interval,
    current_period_start, current_period_end, trial_start, trial_end, idempotency_key) VALUES
  ('d0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1',
   'b0000000-0000-0000-0000-0000000000a1', 'trialing', 1999, 'usd', 'month', now(), now() + interval '1 month',
   now(), now() + interval '14 days', 'key-1');
INSERT INTO checkout.checkout_sessions (organization_id, customer_id, product_id, amount, currency) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', 1999, 'usd');
INSERT INTO checkout.payment_intents (organization_id, customer_id, subscription_id, stripe_payment_intent_id, amount, currency, status) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1', 'd0000000-0000-0000-0000-0000000000a1', 'pi_1', 1999, 'usd', 'succeeded');
INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1', 'f0000000-0000-0000-0000-0000000000a1', 'd0000000-0000-0000-0000-0000000000a1');
INSERT INTO checkout.webhook_events (organization_id, provider_event_id, type, payload) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'evt_1', 'invoice.paid', '{"id": "evt_1"}');
INSERT INTO checkout.idempotency_keys (organization_id, key, operation, status, response) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'key-1', 'create_subscription_atomic', 'completed',
   '{"success": true, "subscription_id": "d0000000-0000-0000-0000-0000000000a1"}');
-- The subscriptions triggers wrote its trial_history and 'created' audit rows; a direct change by a
-- staff user and a function's change add more, and a deleted subscription leaves its trail.
SET checkout.actor = 'e0000000-0000-0000-0000-0000000000a1';
UPDATE checkout.subscriptions SET metadata = '{"note": "vip"}' WHERE id = 'd0000000-0000-0000-0000-0000000000a1';
RESET checkout.actor;
SELECT checkout.cancel_subscription_atomic('d0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', true, 'moving');
INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, interval,
    current_period_start, current_period_end) VALUES
  ('d0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1',
   'b0000000-0000-0000-0000-0000000000a1', 'incomplete', 1999, 'usd', 'month', now(), now() + interval '1 month');
DELETE FROM checkout.subscriptions WHERE id = 'd0000000-0000-0000-0000-0000000000a2';
INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, subscription_id, amount, currency, status) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'pi_1', 're_1', 'd0000000-0000-0000-0000-0000000000a1', 500, 'usd', 'succeeded');
INSERT INTO checkout.reconciliation_queue (organization_id, type, reference_id, details) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'payment', 'pi_1', '{"why": "missing webhook"}');
-- An import from a seed database whose one customer checkout refuses: the report's row.
CREATE SCHEMA seed_source;
CREATE TABLE seed_source.customers (id uuid PRIMARY KEY, organization_id uuid NOT NULL, email text NOT NULL);
INSERT INTO seed_source.customers VALUES ('c0000000-0000-0000-0000-0000000000f1', 'a0000000-0000-0000-0000-000000000001', 'not-an-email');
SELECT count(*) FROM checkout.import_seed('seed_source', false);
