-- A small tenant for the fault and stress runs, written directly (no subscriptions, so the customer
-- counters are true): organization A, products p1..p:products, feature sso, customers c1..c:customers,
-- and a payment of each customer.
INSERT INTO checkout.organizations (id, name) VALUES ('a0000000-0000-0000-0000-000000000001', 'A');
INSERT INTO checkout.products (id, organization_id, name)
  SELECT ('b0000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'a0000000-0000-0000-0000-000000000001', 'p' || g
  FROM generate_series(1, :products) g;
INSERT INTO checkout.features (id, organization_id, key)
  VALUES ('f0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000001', 'sso');
INSERT INTO checkout.customers (id, organization_id, email)
  SELECT ('c0000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'a0000000-0000-0000-0000-000000000001', 'c' || g || '@example.com'
  FROM generate_series(1, :customers) g;
-- One succeeded payment of 1000 usd per customer, pi_hot_1..pi_hot_:customers, for refunds.
INSERT INTO checkout.payment_intents (organization_id, customer_id, stripe_payment_intent_id, amount, currency, status)
  SELECT 'a0000000-0000-0000-0000-000000000001', ('c0000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid,
         'pi_hot_' || g, 1000, 'usd', 'succeeded'
  FROM generate_series(1, :customers) g;
