-- checkout 0.5.0 -> 0.6.0: hardening (issue 15). What an application role, or a DBA writing SQL,
-- could do to break checkout's promises, closed:
--  * the SECURITY DEFINER trigger functions run only as checkout's own triggers (39P01 on any other
--    table) and only their owner may attach them (EXECUTE revoked from PUBLIC);
--  * pg_restore is recognized by its schema-qualified COPY run by a superuser (checkout.restoring):
--    the audit, stamping and refund triggers stand aside only then;
--  * provider ids (stripe_subscription_id, stripe_session_id, stripe_refund_id) are unique per
--    organization; reconciliation items are per organization;
--  * check_trial_eligibility(p_organization_id, p_customer_id, p_product_id, p_email): the
--    organization-scoped form, for applications; the seed's form gets p_email DEFAULT NULL (its
--    existing grants are kept: revoke it from application roles);
--  * the refund bound holds at every isolation level and for direct writes (a trigger on refunds,
--    which also checks the currency; another on payments, whose amount and currency must cover
--    their refunds);
--  * an ended subscription says when: CHECKs check_ended_stamped and check_canceled_stamped, and a
--    canceled or expired subscription inserted directly gets its canceled_at/ended_at;
--  * amounts are at most 999,999,999,999 minor units (CHECK check_amount_in_range on subscriptions,
--    payment_intents, refunds and checkout_sessions); product metrics are computed in numeric;
--  * setting_seconds()/setting_integer() are native, so a lifetime a non-superuser SET before the
--    library loaded is discarded;
--  * check_invariants() reports a payment refunded beyond its amount.
-- And the write-parity work (issue 16): tenant-first keys (every primary and unique key of a
-- tenant table starts with organization_id; provider ids unique per organization where set), the
-- organization foreign keys a composite one implies dropped, indexes rebuilt tenant-first where
-- their query names the organization.
-- Also in the library (no SQL change): lifetimes are superuser settings, jsonb arguments are read
-- without XX000, p_features is bounded and linear, normalize_email drops characters that render as
-- nothing (rules version 2: run SELECT checkout.renormalize_email_variants() after the update, and
-- REINDEX your own indexes on normalize_email()).
-- Rows: a canceled or expired subscription without canceled_at/ended_at (0.5.0 let direct INSERTs
-- leave them NULL) gets its updated_at there, without audit (a repair, not a change); nothing else.
-- Payments already refunded beyond their amount are listed in a WARNING and by check_invariants().
-- The update stops, changing nothing, if a table holds an amount above the bound.
-- Locks: every tenant table is held under ACCESS EXCLUSIVE while its keys and indexes are rebuilt
-- and its foreign keys re-validated (docs/CHANGELOG.md gives the time per million rows); the new CHECKs
-- scan subscriptions, checkout_sessions, payment_intents and refunds.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.6.0'" to load this file. \quit

DO $$
DECLARE
  v_table text;
  v_ids text;
BEGIN
  FOREACH v_table IN ARRAY ARRAY['subscriptions', 'payment_intents', 'refunds', 'checkout_sessions'] LOOP
    EXECUTE format('SELECT string_agg(id::text, '', '') FROM (SELECT id FROM checkout.%I WHERE amount > 999999999999 LIMIT 10) t', v_table)
      INTO v_ids;
    IF v_ids IS NOT NULL THEN
      RAISE EXCEPTION 'checkout 0.6.0 bounds amounts to 999999999999 minor units; checkout.% has larger ones', v_table
        USING ERRCODE = 'check_violation', DETAIL = format('ids (first 10): %s', v_ids),
              HINT = 'Correct or delete those rows, then update again.';
    END IF;
  END LOOP;
  SELECT string_agg(format('%s/%s', p.organization_id, p.stripe_payment_intent_id), ', ') INTO v_ids
  FROM checkout.payment_intents p
  WHERE p.amount < (SELECT coalesce(sum(r.amount), 0) FROM checkout.refunds r
                    WHERE r.organization_id = p.organization_id AND r.payment_intent_id = p.stripe_payment_intent_id
                      AND r.status IN ('pending', 'succeeded'));
  IF v_ids IS NOT NULL THEN
    RAISE WARNING 'payments refunded beyond their amount (made under 0.5.0): %', v_ids
      USING HINT = 'check_invariants() lists them; cancel or fail the refunds that were never paid out.';
  END IF;
END $$;

-- The stamps of ended subscriptions 0.5.0 let direct INSERTs leave NULL, repaired without firing the
-- triggers (this is not a change of the subscription, so no audit row).
SET LOCAL session_replication_role = replica;
UPDATE checkout.subscriptions
SET ended_at = coalesce(ended_at, updated_at),
    canceled_at = CASE WHEN status = 'canceled' THEN coalesce(canceled_at, updated_at) ELSE canceled_at END
WHERE (status IN ('canceled', 'expired') AND ended_at IS NULL) OR (status = 'canceled' AND canceled_at IS NULL);
SET LOCAL session_replication_role = origin;

ALTER TABLE checkout.subscriptions ADD CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999),
  ADD CONSTRAINT check_ended_stamped CHECK (status NOT IN ('canceled', 'expired') OR ended_at IS NOT NULL),
  ADD CONSTRAINT check_canceled_stamped CHECK (status <> 'canceled' OR canceled_at IS NOT NULL);
ALTER TABLE checkout.checkout_sessions ADD CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999);
ALTER TABLE checkout.refunds ADD CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999);
ALTER TABLE checkout.payment_intents ADD CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999);

DROP INDEX checkout.reconciliation_queue_open_item;
CREATE UNIQUE INDEX reconciliation_queue_open_item ON checkout.reconciliation_queue (organization_id, type, reference_id)
  NULLS NOT DISTINCT WHERE status IN ('pending', 'processing', 'failed');

-- Native functions: what a pg_restore COPY is; the jobs' settings, read after the library is loaded.
CREATE FUNCTION checkout."restoring"(
	"p_table" TEXT /* &str */
) RETURNS bool /* bool */
VOLATILE STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'restoring_wrapper';
-- Native and without the fallback argument: the defaults live with the settings (src/gucs.rs).
-- Their callers (below) are replaced with the calls of one argument.
DROP FUNCTION checkout.setting_seconds(text, integer), checkout.setting_integer(text, integer);
CREATE FUNCTION checkout."setting_seconds"(
	"name" TEXT /* &str */
) RETURNS INT /* i32 */
STABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'setting_seconds_wrapper';
CREATE FUNCTION checkout."setting_integer"(
	"name" TEXT /* &str */
) RETURNS INT /* i32 */
STABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'setting_integer_wrapper';


