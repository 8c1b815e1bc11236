-- checkout 0.4.0 -> 0.3.0: the functions as 0.3.0 had them.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.3.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION checkout.guard_subscription_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.organization_id <> OLD.organization_id OR NEW.customer_id <> OLD.customer_id THEN
    RAISE EXCEPTION 'a subscription cannot move to another customer or organization'
      USING ERRCODE = 'triggered_action_exception', DETAIL = format('subscription_id: %s', OLD.id),
            HINT = 'Cancel it and create a subscription for the other customer.';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status THEN
    IF NOT checkout.subscription_transition_allowed(OLD.status, NEW.status) THEN
      RAISE EXCEPTION 'subscription status cannot change from % to %', OLD.status, NEW.status
        USING ERRCODE = 'triggered_action_exception', DETAIL = format('subscription_id: %s', OLD.id),
              HINT = format('From %s a subscription may become: %s.', OLD.status,
                            coalesce((SELECT string_agg(t.to_status, ', ') FROM checkout.subscription_transitions() t
                                      WHERE t.from_status = OLD.status), 'nothing (final)'));
    END IF;
    IF OLD.status = 'canceled' AND NEW.current_period_end <= now() THEN
      RAISE EXCEPTION 'a canceled subscription can only be reactivated within its period'
        USING ERRCODE = 'triggered_action_exception',
              DETAIL = format('subscription_id: %s, current_period_end: %s', OLD.id, NEW.current_period_end),
              HINT = 'Create a new subscription instead.';
    END IF;
    IF NEW.status IN ('canceled', 'expired') THEN
      NEW.ended_at := coalesce(NEW.ended_at, now());
      IF NEW.status = 'canceled' THEN
        NEW.canceled_at := coalesce(NEW.canceled_at, now());
      END IF;
    ELSIF OLD.status = 'canceled' THEN
      NEW.canceled_at := NULL;
      NEW.ended_at := NULL;
      NEW.cancellation_reason := NULL;
    END IF;
  END IF;
  IF NEW.status IN ('canceled', 'expired') THEN
    NEW.cancel_at_period_end := false; -- nothing left to cancel
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION checkout.check_invariants()
RETURNS TABLE (invariant text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- every subscription has its 'created' audit row
  SELECT 'subscription without its created audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE NOT EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.subscription_id = s.id AND c.change_type = 'created')
  UNION ALL
  -- a trialing subscription has its trial recorded
  SELECT 'trialing subscription without trial_history', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status = 'trialing'
    AND NOT EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.subscription_id = s.id)
  UNION ALL
  -- at most one active or trialing subscription per (organization, customer, product)
  SELECT 'duplicate active subscription', format('customer %s, product %s: %s', customer_id, product_id, count(*))
  FROM checkout.subscriptions WHERE status IN ('active', 'trialing')
  GROUP BY organization_id, customer_id, product_id HAVING count(*) > 1
  UNION ALL
  -- grants belong to the subscription's customer and organization
  SELECT 'grant of another customer''s subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.id = g.subscription_id
  WHERE s.customer_id <> g.customer_id
  UNION ALL
  -- the customer counters equal a recount
  SELECT 'customer counters differ from a recount',
         format('customer %s: count %s (recount %s), active %s (recount %s)', c.id, c.subscription_count, r.n,
                c.has_active_subscription, r.active)
  FROM checkout.customers c
  CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(bool_or(s.status IN ('active', 'trialing')), false) AS active
                      FROM checkout.subscriptions s WHERE s.customer_id = c.id) r
  WHERE c.subscription_count <> r.n OR c.has_active_subscription <> r.active
  UNION ALL
  -- an ended subscription grants nothing
  SELECT 'grant in force on an ended subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.id = g.subscription_id
  WHERE s.status IN ('canceled', 'expired') AND g.revoked_at IS NULL
  UNION ALL
  -- every status a subscription is in was reached through an audited change
  SELECT 'subscription status differs from its last audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status IS DISTINCT FROM (
    SELECT coalesce(c.new_values->>'status', c.old_values->>'status') FROM checkout.subscription_changes c
    WHERE c.subscription_id = s.id AND (c.new_values ? 'status') ORDER BY c.created_at DESC, c.change_type = 'created' LIMIT 1)
  UNION ALL
  -- no idempotency key left half-done: checkout never commits one in 'processing'
  SELECT 'idempotency key stuck in processing', format('%s/%s', k.organization_id, k.key)
  FROM checkout.idempotency_keys k WHERE k.status = 'processing'
  UNION ALL
  -- a completed key that answered with a subscription points at one that exists
  SELECT 'completed key names a missing subscription', format('%s/%s', k.organization_id, k.key)
  FROM checkout.idempotency_keys k
  WHERE k.status = 'completed' AND k.operation = 'create_subscription_atomic'
    AND (k.response->>'success')::boolean
    AND NOT EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.id = (k.response->>'subscription_id')::uuid)
  UNION ALL
  -- every customer has its current email recorded as a variant
  SELECT 'customer email not recorded in customer_email_variants', c.id::text
  FROM checkout.customers c
  WHERE NOT EXISTS (SELECT 1 FROM checkout.customer_email_variants v
                    WHERE v.organization_id = c.organization_id AND v.customer_id = c.id AND lower(v.email) = lower(c.email))
$$;
COMMENT ON FUNCTION checkout.check_invariants() IS 'Consistency checks (audit rows, trials, one active subscription, grants of ended subscriptions, counters, idempotency keys, email variants): one row per violation.';

ALTER FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) SET plan_cache_mode = force_generic_plan;

CREATE OR REPLACE FUNCTION checkout.claim_webhook_events(p_batch integer) RETURNS SETOF checkout.webhook_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF p_batch IS NULL OR p_batch < 0 THEN
    RAISE EXCEPTION 'p_batch must be >= 0' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE checkout.webhook_events e SET status = 'stale', updated_at = now()
  WHERE e.status IN ('pending', 'deferred') AND e.object_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM checkout.webhook_events n
                WHERE n.organization_id = e.organization_id AND n.provider = e.provider AND n.object_id = e.object_id
                  AND n.status = 'processed' AND n.event_created_at > e.event_created_at);
  RETURN QUERY
  WITH due AS (
    SELECT e.id FROM checkout.webhook_events e
    WHERE e.status IN ('pending', 'deferred')
      AND NOT EXISTS (SELECT 1 FROM checkout.webhook_events o
                      WHERE o.organization_id = e.organization_id AND o.provider = e.provider AND o.object_id = e.object_id
                        AND o.status IN ('pending', 'deferred', 'processing') AND o.event_created_at < e.event_created_at)
    ORDER BY e.event_created_at, e.created_at
    LIMIT p_batch FOR UPDATE SKIP LOCKED)
  UPDATE checkout.webhook_events e SET status = 'processing', attempts = e.attempts + 1, updated_at = now()
  FROM due WHERE e.id = due.id
  RETURNING e.*;
END $$;

DROP FUNCTION checkout.claim_webhook_events(integer, text[]);
