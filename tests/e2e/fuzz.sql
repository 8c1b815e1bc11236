-- Hostile arguments for every SQL function of checkout; each call in a subtransaction, its SQLSTATE
-- counted. psql variable :calls (per function). Output: one line per (function, SQLSTATE).
SELECT setseed(0.4242);
CREATE TEMP TABLE fuzz_states (fn text, state text, n int, PRIMARY KEY (fn, state));

CREATE FUNCTION pg_temp.pick(a anyarray) RETURNS anyelement LANGUAGE sql AS
  'SELECT a[1 + floor(random() * array_length(a, 1))::int]';
-- n levels of objects ({"d": ...}) or arrays around leaf: 127 and more is past serde_json's limit of
-- 128 levels once it sits inside another object or array.
CREATE FUNCTION pg_temp.deep(levels int, leaf jsonb DEFAULT '1', arrays boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT (repeat(CASE WHEN arrays THEN '[' ELSE '{"d": ' END, levels) || leaf::text
          || repeat(CASE WHEN arrays THEN ']' ELSE '}' END, levels))::jsonb
$$;
-- A random JSON value: scalars of every kind (huge, beyond a double's range, negative, fractional,
-- empty, long, odd Unicode), arrays, nested objects, and values nested 127 to 1000 levels deep.
CREATE FUNCTION pg_temp.rjson(depth int DEFAULT 0) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r float := random();
BEGIN
  IF depth < 2 AND r < 0.1 THEN
    RETURN jsonb_build_object(pg_temp.rkey(), pg_temp.rjson(depth + 1), pg_temp.rkey(), pg_temp.rjson(depth + 1));
  ELSIF depth < 2 AND r < 0.15 THEN
    RETURN jsonb_build_array(pg_temp.rjson(depth + 1), pg_temp.rjson(depth + 1));
  ELSIF r >= 0.15 AND r < 0.18 THEN
    RETURN pg_temp.deep(pg_temp.pick(ARRAY[127, 128, 200, 1000]), pg_temp.pick(ARRAY['1', '1e400', '"x"']::jsonb[]),
                        random() < 0.5);
  ELSIF r >= 0.18 AND r < 0.2 THEN
    -- A long string, on its own: appended to the pick below only sometimes (`|| CASE ... ELSE NULL
    -- END`), it made nearly every leaf SQL NULL, jsonb || NULL being NULL.
    RETURN to_jsonb(repeat('x', 100000));
  END IF;
  RETURN pg_temp.pick(ARRAY['null', 'true', '0', '-1', '1', '1999', '2147483648', '9223372036854775807',
    '99999999999999999999999', '-0.5', '1e308', '1e400', '-1e400', '1e-400', '12.5', '""', '"usd"', '"USD"',
    '"month"', '"active"', '"trialing"',
    '"incomplete"', '"canceled"', '"2026-01-01T00:00:00Z"', '"2026-02-30T00:00:00Z"', '"2026-01-01"', '"yesterday"',
    '"2026-01-01T00:00:00"', '"0001-01-01T00:00:00Z"', '"9999-12-31T23:59:59Z"', '1700000000', '-99999999999',
    '"a0000000-0000-0000-0000-000000000001"', '"not-a-uuid"', '"\u00e9\u0301\ud83d\ude00"', '"\u0007\u001f"',
    '{}', '[]', '{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}']::jsonb[]);
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
-- A p_features element: a known or unknown feature with random metadata (an object holding any
-- value, or any value), or any JSON value.
CREATE FUNCTION pg_temp.rfeature() RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE WHEN random() < 0.3 THEN pg_temp.rjson()
    ELSE jsonb_build_object('feature_id', pg_temp.pick(ARRAY['f0000000-0000-0000-0000-0000000000a1',
        'f0000000-0000-0000-0000-0000000000a2', 'f0000000-0000-0000-0000-0000000000b1', gen_random_uuid()::text]))
      || CASE WHEN random() < 0.3 THEN '{}'
              ELSE jsonb_build_object('metadata', CASE WHEN random() < 0.7 THEN jsonb_build_object(pg_temp.rkey(), pg_temp.rjson())
                                                       ELSE pg_temp.rjson() END) END
  END
$$;
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
      WHEN 'check_trial_eligibility' THEN
        IF random() < 0.5 THEN  -- the seed's form, or the organization-scoped one
          PERFORM checkout.check_trial_eligibility(pg_temp.ruuid(), pg_temp.ruuid(), pg_temp.rtext());
        ELSE
          PERFORM checkout.check_trial_eligibility(pg_temp.ruuid(), pg_temp.ruuid(), pg_temp.ruuid(), pg_temp.rtext());
        END IF;
      WHEN 'upsert_customer_atomic' THEN PERFORM checkout.upsert_customer_atomic(  -- half the time a valid org and email,
          CASE WHEN random() < 0.5 THEN 'a0000000-0000-0000-0000-000000000001' ELSE pg_temp.ruuid() END,  -- so that p_metadata is read
          CASE WHEN random() < 0.5 THEN 'u' || floor(random() * 50) || '@example.com' ELSE pg_temp.rtext() END,
          pg_temp.rtext(), pg_temp.rtext(), pg_temp.rtext(),
          CASE WHEN random() < 0.5 THEN jsonb_build_object(pg_temp.rkey(), pg_temp.rjson()) ELSE pg_temp.rjson() END);
      WHEN 'create_subscription_atomic' THEN
        IF random() < 0.4 THEN  -- consistent tenant ids, so that the happy path is reached too
          PERFORM checkout.create_subscription_atomic(pg_temp.rsub(),
            CASE WHEN random() < 0.5 THEN NULL WHEN random() < 0.5 THEN ARRAY['{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}'::jsonb]
                 ELSE ARRAY[jsonb_build_object('feature_id', 'f0000000-0000-0000-0000-0000000000a1', 'metadata',
                                               jsonb_build_object(pg_temp.rkey(), pg_temp.rjson()))] END,
            pg_temp.pick(ARRAY['c0000000-0000-0000-0000-0000000000a1', 'c0000000-0000-0000-0000-0000000000a2']::uuid[]),
            pg_temp.pick(ARRAY['b0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a2']::uuid[]),
            'a0000000-0000-0000-0000-000000000001', CASE WHEN random() < 0.5 THEN NULL ELSE 'k' || floor(random() * 50) END);
        ELSE PERFORM checkout.create_subscription_atomic(pg_temp.rsub(),
          CASE WHEN random() < 0.2 THEN NULL ELSE ARRAY[pg_temp.rfeature(), pg_temp.pick(ARRAY[NULL, '{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}', '{"feature_id": "f0000000-0000-0000-0000-0000000000b1", "metadata": {"x": 1}}']::jsonb[])] END,
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
              pg_temp.pick(ARRAY[NULL, -1, 0, 2500, 999999999999, 1000000000000, 9223372036854775807]::bigint[]), pg_temp.pick(ARRAY[NULL, 'month', 'year', 'decade', pg_temp.rtext()]),
              pg_temp.pick(ARRAY[NULL, -1, 0, 1, 3, 2147483647]), CASE WHEN random() < 0.3 THEN NULL ELSE ARRAY[pg_temp.rfeature()] END,
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

-- Targeted calls (issue 15): numbers beyond a double's range and deep nesting in every jsonb
-- argument and position, and p_features sizes. Each call's arguments are valid but for the one
-- value under test; the controls (expect 00000) show it. One line per call:
--   case FN LABEL EXPECTED STATE MS MAX_MS DETAIL_BYTES MAX_DETAIL_BYTES
-- EXPECTED is the SQLSTATEs allowed, '|'-separated; MS the call's time (clock_timestamp() around
-- it), each call its own statement under statement_timeout 2s. Then `why LABEL message` lines.
-- The calls use their own customer (c...f1: creates on product b...a2) and subscription (d...f1).
INSERT INTO checkout.customers (id, organization_id, email) VALUES
  ('c0000000-0000-0000-0000-0000000000f1', 'a0000000-0000-0000-0000-000000000001', 'fuzz-cases@example.com');
INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency,
    interval, current_period_start, current_period_end) VALUES
  ('d0000000-0000-0000-0000-0000000000f1', 'a0000000-0000-0000-0000-000000000001',
   'c0000000-0000-0000-0000-0000000000f1', 'b0000000-0000-0000-0000-0000000000a1', 'active', 1999, 'usd',
   'month', now(), now() + interval '1 month');
