-- Subscription lifecycle (issue 7): two triggers on subscriptions make every path, function or
-- direct SQL, follow the same rules.
--  * guard (BEFORE UPDATE): status changes follow checkout.subscription_transitions() (09000
--    otherwise); a subscription never moves to another customer or organization; entering
--    canceled/expired stamps canceled_at/ended_at; a reactivation clears them.
--  * audit (AFTER INSERT/UPDATE/DELETE): one subscription_changes row per change, the customer's
--    counters, feature grants revoked when the subscription ends (restored on reactivation), one
--    trial per customer and product, the trial converted, the product's metrics cache cleared.
-- Both are SECURITY DEFINER: a role allowed to update subscriptions needs no privilege on the
-- tables they keep (and cannot forge audit rows); invoking_role() still names that role. So that
-- nobody borrows that power, no role but the owner may attach them (EXECUTE revoked from PUBLIC),
-- and each refuses to run on any other table than checkout.subscriptions (39P01), so even a
-- superuser's mistaken CREATE TRIGGER writes nothing.
--  * stamp (BEFORE INSERT of a canceled or expired row, the guard's function): such a row
--    inserted directly gets its canceled_at/ended_at, as entering those statuses by UPDATE does.
-- Row locks are taken customer first, then product, on every path (create_subscription_atomic's
-- statement too), so concurrent writers queue instead of deadlocking.

-- The database role behind a change (outside SECURITY DEFINER functions).
ALTER TABLE checkout.subscription_changes ALTER COLUMN changed_by_role SET DEFAULT checkout.invoking_role();

CREATE FUNCTION checkout.guard_subscription_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_RELID <> 'checkout.subscriptions'::regclass OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'BEFORE' THEN
    RAISE EXCEPTION 'checkout.guard_subscription_update() runs only as a trigger of checkout.subscriptions'
      USING ERRCODE = 'trigger_protocol_violated', DETAIL = format('fired on %s', TG_RELID::regclass);
  END IF;
  IF TG_OP = 'INSERT' THEN
    -- The stamps entering canceled/expired by UPDATE gets below; CHECKs check_ended_stamped and
    -- check_canceled_stamped hold them whatever writes the row.
    IF NEW.status IN ('canceled', 'expired') THEN
      NEW.ended_at := coalesce(NEW.ended_at, now());
      IF NEW.status = 'canceled' THEN
        NEW.canceled_at := coalesce(NEW.canceled_at, now());
      END IF;
      NEW.cancel_at_period_end := false;
    END IF;
    RETURN NEW;
  END IF;
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
    -- Within the period it was canceled in (OLD: an UPDATE that also moves current_period_end
    -- cannot revive one whose period is over), into a period that is not over either (NEW).
    IF OLD.status = 'canceled' AND (OLD.current_period_end <= now() OR NEW.current_period_end <= now()) THEN
      RAISE EXCEPTION 'a canceled subscription can only be reactivated within its period'
        USING ERRCODE = 'triggered_action_exception',
              DETAIL = format('subscription_id: %s, current_period_end: %s', OLD.id, OLD.current_period_end),
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

CREATE FUNCTION checkout.audit_subscription_change() RETURNS trigger
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
  IF TG_RELID <> 'checkout.subscriptions'::regclass OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
    RAISE EXCEPTION 'checkout.audit_subscription_change() runs only as a trigger of checkout.subscriptions'
      USING ERRCODE = 'trigger_protocol_violated', DETAIL = format('fired on %s', TG_RELID::regclass);
  END IF;
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

CREATE TRIGGER subscriptions_guard BEFORE UPDATE ON checkout.subscriptions
  FOR EACH ROW EXECUTE FUNCTION checkout.guard_subscription_update();
-- Only rows that need stamping: creates (active, trialing, incomplete) pay for the WHEN alone. A
-- restore reloads rows as they were (CHECK check_ended_stamped holds them).
CREATE TRIGGER subscriptions_stamp_ended BEFORE INSERT ON checkout.subscriptions
  FOR EACH ROW WHEN (NEW.status IN ('canceled', 'expired') AND NOT checkout.restoring('subscriptions'))
  EXECUTE FUNCTION checkout.guard_subscription_update();
CREATE TRIGGER subscriptions_audit AFTER INSERT OR UPDATE OR DELETE ON checkout.subscriptions
  FOR EACH ROW WHEN (NOT checkout.subscription_audit_skipped()) EXECUTE FUNCTION checkout.audit_subscription_change();

-- Maintenance job (run_maintenance): subscriptions set to cancel at period end whose period is over
-- become canceled; the triggers revoke their grants and record 'cancelled' with its reason.
-- Rows in the partial index are exactly the pending cancellations (entering canceled or expired
-- clears the flag).
CREATE INDEX idx_subscriptions_cancel_pending ON checkout.subscriptions (current_period_end) WHERE cancel_at_period_end;
CREATE FUNCTION checkout.end_subscription_periods(p_batch integer DEFAULT 1000) RETURNS integer
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
REVOKE ALL ON FUNCTION checkout.end_subscription_periods(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION checkout.guard_subscription_update(), checkout.audit_subscription_change() FROM PUBLIC;
