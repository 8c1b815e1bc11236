-- Loaded by tests/e2e/t_upgrade.sh on the current version, before each downgrade: audit rows that
-- release 0.1.0 cannot hold, written through the current version's functions. The downgrade
-- 0.2.0 -> 0.1.0 (sql/checkout--0.2.0--0.1.0.sql) records renewed, past_due and converted as
-- 'updated' (the original in metadata.change_type_0_2_0) and deletes the trail of a deleted
-- subscription; the other downgrades keep every row.
SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'four@example.com', 'ext-4');
SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'five@example.com', 'ext-5');
-- renewed, then past_due: ext-4's Pro.
SELECT checkout.create_subscription_atomic(
  '{"status": "active", "amount": 1000, "currency": "usd", "interval": "month",
    "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}',
  NULL, (SELECT id FROM checkout.customers WHERE external_id = 'ext-4'), 'b0000000-0000-0000-0000-0000000000a1',
  'a0000000-0000-0000-0000-000000000001');
SELECT checkout.renew_subscription_period(s.id, s.organization_id)
FROM checkout.subscriptions s JOIN checkout.customers c ON c.id = s.customer_id WHERE c.external_id = 'ext-4';
SELECT checkout.mark_subscription_past_due(s.id, s.organization_id, 'card declined')
FROM checkout.subscriptions s JOIN checkout.customers c ON c.id = s.customer_id WHERE c.external_id = 'ext-4';
-- converted: ext-5's trial of Pro ends paid.
SELECT checkout.create_subscription_atomic(
  '{"status": "trialing", "amount": 1000, "currency": "usd", "interval": "month", "trial_end": "2099-01-01T00:00:00Z",
    "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}',
  NULL, (SELECT id FROM checkout.customers WHERE external_id = 'ext-5'), 'b0000000-0000-0000-0000-0000000000a1',
  'a0000000-0000-0000-0000-000000000001');
SELECT checkout.end_subscription_trial(s.id, s.organization_id, true)
FROM checkout.subscriptions s JOIN checkout.customers c ON c.id = s.customer_id
WHERE c.external_id = 'ext-5' AND s.product_id = 'b0000000-0000-0000-0000-0000000000a1';
-- deleted: ext-5's Team (with a grant), removed by direct SQL; its trail is 'created' and 'deleted'.
SELECT checkout.create_subscription_atomic(
  '{"status": "active", "amount": 500, "currency": "usd", "interval": "month",
    "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}',
  ARRAY['{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}'::jsonb],
  (SELECT id FROM checkout.customers WHERE external_id = 'ext-5'), 'b0000000-0000-0000-0000-0000000000a2',
  'a0000000-0000-0000-0000-000000000001');
DELETE FROM checkout.subscriptions s USING checkout.customers c
WHERE c.id = s.customer_id AND c.external_id = 'ext-5' AND s.product_id = 'b0000000-0000-0000-0000-0000000000a2';