CREATE TEMP TABLE fuzz_cases (ord serial PRIMARY KEY, fn text, label text, expect text, sub jsonb, features jsonb[],
  meta jsonb, max_ms int DEFAULT 3000, max_detail int DEFAULT NULL,
  state text, ms int, detail_bytes int, message text);
CREATE FUNCTION pg_temp.sub(extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
  SELECT '{"status": "active", "amount": 1999, "currency": "usd", "interval": "month",
           "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2026-02-01T00:00:00Z"}'::jsonb || extra
$$;
CREATE FUNCTION pg_temp.feature(extra jsonb DEFAULT '{}', id text DEFAULT 'f0000000-0000-0000-0000-0000000000a1')
RETURNS jsonb LANGUAGE sql AS $$ SELECT jsonb_build_object('feature_id', id) || extra $$;
-- p_features of n elements: distinct unknown feature ids, or n times the known feature a1.
CREATE FUNCTION pg_temp.features(n int, same boolean) RETURNS jsonb[] LANGUAGE sql AS $$
  SELECT array_agg(CASE WHEN same THEN pg_temp.feature() ELSE pg_temp.feature('{}', gen_random_uuid()::text) END)
  FROM generate_series(1, n)
$$;
-- p_subscription: a field, the metadata, or the whole argument.
INSERT INTO fuzz_cases (fn, label, expect, sub) VALUES
  ('create_subscription_atomic', 'sub_control', '00000', pg_temp.sub()),
  ('create_subscription_atomic', 'sub_amount_1e400', '22023', pg_temp.sub('{"amount": 1e400}')),
  ('create_subscription_atomic', 'sub_amount_-1e400', '22023', pg_temp.sub('{"amount": -1e400}')),
  ('create_subscription_atomic', 'sub_amount_1e-400', '22023', pg_temp.sub('{"amount": 1e-400}')),
  ('create_subscription_atomic', 'sub_interval_count_1e400', '22023', pg_temp.sub('{"interval_count": 1e400}')),
  ('create_subscription_atomic', 'sub_period_start_1e400', '22023', pg_temp.sub('{"current_period_start": 1e400}')),
  ('create_subscription_atomic', 'sub_trial_end_-1e400', '22023', pg_temp.sub('{"status": "trialing", "trial_end": -1e400}')),
  ('create_subscription_atomic', 'sub_stripe_price_id_1e400', '22023', pg_temp.sub('{"stripe_price_id": 1e400}')),
  ('create_subscription_atomic', 'sub_unknown_field_1e400', '22023', pg_temp.sub('{"x": 1e400}')),
  ('create_subscription_atomic', 'sub_metadata_1e400', '22023', pg_temp.sub('{"metadata": {"n": 1e400}}')),
  ('create_subscription_atomic', 'sub_metadata_nested_-1e400', '22023', pg_temp.sub('{"metadata": {"a": {"b": [1, -1e400]}}}')),
  ('create_subscription_atomic', 'sub_metadata_1e-400', '00000|22023', pg_temp.sub('{"metadata": {"n": 1e-400}}')),
  ('create_subscription_atomic', 'sub_whole_1e400', '22023', '1e400'),
  ('create_subscription_atomic', 'sub_metadata_depth125', '00000|22023|54001', pg_temp.sub(jsonb_build_object('metadata', pg_temp.deep(125)))),
  ('create_subscription_atomic', 'sub_metadata_depth127', '22023|54001', pg_temp.sub(jsonb_build_object('metadata', pg_temp.deep(127)))),
  ('create_subscription_atomic', 'sub_metadata_depth200', '22023|54001', pg_temp.sub(jsonb_build_object('metadata', pg_temp.deep(200)))),
  ('create_subscription_atomic', 'sub_metadata_depth1000', '22023|54001', pg_temp.sub(jsonb_build_object('metadata', pg_temp.deep(1000)))),
  ('create_subscription_atomic', 'sub_metadata_arrays1000_1e400', '22023|54001',
   pg_temp.sub(jsonb_build_object('metadata', jsonb_build_object('a', pg_temp.deep(1000, '1e400', true))))),
  ('create_subscription_atomic', 'sub_status_arrays200', '22023|54001', pg_temp.sub(jsonb_build_object('status', pg_temp.deep(200, '"active"', true)))),
  ('create_subscription_atomic', 'sub_unknown_field_depth127', '22023|54001', pg_temp.sub(jsonb_build_object('x', pg_temp.deep(127)))),
  ('create_subscription_atomic', 'sub_whole_depth1000', '22023|54001', pg_temp.deep(1000));
