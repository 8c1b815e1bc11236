-- checkout 0.1.0 -> 0.2.0: the subscription lifecycle (issue 7).
--  * subscription_changes outlives its subscription (no foreign key to it; one to the organization),
--    knows more change types, and records the database role behind a change;
--  * the native lifecycle functions, the state machine and the audit/counter triggers
--    (sql/lifecycle.sql);
--  * a maintenance job ends subscriptions whose cancellation at period end is due;
--  * check_invariants() and verify() know the new objects.
-- Hand-written; tests/e2e/t_upgrade.sh checks that 0.1.0 + this script equals a fresh 0.2.0.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_subscription_id_fkey;
ALTER TABLE checkout.subscription_changes ADD CONSTRAINT subscription_changes_organization_id_fkey
  FOREIGN KEY (organization_id) REFERENCES checkout.organizations (id) ON DELETE CASCADE;
ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_change_type_check;
ALTER TABLE checkout.subscription_changes ADD CONSTRAINT subscription_changes_change_type_check
  CHECK (change_type IN ('created', 'updated', 'cancelled', 'reactivated', 'expired', 'upgraded',
                         'downgraded', 'renewed', 'past_due', 'converted', 'deleted'));
ALTER TABLE checkout.subscription_changes ADD COLUMN changed_by_role text;
COMMENT ON COLUMN checkout.subscription_changes.changed_by_role IS 'The database role that made the change (the caller of a checkout function, not its owner); NULL in rows written before 0.2.0.';
COMMENT ON COLUMN checkout.subscription_changes.change_type IS 'created, updated (direct SQL), cancelled, reactivated, expired, upgraded, downgraded, renewed, past_due, converted (trial became paid) or deleted.';

-- From now on a trigger keeps the customer counters whatever the path; 0.1.0 kept them only in
-- create_subscription_atomic, so start from a recount (no row changes where they were right).
UPDATE checkout.customers c SET subscription_count = r.n, has_active_subscription = r.active
FROM (SELECT k.id, count(s.id) AS n, coalesce(bool_or(s.status IN ('active', 'trialing')), false) AS active
      FROM checkout.customers k LEFT JOIN checkout.subscriptions s ON s.customer_id = k.id
      GROUP BY k.id) r
WHERE r.id = c.id AND (c.subscription_count, c.has_active_subscription) IS DISTINCT FROM (r.n::integer, r.active);

-- 0.1.0 let status changes happen by direct SQL, unaudited and with grants left in force. The
-- invariants of 0.2.0 hold from the start: the update records what 0.1.0 did not, once.
-- Ended subscriptions hold no pending cancellation and no grant in force,
UPDATE checkout.subscriptions SET cancel_at_period_end = false
WHERE cancel_at_period_end AND status IN ('canceled', 'expired');
UPDATE checkout.feature_grants g SET revoked_at = GREATEST(now(), g.granted_at)
FROM checkout.subscriptions s
WHERE s.id = g.subscription_id AND s.status IN ('canceled', 'expired') AND g.revoked_at IS NULL;
-- every subscription has its 'created' row, and a last audited status that is its status,
INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, new_values, reason, created_at)
SELECT s.organization_id, s.id, 'created', to_jsonb(s), 'recorded by the update to 0.2.0', clock_timestamp()
FROM checkout.subscriptions s
WHERE NOT EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.subscription_id = s.id AND c.change_type = 'created');
INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, new_values, reason, created_at)
SELECT s.organization_id, s.id, 'updated', jsonb_build_object('status', s.status), 'recorded by the update to 0.2.0',
       clock_timestamp()
FROM checkout.subscriptions s
WHERE s.status IS DISTINCT FROM (
  SELECT coalesce(c.new_values->>'status', c.old_values->>'status') FROM checkout.subscription_changes c
  WHERE c.subscription_id = s.id AND (c.new_values ? 'status') ORDER BY c.created_at DESC, c.change_type = 'created' LIMIT 1);
-- and every trialing subscription its trial (unless the pair already had one).
INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end)
SELECT s.organization_id, s.customer_id, s.product_id, s.id,
       least(coalesce(s.trial_start, s.created_at), coalesce(s.trial_end, s.current_period_end)),
       coalesce(s.trial_end, s.current_period_end)
