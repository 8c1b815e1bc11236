-- A short tour of checkout (run by scripts/run). Safe to re-run.
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS checkout;
-- A database from an earlier run may hold an older release: bring it to the installed one.
ALTER EXTENSION checkout UPDATE;
SELECT extversion AS checkout_version FROM pg_extension WHERE extname = 'checkout';
SET search_path = checkout, public;

INSERT INTO organizations (name, slug) VALUES ('Acme Inc', 'acme') ON CONFLICT (slug) DO NOTHING;
-- Two products, a feature and two customers; the README's "Try it" session uses Acme Team, sso and Sam.
INSERT INTO products (organization_id, name)
SELECT o.id, n.name FROM organizations o, (VALUES ('Acme Pro'), ('Acme Team')) n(name)
WHERE o.slug = 'acme' AND NOT EXISTS (SELECT 1 FROM products p WHERE p.organization_id = o.id AND p.name = n.name);
INSERT INTO features (organization_id, key, name)
SELECT id, 'sso', 'Single sign-on' FROM organizations WHERE slug = 'acme' ON CONFLICT DO NOTHING;
INSERT INTO customers (organization_id, email, name)
SELECT o.id, c.email, c.name FROM organizations o,
  (VALUES ('Jane.Doe+acme@GMail.com', 'Jane Doe'), ('sam.lee@example.com', 'Sam Lee')) c(email, name)
WHERE o.slug = 'acme'
ON CONFLICT DO NOTHING;

\echo '--- the demo tenant: organization acme, its products, feature and customers, with their ids'
SELECT 'organization' AS kind, slug AS name, id FROM organizations WHERE slug = 'acme'
UNION ALL SELECT 'product', p.name, p.id FROM products p JOIN organizations o ON o.id = p.organization_id WHERE o.slug = 'acme'
UNION ALL SELECT 'feature', f.key, f.id FROM features f JOIN organizations o ON o.id = f.organization_id WHERE o.slug = 'acme'
UNION ALL SELECT 'customer', c.email, c.id FROM customers c JOIN organizations o ON o.id = c.organization_id WHERE o.slug = 'acme'
ORDER BY 1 DESC, 2;

\echo '--- the database refuses a second active subscription for one customer and product.'
\echo '--- EXPECTED: the ERROR (23505, unique_active_subscription) just below is part of the demo.'
\set ON_ERROR_STOP off
INSERT INTO subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval,
                           current_period_start, current_period_end)
SELECT c.organization_id, c.id, p.id, s, 1999, 'usd', 'month', now(), now() + interval '1 month'
FROM customers c JOIN products p ON p.organization_id = c.organization_id, (VALUES ('active'), ('trialing')) v(s)
WHERE c.email = 'Jane.Doe+acme@GMail.com' AND p.name = 'Acme Pro';
\set ON_ERROR_STOP on

\echo '--- the lifecycle: subscribe (one call), cancel at period end, and the audit trail the trigger kept'
SELECT create_subscription_atomic(
  '{"status": "active", "amount": 1999, "currency": "usd", "interval": "month",
    "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}',
  NULL, c.id, p.id, c.organization_id, 'demo-subscribe') ->> 'subscription_id' AS subscription_id
FROM customers c JOIN products p ON p.organization_id = c.organization_id
WHERE c.email = 'Jane.Doe+acme@GMail.com' AND p.name = 'Acme Pro' AND c.organization_id = (SELECT id FROM organizations WHERE slug = 'acme');
SELECT r ->> 'status' AS status, r ->> 'cancel_at_period_end' AS cancel_at_period_end, r ->> 'changed' AS changed
FROM subscriptions s, cancel_subscription_atomic(s.id, s.organization_id, true, 'switching providers') r
WHERE s.idempotency_key = 'demo-subscribe';
SELECT c.change_type, c.changed_by_role, c.reason, c.new_values ->> 'cancel_at_period_end' AS cancel_at_period_end
FROM subscription_changes c JOIN subscriptions s ON s.id = c.subscription_id
WHERE s.idempotency_key = 'demo-subscribe' ORDER BY c.created_at;
\echo '--- a status change the state machine refuses.'
\echo '--- EXPECTED: the ERROR (09000, invalid transition) just below is part of the demo.'
\set ON_ERROR_STOP off
UPDATE subscriptions SET status = 'incomplete' WHERE idempotency_key = 'demo-subscribe';
\set ON_ERROR_STOP on

\echo '--- maintenance: run the jobs once (the background worker does this every 10 s here)'
SELECT run_maintenance();
SELECT job, last_run_at, next_run_at FROM maintenance_status();

\echo '--- checkout.verify(): failing checks (none expected), then the total'
SELECT "check", detail FROM verify() WHERE NOT ok;
SELECT count(*) AS checks, count(*) FILTER (WHERE ok) AS ok FROM verify();
\echo 'Demo done. The two ERROR lines above were expected. Next: the Try it session in README.md.'
