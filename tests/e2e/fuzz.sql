-- Hostile arguments for every SQL function of checkout; each call in a subtransaction, its SQLSTATE
-- counted. psql variable :calls (per function). Output: one line per (function, SQLSTATE).
SELECT setseed(0.4242);
CREATE TEMP TABLE fuzz_states (fn text, state text, n int, PRIMARY KEY (fn, state));

CREATE FUNCTION pg_temp.pick(a anyarray) RETURNS anyelement LANGUAGE sql AS
  'SELECT a[1 + floor(random() * array_length(a, 1))::int]';
-- A random JSON value: scalars of every kind (huge, negative, fractional, empty, long, odd Unicode),
-- arrays and nested objects.
CREATE FUNCTION pg_temp.rjson(depth int DEFAULT 0) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r float := random();
BEGIN
  IF depth < 2 AND r < 0.1 THEN
    RETURN jsonb_build_object(pg_temp.rkey(), pg_temp.rjson(depth + 1), pg_temp.rkey(), pg_temp.rjson(depth + 1));
  ELSIF depth < 2 AND r < 0.15 THEN
    RETURN jsonb_build_array(pg_temp.rjson(depth + 1), pg_temp.rjson(depth + 1));
  END IF;
  RETURN pg_temp.pick(ARRAY['null', 'true', '0', '-1', '1', '1999', '2147483648', '9223372036854775807',
    '99999999999999999999999', '-0.5', '1e308', '12.5', '""', '"usd"', '"USD"', '"month"', '"active"', '"trialing"',
    '"incomplete"', '"canceled"', '"2026-01-01T00:00:00Z"', '"2026-02-30T00:00:00Z"', '"2026-01-01"', '"yesterday"',
    '"2026-01-01T00:00:00"', '"0001-01-01T00:00:00Z"', '"9999-12-31T23:59:59Z"', '1700000000', '-99999999999',
    '"a0000000-0000-0000-0000-000000000001"', '"not-a-uuid"', '"\u00e9\u0301\ud83d\ude00"', '"\u0007\u001f"',
    '{}', '[]', '{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}']::jsonb[])
    || CASE WHEN random() < 0.02 THEN to_jsonb(repeat('x', 100000)) ELSE NULL END;
END $$;
CREATE FUNCTION pg_temp.rkey() RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.pick(ARRAY['status', 'amount', 'currency', 'interval', 'interval_count', 'current_period_start',
    'current_period_end', 'trial_start', 'trial_end', 'stripe_subscription_id', 'stripe_price_id', 'metadata',
    'product_version_id', 'price_version_id', 'curency', '', 'feature_id', repeat('k', 300)])
$$;
-- A subscription object: usually mostly valid with a few fields replaced, sometimes anything.
CREATE FUNCTION pg_temp.rsub() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE s jsonb := '{"status": "active", "amount": 1999, "currency": "usd", "interval": "month",
  "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2026-02-01T00:00:00Z"}';
BEGIN
  IF random() < 0.1 THEN RETURN pg_temp.rjson(); END IF;
  FOR i IN 1..floor(random() * 4)::int LOOP
    s := s || jsonb_build_object(pg_temp.rkey(), pg_temp.rjson());
  END LOOP;
  IF random() < 0.3 THEN s := s - pg_temp.rkey(); END IF;
  RETURN s;