FROM checkout.subscriptions s
WHERE s.status = 'trialing' AND NOT EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.subscription_id = s.id)
ON CONFLICT (organization_id, customer_id, product_id) DO NOTHING;

-- New native functions (as cargo pgrx generates them).
CREATE  FUNCTION "invoking_role"() RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'invoking_role_wrapper';

CREATE  FUNCTION "subscription_audit_skipped"() RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'subscription_audit_skipped_wrapper';

CREATE  FUNCTION "subscription_change_context"() RETURNS jsonb /* Option < JsonB > */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'subscription_change_context_wrapper';

CREATE  FUNCTION "subscription_transition_allowed"(
	"from" TEXT, /* & str */
	"to" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'subscription_transition_allowed_wrapper';

CREATE  FUNCTION "subscription_transitions"() RETURNS TABLE (
	"from_status" TEXT,  /* String */
	"to_status" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'subscription_transitions_wrapper';

CREATE  FUNCTION "cancel_subscription_atomic"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_at_period_end" bool DEFAULT false, /* Option < bool > */
	"p_reason" TEXT DEFAULT NULL, /* Option < & str > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cancel_subscription_atomic_wrapper';

CREATE  FUNCTION "reactivate_subscription_atomic"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_reason" TEXT DEFAULT NULL, /* Option < & str > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reactivate_subscription_atomic_wrapper';

CREATE  FUNCTION "change_subscription_plan_atomic"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_product_id" uuid, /* Option < Uuid > */
	"p_amount" bigint, /* Option < i64 > */
	"p_interval" TEXT DEFAULT NULL, /* Option < & str > */
	"p_interval_count" INT DEFAULT NULL, /* Option < i32 > */
	"p_features" jsonb[] DEFAULT NULL, /* :: std :: option :: Option < Array < JsonB > > */
	"p_stripe_price_id" TEXT DEFAULT NULL, /* Option < & str > */
	"p_reason" TEXT DEFAULT NULL, /* Option < & str > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'change_subscription_plan_atomic_wrapper';

CREATE  FUNCTION "renew_subscription_period"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_period_end" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'renew_subscription_period_wrapper';

CREATE  FUNCTION "mark_subscription_past_due"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_reason" TEXT DEFAULT NULL, /* Option < & str > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'mark_subscription_past_due_wrapper';

CREATE  FUNCTION "expire_subscription"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_reason" TEXT DEFAULT NULL, /* Option < & str > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'expire_subscription_wrapper';

CREATE  FUNCTION "end_subscription_trial"(
	"p_subscription_id" uuid, /* Option < Uuid > */
	"p_organization_id" uuid, /* Option < Uuid > */
	"p_converted" bool, /* Option < bool > */
	"p_changed_by" uuid DEFAULT NULL, /* Option < Uuid > */
	"p_idempotency_key" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'end_subscription_trial_wrapper';

REVOKE ALL ON FUNCTION checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text),
  checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text),
  checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text),
  checkout.renew_subscription_period(uuid, uuid, timestamptz, uuid, text),
  checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text),
  checkout.expire_subscription(uuid, uuid, text, uuid, text),
  checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text) FROM PUBLIC;