-- Tenant-first keys (issue 16). Every primary and unique key of a tenant table starts with
-- organization_id: PRIMARY KEY (organization_id, id) replaces both the (id) key and the
-- (organization_id, id) unique; idempotency keys are keyed by (organization_id, key); provider ids
-- are unique per organization where they are set. The composite foreign keys are re-created on
-- the new keys; the organization foreign keys that a composite one already implies are dropped
-- (deleting an organization still cascades through customers and payments). Each index is
-- rebuilt tenant-first where its query names the organization (see sql/schema.sql).
-- Locks: every tenant table is rewritten-indexed under ACCESS EXCLUSIVE; docs/CHANGELOG.md gives the
-- time per million rows.
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

ALTER TABLE checkout.users DROP CONSTRAINT users_pkey, DROP CONSTRAINT users_org_id_key,
  ADD CONSTRAINT users_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.customers DROP CONSTRAINT customers_pkey, DROP CONSTRAINT customers_org_id_key,
  ADD CONSTRAINT customers_pkey PRIMARY KEY (organization_id, id) INCLUDE (deleted_at);
ALTER TABLE checkout.products DROP CONSTRAINT products_pkey, DROP CONSTRAINT products_org_id_key,
  ADD CONSTRAINT products_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.features DROP CONSTRAINT features_pkey, DROP CONSTRAINT features_org_id_key,
  ADD CONSTRAINT features_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.subscriptions DROP CONSTRAINT subscriptions_pkey, DROP CONSTRAINT subscriptions_org_id_key,
  DROP CONSTRAINT subscriptions_stripe_subscription_id_key,
  ADD CONSTRAINT subscriptions_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.checkout_sessions DROP CONSTRAINT checkout_sessions_pkey, DROP CONSTRAINT checkout_sessions_org_id_key,
  DROP CONSTRAINT checkout_sessions_stripe_session_id_key,
  ADD CONSTRAINT checkout_sessions_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.payment_intents DROP CONSTRAINT payment_intents_pkey, DROP CONSTRAINT payment_intents_org_id_key,
  ADD CONSTRAINT payment_intents_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.feature_grants DROP CONSTRAINT feature_grants_pkey, DROP CONSTRAINT unique_feature_grant,
  DROP CONSTRAINT feature_grants_organization_id_fkey,
  ADD CONSTRAINT feature_grants_pkey PRIMARY KEY (organization_id, id),
  ADD CONSTRAINT unique_feature_grant UNIQUE (organization_id, subscription_id, feature_id, customer_id);
ALTER TABLE checkout.webhook_events DROP CONSTRAINT webhook_events_pkey,
  ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey, DROP CONSTRAINT idempotency_keys_org_key_key,
  ADD CONSTRAINT idempotency_keys_org_key_key PRIMARY KEY (organization_id, key);
ALTER TABLE checkout.trial_history DROP CONSTRAINT trial_history_pkey, DROP CONSTRAINT trial_history_organization_id_fkey,
  ADD CONSTRAINT trial_history_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.customer_email_variants DROP CONSTRAINT customer_email_variants_pkey,
  ADD CONSTRAINT customer_email_variants_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.subscription_changes DROP CONSTRAINT subscription_changes_pkey,
  ADD CONSTRAINT subscription_changes_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE checkout.refunds DROP CONSTRAINT refunds_pkey, DROP CONSTRAINT refunds_stripe_refund_id_key,
  DROP CONSTRAINT refunds_organization_id_fkey,
  ADD CONSTRAINT refunds_pkey PRIMARY KEY (organization_id, id);

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

DROP INDEX checkout.idx_customers_email_org, checkout.idx_customers_external_id_org, checkout.idx_customers_stripe_id,
  checkout.idx_subscriptions_customer_product, checkout.idx_subscriptions_active, checkout.idx_subscriptions_ending,
  checkout.idx_subscriptions_trial_ending, checkout.idx_subscriptions_product, checkout.idx_checkout_sessions_customer,
  checkout.idx_payment_intents_subscription, checkout.idx_payment_intents_customer, checkout.idx_payment_intents_session,
  checkout.idx_feature_grants_customer, checkout.idx_feature_grants_subscription, checkout.idx_feature_grants_feature,
  checkout.idx_idempotency_keys_status, checkout.idx_trial_history_customer, checkout.idx_trial_history_product,
  checkout.idx_trial_history_subscription, checkout.idx_subscription_changes_sub, checkout.idx_subscription_changes_changed_by,
  checkout.idx_refunds_payment, checkout.idx_refunds_subscription;
CREATE INDEX customers_id_idx ON checkout.customers (id) INCLUDE (organization_id, deleted_at);
CREATE INDEX idx_customers_email_org ON checkout.customers (organization_id, email) WHERE deleted_at IS NULL;
CREATE INDEX idx_customers_external_id_org ON checkout.customers (organization_id, external_id)
  WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX idx_customers_stripe_id ON checkout.customers (organization_id, stripe_customer_id)
  WHERE stripe_customer_id IS NOT NULL;
CREATE UNIQUE INDEX subscriptions_stripe_subscription_id_key ON checkout.subscriptions (organization_id, stripe_subscription_id)
  WHERE stripe_subscription_id IS NOT NULL;
CREATE INDEX idx_subscriptions_customer_product ON checkout.subscriptions (organization_id, customer_id, product_id);
CREATE INDEX idx_subscriptions_active ON checkout.subscriptions (organization_id, customer_id)
  WHERE status IN ('active', 'trialing');
CREATE INDEX idx_subscriptions_ending ON checkout.subscriptions (current_period_end) WHERE status = 'active';
CREATE INDEX idx_subscriptions_trial_ending ON checkout.subscriptions (trial_end)
  WHERE status = 'trialing' AND trial_end IS NOT NULL;
CREATE INDEX idx_subscriptions_product ON checkout.subscriptions (organization_id, product_id, status);
CREATE UNIQUE INDEX checkout_sessions_stripe_session_id_key ON checkout.checkout_sessions (organization_id, stripe_session_id)
  WHERE stripe_session_id IS NOT NULL;
CREATE INDEX idx_checkout_sessions_customer ON checkout.checkout_sessions (organization_id, customer_id, created_at DESC);
CREATE INDEX idx_payment_intents_subscription ON checkout.payment_intents (organization_id, subscription_id)
  WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_payment_intents_customer ON checkout.payment_intents (organization_id, customer_id)
  WHERE customer_id IS NOT NULL;
CREATE INDEX idx_payment_intents_session ON checkout.payment_intents (organization_id, checkout_session_id)
  WHERE checkout_session_id IS NOT NULL;
CREATE INDEX idx_feature_grants_customer ON checkout.feature_grants (organization_id, customer_id, feature_id);
CREATE INDEX idx_feature_grants_feature ON checkout.feature_grants (organization_id, feature_id);
CREATE INDEX idx_webhook_events_id ON checkout.webhook_events (id);
CREATE INDEX idx_idempotency_keys_status ON checkout.idempotency_keys (status) WHERE status <> 'completed';
CREATE INDEX idx_trial_history_customer ON checkout.trial_history (organization_id, customer_id);
CREATE INDEX idx_trial_history_product ON checkout.trial_history (organization_id, product_id);
CREATE INDEX idx_trial_history_subscription ON checkout.trial_history (organization_id, subscription_id)
  WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_subscription_changes_sub ON checkout.subscription_changes (organization_id, subscription_id, created_at);