END $$;
CREATE FUNCTION pg_temp.rtext() RETURNS text LANGUAGE sql AS $$
  SELECT CASE WHEN random() < 0.05 THEN NULL ELSE
    string_agg(pg_temp.pick(ARRAY['a', 'Z', '.', '+', '-', '_', '@', ' ', E'\t', E'\n', E'\x01', 'é', '＠', 'ﬁ', '😀',
      'gmail.com', 'GoogleMail.COM', 'yahoo.co.uk', 'xn--', 'xn--exmple-cua', 'proton.me', '..', '[127.0.0.1]',
      repeat('y', 300), '"', '''', '\\', '%', chr(1 + floor(random() * 55000)::int)]), '')
  END FROM generate_series(1, 1 + floor(random() * 8)::int)
$$;
CREATE FUNCTION pg_temp.ruuid() RETURNS uuid LANGUAGE sql AS $$
  SELECT pg_temp.pick(ARRAY[NULL, gen_random_uuid(), 'a0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000002',
    'c0000000-0000-0000-0000-0000000000a1', 'c0000000-0000-0000-0000-0000000000a2', 'c0000000-0000-0000-0000-0000000000b1',
    'b0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000b1']::uuid[])
$$;

CREATE FUNCTION pg_temp.fuzz(p_fn text, calls int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE st text;
BEGIN
  FOR i IN 1..calls LOOP
    BEGIN
      CASE p_fn
      WHEN 'normalize_email' THEN PERFORM checkout.normalize_email(pg_temp.rtext());
      WHEN 'check_trial_eligibility' THEN PERFORM checkout.check_trial_eligibility(pg_temp.ruuid(), pg_temp.ruuid(), pg_temp.rtext());
      WHEN 'upsert_customer_atomic' THEN PERFORM checkout.upsert_customer_atomic(pg_temp.ruuid(), pg_temp.rtext(),
          pg_temp.rtext(), pg_temp.rtext(), pg_temp.rtext(), pg_temp.rjson());
      WHEN 'create_subscription_atomic' THEN
        IF random() < 0.4 THEN  -- consistent tenant ids, so that the happy path is reached too
          PERFORM checkout.create_subscription_atomic(pg_temp.rsub(),
            CASE WHEN random() < 0.5 THEN NULL ELSE ARRAY['{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}'::jsonb] END,
            pg_temp.pick(ARRAY['c0000000-0000-0000-0000-0000000000a1', 'c0000000-0000-0000-0000-0000000000a2']::uuid[]),
            pg_temp.pick(ARRAY['b0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a2']::uuid[]),
            'a0000000-0000-0000-0000-000000000001', CASE WHEN random() < 0.5 THEN NULL ELSE 'k' || floor(random() * 50) END);
        ELSE PERFORM checkout.create_subscription_atomic(pg_temp.rsub(),
          CASE WHEN random() < 0.2 THEN NULL ELSE ARRAY[pg_temp.rjson(), pg_temp.pick(ARRAY[NULL, '{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}', '{"feature_id": "f0000000-0000-0000-0000-0000000000b1", "metadata": {"x": 1}}']::jsonb[])] END,
          pg_temp.ruuid(), pg_temp.ruuid(), pg_temp.ruuid(),
          CASE WHEN random() < 0.5 THEN NULL ELSE pg_temp.pick(ARRAY['k1', 'k2', '', repeat('k', 256), pg_temp.rtext()]) END);
        END IF;
      WHEN 'lifecycle' THEN
        DECLARE
          v_sub uuid := CASE WHEN random() < 0.7 THEN (SELECT id FROM checkout.subscriptions ORDER BY random() LIMIT 1) ELSE pg_temp.ruuid() END;
          v_org uuid := CASE WHEN random() < 0.7 THEN 'a0000000-0000-0000-0000-000000000001' ELSE pg_temp.ruuid() END;
          v_key text := CASE WHEN random() < 0.7 THEN NULL ELSE pg_temp.pick(ARRAY['l1', 'l2', '', repeat('k', 256), pg_temp.rtext()]) END;
          v_by uuid := CASE WHEN random() < 0.8 THEN NULL ELSE pg_temp.pick(ARRAY['e0000000-0000-0000-0000-0000000000a1', gen_random_uuid()]::uuid[]) END;
        BEGIN
          CASE floor(random() * 7)::int
          WHEN 0 THEN PERFORM checkout.cancel_subscription_atomic(v_sub, v_org, pg_temp.pick(ARRAY[true, false, NULL]), pg_temp.rtext(), v_by, v_key);
          WHEN 1 THEN PERFORM checkout.reactivate_subscription_atomic(v_sub, v_org, pg_temp.rtext(), v_by, v_key);
          WHEN 2 THEN PERFORM checkout.change_subscription_plan_atomic(v_sub, v_org, pg_temp.ruuid(),
              pg_temp.pick(ARRAY[NULL, -1, 0, 2500, 9223372036854775807]::bigint[]), pg_temp.pick(ARRAY[NULL, 'month', 'year', 'decade', pg_temp.rtext()]),
              pg_temp.pick(ARRAY[NULL, -1, 0, 1, 3, 2147483647]), CASE WHEN random() < 0.3 THEN NULL ELSE ARRAY[pg_temp.rjson()] END,
              pg_temp.rtext(), pg_temp.rtext(), v_by, v_key);
          WHEN 3 THEN PERFORM checkout.renew_subscription_period(v_sub, v_org,
              pg_temp.pick(ARRAY[NULL, now(), now() + interval '1 year', '-infinity', 'infinity', '4000-01-01']::timestamptz[]), v_by, v_key);
          WHEN 4 THEN PERFORM checkout.mark_subscription_past_due(v_sub, v_org, pg_temp.rtext(), v_by, v_key);
          WHEN 5 THEN PERFORM checkout.expire_subscription(v_sub, v_org, pg_temp.rtext(), v_by, v_key);
          ELSE PERFORM checkout.end_subscription_trial(v_sub, v_org, pg_temp.pick(ARRAY[true, false, NULL]), v_by, v_key);
          END CASE;
        END;
      WHEN 'reconciliation' THEN
        PERFORM checkout.enqueue_reconciliation(pg_temp.rtext(), pg_temp.rtext(), pg_temp.rjson(), floor(random() * 14)::int - 2, pg_temp.ruuid());
        PERFORM checkout.fail_reconciliation(id, pg_temp.rtext()) FROM checkout.claim_reconciliation(floor(random() * 3)::int, pg_temp.rtext());
      WHEN 'webhooks' THEN
        PERFORM checkout.record_webhook_event(pg_temp.ruuid(), pg_temp.rtext(), pg_temp.rtext(), pg_temp.rjson(),
          CASE WHEN random() < 0.05 THEN NULL ELSE now() - random() * interval '10 days' END);
        PERFORM checkout.fail_webhook_event(id, pg_temp.rtext()) FROM checkout.claim_webhook_events(floor(random() * 3)::int,
          CASE floor(random() * 3)::int WHEN 0 THEN NULL WHEN 1 THEN ARRAY[pg_temp.rtext(), NULL] ELSE ARRAY[pg_temp.rtext()] END);
        PERFORM checkout.complete_webhook_event(CASE WHEN random() < 0.5 THEN pg_temp.ruuid()
          ELSE (SELECT id FROM checkout.webhook_events ORDER BY random() LIMIT 1) END);
      WHEN 'refunds' THEN
        PERFORM checkout.record_refund(pg_temp.ruuid(), pg_temp.pick(ARRAY['pi_1', 'pi_2', pg_temp.rtext()]),
          pg_temp.pick(ARRAY['re_1', 're_2', pg_temp.rtext()]), pg_temp.pick(ARRAY[NULL, -5, 0, 1, 300, 999999999999]::bigint[]),
          pg_temp.pick(ARRAY['usd', 'USD', 'eur', 'dollars', NULL]), pg_temp.rtext(), pg_temp.pick(ARRAY['manual', 'bot', NULL]));
        PERFORM checkout.update_refund_status(pg_temp.ruuid(), pg_temp.pick(ARRAY['re_1', 're_2', pg_temp.rtext()]),
          pg_temp.pick(ARRAY['pending', 'succeeded', 'failed', 'canceled', 'weird']));
      END CASE;
      st := '00000';
    EXCEPTION WHEN OTHERS THEN
      st := SQLSTATE;
    END;
    INSERT INTO fuzz_states VALUES (p_fn, st, 1) ON CONFLICT (fn, state) DO UPDATE SET n = fuzz_states.n + 1;
  END LOOP;
END $$;

SELECT checkout_test.fixture();
INSERT INTO checkout.users (id, organization_id, email) VALUES
  ('e0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'ops@example.com');
SELECT pg_temp.fuzz(fn, :calls) FROM unnest(ARRAY['normalize_email', 'check_trial_eligibility',
  'upsert_customer_atomic', 'create_subscription_atomic', 'lifecycle', 'reconciliation', 'webhooks', 'refunds']) fn;
SELECT fn || ' ' || state || ' ' || n FROM fuzz_states ORDER BY fn, state;
