-- Refunds (issue 7, part): recorded idempotently on the provider's refund id (unique per
-- organization), never more than the payment, in the payment's currency; status moves pending ->
-- succeeded | failed | canceled only. These rules are kept by triggers, whoever writes the rows:
-- refunds_guard_status on refunds, payments_guard_refunded on the payment's amount and currency.
--
-- The bound at every isolation level: a refund that counts (pending or succeeded) first UPDATEs its
-- payment's row (to the same values), then sums the payment's other refunds. Writers of one payment
-- queue on that row; under READ COMMITTED the sum then sees every committed refund, and under
-- REPEATABLE READ or SERIALIZABLE a writer whose snapshot predates another's committed refund gets
-- 40001 on the row (a lock alone would not: only an update conflicts with an older snapshot).
--
-- guard_refund_status() and guard_payment_refunded() are native (src/refunds/guards.rs, created
-- before this file), SECURITY DEFINER without SET search_path.
-- A restore reloads refunds as they were: the dump holds them whole (even ones an older release
-- let past the bound, which check_invariants() reports).
CREATE TRIGGER refunds_guard_status BEFORE INSERT OR UPDATE ON checkout.refunds
  FOR EACH ROW WHEN (NOT checkout.restoring('refunds')) EXECUTE FUNCTION checkout.guard_refund_status();
REVOKE ALL ON FUNCTION checkout.guard_refund_status() FROM PUBLIC;

-- A payment's amount never drops below its pending and succeeded refunds, and its currency never
-- changes under them. The UPDATE holds the payment's row, which every refund writer updates first,
-- so the sum sees what they committed (an older snapshot gets 40001 on the row instead).
CREATE TRIGGER payments_guard_refunded BEFORE UPDATE OF amount, currency ON checkout.payment_intents
  FOR EACH ROW WHEN (NEW.amount < OLD.amount OR NEW.currency <> OLD.currency)
  EXECUTE FUNCTION checkout.guard_payment_refunded();
REVOKE ALL ON FUNCTION checkout.guard_payment_refunded() FROM PUBLIC;

CREATE FUNCTION checkout.record_refund(p_organization_id uuid, p_payment_intent_id text, p_stripe_refund_id text,
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
  PERFORM checkout.routed_here(); -- on a Citus node, what its statements need (src/citus.rs)
  IF p_organization_id IS NULL OR p_payment_intent_id IS NULL OR p_stripe_refund_id IS NULL OR p_amount IS NULL
     OR p_currency IS NULL THEN
    RAISE EXCEPTION 'p_organization_id, p_payment_intent_id, p_stripe_refund_id, p_amount and p_currency must not be NULL'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF p_amount <= 0 OR p_amount > 999999999999 OR v_currency !~ '^[a-z]{3}$' OR p_stripe_refund_id = '' OR length(p_reason) > 100
     OR (p_initiated_by IS NOT NULL AND p_initiated_by NOT IN ('automatic', 'manual', 'customer_request')) THEN
    RAISE EXCEPTION 'invalid refund: amount must be 1 to 999999999999, currency a 3-letter code, reason at most 100 characters, initiated_by automatic, manual or customer_request'
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('amount: %s, currency: %s, reason length: %s, initiated_by: %s', p_amount, p_currency,
                            length(p_reason), p_initiated_by);
  END IF;
  -- The payment's row lock serializes refunds of one payment; the check below answers early with
  -- the totals, and the refunds trigger holds the bound at every isolation level.
  SELECT * INTO v_payment FROM checkout.payment_intents
  WHERE organization_id = p_organization_id AND stripe_payment_intent_id = p_payment_intent_id
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'payment intent not found in organization' USING ERRCODE = 'no_data_found',
      DETAIL = format('payment_intent_id: %s, organization_id: %s', p_payment_intent_id, p_organization_id);
  END IF;
  -- Refund ids are unique per organization: another organization's refunds are never read.
  SELECT * INTO v_existing FROM checkout.refunds
  WHERE organization_id = p_organization_id AND stripe_refund_id = p_stripe_refund_id;
  IF FOUND THEN
    IF v_existing.payment_intent_id <> p_payment_intent_id
       OR v_existing.amount <> p_amount OR v_existing.currency <> v_currency THEN
      RAISE EXCEPTION 'refund id already recorded with other values' USING ERRCODE = 'unique_violation',
        DETAIL = format('stripe_refund_id: %s, refund_id: %s', p_stripe_refund_id, v_existing.id);
    END IF;
    RETURN jsonb_build_object('refund_id', v_existing.id, 'status', v_existing.status, 'duplicate', true);
  END IF;
  -- Twins of guard_refund_status's checks (which hold them for direct writes and at every
  -- isolation level): here they answer a call early, with its totals.
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

-- The provider's verdict on a refund. Repeating the current status is a no-op (webhook redelivery).
CREATE FUNCTION checkout.update_refund_status(p_organization_id uuid, p_stripe_refund_id text, p_status text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_row checkout.refunds;
BEGIN
  PERFORM checkout.routed_here(); -- on a Citus node, what its statements need (src/citus.rs)
  IF p_status IS NULL OR p_status NOT IN ('pending', 'succeeded', 'failed', 'canceled') THEN
    RAISE EXCEPTION 'unknown refund status %', p_status USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE checkout.refunds SET status = p_status
  WHERE organization_id = p_organization_id AND stripe_refund_id = p_stripe_refund_id
  RETURNING * INTO v_row;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'refund not found in organization' USING ERRCODE = 'no_data_found',
      DETAIL = format('stripe_refund_id: %s, organization_id: %s', p_stripe_refund_id, p_organization_id);
  END IF;
  RETURN jsonb_build_object('refund_id', v_row.id, 'status', v_row.status, 'completed_at', v_row.completed_at);
END $$;

REVOKE ALL ON FUNCTION checkout.record_refund(uuid, text, text, bigint, text, text, text, uuid),
  checkout.update_refund_status(uuid, text, text) FROM PUBLIC;