CREATE INDEX idx_subscription_changes_changed_by ON checkout.subscription_changes (organization_id, changed_by)
  WHERE changed_by IS NOT NULL;
CREATE UNIQUE INDEX refunds_stripe_refund_id_key ON checkout.refunds (organization_id, stripe_refund_id)
  WHERE stripe_refund_id IS NOT NULL;
CREATE INDEX idx_refunds_payment ON checkout.refunds (organization_id, payment_intent_id);
CREATE INDEX idx_refunds_subscription ON checkout.refunds (organization_id, subscription_id) WHERE subscription_id IS NOT NULL;

-- The write path's CHECK value lists call native functions (src/check_rules.rs): a constraint's
-- expression is re-read and planned on every statement that writes its table. Same names, same rows.
CREATE FUNCTION checkout.is_subscription_status(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'is_subscription_status_wrapper';
CREATE FUNCTION checkout.is_billing_interval(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'is_billing_interval_wrapper';
CREATE FUNCTION checkout.is_change_type(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'is_change_type_wrapper';
CREATE FUNCTION checkout.is_actor_type(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'is_actor_type_wrapper';
CREATE FUNCTION checkout.is_idempotency_status(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'is_idempotency_status_wrapper';
ALTER TABLE checkout.subscriptions
  DROP CONSTRAINT subscriptions_status_check,
  ADD CONSTRAINT subscriptions_status_check CHECK (checkout.is_subscription_status(status)),
  DROP CONSTRAINT subscriptions_interval_check,
  ADD CONSTRAINT subscriptions_interval_check CHECK (checkout.is_billing_interval("interval"));
ALTER TABLE checkout.subscription_changes
  DROP CONSTRAINT subscription_changes_change_type_check,
  ADD CONSTRAINT subscription_changes_change_type_check CHECK (checkout.is_change_type(change_type)),
  DROP CONSTRAINT subscription_changes_changed_by_type_check,
  ADD CONSTRAINT subscription_changes_changed_by_type_check CHECK (checkout.is_actor_type(changed_by_type));
ALTER TABLE checkout.idempotency_keys
  DROP CONSTRAINT idempotency_keys_status_check,
  ADD CONSTRAINT idempotency_keys_status_check CHECK (checkout.is_idempotency_status(status));

-- The trigger functions: native (no PL/pgSQL on a write path, no SET search_path: every name
-- they use is qualified, every operator pinned), and run only on their own table.
CREATE OR REPLACE FUNCTION checkout.guard_subscription_update() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'guard_subscription_update_wrapper';
CREATE OR REPLACE FUNCTION checkout.audit_subscription_change() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'audit_subscription_change_wrapper';
CREATE OR REPLACE FUNCTION checkout.track_customer_email() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'track_customer_email_wrapper';
CREATE OR REPLACE FUNCTION checkout.merge_duplicate_email_variant() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'merge_duplicate_email_variant_wrapper';
CREATE OR REPLACE FUNCTION checkout.guard_refund_status() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'guard_refund_status_wrapper';
CREATE FUNCTION checkout.guard_payment_refunded() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'guard_payment_refunded_wrapper';

-- Tenant-first lookups in the jobs.
CREATE OR REPLACE FUNCTION checkout.end_subscription_periods(p_batch integer DEFAULT 1000) RETURNS integer
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

CREATE OR REPLACE FUNCTION checkout.renormalize_email_variants() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH changed AS (
    UPDATE checkout.customer_email_variants v
       SET email_normalized = n.normalized, email_domain = split_part(n.normalized, '@', 2),
           rules_version = checkout.email_rules_version()
      FROM (SELECT organization_id, id, checkout.normalize_email(email) AS normalized
              FROM checkout.customer_email_variants) n
     WHERE n.organization_id = v.organization_id AND n.id = v.id
       AND (v.rules_version <> checkout.email_rules_version() OR v.email_normalized <> n.normalized)
    RETURNING 1)
  SELECT count(*) FROM changed
$$;

CREATE TRIGGER subscriptions_stamp_ended BEFORE INSERT ON checkout.subscriptions
  FOR EACH ROW WHEN (NEW.status IN ('canceled', 'expired') AND NOT checkout.restoring('subscriptions'))
  EXECUTE FUNCTION checkout.guard_subscription_update();
DROP TRIGGER refunds_guard_status ON checkout.refunds;
CREATE TRIGGER refunds_guard_status BEFORE INSERT OR UPDATE ON checkout.refunds
  FOR EACH ROW WHEN (NOT checkout.restoring('refunds')) EXECUTE FUNCTION checkout.guard_refund_status();
CREATE TRIGGER payments_guard_refunded BEFORE UPDATE OF amount, currency ON checkout.payment_intents
  FOR EACH ROW WHEN (NEW.amount < OLD.amount OR NEW.currency <> OLD.currency)
  EXECUTE FUNCTION checkout.guard_payment_refunded();
REVOKE ALL ON FUNCTION checkout.guard_subscription_update(), checkout.audit_subscription_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION checkout.track_customer_email(), checkout.merge_duplicate_email_variant() FROM PUBLIC;
REVOKE ALL ON FUNCTION checkout.guard_refund_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION checkout.guard_payment_refunded() FROM PUBLIC;

-- Refund ids per organization; the amount bound; reconciliation items per organization; metrics in numeric.
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
  ON CONFLICT (organization_id, type, reference_id) WHERE status IN ('pending', 'processing', 'failed') DO UPDATE
  SET details = q.details || EXCLUDED.details, priority = least(q.priority, EXCLUDED.priority), updated_at = now()
  RETURNING q.id INTO v_id;
  RETURN v_id;
END $$;

CREATE OR REPLACE FUNCTION checkout.refresh_product_metrics(p_batch integer DEFAULT 100) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_done integer := 0;
  v_count integer;
BEGIN
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY stalest NULLS FIRST), '{}') INTO v_orgs FROM (
      SELECT organization_id, CASE WHEN bool_or(metrics_last_calculated_at IS NULL) THEN NULL
                              ELSE min(metrics_last_calculated_at) END AS stalest FROM checkout.products
      WHERE metrics_last_calculated_at IS NULL OR metrics_last_calculated_at < now() - interval '1 day'
      GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  FOREACH v_org IN ARRAY v_orgs LOOP
    -- Every table is named with the organization, so that Citus runs the statement on its node.
    WITH stale AS (
      SELECT organization_id, id FROM checkout.products
      WHERE (metrics_last_calculated_at IS NULL OR metrics_last_calculated_at < now() - interval '1 day')
        AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY metrics_last_calculated_at NULLS FIRST LIMIT p_batch - v_done FOR NO KEY UPDATE SKIP LOCKED),
    figures AS (
      SELECT stale.organization_id, stale.id,
        (SELECT count(*) FROM checkout.subscriptions s WHERE (v_org IS NULL OR s.organization_id = v_org)
           AND s.organization_id = stale.organization_id AND s.product_id = stale.id AND s.status = 'active') AS active,
        (SELECT count(*) FROM checkout.subscriptions s WHERE (v_org IS NULL OR s.organization_id = v_org)
           AND s.organization_id = stale.organization_id AND s.product_id = stale.id AND s.status = 'trialing') AS trialing,
        (SELECT coalesce(jsonb_object_agg(currency, mrr), '{}') FROM (
           -- numeric throughout: no amount, however large, can make the job fail (for every product).
           -- A searched CASE: Citus sends a simple one (CASE x WHEN ...) garbled (citusdata/citus#2862).
           SELECT s.currency, round(sum(s.amount::numeric * CASE WHEN s."interval" = 'day' THEN 30 WHEN s."interval" = 'week' THEN 52.0 / 12
                                                     WHEN s."interval" = 'month' THEN 1 ELSE 1.0 / 12 END / s.interval_count)) AS mrr
           FROM checkout.subscriptions s WHERE (v_org IS NULL OR s.organization_id = v_org)
             AND s.organization_id = stale.organization_id AND s.product_id = stale.id AND s.status = 'active'
           GROUP BY s.currency) m) AS mrr
      FROM stale)
    UPDATE checkout.products p
    SET metrics_active_subscriptions = f.active, metrics_trialing_subscriptions = f.trialing,
        metrics_mrr = f.mrr, metrics_last_calculated_at = now()
    FROM figures f WHERE (v_org IS NULL OR p.organization_id = v_org) AND p.organization_id = f.organization_id AND p.id = f.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_done := v_done + v_count;
    EXIT WHEN v_done >= p_batch;
  END LOOP;
  RETURN v_done;
END $$;

CREATE OR REPLACE FUNCTION checkout.expire_checkout_sessions(p_batch integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_retention interval := make_interval(secs => checkout.setting_seconds('checkout.session_retention'));
  v_expired integer := 0;
  v_deleted integer := 0;
  v_count integer;
BEGIN
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY due), '{}') INTO v_orgs FROM (
      SELECT organization_id, min(expires_at) AS due FROM checkout.checkout_sessions
      WHERE status IN ('pending', 'expired') AND expires_at < now() GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  FOREACH v_org IN ARRAY v_orgs LOOP
    WITH due AS (
      SELECT organization_id, id FROM checkout.checkout_sessions
      WHERE status = 'pending' AND expires_at < now() AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY expires_at LIMIT p_batch - v_expired FOR NO KEY UPDATE SKIP LOCKED)
    UPDATE checkout.checkout_sessions s SET status = 'expired', updated_at = now()
    FROM due WHERE (v_org IS NULL OR s.organization_id = v_org) AND s.organization_id = due.organization_id AND s.id = due.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_expired := v_expired + v_count;
    WITH old AS (
      SELECT organization_id, id FROM checkout.checkout_sessions
      WHERE status = 'expired' AND expires_at < now() - v_retention AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY expires_at LIMIT p_batch - v_deleted FOR UPDATE SKIP LOCKED)
    DELETE FROM checkout.checkout_sessions s USING old
    WHERE (v_org IS NULL OR s.organization_id = v_org) AND s.organization_id = old.organization_id AND s.id = old.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_deleted := v_deleted + v_count;
    EXIT WHEN v_expired >= p_batch AND v_deleted >= p_batch;
  END LOOP;
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
      locked_until = now() + make_interval(secs => checkout.setting_seconds('checkout.reconciliation_lease')),
      updated_at = now()
  FROM due WHERE q.id = due.id
  RETURNING q.*;
END $$;

CREATE OR REPLACE FUNCTION checkout.fail_reconciliation(p_id uuid, p_error text) RETURNS checkout.reconciliation_queue
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE checkout.reconciliation_queue
  SET error_count = error_count + 1, error_message = p_error, locked_by = NULL, locked_until = NULL,
      updated_at = now(),
      status = CASE WHEN error_count + 1 >= checkout.setting_integer('checkout.reconciliation_max_attempts')
                    THEN 'manual_review' ELSE 'failed' END,
      next_retry_at = CASE WHEN error_count + 1 >= checkout.setting_integer('checkout.reconciliation_max_attempts')
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
              THEN coalesce(r.last_run_at, now()) + make_interval(secs => checkout.setting_seconds('checkout.maintenance_interval'))
         END
  FROM unnest(ARRAY['expire_checkout_sessions', 'cleanup_expired_idempotency_keys',
                    'expire_reconciliation_leases', 'end_subscription_periods', 'refresh_product_metrics']) AS j(job)
  LEFT JOIN checkout.maintenance_runs r ON r.job = j.job
$$;

CREATE OR REPLACE FUNCTION checkout.claim_webhook_events(p_batch integer, p_types text[]) RETURNS SETOF checkout.webhook_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_lease interval := make_interval(secs => checkout.setting_seconds('checkout.webhook_lease'));
  v_max_attempts integer := checkout.setting_integer('checkout.reconciliation_max_attempts');
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_claimed integer := 0;
  v_event checkout.webhook_events;
  v_claim text;
BEGIN
  IF p_batch IS NULL OR p_batch < 0 THEN
    RAISE EXCEPTION 'p_batch must be >= 0' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- On a Citus cluster, organization by organization, as the maintenance jobs (sql/maintenance.sql):
  -- those with the oldest waiting event first. Within one, and so for each object, the order and
  -- the guarantees are the single server's.
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY oldest), '{}') INTO v_orgs FROM (
      SELECT organization_id, min(event_created_at) AS oldest FROM checkout.webhook_events
      WHERE status IN ('pending', 'deferred') OR (status = 'processing' AND updated_at < now() - v_lease)
      GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  -- The type filter is the only text added to the statement; values are bound.
  v_claim := format($q$
  WITH due AS (
    SELECT e.organization_id, e.id FROM checkout.webhook_events e
    WHERE e.status IN ('pending', 'deferred') %s AND ($3 IS NULL OR e.organization_id = $3)
      AND NOT EXISTS (SELECT 1 FROM checkout.webhook_events o
                      WHERE ($3 IS NULL OR o.organization_id = $3)
                        AND o.organization_id = e.organization_id AND o.provider = e.provider AND o.object_id = e.object_id
                        AND o.id <> e.id
                        AND (o.status = 'processing'
                             OR (o.status IN ('pending', 'deferred') AND o.event_created_at < e.event_created_at)
                             OR (o.status = 'processed' AND o.event_created_at > e.event_created_at)))
    ORDER BY e.event_created_at, e.created_at
    LIMIT $1 FOR UPDATE SKIP LOCKED)
  UPDATE checkout.webhook_events e SET status = 'processing', attempts = e.attempts + 1, updated_at = now()
  FROM due WHERE ($3 IS NULL OR e.organization_id = $3) AND e.organization_id = due.organization_id AND e.id = due.id
  RETURNING e.*$q$, CASE WHEN p_types IS NOT NULL THEN 'AND e.type = ANY ($2)' ELSE '' END);
  FOREACH v_org IN ARRAY v_orgs LOOP
    -- Expired leases (idx_webhook_events_processing); rows another claimer is handling are skipped.
    UPDATE checkout.webhook_events e
    SET status = CASE WHEN e.attempts >= v_max_attempts THEN 'failed' ELSE 'deferred' END,
        -- no format(): Citus runs no STABLE function on a column of an UPDATE
        error_message = 'claim lease expired (attempt ' || e.attempts::text || ')', updated_at = now()
    FROM (SELECT x.organization_id, x.id FROM checkout.webhook_events x
          WHERE x.status = 'processing' AND x.updated_at < now() - v_lease AND (v_org IS NULL OR x.organization_id = v_org)
          FOR UPDATE SKIP LOCKED) expired
    WHERE (v_org IS NULL OR e.organization_id = v_org) AND e.organization_id = expired.organization_id AND e.id = expired.id;
    UPDATE checkout.webhook_events e SET status = 'stale', updated_at = now()
    FROM (SELECT x.organization_id, x.id FROM checkout.webhook_events x
          WHERE x.status IN ('pending', 'deferred') AND x.object_id IS NOT NULL AND (v_org IS NULL OR x.organization_id = v_org)
            AND EXISTS (SELECT 1 FROM checkout.webhook_events n
                        WHERE (v_org IS NULL OR n.organization_id = v_org)
                          AND n.organization_id = x.organization_id AND n.provider = x.provider AND n.object_id = x.object_id
                          AND n.status = 'processed' AND n.event_created_at > x.event_created_at)
          FOR UPDATE SKIP LOCKED) superseded
    WHERE (v_org IS NULL OR e.organization_id = v_org) AND e.organization_id = superseded.organization_id AND e.id = superseded.id;
    FOR v_event IN EXECUTE v_claim USING p_batch - v_claimed, p_types, v_org
    LOOP
      v_claimed := v_claimed + 1;
      RETURN NEXT v_event;
    END LOOP;
    EXIT WHEN v_claimed >= p_batch; -- after the housekeeping: a batch of 0 still does it
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION checkout.fail_webhook_event(p_id uuid, p_error text, p_attempt integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  -- Read before the UPDATE: Citus runs no function call inside a CASE of one.
  v_max_attempts integer := checkout.setting_integer('checkout.reconciliation_max_attempts');
  v_status text;
BEGIN
  UPDATE checkout.webhook_events
  SET status = CASE WHEN attempts >= v_max_attempts THEN 'failed' ELSE 'deferred' END,
      error_message = p_error, updated_at = now()
  WHERE id = p_id AND status = 'processing' AND (p_attempt IS NULL OR attempts = p_attempt)
  RETURNING status INTO v_status;
  RETURN v_status;
END $$;

CREATE OR REPLACE FUNCTION checkout.complete_webhook_event(p_id uuid, p_attempt integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  -- PL/pgSQL, not SQL: Citus plans no statement of a SQL function with parameters.
  UPDATE checkout.webhook_events SET status = 'processed', processed_at = now(), error_message = NULL, updated_at = now()
  WHERE id = p_id AND status = 'processing' AND (p_attempt IS NULL OR attempts = p_attempt);
  RETURN FOUND;
END $$;

CREATE FUNCTION checkout.complete_webhook_event(p_organization_id uuid, p_id uuid, p_attempt integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM checkout.routed_here(); -- on a Citus node, what its statements need (src/citus.rs)
  UPDATE checkout.webhook_events SET status = 'processed', processed_at = now(), error_message = NULL, updated_at = now()
  WHERE organization_id = p_organization_id AND id = p_id AND status = 'processing'
    AND (p_attempt IS NULL OR attempts = p_attempt);
  RETURN FOUND;
END $$;

CREATE FUNCTION checkout.fail_webhook_event(p_organization_id uuid, p_id uuid, p_error text, p_attempt integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_max_attempts integer := checkout.setting_integer('checkout.reconciliation_max_attempts');
  v_status text;
BEGIN
  PERFORM checkout.routed_here(); -- on a Citus node, what its statements need (src/citus.rs)
  UPDATE checkout.webhook_events
  SET status = CASE WHEN attempts >= v_max_attempts THEN 'failed' ELSE 'deferred' END,
      error_message = p_error, updated_at = now()
  WHERE organization_id = p_organization_id AND id = p_id AND status = 'processing'
    AND (p_attempt IS NULL OR attempts = p_attempt)
  RETURNING status INTO v_status;
  RETURN v_status;
END $$;
REVOKE ALL ON FUNCTION checkout.complete_webhook_event(uuid, uuid, integer), checkout.fail_webhook_event(uuid, uuid, text, integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION checkout.record_webhook_event(p_organization_id uuid, p_provider_event_id text, p_type text,
  p_payload jsonb, p_event_created_at timestamptz, p_provider text DEFAULT 'stripe') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_object text;
  v_id uuid;
  v_status text;
BEGIN
  PERFORM checkout.routed_here(); -- on a Citus node, what its statements need (src/citus.rs)
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
  v_orgs uuid[] := ARRAY[NULL::uuid];
  v_org uuid;
  v_deleted integer := 0;
  v_count integer;
BEGIN
  IF checkout.routed_here(false) THEN
    SELECT coalesce(array_agg(organization_id ORDER BY due), '{}') INTO v_orgs FROM (
      SELECT organization_id, min(expires_at) AS due FROM checkout.idempotency_keys
      WHERE expires_at < now() AND status <> 'processing' GROUP BY organization_id) waiting;
    PERFORM checkout.routed_here(); -- from here on, each statement names one organization
  END IF;
  FOREACH v_org IN ARRAY v_orgs LOOP
    WITH old AS (
      SELECT organization_id, id FROM checkout.idempotency_keys
      WHERE expires_at < now() AND status <> 'processing' AND (v_org IS NULL OR organization_id = v_org)
      ORDER BY expires_at LIMIT p_batch - v_deleted FOR UPDATE SKIP LOCKED)
    DELETE FROM checkout.idempotency_keys k USING old
    WHERE (v_org IS NULL OR k.organization_id = v_org) AND k.organization_id = old.organization_id AND k.id = old.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_deleted := v_deleted + v_count;
    EXIT WHEN v_deleted >= p_batch;
  END LOOP;
  RETURN v_deleted;
END $$;

CREATE OR REPLACE FUNCTION checkout.update_refund_status(p_organization_id uuid, p_stripe_refund_id text, p_status text)
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

CREATE OR REPLACE FUNCTION checkout.check_invariants()
RETURNS TABLE (invariant text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- every subscription has its 'created' audit row ('imported' for one import_seed brought in)
  SELECT 'subscription without its created audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE NOT EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.organization_id = s.organization_id AND c.subscription_id = s.id AND c.change_type IN ('created', 'imported'))
  UNION ALL
  -- ...and only one: a path that wrote the audit row itself and let the trigger write another would
  -- leave two. Rows followed by a 'deleted' row belong to an earlier life of a re-inserted id.
  SELECT 'subscription with more than one created audit row', format('%s (%s)', c.subscription_id, count(*))
  FROM checkout.subscription_changes c
  WHERE c.change_type = 'created'
    AND EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.organization_id = c.organization_id AND s.id = c.subscription_id)
    AND NOT EXISTS (SELECT 1 FROM checkout.subscription_changes d
                    WHERE d.organization_id = c.organization_id AND d.subscription_id = c.subscription_id AND d.change_type = 'deleted' AND d.created_at >= c.created_at)
  GROUP BY c.organization_id, c.subscription_id HAVING count(*) > 1
  UNION ALL
  -- a trialing subscription has its trial recorded
  SELECT 'trialing subscription without trial_history', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status = 'trialing'
    AND NOT EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.organization_id = s.organization_id AND t.subscription_id = s.id)
  UNION ALL
  -- at most one active or trialing subscription per (organization, customer, product)
  SELECT 'duplicate active subscription', format('customer %s, product %s: %s', customer_id, product_id, count(*))
  FROM checkout.subscriptions WHERE status IN ('active', 'trialing')
  GROUP BY organization_id, customer_id, product_id HAVING count(*) > 1
  UNION ALL
  -- grants belong to the subscription's customer and organization
  SELECT 'grant of another customer''s subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.organization_id = g.organization_id AND s.id = g.subscription_id
  WHERE s.customer_id <> g.customer_id
  UNION ALL
  -- the customer counters equal a recount
  SELECT 'customer counters differ from a recount',
         format('customer %s: count %s (recount %s), active %s (recount %s)', c.id, c.subscription_count, r.n,
                c.has_active_subscription, r.active)
  FROM checkout.customers c
  CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(bool_or(s.status IN ('active', 'trialing')), false) AS active
                      FROM checkout.subscriptions s WHERE s.organization_id = c.organization_id AND s.customer_id = c.id) r
  WHERE c.subscription_count <> r.n OR c.has_active_subscription <> r.active
  UNION ALL
  -- an ended subscription grants nothing
  SELECT 'grant in force on an ended subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.organization_id = g.organization_id AND s.id = g.subscription_id
  WHERE s.status IN ('canceled', 'expired') AND g.revoked_at IS NULL
  UNION ALL
  -- every status a subscription is in was reached through an audited change
  SELECT 'subscription status differs from its last audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status IS DISTINCT FROM (
    SELECT coalesce(c.new_values->>'status', c.old_values->>'status') FROM checkout.subscription_changes c
    WHERE c.organization_id = s.organization_id AND c.subscription_id = s.id AND (c.new_values ? 'status') ORDER BY c.created_at DESC, c.change_type = 'created' LIMIT 1)
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
    AND NOT EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.organization_id = k.organization_id AND s.id = (k.response->>'subscription_id')::uuid)
  UNION ALL
  -- no payment refunded (pending or succeeded refunds) beyond its amount
  SELECT 'payment refunded beyond its amount',
         format('payment %s/%s: %s, refunded or pending: %s', p.organization_id, p.stripe_payment_intent_id, p.amount, r.total)
  FROM checkout.payment_intents p
  CROSS JOIN LATERAL (SELECT coalesce(sum(f.amount), 0) AS total FROM checkout.refunds f
                      WHERE f.organization_id = p.organization_id AND f.payment_intent_id = p.stripe_payment_intent_id
                        AND f.status IN ('pending', 'succeeded')) r
  WHERE r.total > p.amount
  UNION ALL
  -- every customer has its current email recorded as a variant
  SELECT 'customer email not recorded in customer_email_variants', c.id::text
  FROM checkout.customers c
  WHERE NOT EXISTS (SELECT 1 FROM checkout.customer_email_variants v
                    WHERE v.organization_id = c.organization_id AND v.customer_id = c.id AND lower(v.email) = lower(c.email))
$$;

COMMENT ON FUNCTION checkout.check_invariants() IS 'Consistency checks (audit rows: one created row per subscription, status as last recorded; trials, one active subscription, grants of ended subscriptions, counters, idempotency keys, refunds within their payment, email variants): one row per violation.';

-- check_trial_eligibility: the seed's form gets the default docs/api.md promised; the
-- organization-scoped form is new.
CREATE OR REPLACE FUNCTION checkout."check_trial_eligibility"(
	"p_customer_id" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"p_product_id" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"p_email" TEXT DEFAULT NULL /* core::option::Option<&str> */
) RETURNS jsonb /* pgrx::datum::json::JsonB */
STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_trial_eligibility_wrapper';
CREATE FUNCTION checkout."check_trial_eligibility"(
	"p_organization_id" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"p_customer_id" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"p_product_id" uuid, /* core::option::Option<pgrx::datum::uuid::Uuid> */
	"p_email" TEXT DEFAULT NULL /* core::option::Option<&str> */
) RETURNS jsonb /* pgrx::datum::json::JsonB */
STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_trial_eligibility_in_organization_wrapper';
REVOKE ALL ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, uuid, text) FROM PUBLIC;
COMMENT ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) IS 'The seed''s form: whether a customer may start a trial of a product: {eligible, reason, customer_id | normalized_email, matched_customer_id}.';
COMMENT ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, uuid, text) IS 'Whether a customer of the organization may start a trial of a product; another organization''s customer is P0002, like a missing one.';

-- import_seed (sql/import.sql): moving a database built by the seed's migrations into checkout.
CREATE FUNCTION checkout."email_is_valid"(
	"email" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'email_is_valid_wrapper';
CREATE FUNCTION checkout."import_seed"(
	"p_source_schema" TEXT, /* Option < & str > */
	"p_dry_run" bool DEFAULT true /* Option < bool > */
) RETURNS TABLE (
	"source_table" TEXT,  /* String */
	"read" bigint,  /* i64 */
	"imported" bigint,  /* i64 */
	"merged" bigint,  /* i64 */
	"refused" bigint  /* i64 */
)
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_seed_wrapper';
CREATE TABLE checkout.import_report (
  source_table text NOT NULL,
  source_id    text,        -- the source row's id; NULL for a column left out
  outcome      text NOT NULL CHECK (outcome IN ('imported', 'merged', 'refused', 'not_imported')),
  reason       text NOT NULL,
  detail       jsonb NOT NULL DEFAULT '{}',
  reported_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_report_table_outcome ON checkout.import_report (source_table, outcome, reason);
REVOKE ALL ON TABLE checkout.import_report FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('checkout.import_report', '');
COMMENT ON TABLE checkout.import_report IS 'What the last real import_seed() run merged, refused or changed, one row each, with the ids involved in detail.';
REVOKE ALL ON FUNCTION checkout.import_seed(text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION checkout.import_seed(text, boolean) IS 'Moves the seed''s tables from a schema into checkout: one row per source table, read = imported + merged + refused. A dry run (the default) writes nothing to checkout''s tables.';
COMMENT ON FUNCTION checkout.email_is_valid(text) IS 'Whether normalize_email accepts the address and it fits customers.email (254 characters).';

-- Scaling out with Citus: checkout.distribute() and the state verify() reports; routed_here() sets
-- what a function's statements need on a Citus node (its callers are replaced above).
CREATE  FUNCTION checkout."routed_here"(
	"p_one_tenant" bool DEFAULT true /* bool */
) RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'routed_here_wrapper';
CREATE OR REPLACE FUNCTION checkout.distributed_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT ARRAY['users', 'customers', 'products', 'features', 'subscriptions', 'checkout_sessions',
               'payment_intents', 'refunds', 'feature_grants', 'trial_history', 'subscription_changes',
               'customer_email_variants', 'idempotency_keys', 'webhook_events']
$$;

CREATE OR REPLACE FUNCTION checkout.distribution_state(OUT state text, OUT ok boolean, OUT detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_tables text[] := checkout.distributed_tables();
  v_distributed integer;
  v_reference boolean;
  v_functions integer;
BEGIN
  IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
    state := 'single server'; ok := true; detail := 'Citus is not installed in this database';
    RETURN;
  END IF;
  -- Citus's catalogs exist only with Citus: read them by dynamic SQL.
  EXECUTE $q$
    SELECT count(*) FILTER (WHERE c.relname = ANY ($1) AND p.partmethod = 'h'
                              AND p.colocationid = (SELECT colocationid FROM pg_dist_partition
                                                    WHERE logicalrelid = 'checkout.users'::regclass)),
           bool_or(c.relname = 'organizations' AND p.partmethod = 'n')
    FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
    WHERE c.relnamespace = 'checkout'::regnamespace$q$
    INTO v_distributed, v_reference USING v_tables;
  EXECUTE $q$
    SELECT count(*) FROM pg_dist_object o JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND o.objid = p.oid
    WHERE p.pronamespace = 'checkout'::regnamespace AND o.distribution_argument_index IS NOT NULL$q$
    INTO v_functions;
  IF v_distributed = 0 AND NOT coalesce(v_reference, false) THEN
    state := 'not distributed'; ok := true;
    detail := 'Citus is installed; checkout''s tables are local (run checkout.distribute() on the coordinator to distribute them)';
  ELSE
    state := 'distributed';
    ok := v_distributed = cardinality(v_tables) AND coalesce(v_reference, false);
    detail := format('organizations %s; %s of %s tenant tables distributed by organization_id in one colocation group; %s functions run on their tenant''s node',
                     CASE WHEN v_reference THEN 'a reference table' ELSE 'NOT a reference table' END,
                     v_distributed, cardinality(v_tables), v_functions);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION checkout.distribute() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_table text;
  v_fk record;
  v_fn record;
  v_done text[] := '{}';
  v_local_fks text := current_setting('citus.enable_local_reference_table_foreign_keys', true);
BEGIN
  IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
    RAISE EXCEPTION 'checkout.distribute() needs Citus'
      USING ERRCODE = 'feature_not_supported', DETAIL = 'The citus extension is not installed in this database.',
            HINT = 'Install Citus on every node, CREATE EXTENSION citus, add the workers, then call checkout.distribute() on the coordinator.';
  END IF;
  IF NOT citus_is_coordinator() THEN
    RAISE EXCEPTION 'checkout.distribute() runs on the coordinator'
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = format('database %s is not a Citus coordinator', current_database());
  END IF;
  IF NOT current_setting('citus.enable_unsafe_triggers')::boolean THEN
    RAISE EXCEPTION 'checkout''s triggers need citus.enable_unsafe_triggers on every node'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'citus.enable_unsafe_triggers is off in this session on the coordinator; it must be on for every node''s sessions',
            HINT = 'ALTER SYSTEM SET citus.enable_unsafe_triggers = on; SELECT pg_reload_conf(); on each node (checkout''s triggers touch only their own tenant''s colocated rows).';
  END IF;
  -- A maintenance job or a claim starting now waits until this commits (citus::after_distribute).
  LOCK TABLE checkout.maintenance_runs IN SHARE MODE;
  -- organizations on every node; the tenant tables referencing it stay local until distributed
  -- below (Citus would otherwise turn them into local tables of its metadata, which the workers
  -- already have from the extension).
  PERFORM set_config('citus.enable_local_reference_table_foreign_keys', 'off', true);
  IF NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'checkout.organizations'::regclass) THEN
    PERFORM create_reference_table('checkout.organizations');
    v_done := v_done || 'organizations: reference table'::text;
  END IF;
  -- Citus cannot SET NULL a column of a foreign key that includes the distribution column: these
  -- become NO ACTION (deleting a subscription, checkout session or user that is still referenced
  -- is refused, 23503, instead of clearing the reference).
  FOR v_fk IN
    SELECT c.conrelid::regclass AS tbl, c.conname, c.confrelid::regclass AS ref,
           (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS cols,
           (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) AS refcols
    FROM pg_constraint c
    WHERE c.connamespace = 'checkout'::regnamespace AND c.contype = 'f' AND c.confdeltype IN ('n', 'd')
    ORDER BY 1, 2
  LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (%s) REFERENCES %s (%s)',
                   v_fk.tbl, v_fk.conname, v_fk.conname, v_fk.cols, v_fk.ref, v_fk.refcols);
    v_done := v_done || format('%s: %s now ON DELETE NO ACTION', v_fk.tbl, v_fk.conname);
  END LOOP;
  FOREACH v_table IN ARRAY checkout.distributed_tables() LOOP
    IF NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = ('checkout.' || v_table)::regclass) THEN
      PERFORM create_distributed_table(('checkout.' || v_table)::regclass, 'organization_id',
                                       colocate_with => CASE WHEN v_table = 'users' THEN 'none' ELSE 'checkout.users' END);
      v_done := v_done || format('%s: distributed by organization_id', v_table);
    END IF;
  END LOOP;
  -- Every function that names its organization (except enqueue_reconciliation: its queue stays on
  -- the coordinator) runs whole on that organization's node when called as a statement of its own
  -- outside a transaction block (Citus delegates no other call; checkout refuses to run one
  -- elsewhere, see citus::require_tenant_node). What its statements need there, checkout sets
  -- itself (citus::Routed): no ALTER FUNCTION here, which Citus would not replay on a new node.
  FOR v_fn IN
    SELECT p.oid::regprocedure AS sig, array_position(p.proargnames, 'p_organization_id') AS arg
    FROM pg_proc p
    WHERE p.pronamespace = 'checkout'::regnamespace AND 'p_organization_id' = ANY (p.proargnames)
      AND p.proname <> 'enqueue_reconciliation'
      AND NOT EXISTS (SELECT FROM pg_dist_object o WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid
                        AND o.distribution_argument_index IS NOT NULL)
    ORDER BY 1
  LOOP
    PERFORM create_distributed_function(v_fn.sig, '$' || v_fn.arg, colocate_with => 'checkout.users');
    v_done := v_done || format('%s: runs on its organization''s node', v_fn.sig);
  END LOOP;
  PERFORM set_config('citus.enable_local_reference_table_foreign_keys', coalesce(v_local_fks, 'on'), true);
  RETURN CASE WHEN cardinality(v_done) = 0 THEN 'already distributed: nothing to do'
              ELSE array_to_string(v_done, E'\n') END;
END $$;

REVOKE ALL ON FUNCTION checkout.distribute(), checkout.routed_here(boolean) FROM PUBLIC;
COMMENT ON FUNCTION checkout.distribute() IS 'On a Citus coordinator: distributes checkout''s tables by organization and delegates each tenant function to its organization''s node. Run again, it changes nothing.';
COMMENT ON FUNCTION checkout.distribution_state() IS 'Whether Citus distributes checkout in this database, and how far (one row; verify() reports it).';

-- verify() lists the new constraints, triggers and functions, checks the trigger functions' ACL,
-- and reports the distribution.
CREATE OR REPLACE FUNCTION checkout.verify()
RETURNS TABLE ("check" text, ok boolean, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $verify$
  WITH expected(kind, name, tbl) AS (
    VALUES
    ('table', 'organizations', NULL),
    ('table', 'users', NULL),
    ('constraint', 'users_pkey', 'users'),
    ('index', 'users_org_email_key', 'users'),
    ('table', 'customers', NULL),
    ('constraint', 'customers_pkey', 'customers'),
    ('index', 'unique_customer_email_per_org', 'customers'),
    ('index', 'unique_external_id_per_org', 'customers'),
    ('index', 'idx_customers_email_org', 'customers'),
    ('index', 'idx_customers_external_id_org', 'customers'),
    ('index', 'idx_customers_stripe_id', 'customers'),
    ('table', 'products', NULL),
    ('constraint', 'products_pkey', 'products'),
    ('table', 'features', NULL),
    ('constraint', 'features_pkey', 'features'),
    ('constraint', 'features_org_key_key', 'features'),
    ('table', 'subscriptions', NULL),
    ('constraint', 'subscriptions_pkey', 'subscriptions'),
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
    ('constraint', 'checkout_sessions_pkey', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_customer_id_fkey', 'checkout_sessions'),
    ('constraint', 'checkout_sessions_product_id_fkey', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_expires', 'checkout_sessions'),
    ('index', 'idx_checkout_sessions_customer', 'checkout_sessions'),
    ('index', 'idx_products_metrics_stale', 'products'),
    ('index', 'idx_checkout_sessions_expired', 'checkout_sessions'),
    ('table', 'payment_intents', NULL),
    ('constraint', 'payment_intents_pkey', 'payment_intents'),
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
    ('constraint', 'check_amount_in_range', 'refunds'),
    ('index', 'refunds_stripe_refund_id_key', 'refunds'),
    ('trigger', 'refunds_guard_status', 'refunds'),
    ('constraint', 'check_amount_in_range', 'subscriptions'),
    ('constraint', 'check_ended_stamped', 'subscriptions'),
    ('constraint', 'check_canceled_stamped', 'subscriptions'),
    ('trigger', 'payments_guard_refunded', 'payment_intents'),
    ('function', 'checkout.guard_payment_refunded()', NULL),
    ('function', 'checkout.restoring(text)', NULL),
    ('function', 'checkout.is_subscription_status(text)', NULL),
    ('function', 'checkout.is_billing_interval(text)', NULL),
    ('function', 'checkout.is_change_type(text)', NULL),
    ('function', 'checkout.is_actor_type(text)', NULL),
    ('function', 'checkout.is_idempotency_status(text)', NULL),
    ('constraint', 'subscriptions_status_check', 'subscriptions'),
    ('constraint', 'subscription_changes_change_type_check', 'subscription_changes'),
    ('index', 'subscriptions_stripe_subscription_id_key', 'subscriptions'),
    ('constraint', 'check_amount_in_range', 'payment_intents'),
    ('constraint', 'check_amount_in_range', 'checkout_sessions'),
    ('index', 'checkout_sessions_stripe_session_id_key', 'checkout_sessions'),
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
    ('function', 'checkout.check_trial_eligibility(uuid, uuid, uuid, text)', NULL),
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
    ('table', 'import_report', NULL),
    ('function', 'checkout.import_seed(text, boolean)', NULL),
    ('function', 'checkout.email_is_valid(text)', NULL),
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
    ('trigger', 'subscriptions_stamp_ended', 'subscriptions'),
    ('table', 'maintenance_runs', NULL),
    ('function', 'checkout.distribute()', NULL),
    ('function', 'checkout.distribution_state()', NULL),
    ('function', 'checkout.routed_here(boolean)', NULL)
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
  UNION ALL
  -- Tenant-first keys: a unique key of a tenant table that does not start with organization_id
  -- would be checked across tenants (and cannot be distributed by organization).
  SELECT 'keys: every primary and unique key of a tenant table starts with organization_id',
         coalesce(bool_and(a.attname IS NOT DISTINCT FROM 'organization_id'), true),
         coalesce('not tenant-first: ' || string_agg(i.indexrelid::regclass::text, ', ' ORDER BY i.indexrelid::regclass::text)
                    FILTER (WHERE a.attname IS DISTINCT FROM 'organization_id'), 'all tenant-first')
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indrelid
  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
  WHERE c.relnamespace = 'checkout'::regnamespace AND c.relkind = 'r' AND i.indisunique
    -- the tenants themselves, and the operational tables whose rows may belong to no organization
    AND c.relname NOT IN ('organizations', 'reconciliation_queue', 'maintenance_runs')
  UNION ALL
  -- Citus: single server, installed but not distributed, or how far checkout.distribute() went.
  SELECT 'distribution: ' || d.state, d.ok, d.detail FROM checkout.distribution_state() d
  UNION ALL
  -- A SECURITY DEFINER trigger function PUBLIC may execute could be attached to anyone's table.
  SELECT 'privilege: PUBLIC cannot execute the trigger functions',
         coalesce(bool_and(NOT has_function_privilege('public', p.oid, 'EXECUTE')), true),
         coalesce('executable by PUBLIC: ' || string_agg(p.oid::regprocedure::text, ', ')
                    FILTER (WHERE has_function_privilege('public', p.oid, 'EXECUTE')), 'none executable by PUBLIC')
  FROM pg_proc p
  WHERE p.pronamespace = 'checkout'::regnamespace AND p.prorettype = 'trigger'::regtype
$verify$;
