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
-- superuser's mistaken CREATE TRIGGER writes nothing. They are native, without SET search_path:
-- every name and operator in their statements is schema-qualified.
--  * stamp (BEFORE INSERT of a canceled or expired row, the guard's function): such a row
--    inserted directly gets its canceled_at/ended_at, as entering those statuses by UPDATE does.
-- Row locks are taken customer first, then product, on every path (create_subscription_atomic's
-- statement too), so concurrent writers queue instead of deadlocking.

-- The database role behind a change (outside SECURITY DEFINER functions).
ALTER TABLE checkout.subscription_changes ALTER COLUMN changed_by_role SET DEFAULT checkout.invoking_role();

-- The trigger functions are native (src/subscriptions/triggers.rs), created before this file.
CREATE TRIGGER subscriptions_guard BEFORE UPDATE ON checkout.subscriptions
  FOR EACH ROW EXECUTE FUNCTION checkout.guard_subscription_update();
-- Only rows that need stamping: creates (active, trialing, incomplete) pay for the WHEN alone. A
-- restore reloads rows as they were (CHECK check_ended_stamped holds them). The ending statuses:
-- twin of states::ENDED (src/subscriptions/states.rs), as in end_subscription_periods below.
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
  v_tenants uuid[] := ARRAY[NULL::uuid];
  v_tenant uuid;
  v_cluster boolean := checkout.routed_here(false);
  v_orgs uuid[];
  v_due uuid[];
  v_customers uuid[];
  v_products uuid[];
  v_count integer := 0;
  v_ended integer;
BEGIN
  IF v_cluster THEN
    -- One organization at a time, as every job on a cluster (sql/maintenance.sql). The audit
    -- trigger runs on the shard's node, so the change type and reason go there too: Citus sends
    -- a SET LOCAL to the nodes of the transaction (citus.propagate_set_commands, set by routed_here).
    SELECT coalesce(array_agg(organization_id ORDER BY due), '{}') INTO v_tenants FROM (
      SELECT organization_id, min(current_period_end) AS due FROM checkout.subscriptions
      WHERE cancel_at_period_end AND current_period_end <= now() AND status NOT IN ('canceled', 'expired')
      GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
    SET LOCAL checkout.change_type = 'cancelled';
    SET LOCAL checkout.change_reason = 'cancel_at_period_end';
  END IF;
  FOREACH v_tenant IN ARRAY v_tenants LOOP
    -- Each due row with its organization (rows are found by (organization_id, id)), and the customer
    -- and product it points to (which the row lock taken here keeps as they are).
    SELECT array_agg(organization_id), array_agg(id), array_agg(customer_id), array_agg(product_id)
    INTO v_orgs, v_due, v_customers, v_products FROM (
      SELECT organization_id, id, customer_id, product_id FROM checkout.subscriptions
      WHERE cancel_at_period_end AND current_period_end <= now() AND status NOT IN ('canceled', 'expired')
        AND (v_tenant IS NULL OR organization_id = v_tenant)
      ORDER BY current_period_end LIMIT p_batch - v_count FOR NO KEY UPDATE SKIP LOCKED) due;
    -- The rows the triggers will touch, locked customers first, then products, each in id order:
    -- the order single calls take them in, so a batch and a call cannot deadlock. Every product, not
    -- only those whose metrics the triggers clear: a refresh committing in between would otherwise
    -- leave one to be locked later, out of order. FOR NO KEY UPDATE (what an UPDATE takes): FOR
    -- UPDATE would also wait on the key-share locks that foreign-key checks of concurrent inserts
    -- hold, a lock order no single call follows.
    PERFORM 1 FROM checkout.customers c
    WHERE (c.organization_id, c.id) IN (SELECT d.organization_id, d.id FROM unnest(v_orgs, v_customers) AS d(organization_id, id))
      AND (v_tenant IS NULL OR c.organization_id = v_tenant)
    ORDER BY c.id FOR NO KEY UPDATE;
    PERFORM 1 FROM checkout.products p
    WHERE (p.organization_id, p.id) IN (SELECT d.organization_id, d.id FROM unnest(v_orgs, v_products) AS d(organization_id, id))
      AND (v_tenant IS NULL OR p.organization_id = v_tenant)
    ORDER BY p.id FOR NO KEY UPDATE;
    UPDATE checkout.subscriptions s SET status = 'canceled'
    FROM unnest(v_orgs, v_due) AS d(organization_id, id)
    WHERE (v_tenant IS NULL OR s.organization_id = v_tenant) AND s.organization_id = d.organization_id AND s.id = d.id;
    GET DIAGNOSTICS v_ended = ROW_COUNT;
    v_count := v_count + v_ended;
    EXIT WHEN v_count >= p_batch;
  END LOOP;
  IF v_cluster THEN
    -- The nodes' sessions go on with the transaction: the settings go back to their defaults there.
    RESET checkout.change_type;
    RESET checkout.change_reason;
  END IF;
  RETURN v_count;
END $$;
REVOKE ALL ON FUNCTION checkout.end_subscription_periods(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION checkout.guard_subscription_update(), checkout.audit_subscription_change() FROM PUBLIC;
