-- The stress procedure: one client's loop for :seconds, every iteration its own transaction,
-- mixing every write function (lifecycle functions, refunds and their verdicts, webhook events and
-- their workers included) over a hot set (3 customers x 2 products, 10 emails, one payment per
-- customer) with idempotent retries and redeliveries. SQLSTATEs are counted per operation into
-- stress_results; a call answered as a redelivery (`"duplicate": true`) counts as its own
-- operation (refund_redelivery, webhook_redelivery).
CREATE TABLE IF NOT EXISTS stress_results (client int, op text, state text, n int);
CREATE OR REPLACE PROCEDURE stress(p_client int, p_seconds float) LANGUAGE plpgsql AS $$
DECLARE
  v_end timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
  v_counts jsonb := '{}';
  v_op text;
  v_state text;
  v_c int; v_p int; v_id uuid; v_n int; v_ref text; v_res jsonb;
BEGIN
  WHILE clock_timestamp() < v_end LOOP
    v_op := (ARRAY['create', 'create_keyed', 'upsert', 'trial', 'queue', 'lifecycle', 'lifecycle', 'maintenance',
                   'refund', 'refund_status', 'webhook', 'webhook_work'])[1 + floor(random() * 12)::int];
    v_c := 1 + floor(random() * 3)::int;
    v_p := 1 + floor(random() * 2)::int;
    BEGIN
      CASE v_op
      WHEN 'create', 'create_keyed' THEN
        PERFORM checkout.create_subscription_atomic(
          jsonb_build_object('status', CASE WHEN v_p = 1 THEN 'trialing' ELSE 'active' END, 'amount', 100, 'currency', 'usd',
            'interval', 'month', 'current_period_start', '2026-01-01', 'current_period_end', '2026-02-01')
            || CASE WHEN v_p = 1 THEN '{"trial_end": "2026-01-15"}'::jsonb ELSE '{}' END,
          ARRAY['{"feature_id": "f0000000-0000-0000-0000-000000000001"}'::jsonb],
          ('c0000000-0000-0000-0000-' || lpad(v_c::text, 12, '0'))::uuid, ('b0000000-0000-0000-0000-' || lpad(v_p::text, 12, '0'))::uuid,
          'a0000000-0000-0000-0000-000000000001', CASE WHEN v_op = 'create_keyed' THEN 'stress-' || v_c || '-' || v_p END);
      WHEN 'upsert' THEN
        PERFORM checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001',
          'Hot' || floor(random() * 10) || '@Example.com', NULL, 'client ' || p_client, NULL, jsonb_build_object('c', p_client));
      WHEN 'trial' THEN
        PERFORM checkout.check_trial_eligibility(('c0000000-0000-0000-0000-' || lpad(v_c::text, 12, '0'))::uuid,
          ('b0000000-0000-0000-0000-' || lpad(v_p::text, 12, '0'))::uuid, NULL);
      WHEN 'lifecycle' THEN
        -- The pair's latest subscription, changed by a random lifecycle function (idempotent
        -- retries included): refusals (09000) and conflicts (23505) are answers, not failures.
        SELECT id INTO v_id FROM checkout.subscriptions
        WHERE customer_id = ('c0000000-0000-0000-0000-' || lpad(v_c::text, 12, '0'))::uuid
          AND product_id = ('b0000000-0000-0000-0000-' || lpad(v_p::text, 12, '0'))::uuid
        ORDER BY created_at DESC LIMIT 1;
        CASE floor(random() * 7)::int
        WHEN 0 THEN PERFORM checkout.cancel_subscription_atomic(v_id, 'a0000000-0000-0000-0000-000000000001', random() < 0.5);
        WHEN 1 THEN PERFORM checkout.reactivate_subscription_atomic(v_id, 'a0000000-0000-0000-0000-000000000001');
        WHEN 2 THEN PERFORM checkout.renew_subscription_period(v_id, 'a0000000-0000-0000-0000-000000000001', NULL, NULL,
                      'renew-' || v_id || '-' || floor(random() * 3));
        WHEN 3 THEN PERFORM checkout.mark_subscription_past_due(v_id, 'a0000000-0000-0000-0000-000000000001');
        WHEN 4 THEN PERFORM checkout.change_subscription_plan_atomic(v_id, 'a0000000-0000-0000-0000-000000000001',
                      ('b0000000-0000-0000-0000-' || lpad((3 - v_p)::text, 12, '0'))::uuid, 100 * (1 + floor(random() * 5))::bigint,
                      NULL, NULL, ARRAY['{"feature_id": "f0000000-0000-0000-0000-000000000001"}'::jsonb]);
        WHEN 5 THEN PERFORM checkout.expire_subscription(v_id, 'a0000000-0000-0000-0000-000000000001');
        ELSE PERFORM checkout.end_subscription_trial(v_id, 'a0000000-0000-0000-0000-000000000001', random() < 0.7);
        END CASE;
      WHEN 'maintenance' THEN
        -- Every job, as the worker runs them: ends due pending cancellations (the hot set's periods
        -- are over) and refreshes product metrics, so product rows are locked too.
        PERFORM checkout.run_maintenance();
      WHEN 'refund' THEN
        -- A refund of the customer's payment (1000 usd): 16 refund ids per payment shared by every
        -- client (a repeat is a redelivery), 100 or 250 each, so the payment runs out: 23514 is
        -- the documented answer to a refund beyond it.
        v_n := floor(random() * 16)::int;
        v_res := checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_hot_' || v_c,
                   format('re-%s-%s', v_c, v_n), 100 + 150 * (v_n % 2), 'usd', 'stress', 'automatic');
        IF (v_res->>'duplicate')::boolean THEN
          v_op := 'refund_redelivery';
        END IF;
      WHEN 'refund_status' THEN
        -- The provider's verdict on a random refund of the payment, redeliveries of verdicts
        -- included: 09000 when the refund already had another one (the refund state machine), P0002
        -- while the payment has no refund yet.
        SELECT r.stripe_refund_id INTO v_ref FROM checkout.refunds r
        WHERE r.organization_id = 'a0000000-0000-0000-0000-000000000001' AND r.payment_intent_id = 'pi_hot_' || v_c
        ORDER BY random() LIMIT 1;
        PERFORM checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', v_ref,
                  (ARRAY['succeeded', 'failed', 'canceled', 'pending'])[1 + floor(random() * 4)::int]);
      WHEN 'webhook' THEN
        -- One of 500 provider events about 10 objects, its provider time its number (so events
        -- arrive out of order; an old one whose object has a newer applied event is stored stale);
        -- a number drawn again is a redelivery.
        v_n := floor(random() * 500)::int;
        v_res := checkout.record_webhook_event('a0000000-0000-0000-0000-000000000001', 'evt-' || v_n, 'invoice.paid',
                   jsonb_build_object('data', jsonb_build_object('object', jsonb_build_object('id', 'in_' || v_n % 10))),
                   timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => v_n));
        IF (v_res->>'duplicate')::boolean THEN
          v_op := 'webhook_redelivery';
        END IF;
      WHEN 'webhook_work' THEN
        -- A webhook worker's turn, in this transaction: claim a batch, complete or fail each event.
        FOR v_id IN SELECT e.id FROM checkout.claim_webhook_events(3) e LOOP
          IF random() < 0.8 THEN PERFORM checkout.complete_webhook_event(v_id);
          ELSE PERFORM checkout.fail_webhook_event(v_id, 'stress'); END IF;
        END LOOP;
      WHEN 'queue' THEN
        PERFORM checkout.enqueue_reconciliation('stress', 'ref-' || floor(random() * 5), jsonb_build_object('c', p_client));
        FOR v_id IN SELECT id FROM checkout.claim_reconciliation(2, 'client-' || p_client) LOOP
          IF random() < 0.5 THEN PERFORM checkout.complete_reconciliation(v_id);
          ELSE PERFORM checkout.fail_reconciliation(v_id, 'stress'); END IF;
        END LOOP;
      END CASE;
      v_state := '00000';
    EXCEPTION WHEN OTHERS THEN
      v_state := SQLSTATE;
    END;
    v_counts := jsonb_set(v_counts, ARRAY[v_op || ' ' || v_state],
                          to_jsonb(coalesce((v_counts->>(v_op || ' ' || v_state))::int, 0) + 1));
    COMMIT;
  END LOOP;
  INSERT INTO stress_results SELECT p_client, split_part(key, ' ', 1), split_part(key, ' ', 2), value::int FROM jsonb_each_text(v_counts);
  COMMIT;
END $$;
