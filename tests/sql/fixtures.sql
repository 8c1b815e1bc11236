-- Test-only objects (compiled in with the pg_test feature, never shipped).
CREATE SCHEMA checkout_test;

-- "SQLSTATE: message" of a statement run in a subtransaction, '00000' on success.
CREATE FUNCTION checkout_test.error_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE stmt;
  RETURN '00000';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Its SQLSTATE alone.
CREATE FUNCTION checkout_test.sqlstate_of(stmt text) RETURNS text LANGUAGE sql AS $$
  SELECT split_part(checkout_test.error_of(stmt), ':', 1)
$$;

-- Two tenants with known ids. Id prefixes: a org, b product, c customer, d subscription, f feature;
-- suffix a1/a2 belongs to org A, b1 to org B.
CREATE FUNCTION checkout_test.fixture() RETURNS void LANGUAGE sql AS $$
  INSERT INTO checkout.organizations (id, name) VALUES
    ('a0000000-0000-0000-0000-000000000001', 'Org A'),
    ('a0000000-0000-0000-0000-000000000002', 'Org B');
  INSERT INTO checkout.customers (id, organization_id, email, external_id) VALUES
    ('c0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'alice@example.com', 'ext-a1'),
    ('c0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001', 'bob@example.com', 'ext-a2'),
    ('c0000000-0000-0000-0000-0000000000b1', 'a0000000-0000-0000-0000-000000000002', 'alice@example.com', 'ext-a1');
  INSERT INTO checkout.products (id, organization_id, name) VALUES
    ('b0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'Pro'),
    ('b0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001', 'Team'),
    ('b0000000-0000-0000-0000-0000000000b1', 'a0000000-0000-0000-0000-000000000002', 'Pro');
  INSERT INTO checkout.features (id, organization_id, key) VALUES
    ('f0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'sso'),
    ('f0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001', 'audit_log'),
    ('f0000000-0000-0000-0000-0000000000b1', 'a0000000-0000-0000-0000-000000000002', 'sso');
  INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency,
      interval, current_period_start, current_period_end) VALUES
    ('d0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001',
     'c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', 'active', 1000, 'usd',
     'month', now(), now() + interval '1 month');
  INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id) VALUES
    ('a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1',
     'f0000000-0000-0000-0000-0000000000a1', 'd0000000-0000-0000-0000-0000000000a1');
  INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status) VALUES
    ('a0000000-0000-0000-0000-000000000001', 'pi_1', 1000, 'usd', 'succeeded');
$$;

-- Row counts of every checkout table, to prove a failed call wrote nothing.
CREATE FUNCTION checkout_test.row_counts() RETURNS text LANGUAGE plpgsql AS $$
DECLARE t text; n bigint; out text := '';
BEGIN
  -- maintenance_runs is written by the background worker, concurrently with the tests.
  FOR t IN SELECT relname FROM pg_class WHERE relnamespace = 'checkout'::regnamespace AND relkind = 'r'
             AND relname <> 'maintenance_runs' ORDER BY relname LOOP
    EXECUTE format('SELECT count(*) FROM checkout.%I', t) INTO n;
    out := out || t || '=' || n || ' ';
  END LOOP;
  RETURN out;
END $$;

-- A valid p_subscription for tests.
CREATE FUNCTION checkout_test.sub(status text DEFAULT 'active', extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('status', status, 'amount', 1999, 'currency', 'usd', 'interval', 'month',
    'current_period_start', '2026-01-01T00:00:00Z', 'current_period_end', '2026-02-01T00:00:00Z') || extra
$$;
