-- Random subscription operations through every path (lifecycle functions, create, direct UPDATE
-- and DELETE) for the counter/grant/audit invariant test (src/subscriptions/lifecycle.rs). Refusals
-- with a documented SQLSTATE are expected; any other error fails the test.
DO $$
DECLARE
  v_org uuid := 'a0000000-0000-0000-0000-000000000001';
  v_customers uuid[];
  v_products uuid[];
  v_features jsonb[] := ARRAY['{"feature_id": "f0000000-0000-0000-0000-0000000000a1"}',
                              '{"feature_id": "f0000000-0000-0000-0000-0000000000a2"}']::jsonb[];
  v_statuses text[] := ARRAY['incomplete', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused', 'expired'];
  v_sub uuid;
  v_status text;
  v_body jsonb;
  i integer;
BEGIN
  PERFORM setseed(0.42);
  INSERT INTO checkout.products (organization_id, name) SELECT v_org, 'Random ' || g FROM generate_series(1, 2) g;
  SELECT array_agg(id ORDER BY id) INTO v_products FROM checkout.products WHERE organization_id = v_org;
  INSERT INTO checkout.customers (organization_id, email) SELECT v_org, 'random' || g || '@example.com' FROM generate_series(1, 6) g;
  SELECT array_agg(id ORDER BY id) INTO v_customers FROM checkout.customers WHERE organization_id = v_org;
  FOR i IN 1..3000 LOOP
    -- Mostly a subscription that has not ended, so most operations have something to do.
    SELECT id INTO v_sub FROM checkout.subscriptions
    WHERE organization_id = v_org AND (random() < 0.2 OR status NOT IN ('canceled', 'expired'))
    ORDER BY random() LIMIT 1;
    BEGIN
      CASE floor(random() * 13)::integer
      WHEN 0, 1, 2 THEN
        v_status := v_statuses[1 + floor(random() * 3)::integer];
        v_body := jsonb_build_object('status', v_status, 'amount', 100 * floor(random() * 50)::integer, 'currency', 'usd',
                    'interval', (ARRAY['month', 'year'])[1 + floor(random() * 2)::integer],
                    'current_period_start', now() - interval '1 day', 'current_period_end', now() + interval '1 month');
        IF v_status = 'trialing' THEN
          v_body := v_body || jsonb_build_object('trial_end', now() + interval '1 week');
        END IF;
        PERFORM checkout.create_subscription_atomic(v_body, v_features[1:floor(random() * 3)::integer],
          v_customers[1 + floor(random() * array_length(v_customers, 1))::integer],
          v_products[1 + floor(random() * array_length(v_products, 1))::integer], v_org);
      WHEN 3 THEN PERFORM checkout.cancel_subscription_atomic(v_sub, v_org, false, 'random');
      WHEN 4 THEN PERFORM checkout.cancel_subscription_atomic(v_sub, v_org, true);
      WHEN 5 THEN PERFORM checkout.reactivate_subscription_atomic(v_sub, v_org);
      WHEN 6 THEN PERFORM checkout.change_subscription_plan_atomic(v_sub, v_org,
          v_products[1 + floor(random() * array_length(v_products, 1))::integer], 100 * floor(random() * 50)::bigint,
          NULL, NULL, v_features[1 + floor(random() * 2)::integer:2]);
      WHEN 7 THEN PERFORM checkout.renew_subscription_period(v_sub, v_org);
      WHEN 8 THEN PERFORM checkout.mark_subscription_past_due(v_sub, v_org);
      WHEN 9 THEN PERFORM checkout.expire_subscription(v_sub, v_org);
      WHEN 10 THEN PERFORM checkout.end_subscription_trial(v_sub, v_org, random() < 0.5);
      WHEN 11 THEN UPDATE checkout.subscriptions SET status = v_statuses[1 + floor(random() * 8)::integer] WHERE id = v_sub;
      ELSE
        IF random() < 0.3 THEN
          DELETE FROM checkout.subscriptions WHERE id = v_sub;
        ELSE
          UPDATE checkout.subscriptions SET amount = amount + 1 WHERE id = v_sub;
        END IF;
      END CASE;
    EXCEPTION WHEN OTHERS THEN
      -- Refused transitions (09000), conflicts (23505), a NULL subscription picked (22004),
      -- invalid random input (22023), an unknown subscription (P0002).
      IF SQLSTATE NOT IN ('09000', '23505', '22004', '22023', 'P0002') THEN
        RAISE;
      END IF;
    END;
  END LOOP;
END $$;
