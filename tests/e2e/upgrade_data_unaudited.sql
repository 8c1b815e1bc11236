-- Loaded after upgrade_data.sql on release 0.1.0 only (tests/e2e/t_upgrade.sh).
-- Direct SQL, which 0.1.0 neither counted nor audited (the update recounts and records it): a
-- subscription inserted without the function, and a status change.
INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval,
    current_period_start, current_period_end)
SELECT 'a0000000-0000-0000-0000-000000000001', id, 'b0000000-0000-0000-0000-0000000000a2', 'canceled', 100, 'usd', 'month',
       now() - interval '2 months', now() - interval '1 month'
FROM checkout.customers WHERE external_id = 'ext-1';
UPDATE checkout.subscriptions SET status = 'past_due' WHERE status = 'trialing';
INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id)
SELECT organization_id, customer_id, 'f0000000-0000-0000-0000-0000000000a1', id FROM checkout.subscriptions WHERE status = 'canceled';