-- Kept plans run generic (see sql/trials.sql).
ALTER FUNCTION checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.renew_subscription_period(uuid, uuid, timestamptz, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.expire_subscription(uuid, uuid, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text) SET plan_cache_mode = force_generic_plan;

-- sql/lifecycle.sql of 0.2.0 (triggers on subscriptions).
-- Subscription lifecycle (issue 7): two triggers on subscriptions make every path, function or
-- direct SQL, follow the same rules.
--  * guard (BEFORE UPDATE): status changes follow checkout.subscription_transitions() (09000
--    otherwise); a subscription never moves to another customer or organization; entering
--    canceled/expired stamps canceled_at/ended_at; a reactivation clears them.
--  * audit (AFTER INSERT/UPDATE/DELETE): one subscription_changes row per change, the customer's
--    counters, feature grants revoked when the subscription ends (restored on reactivation), one
--    trial per customer and product, the trial converted, the product's metrics cache cleared.
-- Both are SECURITY DEFINER: a role allowed to update subscriptions needs no privilege on the
-- tables they keep (and cannot forge audit rows); invoking_role() still names that role.
-- Row locks are taken customer first, then product, on every path (create_subscription_atomic's
-- statement too), so concurrent writers queue instead of deadlocking.

-- The database role behind a change (outside SECURITY DEFINER functions).
ALTER TABLE checkout.subscription_changes ALTER COLUMN changed_by_role SET DEFAULT checkout.invoking_role();

CREATE FUNCTION checkout.guard_subscription_update() RETURNS trigger
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
    PERFORM 1 FROM checkout.customers WHERE id = NEW.customer_id FOR UPDATE;
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
    UPDATE checkout.products SET metrics_last_calculated_at = NULL
    WHERE id IN (v_row.product_id, OLD.product_id) AND metrics_last_calculated_at IS NOT NULL;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER subscriptions_guard BEFORE UPDATE ON checkout.subscriptions
  FOR EACH ROW EXECUTE FUNCTION checkout.guard_subscription_update();
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
    ORDER BY current_period_end LIMIT p_batch FOR UPDATE SKIP LOCKED) due;
  -- The rows the triggers will touch, locked customers first, then products, each in id order:
  -- the order single calls take them in, so a batch and a call cannot deadlock.
  PERFORM 1 FROM checkout.customers c
  WHERE c.id IN (SELECT s.customer_id FROM checkout.subscriptions s WHERE s.id = ANY (v_due)) ORDER BY c.id FOR UPDATE;
  PERFORM 1 FROM checkout.products p
  WHERE p.id IN (SELECT s.product_id FROM checkout.subscriptions s WHERE s.id = ANY (v_due))
    AND p.metrics_last_calculated_at IS NOT NULL ORDER BY p.id FOR UPDATE;
  UPDATE checkout.subscriptions s SET status = 'canceled' WHERE s.id = ANY (v_due);
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END $$;
REVOKE ALL ON FUNCTION checkout.end_subscription_periods(integer) FROM PUBLIC;

-- sql/maintenance.sql of 0.2.0: run_maintenance() and maintenance_status() know the new job.
CREATE OR REPLACE FUNCTION checkout.run_maintenance() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_job text;
  v_result jsonb;
  v_summary jsonb := '{}';
BEGIN
  FOREACH v_job IN ARRAY ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                                'expire_reconciliation_leases', 'end_subscription_periods', 'refresh_product_metrics'] LOOP
    BEGIN
      EXECUTE format('SELECT to_jsonb(checkout.%I())', v_job) INTO v_result;
      INSERT INTO checkout.maintenance_runs AS r (job, last_run_at, last_result) VALUES (v_job, now(), v_result)
      ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at, last_result = EXCLUDED.last_result;
    EXCEPTION WHEN OTHERS THEN
      v_result := jsonb_build_object('error', SQLERRM, 'sqlstate', SQLSTATE);
      INSERT INTO checkout.maintenance_runs AS r (job, last_run_at, last_error, last_error_at) VALUES (v_job, now(), SQLERRM, now())
      ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at, last_error = EXCLUDED.last_error,
                                      last_error_at = EXCLUDED.last_error_at;
    END;
    v_summary := v_summary || jsonb_build_object(v_job, v_result);
  END LOOP;
  RETURN v_summary;
END $$;
CREATE OR REPLACE FUNCTION checkout.maintenance_status()
RETURNS TABLE (job text, last_run_at timestamptz, last_result jsonb, last_error text, last_error_at timestamptz,
               next_run_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT j.job, r.last_run_at, r.last_result, r.last_error, r.last_error_at,
         CASE WHEN EXISTS (SELECT 1 FROM pg_stat_activity a
                           WHERE a.backend_type = 'checkout maintenance' AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()))
              THEN coalesce(r.last_run_at, now()) + make_interval(secs => checkout.setting_seconds('checkout.maintenance_interval', 60))
         END
  FROM unnest(ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                    'expire_reconciliation_leases', 'end_subscription_periods', 'refresh_product_metrics']) AS j(job)
  LEFT JOIN checkout.maintenance_runs r ON r.job = j.job
$$;

