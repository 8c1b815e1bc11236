-- Data written through an old release's functions (tests/e2e/t_upgrade.sh loads it before updating;
-- every release since 0.1.0 has these functions with these signatures).
INSERT INTO checkout.organizations (id, name) VALUES ('a0000000-0000-0000-0000-000000000001', 'Org A');
INSERT INTO checkout.products (id, organization_id, name) VALUES
  ('b0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'Pro'),
  ('b0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001', 'Team');
INSERT INTO checkout.features (id, organization_id, key) VALUES
  ('f0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'sso');
SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'one@example.com', 'ext-1');
SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'two@example.com', 'ext-2');
SELECT checkout.create_subscription_atomic(
  '{"status": "active", "amount": 1000, "currency": "usd", "interval": "month",
    "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}',
  ARRAY['{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}'::jsonb],
  (SELECT id FROM checkout.customers WHERE external_id = 'ext-1'), 'b0000000-0000-0000-0000-0000000000a1',
  'a0000000-0000-0000-0000-000000000001', 'key-1');
SELECT checkout.create_subscription_atomic(
  '{"status": "trialing", "amount": 500, "currency": "usd", "interval": "month", "trial_end": "2099-01-01T00:00:00Z",
    "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}',
  NULL, (SELECT id FROM checkout.customers WHERE external_id = 'ext-2'), 'b0000000-0000-0000-0000-0000000000a2',
  'a0000000-0000-0000-0000-000000000001');
SELECT checkout.record_webhook_event('a0000000-0000-0000-0000-000000000001', 'evt_1', 'invoice.paid', '{"id": "evt_1"}', now());