-- p_features elements (create and change alike): a field, the metadata, the element, a later element.
INSERT INTO fuzz_cases (fn, label, expect, sub, features)
SELECT fn, label, expect, CASE WHEN fn = 'create_subscription_atomic' THEN pg_temp.sub() END, features
FROM unnest(ARRAY['create_subscription_atomic', 'change_subscription_plan_atomic']) fn, (VALUES
  ('features_control', '00000', ARRAY[pg_temp.feature(), pg_temp.feature('{"metadata": {"seats": 5}}', 'f0000000-0000-0000-0000-0000000000a2')]),
  ('features_metadata_1e400', '22023', ARRAY[pg_temp.feature('{"metadata": {"n": 1e400}}')]),
  ('features_metadata_nested_-1e400', '22023', ARRAY[pg_temp.feature('{"metadata": {"a": [{"b": -1e400}]}}')]),
  ('features_metadata_1e-400', '00000|22023', ARRAY[pg_temp.feature('{"metadata": {"n": 1e-400}}')]),
  ('features_feature_id_1e400', '22023', ARRAY['{"feature_id": 1e400}'::jsonb]),
  ('features_unknown_field_1e400', '22023', ARRAY[pg_temp.feature('{"x": 1e400}')]),
  ('features_element_-1e400', '22023', ARRAY['-1e400'::jsonb]),
  ('features_second_element_1e400', '22023', ARRAY[pg_temp.feature(), pg_temp.feature('{"metadata": {"n": 1e400}}', 'f0000000-0000-0000-0000-0000000000a2')]),
  ('features_metadata_depth125', '00000|22023|54001', ARRAY[pg_temp.feature(jsonb_build_object('metadata', pg_temp.deep(125)))]),
  ('features_metadata_depth127', '22023|54001', ARRAY[pg_temp.feature(jsonb_build_object('metadata', pg_temp.deep(127)))]),
  ('features_metadata_depth200', '22023|54001', ARRAY[pg_temp.feature(jsonb_build_object('metadata', pg_temp.deep(200)))]),
  ('features_metadata_depth1000', '22023|54001', ARRAY[pg_temp.feature(jsonb_build_object('metadata', pg_temp.deep(1000)))]),
  ('features_element_arrays1000', '22023|54001', ARRAY[pg_temp.deep(1000, '1', true)]),
  ('features_second_element_depth200', '22023|54001', ARRAY[pg_temp.feature(), pg_temp.deep(200)])
) v(label, expect, features);
-- upsert_customer_atomic's p_metadata (127 levels at the top are within serde_json's limit).
INSERT INTO fuzz_cases (fn, label, expect, meta) VALUES
  ('upsert_customer_atomic', 'metadata_control', '00000', '{"plan": "pro"}'),
  ('upsert_customer_atomic', 'metadata_1e400', '22023', '{"n": 1e400}'),
  ('upsert_customer_atomic', 'metadata_-1e400', '22023', '{"n": -1e400}'),
  ('upsert_customer_atomic', 'metadata_nested_1e400', '22023', '{"a": [{"b": 1e400}]}'),
  ('upsert_customer_atomic', 'metadata_whole_1e400', '22023', '1e400'),
  ('upsert_customer_atomic', 'metadata_1e-400', '00000|22023', '{"n": 1e-400}'),
  ('upsert_customer_atomic', 'metadata_depth127', '00000|22023|54001', pg_temp.deep(127)),
  ('upsert_customer_atomic', 'metadata_inner_depth127', '22023|54001', jsonb_build_object('a', pg_temp.deep(127))),
  ('upsert_customer_atomic', 'metadata_depth200', '22023|54001', pg_temp.deep(200)),
  ('upsert_customer_atomic', 'metadata_depth1000', '22023|54001', pg_temp.deep(1000)),
  ('upsert_customer_atomic', 'metadata_arrays1000_1e400', '22023|54001', jsonb_build_object('a', pg_temp.deep(1000, '1e400', true)));
