-- A short tour of checkout (run by scripts/run). Safe to re-run.
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS checkout;
SET search_path = checkout, public;

INSERT INTO organizations (name, slug) VALUES ('Acme Inc', 'acme') ON CONFLICT (slug) DO NOTHING;
INSERT INTO products (organization_id, name)
SELECT id, 'Acme Pro' FROM organizations WHERE slug = 'acme'
  AND NOT EXISTS (SELECT 1 FROM products p WHERE p.name = 'Acme Pro');
INSERT INTO customers (organization_id, email, name)
SELECT id, 'Jane.Doe+acme@GMail.com', 'Jane Doe' FROM organizations WHERE slug = 'acme'
ON CONFLICT DO NOTHING;

\echo '--- organizations, products, customers'
SELECT o.slug, p.name AS product, c.email AS customer
FROM organizations o JOIN products p ON p.organization_id = o.id JOIN customers c ON c.organization_id = o.id
WHERE o.slug = 'acme';

\echo '--- the database refuses a second active subscription for one customer and product:'
\set ON_ERROR_STOP off
INSERT INTO subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval,
                           current_period_start, current_period_end)
SELECT c.organization_id, c.id, p.id, s, 1999, 'usd', 'month', now(), now() + interval '1 month'
FROM customers c JOIN products p ON p.organization_id = c.organization_id, (VALUES ('active'), ('trialing')) v(s)
WHERE c.email = 'Jane.Doe+acme@GMail.com';
\set ON_ERROR_STOP on

\echo '--- maintenance: run the jobs once (the background worker does this every 10 s here)'
SELECT run_maintenance();
SELECT job, last_run_at, next_run_at FROM maintenance_status();

\echo '--- checkout.verify(): failing checks (none expected), then the total'
SELECT "check", detail FROM verify() WHERE NOT ok;
SELECT count(*) AS checks, count(*) FILTER (WHERE ok) AS ok FROM verify();