-- sql/invariants.sql of 0.2.0.
-- checkout.check_invariants(): what must hold however the writes happened (functions, crashes,
-- kills, timeouts). Returns one row per violation; empty means consistent. Used by the fault,
-- fuzz and stress runs.
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

-- sql/verify.sql of 0.2.0.
-- checkout.verify(): the seed's "post-migration verification" as a function. One row per expected
-- table, constraint, index, function and trigger: ok = present (and valid), detail = its definition or why not.
-- Loaded last (finalize), so the functions listed here exist. Keep this list in step with the schema.
CREATE OR REPLACE FUNCTION checkout.verify()
RETURNS TABLE ("check" text, ok boolean, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $verify$
  WITH expected(kind, name, tbl) AS (
    VALUES
    ('table', 'organizations', NULL),
    ('table', 'users', NULL),
    ('constraint', 'users_org_id_key', 'users'),
    ('index', 'users_org_email_key', 'users'),
    ('table', 'customers', NULL),
    ('constraint', 'customers_org_id_key', 'customers'),
    ('index', 'unique_customer_email_per_org', 'customers'),
    ('index', 'unique_external_id_per_org', 'customers'),
    ('index', 'idx_customers_email_org', 'customers'),
    ('index', 'idx_customers_external_id_org', 'customers'),
    ('index', 'idx_customers_stripe_id', 'customers'),
    ('table', 'products', NULL),
    ('constraint', 'products_org_id_key', 'products'),
    ('table', 'features', NULL),
    ('constraint', 'features_org_id_key', 'features'),
    ('constraint', 'features_org_key_key', 'features'),
    ('table', 'subscriptions', NULL),
    ('constraint', 'subscriptions_org_id_key', 'subscriptions'),
    ('constraint', 'check_subscription_dates', 'subscriptions'),
    ('constraint', 'check_trial_dates', 'subscriptions'),
    ('constraint', 'check_positive_amount', 'subscriptions'),
    ('constraint', 'subscriptions_customer_id_fkey', 'subscriptions'),
    ('constraint', 'subscriptions_product_id_fkey', 'subscriptions'),
    ('index', 'unique_active_subscription', 'subscriptions'),
    ('index', 'idx_subscriptions_customer_product', 'subscriptions'),
    ('index', 'idx_subscriptions_active', 'subscriptions'),
    ('index', 'idx_subscriptions_ending', 'subscriptions'),
    ('index', 'idx_subscriptions_trial_ending', 'subscriptions'),
    ('index', 'idx_subscriptions_product', 'subscriptions'),
    ('index', 'idx_subscriptions_cancel_pending', 'subscriptions'),
    ('table', 'checkout_sessions', NULL),
    ('constraint', 'checkout_sessions_org_id_key', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_customer_id_fkey', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_product_id_fkey', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_expires', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_customer', 'checkout_sessions'),
    ('index', 'idx_products_metrics_stale', 'products'),
    ('index', 'idx_checkout_sessions_expired', 'checkout_sessions'),
    ('table', 'payment_intents', NULL),
    ('constraint', 'payment_intents_org_id_key', 'payment_intents'),
    ('constraint', 'payment_intents_org_stripe_key', 'payment_intents'),
    ('constraint', 'check_positive_payment_amount', 'payment_intents'),
    ('constraint', 'payment_intents_customer_id_fkey', 'payment_intents'),
    ('constraint', 'payment_intents_subscription_id_fkey', 'payment_intents'),
    ('constraint', 'payment_intents_checkout_session_id_fkey', 'payment_intents'),
    ('index', 'idx_payment_intents_subscription', 'payment_intents'),
    ('index', 'idx_payment_intents_customer', 'payment_intents'),
    ('index', 'idx_payment_intents_session', 'payment_intents'),
    ('table', 'feature_grants', NULL),
    ('constraint', 'unique_feature_grant', 'feature_grants'),
    ('constraint', 'feature_grants_customer_id_fkey', 'feature_grants'),
    ('constraint', 'feature_grants_feature_id_fkey', 'feature_grants'),
    ('constraint', 'feature_grants_subscription_id_fkey', 'feature_grants'),
    ('constraint', 'feature_grants_revoked_after_granted', 'feature_grants'),
    ('index', 'idx_feature_grants_customer', 'feature_grants'),
    ('index', 'idx_feature_grants_subscription', 'feature_grants'),
    ('index', 'idx_feature_grants_feature', 'feature_grants'),
    ('table', 'webhook_events', NULL),
    ('constraint', 'webhook_events_provider_event_key', 'webhook_events'),
    ('index', 'idx_webhook_events_type_status', 'webhook_events'),
    ('index', 'idx_webhook_events_unprocessed', 'webhook_events'),
    ('index', 'idx_webhook_events_object', 'webhook_events'),
    ('table', 'idempotency_keys', NULL),
    ('constraint', 'idempotency_keys_org_key_key', 'idempotency_keys'),
    ('constraint', 'idempotency_keys_completed_has_response', 'idempotency_keys'),
    ('index', 'idx_idempotency_keys_expires', 'idempotency_keys'),
    ('index', 'idx_idempotency_keys_status', 'idempotency_keys'),
    ('table', 'trial_history', NULL),
    ('constraint', 'trial_history_one_per_product', 'trial_history'),
    ('constraint', 'trial_history_dates', 'trial_history'),
    ('constraint', 'trial_history_customer_id_fkey', 'trial_history'),
    ('constraint', 'trial_history_product_id_fkey', 'trial_history'),
    ('constraint', 'trial_history_subscription_id_fkey', 'trial_history'),
    ('index', 'idx_trial_history_customer', 'trial_history'),
    ('index', 'idx_trial_history_product', 'trial_history'),
    ('index', 'idx_trial_history_dates', 'trial_history'),
    ('index', 'idx_trial_history_converted', 'trial_history'),
    ('index', 'idx_trial_history_subscription', 'trial_history'),
    ('table', 'customer_email_variants', NULL),
    ('constraint', 'customer_email_variants_customer_id_fkey', 'customer_email_variants'),
    ('index', 'customer_email_variants_key', 'customer_email_variants'),
    ('index', 'idx_email_variants_normalized', 'customer_email_variants'),
    ('index', 'idx_email_variants_domain', 'customer_email_variants'),
    ('table', 'subscription_changes', NULL),
    ('constraint', 'subscription_changes_organization_id_fkey', 'subscription_changes'),
    ('constraint', 'subscription_changes_changed_by_fkey', 'subscription_changes'),
    ('index', 'idx_subscription_changes_sub', 'subscription_changes'),
    ('index', 'idx_subscription_changes_type', 'subscription_changes'),
    ('index', 'idx_subscription_changes_date', 'subscription_changes'),
    ('index', 'idx_subscription_changes_changed_by', 'subscription_changes'),
    ('table', 'refunds', NULL),
    ('constraint', 'check_positive_refund_amount', 'refunds'),
    ('constraint', 'refunds_payment_intent_id_fkey', 'refunds'),
    ('constraint', 'refunds_subscription_id_fkey', 'refunds'),
    ('index', 'idx_refunds_payment', 'refunds'),
    ('index', 'idx_refunds_subscription', 'refunds'),
    ('index', 'idx_refunds_status', 'refunds'),
    ('table', 'reconciliation_queue', NULL),
    ('constraint', 'check_reconciliation_priority', 'reconciliation_queue'),
    ('index', 'idx_reconciliation_status', 'reconciliation_queue'),
    ('index', 'idx_reconciliation_retry', 'reconciliation_queue'),
    ('index', 'reconciliation_queue_open_item', 'reconciliation_queue'),
    ('function', 'checkout.verify()', NULL),
    ('function', 'checkout.normalize_email(text)', NULL),
    ('function', 'checkout.email_rules_version()', NULL),
    ('function', 'checkout.renormalize_email_variants()', NULL),
    ('function', 'checkout.check_trial_eligibility(uuid, uuid, text)', NULL),
    ('function', 'checkout.create_subscription_atomic(jsonb, jsonb[], uuid, uuid, uuid, text)', NULL),
    ('function', 'checkout.upsert_customer_atomic(uuid, text, text, text, text, jsonb)', NULL),
    ('function', 'checkout.track_customer_email()', NULL),
    ('function', 'checkout.merge_duplicate_email_variant()', NULL),
    ('function', 'checkout.expire_checkout_sessions(integer)', NULL),
    ('function', 'checkout.cleanup_expired_idempotency_keys(integer)', NULL),
    ('function', 'checkout.enqueue_reconciliation(text, text, jsonb, integer, uuid)', NULL),
    ('function', 'checkout.claim_reconciliation(integer, text)', NULL),
    ('function', 'checkout.complete_reconciliation(uuid)', NULL),
    ('function', 'checkout.fail_reconciliation(uuid, text)', NULL),
    ('function', 'checkout.expire_reconciliation_leases(integer)', NULL),
    ('function', 'checkout.refresh_product_metrics(integer)', NULL),
    ('function', 'checkout.run_maintenance()', NULL),
    ('function', 'checkout.maintenance_status()', NULL),
    ('function', 'checkout.schedule_with_pg_cron(text)', NULL),
    ('function', 'checkout.unschedule_pg_cron()', NULL),
    ('function', 'checkout.check_invariants()', NULL),
    ('function', 'checkout.record_refund(uuid, text, text, bigint, text, text, text, uuid)', NULL),
    ('function', 'checkout.update_refund_status(uuid, text, text)', NULL),
    ('function', 'checkout.guard_refund_status()', NULL),
    ('function', 'checkout.record_webhook_event(uuid, text, text, jsonb, timestamp with time zone, text)', NULL),
    ('function', 'checkout.claim_webhook_events(integer)', NULL),
    ('function', 'checkout.complete_webhook_event(uuid)', NULL),
    ('function', 'checkout.fail_webhook_event(uuid, text)', NULL),
    ('function', 'checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text)', NULL),
    ('function', 'checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text)', NULL),
    ('function', 'checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text)', NULL),
    ('function', 'checkout.renew_subscription_period(uuid, uuid, timestamp with time zone, uuid, text)', NULL),
    ('function', 'checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text)', NULL),
    ('function', 'checkout.expire_subscription(uuid, uuid, text, uuid, text)', NULL),
    ('function', 'checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text)', NULL),
    ('function', 'checkout.subscription_transitions()', NULL),
    ('function', 'checkout.subscription_transition_allowed(text, text)', NULL),
    ('function', 'checkout.guard_subscription_update()', NULL),
    ('function', 'checkout.audit_subscription_change()', NULL),
    ('function', 'checkout.end_subscription_periods(integer)', NULL),
    ('trigger', 'subscriptions_guard', 'subscriptions'),
    ('trigger', 'subscriptions_audit', 'subscriptions'),
    ('table', 'maintenance_runs', NULL)
  ), found AS (
    SELECT e.kind, e.name,
      CASE e.kind
        WHEN 'table' THEN (SELECT 'table with ' || c.reltuples::bigint || ' rows (estimate)'
                           FROM pg_class c WHERE c.oid = to_regclass('checkout.' || e.name) AND c.relkind = 'r')
        WHEN 'index' THEN (SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
                           WHERE i.indexrelid = to_regclass('checkout.' || e.name)
                             AND i.indrelid = to_regclass('checkout.' || e.tbl) AND i.indisvalid)
        WHEN 'constraint' THEN (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
                                WHERE c.conrelid = to_regclass('checkout.' || e.tbl) AND c.conname = e.name
                                  AND c.convalidated)
        WHEN 'function' THEN (SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = to_regprocedure(e.name))
        WHEN 'trigger' THEN (SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
                             WHERE t.tgrelid = to_regclass('checkout.' || e.tbl) AND t.tgname = e.name AND t.tgenabled <> 'D')
      END AS definition
    FROM expected e
  )
  SELECT kind || ' ' || name, definition IS NOT NULL,
         coalesce(definition, 'missing or invalid')
  FROM found
  UNION ALL
  SELECT 'privilege: PUBLIC has no CREATE on schema checkout',
         NOT has_schema_privilege('public', 'checkout', 'CREATE'),
         'schema ACL: ' || coalesce((SELECT nspacl::text FROM pg_namespace WHERE nspname = 'checkout'), 'default')
$verify$;
COMMENT ON FUNCTION checkout.verify() IS 'Post-install verification: one row per expected table, constraint, index and function, with ok and detail.';
