-- checkout 0.6.0 -> 0.5.0: the hardening of 0.6.0 undone in SQL (the library stays 0.6.0's, so its
-- functions keep their native fixes: superuser lifetimes, jsonb arguments read without XX000,
-- bounded p_features, email rules version 2). 0.5.0's trigger functions are executable by PUBLIC
-- again (issue 15's case 1 reopens): stay on 0.6.0 where application roles are not trusted.
-- 0.6.0's tenant-first keys go back to 0.5.0's (id) keys and index definitions.
-- Rows are not changed. The downgrade stops, changing nothing, where 0.5.0 cannot hold the data: a
-- provider id used by two organizations, or open reconciliation items of one type and reference in
-- two organizations (or in one and without one), or an id used in two organizations: 0.5.0's
-- keys are global.
-- The seed-form check_trial_eligibility(uuid, uuid, text) loses its DEFAULT in place (pg_proc, as
-- contrib's own update scripts do where ALTER FUNCTION cannot), so its grants and OID stay.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.5.0'" to load this file. \quit

DO $$
DECLARE
  v_check record;
  v_table text;
  v_found text;
BEGIN
  FOR v_check IN SELECT * FROM (VALUES
      ('subscriptions', 'stripe_subscription_id', 'true'),
      ('checkout_sessions', 'stripe_session_id', 'true'),
      ('refunds', 'stripe_refund_id', 'true'),
      ('reconciliation_queue', 'type, reference_id', 'status IN (''pending'', ''processing'', ''failed'')')) AS c(tab, cols, open)
  LOOP
    EXECUTE format('SELECT string_agg(k, '', '') FROM (SELECT format(''%%s'', row(%s)) AS k FROM checkout.%I
                    WHERE %s AND row(%s) IS NOT NULL GROUP BY %s
                    HAVING count(DISTINCT coalesce(organization_id::text, '''')) > 1 LIMIT 10) d',
                   v_check.cols, v_check.tab, v_check.open, v_check.cols, v_check.cols)
      INTO v_found;
    IF v_found IS NOT NULL THEN
      RAISE EXCEPTION 'checkout 0.5.0 cannot hold checkout.%: (%) is shared by several organizations', v_check.tab, v_check.cols
        USING ERRCODE = 'unique_violation', DETAIL = format('values (first 10): %s', v_found),
              HINT = 'Stay on 0.6.0, or change those rows so each value belongs to one organization.';
    END IF;
  END LOOP;
  -- 0.5.0's primary keys are (id) alone: an id used in two organizations cannot go back.
  FOREACH v_table IN ARRAY ARRAY['users', 'customers', 'products', 'features', 'subscriptions', 'checkout_sessions',
      'payment_intents', 'feature_grants', 'webhook_events', 'idempotency_keys', 'trial_history',
      'customer_email_variants', 'subscription_changes', 'refunds'] LOOP
    EXECUTE format('SELECT string_agg(id::text, '', '') FROM (SELECT id FROM checkout.%I GROUP BY id HAVING count(*) > 1 LIMIT 10) d',
                   v_table) INTO v_found;
    IF v_found IS NOT NULL THEN
      RAISE EXCEPTION 'checkout 0.5.0 cannot hold checkout.%: an id is used in several organizations', v_table
        USING ERRCODE = 'unique_violation', DETAIL = format('ids (first 10): %s', v_found),
              HINT = 'Stay on 0.6.0, or give those rows ids of their own.';
    END IF;
  END LOOP;
  -- 0.5.0 has no import report: its rows would be lost.
  IF EXISTS (SELECT 1 FROM checkout.import_report) THEN
    RAISE EXCEPTION 'checkout 0.5.0 cannot hold checkout.import_report: it has rows'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = format('%s rows of the last import_seed() run', (SELECT count(*) FROM checkout.import_report)),
            HINT = 'Copy the report elsewhere and delete its rows, or stay on 0.6.0.';
  END IF;
  -- 0.5.0 has no 'imported' change type: the audit rows import_seed wrote cannot go back.
  IF EXISTS (SELECT 1 FROM checkout.subscription_changes WHERE change_type = 'imported') THEN
    RAISE EXCEPTION 'checkout 0.5.0 cannot hold checkout.subscription_changes: it has rows of change type imported'
      USING ERRCODE = 'check_violation',
            DETAIL = format('%s rows written by import_seed()', (SELECT count(*) FROM checkout.subscription_changes WHERE change_type = 'imported')),
            HINT = 'Stay on 0.6.0: the imported subscriptions need their imported audit rows.';
  END IF;
END $$;

DROP FUNCTION checkout.check_trial_eligibility(uuid, uuid, uuid, text);
UPDATE pg_catalog.pg_proc SET pronargdefaults = 0, proargdefaults = NULL
WHERE oid = 'checkout.check_trial_eligibility(uuid, uuid, text)'::pg_catalog.regprocedure;
COMMENT ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) IS 'Whether a customer may start a trial of a product: {eligible, reason, customer_id | normalized_email, matched_customer_id}.';

DROP INDEX checkout.reconciliation_queue_open_item;
CREATE UNIQUE INDEX reconciliation_queue_open_item ON checkout.reconciliation_queue (type, reference_id)
  WHERE status IN ('pending', 'processing', 'failed');
ALTER TABLE checkout.subscriptions
  DROP CONSTRAINT check_amount_in_range, DROP CONSTRAINT check_ended_stamped, DROP CONSTRAINT check_canceled_stamped;
ALTER TABLE checkout.checkout_sessions DROP CONSTRAINT check_amount_in_range;
ALTER TABLE checkout.refunds DROP CONSTRAINT check_amount_in_range;
ALTER TABLE checkout.payment_intents DROP CONSTRAINT check_amount_in_range;

DROP TRIGGER subscriptions_stamp_ended ON checkout.subscriptions;
DROP TRIGGER payments_guard_refunded ON checkout.payment_intents;
DROP FUNCTION checkout.guard_payment_refunded();
DROP TRIGGER refunds_guard_status ON checkout.refunds;
CREATE TRIGGER refunds_guard_status BEFORE UPDATE OF status ON checkout.refunds
  FOR EACH ROW EXECUTE FUNCTION checkout.guard_refund_status();
DROP FUNCTION checkout.restoring(text);
GRANT EXECUTE ON FUNCTION checkout.guard_subscription_update(), checkout.audit_subscription_change(),
  checkout.track_customer_email(), checkout.merge_duplicate_email_variant(), checkout.guard_refund_status() TO PUBLIC;


-- 0.5.0's keys: (id) primary keys beside (organization_id, id) uniques, global provider ids, the
-- organization foreign keys, and 0.5.0's index definitions.
ALTER TABLE checkout.subscriptions DROP CONSTRAINT subscriptions_customer_id_fkey,
  DROP CONSTRAINT subscriptions_product_id_fkey;
ALTER TABLE checkout.checkout_sessions DROP CONSTRAINT checkout_sessions_customer_id_fkey,
  DROP CONSTRAINT checkout_sessions_product_id_fkey;
ALTER TABLE checkout.payment_intents DROP CONSTRAINT payment_intents_customer_id_fkey,
  DROP CONSTRAINT payment_intents_subscription_id_fkey, DROP CONSTRAINT payment_intents_checkout_session_id_fkey;
ALTER TABLE checkout.feature_grants DROP CONSTRAINT feature_grants_customer_id_fkey,
  DROP CONSTRAINT feature_grants_feature_id_fkey, DROP CONSTRAINT feature_grants_subscription_id_fkey;
ALTER TABLE checkout.trial_history DROP CONSTRAINT trial_history_customer_id_fkey,
  DROP CONSTRAINT trial_history_product_id_fkey, DROP CONSTRAINT trial_history_subscription_id_fkey;
ALTER TABLE checkout.customer_email_variants DROP CONSTRAINT customer_email_variants_customer_id_fkey;
ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_changed_by_fkey;
ALTER TABLE checkout.refunds DROP CONSTRAINT refunds_subscription_id_fkey;
DROP INDEX checkout.subscriptions_stripe_subscription_id_key, checkout.checkout_sessions_stripe_session_id_key,
  checkout.refunds_stripe_refund_id_key;

ALTER TABLE checkout.users DROP CONSTRAINT users_pkey, ADD CONSTRAINT users_pkey PRIMARY KEY (id),
  ADD CONSTRAINT users_org_id_key UNIQUE (organization_id, id);
ALTER TABLE checkout.customers DROP CONSTRAINT customers_pkey,
  ADD CONSTRAINT customers_pkey PRIMARY KEY (id) INCLUDE (organization_id, deleted_at),
  ADD CONSTRAINT customers_org_id_key UNIQUE (organization_id, id);
ALTER TABLE checkout.products DROP CONSTRAINT products_pkey, ADD CONSTRAINT products_pkey PRIMARY KEY (id),
  ADD CONSTRAINT products_org_id_key UNIQUE (organization_id, id);
ALTER TABLE checkout.features DROP CONSTRAINT features_pkey, ADD CONSTRAINT features_pkey PRIMARY KEY (id),
  ADD CONSTRAINT features_org_id_key UNIQUE (organization_id, id);
ALTER TABLE checkout.subscriptions DROP CONSTRAINT subscriptions_pkey, ADD CONSTRAINT subscriptions_pkey PRIMARY KEY (id),
  ADD CONSTRAINT subscriptions_org_id_key UNIQUE (organization_id, id),
  ADD CONSTRAINT subscriptions_stripe_subscription_id_key UNIQUE (stripe_subscription_id);
ALTER TABLE checkout.checkout_sessions DROP CONSTRAINT checkout_sessions_pkey,
  ADD CONSTRAINT checkout_sessions_pkey PRIMARY KEY (id),
  ADD CONSTRAINT checkout_sessions_org_id_key UNIQUE (organization_id, id),
  ADD CONSTRAINT checkout_sessions_stripe_session_id_key UNIQUE (stripe_session_id);
ALTER TABLE checkout.payment_intents DROP CONSTRAINT payment_intents_pkey,
  ADD CONSTRAINT payment_intents_pkey PRIMARY KEY (id),
  ADD CONSTRAINT payment_intents_org_id_key UNIQUE (organization_id, id);
ALTER TABLE checkout.feature_grants DROP CONSTRAINT feature_grants_pkey, DROP CONSTRAINT unique_feature_grant,
  ADD CONSTRAINT feature_grants_pkey PRIMARY KEY (id),
  ADD CONSTRAINT unique_feature_grant UNIQUE (customer_id, feature_id, subscription_id),
  ADD CONSTRAINT feature_grants_organization_id_fkey FOREIGN KEY (organization_id)
    REFERENCES checkout.organizations (id) ON DELETE CASCADE;
ALTER TABLE checkout.webhook_events DROP CONSTRAINT webhook_events_pkey,
  ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (id);
ALTER TABLE checkout.idempotency_keys DROP CONSTRAINT idempotency_keys_org_key_key,
  ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (id),
  ADD CONSTRAINT idempotency_keys_org_key_key UNIQUE (organization_id, key);
ALTER TABLE checkout.trial_history DROP CONSTRAINT trial_history_pkey,
  ADD CONSTRAINT trial_history_pkey PRIMARY KEY (id),
  ADD CONSTRAINT trial_history_organization_id_fkey FOREIGN KEY (organization_id)
    REFERENCES checkout.organizations (id) ON DELETE CASCADE;
ALTER TABLE checkout.customer_email_variants DROP CONSTRAINT customer_email_variants_pkey,
  ADD CONSTRAINT customer_email_variants_pkey PRIMARY KEY (id);
ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_pkey,
  ADD CONSTRAINT subscription_changes_pkey PRIMARY KEY (id);
ALTER TABLE checkout.refunds DROP CONSTRAINT refunds_pkey,
  ADD CONSTRAINT refunds_pkey PRIMARY KEY (id),
  ADD CONSTRAINT refunds_stripe_refund_id_key UNIQUE (stripe_refund_id),
  ADD CONSTRAINT refunds_organization_id_fkey FOREIGN KEY (organization_id)
    REFERENCES checkout.organizations (id) ON DELETE CASCADE;

ALTER TABLE checkout.subscriptions
  ADD CONSTRAINT subscriptions_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE NO ACTION,
  ADD CONSTRAINT subscriptions_product_id_fkey FOREIGN KEY (organization_id, product_id)
    REFERENCES checkout.products (organization_id, id) ON DELETE NO ACTION;
ALTER TABLE checkout.checkout_sessions
  ADD CONSTRAINT checkout_sessions_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  ADD CONSTRAINT checkout_sessions_product_id_fkey FOREIGN KEY (organization_id, product_id)
    REFERENCES checkout.products (organization_id, id) ON DELETE CASCADE;
ALTER TABLE checkout.payment_intents
  ADD CONSTRAINT payment_intents_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  ADD CONSTRAINT payment_intents_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE SET NULL (subscription_id),
  ADD CONSTRAINT payment_intents_checkout_session_id_fkey FOREIGN KEY (organization_id, checkout_session_id)
    REFERENCES checkout.checkout_sessions (organization_id, id) ON DELETE SET NULL (checkout_session_id);
ALTER TABLE checkout.feature_grants
  ADD CONSTRAINT feature_grants_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  ADD CONSTRAINT feature_grants_feature_id_fkey FOREIGN KEY (organization_id, feature_id)
    REFERENCES checkout.features (organization_id, id) ON DELETE CASCADE,
  ADD CONSTRAINT feature_grants_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE CASCADE;
ALTER TABLE checkout.trial_history
  ADD CONSTRAINT trial_history_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  ADD CONSTRAINT trial_history_product_id_fkey FOREIGN KEY (organization_id, product_id)
    REFERENCES checkout.products (organization_id, id) ON DELETE CASCADE,
  ADD CONSTRAINT trial_history_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE SET NULL (subscription_id);
ALTER TABLE checkout.customer_email_variants
  ADD CONSTRAINT customer_email_variants_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE;
ALTER TABLE checkout.subscription_changes
  ADD CONSTRAINT subscription_changes_changed_by_fkey FOREIGN KEY (organization_id, changed_by)
    REFERENCES checkout.users (organization_id, id) ON DELETE SET NULL (changed_by);
ALTER TABLE checkout.refunds
  ADD CONSTRAINT refunds_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE SET NULL (subscription_id);

DROP INDEX checkout.customers_id_idx, checkout.idx_webhook_events_id,
  checkout.idx_customers_email_org, checkout.idx_customers_external_id_org, checkout.idx_customers_stripe_id,
  checkout.idx_subscriptions_customer_product, checkout.idx_subscriptions_active, checkout.idx_subscriptions_ending,
  checkout.idx_subscriptions_trial_ending, checkout.idx_subscriptions_product, checkout.idx_checkout_sessions_customer,
  checkout.idx_payment_intents_subscription, checkout.idx_payment_intents_customer, checkout.idx_payment_intents_session,
  checkout.idx_feature_grants_customer, checkout.idx_feature_grants_feature,
  checkout.idx_idempotency_keys_status, checkout.idx_trial_history_customer, checkout.idx_trial_history_product,
  checkout.idx_trial_history_subscription, checkout.idx_subscription_changes_sub, checkout.idx_subscription_changes_changed_by,
  checkout.idx_refunds_payment, checkout.idx_refunds_subscription;
CREATE INDEX idx_customers_email_org ON checkout.customers (email, organization_id) WHERE deleted_at IS NULL;
CREATE INDEX idx_customers_external_id_org ON checkout.customers (external_id, organization_id)
  WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX idx_customers_stripe_id ON checkout.customers (stripe_customer_id) WHERE stripe_customer_id IS NOT NULL;
CREATE INDEX idx_subscriptions_customer_product ON checkout.subscriptions (customer_id, product_id, status);
CREATE INDEX idx_subscriptions_active ON checkout.subscriptions (customer_id, status) WHERE status IN ('active', 'trialing');
CREATE INDEX idx_subscriptions_ending ON checkout.subscriptions (current_period_end, status) WHERE status = 'active';
CREATE INDEX idx_subscriptions_trial_ending ON checkout.subscriptions (trial_end, status)
  WHERE status = 'trialing' AND trial_end IS NOT NULL;
CREATE INDEX idx_subscriptions_product ON checkout.subscriptions (product_id, status);
CREATE INDEX idx_checkout_sessions_customer ON checkout.checkout_sessions (customer_id, created_at DESC);
CREATE INDEX idx_payment_intents_subscription ON checkout.payment_intents (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_payment_intents_customer ON checkout.payment_intents (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX idx_payment_intents_session ON checkout.payment_intents (checkout_session_id) WHERE checkout_session_id IS NOT NULL;
CREATE INDEX idx_feature_grants_customer ON checkout.feature_grants (customer_id, feature_id);
CREATE INDEX idx_feature_grants_subscription ON checkout.feature_grants (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_feature_grants_feature ON checkout.feature_grants (feature_id);
CREATE INDEX idx_idempotency_keys_status ON checkout.idempotency_keys (status);
CREATE INDEX idx_trial_history_customer ON checkout.trial_history (customer_id);
CREATE INDEX idx_trial_history_product ON checkout.trial_history (product_id);
CREATE INDEX idx_trial_history_subscription ON checkout.trial_history (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_subscription_changes_sub ON checkout.subscription_changes (subscription_id);
CREATE INDEX idx_subscription_changes_changed_by ON checkout.subscription_changes (changed_by) WHERE changed_by IS NOT NULL;
CREATE INDEX idx_refunds_payment ON checkout.refunds (payment_intent_id);
CREATE INDEX idx_refunds_subscription ON checkout.refunds (subscription_id);

-- 0.5.0's CHECK value lists.
ALTER TABLE checkout.subscriptions
  DROP CONSTRAINT subscriptions_status_check,
  ADD CONSTRAINT subscriptions_status_check CHECK (status IN
    ('incomplete', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused', 'expired')),
  DROP CONSTRAINT subscriptions_interval_check,
  ADD CONSTRAINT subscriptions_interval_check CHECK ("interval" IN ('day', 'week', 'month', 'year'));
ALTER TABLE checkout.subscription_changes
  DROP CONSTRAINT subscription_changes_change_type_check,
  ADD CONSTRAINT subscription_changes_change_type_check CHECK (change_type IN ('created', 'updated', 'cancelled',
    'reactivated', 'expired', 'upgraded', 'downgraded', 'renewed', 'past_due', 'converted', 'deleted')),
  DROP CONSTRAINT subscription_changes_changed_by_type_check,
  ADD CONSTRAINT subscription_changes_changed_by_type_check CHECK (changed_by_type IN ('user', 'system', 'webhook', 'support'));
ALTER TABLE checkout.idempotency_keys
  DROP CONSTRAINT idempotency_keys_status_check,
  ADD CONSTRAINT idempotency_keys_status_check CHECK (status IN ('pending', 'processing', 'completed', 'failed'));
DROP TABLE checkout.import_report;
DROP FUNCTION checkout.import_seed(text, boolean), checkout.email_is_valid(text);
DROP FUNCTION checkout.distribute(), checkout.distribution_state(), checkout.distributed_tables();
DROP FUNCTION checkout.is_subscription_status(text), checkout.is_billing_interval(text), checkout.is_change_type(text),
  checkout.is_actor_type(text), checkout.is_idempotency_status(text);

-- 0.5.0's functions.
DROP FUNCTION checkout.setting_seconds(text), checkout.setting_integer(text);
CREATE OR REPLACE FUNCTION checkout.setting_seconds(name text, fallback integer) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(extract(epoch FROM nullif(current_setting(name, true), '')::interval)::integer, fallback)
$$;

CREATE OR REPLACE FUNCTION checkout.setting_integer(name text, fallback integer) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(nullif(current_setting(name, true), '')::integer, fallback)
$$;

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

CREATE OR REPLACE FUNCTION checkout.track_customer_email() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_normalized text;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.email IS NOT DISTINCT FROM OLD.email THEN
    RETURN NULL;
  END IF;
  v_normalized := checkout.normalize_email(NEW.email);
  INSERT INTO checkout.customer_email_variants
    (organization_id, customer_id, email, email_normalized, email_domain, rules_version)
  VALUES (NEW.organization_id, NEW.id, NEW.email, v_normalized, split_part(v_normalized, '@', 2),
          checkout.email_rules_version())
  ON CONFLICT (organization_id, customer_id, lower(email)) DO NOTHING;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION checkout.merge_duplicate_email_variant() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  UPDATE checkout.customer_email_variants v
     SET id = NEW.id, email = NEW.email, email_normalized = NEW.email_normalized,
         email_domain = NEW.email_domain, rules_version = NEW.rules_version, created_at = NEW.created_at
   WHERE v.organization_id = NEW.organization_id AND v.customer_id = NEW.customer_id
     AND lower(v.email) = lower(NEW.email) AND v.created_at > NEW.created_at;
  IF FOUND OR EXISTS (SELECT 1 FROM checkout.customer_email_variants v
                      WHERE v.organization_id = NEW.organization_id AND v.customer_id = NEW.customer_id
                        AND lower(v.email) = lower(NEW.email)) THEN
    RETURN NULL;
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION checkout.guard_refund_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed', 'canceled')) THEN
    RAISE EXCEPTION 'refund status cannot change from % to %', OLD.status, NEW.status
      USING ERRCODE = 'triggered_action_exception',
            DETAIL = format('refund_id: %s, stripe_refund_id: %s', OLD.id, OLD.stripe_refund_id),
            HINT = 'A refund moves from pending to succeeded, failed or canceled, once.';
  END IF;
  IF NEW.status = 'succeeded' AND OLD.status <> 'succeeded' THEN
    NEW.completed_at := coalesce(NEW.completed_at, now());
  END IF;
  RETURN NEW;
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

CREATE OR REPLACE FUNCTION checkout.renormalize_email_variants() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH changed AS (
    UPDATE checkout.customer_email_variants v
       SET email_normalized = n.normalized, email_domain = split_part(n.normalized, '@', 2),
           rules_version = checkout.email_rules_version()
      FROM (SELECT id, checkout.normalize_email(email) AS normalized
              FROM checkout.customer_email_variants) n
     WHERE n.id = v.id
       AND (v.rules_version <> checkout.email_rules_version() OR v.email_normalized <> n.normalized)
    RETURNING 1)
  SELECT count(*) FROM changed
$$;

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

CREATE OR REPLACE FUNCTION checkout.enqueue_reconciliation(p_type text, p_reference_id text, p_details jsonb DEFAULT '{}',
  p_priority integer DEFAULT 5, p_organization_id uuid DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_id uuid;
BEGIN
  IF p_type IS NULL OR p_reference_id IS NULL THEN
    RAISE EXCEPTION 'argument % must not be NULL', CASE WHEN p_type IS NULL THEN 'p_type' ELSE 'p_reference_id' END
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF length(p_type) NOT BETWEEN 1 AND 100 OR length(p_reference_id) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'p_type must be 1 to 100 characters and p_reference_id 1 to 255'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('lengths: %s, %s', length(p_type), length(p_reference_id));
  END IF;
  IF p_priority IS NULL OR p_priority NOT BETWEEN 1 AND 10 THEN
    RAISE EXCEPTION 'p_priority must be 1 (most urgent) to 10' USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('priority: %s', p_priority);
  END IF;
  IF p_details IS NOT NULL AND jsonb_typeof(p_details) <> 'object' THEN
    RAISE EXCEPTION 'p_details must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_organization_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM checkout.organizations WHERE id = p_organization_id) THEN
    RAISE EXCEPTION 'organization not found' USING ERRCODE = 'no_data_found',
      DETAIL = format('organization_id: %s', p_organization_id);
  END IF;
  INSERT INTO checkout.reconciliation_queue AS q (organization_id, type, reference_id, details, priority)
  VALUES (p_organization_id, p_type, p_reference_id, coalesce(p_details, '{}'), p_priority)
  ON CONFLICT (type, reference_id) WHERE status IN ('pending', 'processing', 'failed') DO UPDATE
  SET details = q.details || EXCLUDED.details, priority = least(q.priority, EXCLUDED.priority), updated_at = now()
  RETURNING q.id INTO v_id;
  RETURN v_id;
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

CREATE OR REPLACE FUNCTION checkout.claim_reconciliation(p_batch integer, p_worker text) RETURNS SETOF checkout.reconciliation_queue
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF p_batch IS NULL OR p_batch < 0 OR p_worker IS NULL OR p_worker = '' THEN
    RAISE EXCEPTION 'p_batch must be >= 0 and p_worker a non-empty name'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('p_batch: %s, p_worker: %s', p_batch, p_worker);
  END IF;
  RETURN QUERY
  WITH due AS (
    SELECT id FROM checkout.reconciliation_queue
    WHERE (status = 'pending' AND (next_retry_at IS NULL OR next_retry_at <= now()))
       OR (status = 'failed' AND next_retry_at <= now())
       OR (status = 'processing' AND locked_until < now())
    ORDER BY priority, created_at
    LIMIT p_batch FOR UPDATE SKIP LOCKED)
  UPDATE checkout.reconciliation_queue q
  SET status = 'processing', locked_by = p_worker,
      locked_until = now() + make_interval(secs => checkout.setting_seconds('checkout.reconciliation_lease', 300)),
      updated_at = now()
  FROM due WHERE q.id = due.id
  RETURNING q.*;
END $$;

CREATE OR REPLACE FUNCTION checkout.fail_reconciliation(p_id uuid, p_error text) RETURNS checkout.reconciliation_queue
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE checkout.reconciliation_queue
  SET error_count = error_count + 1, error_message = p_error, locked_by = NULL, locked_until = NULL,
      updated_at = now(),
      status = CASE WHEN error_count + 1 >= checkout.setting_integer('checkout.reconciliation_max_attempts', 10)
                    THEN 'manual_review' ELSE 'failed' END,
      next_retry_at = CASE WHEN error_count + 1 >= checkout.setting_integer('checkout.reconciliation_max_attempts', 10)
                    THEN NULL
                    ELSE now() + make_interval(secs => least(86400, (15 + power(error_count + 1, 4)) * (0.9 + random() * 0.2))) END
  WHERE id = p_id AND status IN ('processing', 'pending', 'failed')
  RETURNING *
$$;

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

CREATE OR REPLACE FUNCTION checkout.claim_webhook_events(p_batch integer, p_types text[]) RETURNS SETOF checkout.webhook_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_lease interval := make_interval(secs => checkout.setting_seconds('checkout.webhook_lease', 300));
BEGIN
  IF p_batch IS NULL OR p_batch < 0 THEN
    RAISE EXCEPTION 'p_batch must be >= 0' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Expired leases (idx_webhook_events_processing); rows another claimer is handling are skipped.
  UPDATE checkout.webhook_events e
  SET status = CASE WHEN e.attempts >= checkout.setting_integer('checkout.reconciliation_max_attempts', 10)
                    THEN 'failed' ELSE 'deferred' END,
      error_message = format('claim lease expired (attempt %s)', e.attempts), updated_at = now()
  FROM (SELECT x.id FROM checkout.webhook_events x
        WHERE x.status = 'processing' AND x.updated_at < now() - v_lease FOR UPDATE SKIP LOCKED) expired
  WHERE e.id = expired.id;
  UPDATE checkout.webhook_events e SET status = 'stale', updated_at = now()
  FROM (SELECT x.id FROM checkout.webhook_events x
        WHERE x.status IN ('pending', 'deferred') AND x.object_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM checkout.webhook_events n
                      WHERE n.organization_id = x.organization_id AND n.provider = x.provider AND n.object_id = x.object_id
                        AND n.status = 'processed' AND n.event_created_at > x.event_created_at)
        FOR UPDATE SKIP LOCKED) superseded
  WHERE e.id = superseded.id;
  -- The type filter is the only text added to the statement; values are bound.
  RETURN QUERY EXECUTE format($q$
  WITH due AS (
    SELECT e.id FROM checkout.webhook_events e
    WHERE e.status IN ('pending', 'deferred') %s
      AND NOT EXISTS (SELECT 1 FROM checkout.webhook_events o
                      WHERE o.organization_id = e.organization_id AND o.provider = e.provider AND o.object_id = e.object_id
                        AND o.id <> e.id
                        AND (o.status = 'processing'
                             OR (o.status IN ('pending', 'deferred') AND o.event_created_at < e.event_created_at)
                             OR (o.status = 'processed' AND o.event_created_at > e.event_created_at)))
    ORDER BY e.event_created_at, e.created_at
    LIMIT $1 FOR UPDATE SKIP LOCKED)
  UPDATE checkout.webhook_events e SET status = 'processing', attempts = e.attempts + 1, updated_at = now()
  FROM due WHERE e.id = due.id
  RETURNING e.*$q$, CASE WHEN p_types IS NOT NULL THEN 'AND e.type = ANY ($2)' ELSE '' END)
  USING p_batch, p_types;
END $$;

CREATE OR REPLACE FUNCTION checkout.fail_webhook_event(p_id uuid, p_error text, p_attempt integer) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE checkout.webhook_events
  SET status = CASE WHEN attempts >= checkout.setting_integer('checkout.reconciliation_max_attempts', 10) THEN 'failed' ELSE 'deferred' END,
      error_message = p_error, updated_at = now()
  WHERE id = p_id AND status = 'processing' AND (p_attempt IS NULL OR attempts = p_attempt)
  RETURNING status
$$;

CREATE OR REPLACE FUNCTION checkout.complete_webhook_event(p_id uuid, p_attempt integer) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH done AS (
    UPDATE checkout.webhook_events SET status = 'processed', processed_at = now(), error_message = NULL, updated_at = now()
    WHERE id = p_id AND status = 'processing' AND (p_attempt IS NULL OR attempts = p_attempt) RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM done)
$$;

CREATE OR REPLACE FUNCTION checkout.record_webhook_event(p_organization_id uuid, p_provider_event_id text, p_type text,
  p_payload jsonb, p_event_created_at timestamptz, p_provider text DEFAULT 'stripe') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_object text;
  v_id uuid;
  v_status text;
BEGIN
  IF p_organization_id IS NULL OR p_provider_event_id IS NULL OR p_type IS NULL OR p_provider IS NULL
     OR p_event_created_at IS NULL THEN
    RAISE EXCEPTION 'p_organization_id, p_provider_event_id, p_type, p_event_created_at and p_provider must not be NULL'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF p_provider_event_id = '' OR p_type = '' OR jsonb_typeof(coalesce(p_payload, '{}')) <> 'object' THEN
    RAISE EXCEPTION 'event ids and types must not be empty, and the payload must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('provider_event_id: %s, type: %s', p_provider_event_id, p_type);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM checkout.organizations WHERE id = p_organization_id) THEN
    RAISE EXCEPTION 'organization not found' USING ERRCODE = 'no_data_found',
      DETAIL = format('organization_id: %s', p_organization_id);
  END IF;
  v_object := coalesce(p_payload #>> '{data,object,id}', p_payload ->> 'object_id');
  v_status := CASE WHEN v_object IS NOT NULL AND EXISTS (
      SELECT 1 FROM checkout.webhook_events e
      WHERE e.organization_id = p_organization_id AND e.provider = p_provider AND e.object_id = v_object
        AND e.status = 'processed' AND e.event_created_at > p_event_created_at)
    THEN 'stale' ELSE 'pending' END;
  INSERT INTO checkout.webhook_events (organization_id, provider, provider_event_id, type, object_id, status, payload, event_created_at)
  VALUES (p_organization_id, p_provider, p_provider_event_id, p_type, v_object, v_status, coalesce(p_payload, '{}'), p_event_created_at)
  ON CONFLICT (organization_id, provider, provider_event_id) DO NOTHING
  RETURNING id INTO v_id;
  IF v_id IS NULL THEN
    SELECT id, status INTO v_id, v_status FROM checkout.webhook_events
    WHERE organization_id = p_organization_id AND provider = p_provider AND provider_event_id = p_provider_event_id;
    RETURN jsonb_build_object('duplicate', true, 'event_id', v_id, 'status', v_status);
  END IF;
  RETURN jsonb_build_object('duplicate', false, 'event_id', v_id, 'status', v_status);
END $$;

CREATE OR REPLACE FUNCTION checkout.cleanup_expired_idempotency_keys(p_batch integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_deleted integer;
BEGIN
  WITH old AS (
    SELECT id FROM checkout.idempotency_keys
    WHERE expires_at < now() AND status <> 'processing'
    ORDER BY expires_at LIMIT p_batch FOR UPDATE SKIP LOCKED)
  DELETE FROM checkout.idempotency_keys k USING old WHERE k.id = old.id;
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  RETURN v_deleted;
END $$;

CREATE OR REPLACE FUNCTION checkout.update_refund_status(p_organization_id uuid, p_stripe_refund_id text, p_status text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_row checkout.refunds;
BEGIN
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
DROP FUNCTION checkout.complete_webhook_event(uuid, uuid, integer), checkout.fail_webhook_event(uuid, uuid, text, integer);
DROP FUNCTION checkout.routed_here(boolean);

CREATE OR REPLACE FUNCTION checkout.check_invariants()
RETURNS TABLE (invariant text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- every subscription has its 'created' audit row
  SELECT 'subscription without its created audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE NOT EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.subscription_id = s.id AND c.change_type = 'created')
  UNION ALL
  -- ...and only one: a path that wrote the audit row itself and let the trigger write another would
  -- leave two. Rows followed by a 'deleted' row belong to an earlier life of a re-inserted id.
  SELECT 'subscription with more than one created audit row', format('%s (%s)', c.subscription_id, count(*))
  FROM checkout.subscription_changes c
  WHERE c.change_type = 'created'
    AND EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.id = c.subscription_id)
    AND NOT EXISTS (SELECT 1 FROM checkout.subscription_changes d
                    WHERE d.subscription_id = c.subscription_id AND d.change_type = 'deleted' AND d.created_at >= c.created_at)
  GROUP BY c.subscription_id HAVING count(*) > 1
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

COMMENT ON FUNCTION checkout.check_invariants() IS 'Consistency checks (audit rows: one created row per subscription, status as last recorded; trials, one active subscription, grants of ended subscriptions, counters, idempotency keys, email variants): one row per violation.';

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
    ('index', 'idx_webhook_events_processing', 'webhook_events'),
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
    ('function', 'checkout.claim_webhook_events(integer, text[])', NULL),
    ('function', 'checkout.complete_webhook_event(uuid)', NULL),
    ('function', 'checkout.complete_webhook_event(uuid, integer)', NULL),
    ('function', 'checkout.fail_webhook_event(uuid, text)', NULL),
    ('function', 'checkout.fail_webhook_event(uuid, text, integer)', NULL),
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