-- Sizes: more than 10,000 elements is 22023, whatever they hold; 10,000 unknown ids P0002 with a
-- short DETAIL, well under a second.
INSERT INTO fuzz_cases (fn, label, expect, sub, features, max_ms, max_detail)
SELECT fn, label, expect, CASE WHEN fn = 'create_subscription_atomic' THEN pg_temp.sub() END,
       pg_temp.features(n, same), max_ms, 1023
FROM unnest(ARRAY['create_subscription_atomic', 'change_subscription_plan_atomic']) fn, (VALUES
  ('features_10000_same', '00000', 10000, true, 3000),
  ('features_10001_same', '22023', 10001, true, 3000),
  ('features_10001_unknown', '22023', 10001, false, 3000),
  ('features_100000_unknown', '22023', 100000, false, 3000),
  ('features_200000_unknown', '22023', 200000, false, 3000),
  ('features_10000_unknown', 'P0002', 10000, false, 1000)
) v(label, expect, n, same, max_ms);

CREATE FUNCTION pg_temp.attempt(p_ord int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  c fuzz_cases;
  t0 timestamptz;
  st text := '00000';
  msg text;
  det text;
BEGIN
  SELECT * INTO c FROM fuzz_cases WHERE ord = p_ord;
  t0 := clock_timestamp();
  BEGIN
    CASE c.fn
    WHEN 'create_subscription_atomic' THEN
      PERFORM checkout.create_subscription_atomic(c.sub, c.features, 'c0000000-0000-0000-0000-0000000000f1',
        'b0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001');
    WHEN 'change_subscription_plan_atomic' THEN
      PERFORM checkout.change_subscription_plan_atomic('d0000000-0000-0000-0000-0000000000f1',
        'a0000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-0000000000a1', 1999, p_features => c.features);
    WHEN 'upsert_customer_atomic' THEN
      PERFORM checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'fuzz-cases@example.com',
        NULL, NULL, NULL, c.meta);
    END CASE;
  EXCEPTION
    WHEN query_canceled THEN  -- not caught by OTHERS
      GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  END;
  UPDATE fuzz_cases SET state = st, ms = ceil(extract(epoch FROM clock_timestamp() - t0) * 1000),
    detail_bytes = coalesce(octet_length(det), 0), message = left(regexp_replace(msg, '\s+', ' ', 'g'), 200)
  WHERE ord = p_ord;
END $$;
SET statement_timeout = '2s';
SELECT format('SELECT pg_temp.attempt(%s)', ord) FROM fuzz_cases ORDER BY ord
\gexec
RESET statement_timeout;
SELECT concat_ws(' ', 'case', fn, label, expect, coalesce(state, 'none'), coalesce(ms, -1), max_ms, coalesce(detail_bytes, -1),
                 coalesce(max_detail, -1))
FROM fuzz_cases ORDER BY ord;
SELECT concat_ws(' ', 'why', label, fn, message) FROM fuzz_cases WHERE message IS NOT NULL ORDER BY ord;
SELECT pg_temp.fuzz(fn, :calls) FROM unnest(ARRAY['normalize_email', 'check_trial_eligibility',
  'upsert_customer_atomic', 'create_subscription_atomic', 'lifecycle', 'reconciliation', 'webhooks', 'refunds']) fn;
SELECT fn || ' ' || state || ' ' || n FROM fuzz_states ORDER BY fn, state;
