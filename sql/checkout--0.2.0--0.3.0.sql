-- checkout 0.2.0 -> 0.3.0: lock modes and order (functions only: no table, no data changes).
--  * Explicit row locks become FOR NO KEY UPDATE (what an UPDATE of non-key columns takes). FOR
--    UPDATE also waits on the key-share locks that foreign-key checks of concurrent inserts hold: a
--    create_subscription_atomic that had claimed a trial (key-sharing its customer) could wait on a
--    cancel whose trigger waited on that customer, a deadlock (40P01) the stress run found.
--  * A plan change locks its two products in id order before clearing their metrics.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.3.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION checkout.audit_subscription_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_context jsonb := checkout.subscription_change_context();
  v_actor text := coalesce(v_context->>'changed_by', nullif(current_setting('checkout.actor', true), ''));
  v_type text;
  v_row checkout.subscriptions;
  v_old jsonb;
  v_new jsonb;
  v_was_active boolean;
  v_is_active boolean;
BEGIN
  IF TG_OP = 'INSERT' THEN
    v_row := NEW;
    v_type := 'created';
    v_new := to_jsonb(NEW);
    v_was_active := false;
    v_is_active := NEW.status IN ('active', 'trialing');
  ELSIF TG_OP = 'DELETE' THEN
    -- Deleting the organization deletes its audit trail too: nothing to record.
    IF NOT EXISTS (SELECT 1 FROM checkout.organizations o WHERE o.id = OLD.organization_id) THEN
      RETURN NULL;
    END IF;
    v_row := OLD;
    v_type := 'deleted';
    v_old := to_jsonb(OLD);
    v_was_active := OLD.status IN ('active', 'trialing');
    v_is_active := false;
  ELSE
    v_row := NEW;
    v_old := to_jsonb(OLD);
    SELECT jsonb_object_agg(n.key, n.value) INTO v_new
    FROM jsonb_each(to_jsonb(NEW)) n WHERE n.value IS DISTINCT FROM v_old -> n.key;
    IF v_new IS NULL THEN
      RETURN NULL;
    END IF;
    v_type := coalesce(v_context->>'change_type', nullif(current_setting('checkout.change_type', true), ''), 'updated');
    v_was_active := OLD.status IN ('active', 'trialing');
    v_is_active := NEW.status IN ('active', 'trialing');
  END IF;

  INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, old_values, new_values,
                                             changed_by, changed_by_type, reason, created_at)
  VALUES (v_row.organization_id, v_row.id, v_type, v_old, v_new, v_actor::uuid,
          CASE WHEN v_actor IS NULL THEN 'system' ELSE 'user' END,
          coalesce(v_context->>'reason', nullif(current_setting('checkout.change_reason', true), '')),
          clock_timestamp()); -- orders several changes of one transaction

  -- Counters. Incremental where the new value follows from the locked row; a recount (after the
  -- lock, so it sees every committed change) where another subscription may keep the flag set.
  IF TG_OP = 'INSERT' THEN
    UPDATE checkout.customers SET subscription_count = subscription_count + 1,
           has_active_subscription = has_active_subscription OR v_is_active, updated_at = now()
    WHERE id = NEW.customer_id;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE checkout.customers SET subscription_count = subscription_count - 1, updated_at = now()
    WHERE id = OLD.customer_id;
  ELSIF v_is_active AND NOT v_was_active THEN
    UPDATE checkout.customers SET has_active_subscription = true, updated_at = now() WHERE id = NEW.customer_id;
  ELSIF v_was_active AND NOT v_is_active THEN
    PERFORM 1 FROM checkout.customers WHERE id = NEW.customer_id FOR NO KEY UPDATE;
  END IF;
  IF v_was_active AND NOT v_is_active THEN
    UPDATE checkout.customers c
    SET has_active_subscription = EXISTS (SELECT 1 FROM checkout.subscriptions s
                                          WHERE s.customer_id = c.id AND s.status IN ('active', 'trialing')),
        updated_at = now()
    WHERE c.id = v_row.customer_id;
  END IF;

  -- One trial per (organization, customer, product), whatever the path: entering trialing (or
  -- moving to another product while trialing) records the trial, or takes over a trial whose
  -- subscription was deleted; a second trial is refused.
  IF TG_OP <> 'DELETE' AND NEW.status = 'trialing'
     AND (TG_OP = 'INSERT' OR OLD.status <> 'trialing' OR OLD.product_id <> NEW.product_id) THEN
    INSERT INTO checkout.trial_history AS t (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end)
    VALUES (NEW.organization_id, NEW.customer_id, NEW.product_id, NEW.id,
            least(coalesce(NEW.trial_start, now()), coalesce(NEW.trial_end, NEW.current_period_end)),
            coalesce(NEW.trial_end, NEW.current_period_end))
    ON CONFLICT (organization_id, customer_id, product_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id, updated_at = now()
    WHERE t.subscription_id IS NULL OR t.subscription_id = EXCLUDED.subscription_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'the customer already had a trial of this product'
        USING ERRCODE = 'triggered_action_exception',
              DETAIL = format('subscription_id: %s, customer_id: %s, product_id: %s', NEW.id, NEW.customer_id, NEW.product_id),
              HINT = 'Use check_trial_eligibility() before granting a trial; create_subscription_atomic does.';
    END IF;
  END IF;

  IF TG_OP = 'UPDATE' AND NEW.status IS DISTINCT FROM OLD.status THEN
    IF NEW.status IN ('canceled', 'expired') THEN
      UPDATE checkout.feature_grants SET revoked_at = greatest(now(), granted_at)
      WHERE subscription_id = NEW.id AND revoked_at IS NULL;
    ELSIF OLD.status = 'canceled' THEN
      -- Reactivated: the grants its cancellation revoked come back (not those a plan change revoked).
      UPDATE checkout.feature_grants SET revoked_at = NULL
      WHERE subscription_id = NEW.id AND revoked_at >= OLD.ended_at;
    END IF;
    IF OLD.status = 'trialing' AND NEW.status = 'active' THEN
      UPDATE checkout.trial_history SET converted = true, conversion_date = now(), updated_at = now()
      WHERE subscription_id = NEW.id AND product_id = NEW.product_id;
    ELSIF OLD.status = 'trialing' AND NEW.status IN ('canceled', 'expired') THEN
      UPDATE checkout.trial_history SET cancellation_reason = coalesce(NEW.cancellation_reason, NEW.status), updated_at = now()
      WHERE subscription_id = NEW.id AND product_id = NEW.product_id;
    END IF;
  END IF;
  IF TG_OP <> 'UPDATE' OR NEW.status IS DISTINCT FROM OLD.status OR NEW.product_id <> OLD.product_id
     OR NEW.amount <> OLD.amount THEN
    -- A plan change touches two products: lock both in id order first (as end_subscription_periods
    -- does), so two plan changes between the same products in opposite directions cannot deadlock.
    IF TG_OP = 'UPDATE' AND NEW.product_id <> OLD.product_id THEN
      PERFORM 1 FROM checkout.products WHERE id IN (NEW.product_id, OLD.product_id) ORDER BY id FOR NO KEY UPDATE;
    END IF;
    UPDATE checkout.products SET metrics_last_calculated_at = NULL
    WHERE id IN (v_row.product_id, OLD.product_id) AND metrics_last_calculated_at IS NOT NULL;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION checkout.end_subscription_periods(p_batch integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET checkout.change_type = 'cancelled' SET checkout.change_reason = 'cancel_at_period_end'
AS $$
DECLARE
  v_due uuid[];
  v_count integer;
BEGIN
  SELECT array_agg(id) INTO v_due FROM (
    SELECT id FROM checkout.subscriptions
    WHERE cancel_at_period_end AND current_period_end <= now() AND status NOT IN ('canceled', 'expired')
    ORDER BY current_period_end LIMIT p_batch FOR NO KEY UPDATE SKIP LOCKED) due;
  -- The rows the triggers will touch, locked customers first, then products, each in id order:
  -- the order single calls take them in, so a batch and a call cannot deadlock. Every product, not
  -- only those whose metrics the triggers clear: a refresh committing in between would otherwise
  -- leave one to be locked later, out of order. FOR NO KEY UPDATE (what an UPDATE takes): FOR
  -- UPDATE would also wait on the key-share locks that foreign-key checks of concurrent inserts
  -- hold, a lock order no single call follows.
  PERFORM 1 FROM checkout.customers c
  WHERE c.id IN (SELECT s.customer_id FROM checkout.subscriptions s WHERE s.id = ANY (v_due)) ORDER BY c.id FOR NO KEY UPDATE;
  PERFORM 1 FROM checkout.products p
  WHERE p.id IN (SELECT s.product_id FROM checkout.subscriptions s WHERE s.id = ANY (v_due))
  ORDER BY p.id FOR NO KEY UPDATE;
  UPDATE checkout.subscriptions s SET status = 'canceled' WHERE s.id = ANY (v_due);
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END $$;

CREATE OR REPLACE FUNCTION checkout.expire_checkout_sessions(p_batch integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_expired integer;
  v_deleted integer;
BEGIN
  WITH due AS (
    SELECT id FROM checkout.checkout_sessions
    WHERE status = 'pending' AND expires_at < now()
    ORDER BY expires_at LIMIT p_batch FOR NO KEY UPDATE SKIP LOCKED)
  UPDATE checkout.checkout_sessions s SET status = 'expired', updated_at = now()
  FROM due WHERE s.id = due.id;
  GET DIAGNOSTICS v_expired = ROW_COUNT;
  WITH old AS (
    SELECT id FROM checkout.checkout_sessions
    WHERE status = 'expired'
      AND expires_at < now() - make_interval(secs => checkout.setting_seconds('checkout.session_retention', 86400))
    ORDER BY expires_at LIMIT p_batch FOR UPDATE SKIP LOCKED)
  DELETE FROM checkout.checkout_sessions s USING old WHERE s.id = old.id;
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  RETURN jsonb_build_object('expired', v_expired, 'deleted', v_deleted);
END $$;

CREATE OR REPLACE FUNCTION checkout.refresh_product_metrics(p_batch integer DEFAULT 100) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_count integer;
BEGIN
  WITH stale AS (
    SELECT id FROM checkout.products
    WHERE metrics_last_calculated_at IS NULL OR metrics_last_calculated_at < now() - interval '1 day'
    ORDER BY metrics_last_calculated_at NULLS FIRST LIMIT p_batch FOR NO KEY UPDATE SKIP LOCKED),
  figures AS (
    SELECT stale.id,
      (SELECT count(*) FROM checkout.subscriptions s WHERE s.product_id = stale.id AND s.status = 'active') AS active,
      (SELECT count(*) FROM checkout.subscriptions s WHERE s.product_id = stale.id AND s.status = 'trialing') AS trialing,
      (SELECT coalesce(jsonb_object_agg(currency, mrr), '{}') FROM (
         SELECT s.currency, round(sum(s.amount * CASE s."interval" WHEN 'day' THEN 30 WHEN 'week' THEN 52.0 / 12
                                                   WHEN 'month' THEN 1 ELSE 1.0 / 12 END / s.interval_count))::bigint AS mrr
         FROM checkout.subscriptions s WHERE s.product_id = stale.id AND s.status = 'active'
         GROUP BY s.currency) m) AS mrr
    FROM stale)
  UPDATE checkout.products p
  SET metrics_active_subscriptions = f.active, metrics_trialing_subscriptions = f.trialing,
      metrics_mrr = f.mrr, metrics_last_calculated_at = now()
  FROM figures f WHERE p.id = f.id;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END $$;

CREATE OR REPLACE FUNCTION checkout.record_refund(p_organization_id uuid, p_payment_intent_id text, p_stripe_refund_id text,
  p_amount bigint, p_currency text, p_reason text DEFAULT NULL, p_initiated_by text DEFAULT 'manual',
  p_subscription_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_payment checkout.payment_intents;
  v_existing checkout.refunds;
  v_refunded bigint;
  v_id uuid;
  v_currency text := lower(p_currency);
BEGIN
  IF p_organization_id IS NULL OR p_payment_intent_id IS NULL OR p_stripe_refund_id IS NULL OR p_amount IS NULL
     OR p_currency IS NULL THEN
    RAISE EXCEPTION 'p_organization_id, p_payment_intent_id, p_stripe_refund_id, p_amount and p_currency must not be NULL'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF p_amount <= 0 OR v_currency !~ '^[a-z]{3}$' OR p_stripe_refund_id = '' OR length(p_reason) > 100
     OR (p_initiated_by IS NOT NULL AND p_initiated_by NOT IN ('automatic', 'manual', 'customer_request')) THEN
    RAISE EXCEPTION 'invalid refund: amount must be > 0, currency a 3-letter code, reason at most 100 characters, initiated_by automatic, manual or customer_request'
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('amount: %s, currency: %s, reason length: %s, initiated_by: %s', p_amount, p_currency,
                            length(p_reason), p_initiated_by);
  END IF;
  -- The payment's row lock serializes refunds of one payment, so the total check holds.
  SELECT * INTO v_payment FROM checkout.payment_intents
  WHERE organization_id = p_organization_id AND stripe_payment_intent_id = p_payment_intent_id
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'payment intent not found in organization' USING ERRCODE = 'no_data_found',
      DETAIL = format('payment_intent_id: %s, organization_id: %s', p_payment_intent_id, p_organization_id);
  END IF;
  SELECT * INTO v_existing FROM checkout.refunds WHERE stripe_refund_id = p_stripe_refund_id;
  IF FOUND THEN
    IF v_existing.organization_id <> p_organization_id OR v_existing.payment_intent_id <> p_payment_intent_id
       OR v_existing.amount <> p_amount OR v_existing.currency <> v_currency THEN
      RAISE EXCEPTION 'refund id already recorded with other values' USING ERRCODE = 'unique_violation',
        DETAIL = format('stripe_refund_id: %s, refund_id: %s', p_stripe_refund_id, v_existing.id);
    END IF;
    RETURN jsonb_build_object('refund_id', v_existing.id, 'status', v_existing.status, 'duplicate', true);
  END IF;
  IF v_currency <> v_payment.currency THEN
    RAISE EXCEPTION 'refund currency differs from the payment''s' USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('refund: %s, payment %s: %s', v_currency, p_payment_intent_id, v_payment.currency);
  END IF;
  SELECT coalesce(sum(amount), 0) INTO v_refunded FROM checkout.refunds
  WHERE organization_id = p_organization_id AND payment_intent_id = p_payment_intent_id
    AND status IN ('pending', 'succeeded');
  IF v_refunded + p_amount > v_payment.amount THEN
    RAISE EXCEPTION 'refunds would exceed the payment' USING ERRCODE = 'check_violation',
      DETAIL = format('payment %s: %s, already refunded or pending: %s, this refund: %s',
                      p_payment_intent_id, v_payment.amount, v_refunded, p_amount),
      HINT = 'Refund at most the remaining amount.';
  END IF;
  INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, subscription_id, amount, currency,
                                reason, status, initiated_by)
  VALUES (p_organization_id, p_payment_intent_id, p_stripe_refund_id, p_subscription_id, p_amount, v_currency,
          p_reason, 'pending', p_initiated_by)
  RETURNING id INTO v_id;
  RETURN jsonb_build_object('refund_id', v_id, 'status', 'pending', 'duplicate', false,
                            'refunded_total', v_refunded + p_amount, 'payment_amount', v_payment.amount);
END $$;
