-- checkout schema: the tables of the seed's migrations 001-005, corrected.
-- Loaded first (bootstrap). Conventions:
--   * every tenant-owned row carries organization_id, and every reference to another tenant-owned
--     row is a composite foreign key on (organization_id, id): a row can never point across tenants;
--   * money is bigint minor units, at most 999,999,999,999 (every sum of amounts stays in range),
--     currency a lowercase ISO 4217 code ('usd'), times timestamptz;
--   * a provider's ids (Stripe's subscription, session and refund ids) are unique per organization:
--     one tenant can neither collide with another's ids nor learn that they exist;
--   * statuses are text with CHECK constraints listing the documented values.

-- Text arguments reach Rust as UTF-8 strings: other database encodings are refused here, with a
-- clear error, rather than failing later on the first non-ASCII email.
DO $$
BEGIN
  IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
    RAISE EXCEPTION 'checkout needs a UTF8 database; this one is %', pg_catalog.getdatabaseencoding()
      USING ERRCODE = 'feature_not_supported',
            HINT = 'Create the database with ENCODING ''UTF8'' (TEMPLATE template0) and install checkout there.';
  END IF;
END $$;

REVOKE ALL ON SCHEMA checkout FROM PUBLIC;

-- The value lists of the write path's CHECK constraints (src/check_rules.rs). A CHECK's expression
-- is re-read from its stored text and planned on every statement that writes its table: a call is
-- a tenth of an IN list's node tree. The constraints keep their names. Executable by PUBLIC, as
-- the constraints need (the expression runs with the writer's rights); they only compare text.
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

CREATE TABLE checkout.organizations (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL CHECK (name <> ''),
  slug        text UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]*$'),
  stripe_account_id text UNIQUE,
  metadata    jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE checkout.organizations IS 'Tenants. Every other table is scoped to one organization; deleting an organization deletes its rows.';

CREATE TABLE checkout.users (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  email           text NOT NULL CHECK (email <> ''),
  name            text,
  role            text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member', 'support')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_pkey PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX users_org_email_key ON checkout.users (organization_id, lower(email));
COMMENT ON TABLE checkout.users IS 'Staff of an organization (who changed what in subscription_changes), not paying customers.';

CREATE TABLE checkout.customers (
  id                 uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id    uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  email              text NOT NULL CHECK (email <> '' AND length(email) <= 254),
  external_id        text CHECK (external_id <> ''),
  name               text,
  stripe_customer_id text,
  metadata           jsonb NOT NULL DEFAULT '{}',
  has_active_subscription boolean NOT NULL DEFAULT false,
  subscription_count integer NOT NULL DEFAULT 0 CHECK (subscription_count >= 0),
  deleted_at         timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  -- Tenant-first, and carrying what check_trial_eligibility needs of a customer, so its lookup
  -- reads the index alone (the heap of a million customers does not stay in shared buffers).
  -- Every lookup of a customer by id, and the composite foreign keys of every table below.
  CONSTRAINT customers_pkey PRIMARY KEY (organization_id, id) INCLUDE (deleted_at)
);
-- 001's UNIQUE (organization_id, email) and UNIQUE ... WHERE, as partial unique indexes Postgres accepts.
-- Soft-deleted customers do not hold their email or external id.
-- Each index below names the query it serves.
-- upsert_customer_atomic's ON CONFLICT (a customer by email, case-insensitively).
CREATE UNIQUE INDEX unique_customer_email_per_org ON checkout.customers (organization_id, lower(email))
  WHERE deleted_at IS NULL;
-- upsert_customer_atomic's lookup by the application's id.
CREATE UNIQUE INDEX unique_external_id_per_org ON checkout.customers (organization_id, external_id)
  WHERE external_id IS NOT NULL AND deleted_at IS NULL;
-- The seed form check_trial_eligibility(customer, product, email), which names no organization:
-- the customer by id alone, with what the lookup reads (index only). Not unique: ids are unique
-- per organization (customers_pkey).
CREATE INDEX customers_id_idx ON checkout.customers (id) INCLUDE (organization_id, deleted_at);
-- The seed's 005 names, tenant-first: the application's lookups of a customer by email as stored,
-- by its own id (only rows that have one), and by the provider's customer id (webhooks).
CREATE INDEX idx_customers_email_org ON checkout.customers (organization_id, email) WHERE deleted_at IS NULL;
CREATE INDEX idx_customers_external_id_org ON checkout.customers (organization_id, external_id)
  WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX idx_customers_stripe_id ON checkout.customers (organization_id, stripe_customer_id)
  WHERE stripe_customer_id IS NOT NULL;
COMMENT ON TABLE checkout.customers IS 'Paying customers of an organization. One non-deleted customer per (organization, lower(email)) and per (organization, external_id).';
COMMENT ON COLUMN checkout.customers.email IS 'As given; uniqueness compares lower(email). The anti-abuse canonical form lives in customer_email_variants.';
COMMENT ON COLUMN checkout.customers.external_id IS 'The application''s own id for this customer, unique per organization among non-deleted customers.';
COMMENT ON COLUMN checkout.customers.has_active_subscription IS 'Denormalized: true while the customer has an active or trialing subscription.';
COMMENT ON COLUMN checkout.customers.subscription_count IS 'Denormalized: number of subscriptions ever created for this customer.';
COMMENT ON COLUMN checkout.customers.deleted_at IS 'Soft delete: a deleted customer keeps its history but no longer matches lookups or holds its email.';

CREATE TABLE checkout.products (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  name            text NOT NULL CHECK (name <> ''),
  description     text,
  active          boolean NOT NULL DEFAULT true,
  stripe_product_id text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  metrics_active_subscriptions   integer,
  metrics_trialing_subscriptions integer,
  metrics_mrr     jsonb,
  metrics_last_calculated_at timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT products_pkey PRIMARY KEY (organization_id, id)
);
-- refresh_product_metrics: products whose cache is stale, oldest first, across organizations.
CREATE INDEX idx_products_metrics_stale ON checkout.products (metrics_last_calculated_at);
COMMENT ON TABLE checkout.products IS 'What customers subscribe to. The metrics_* columns are a cache refreshed by maintenance.';
COMMENT ON COLUMN checkout.products.metrics_mrr IS 'Cached monthly recurring revenue of active subscriptions, minor units per currency, e.g. {"usd": 129900}.';
COMMENT ON COLUMN checkout.products.metrics_active_subscriptions IS 'Cached count of active subscriptions (maintenance).';
COMMENT ON COLUMN checkout.products.metrics_trialing_subscriptions IS 'Cached count of trialing subscriptions (maintenance).';
COMMENT ON COLUMN checkout.products.metrics_last_calculated_at IS 'When the metrics_* cache was computed; NULL means stale (cleared by every new subscription).';

CREATE TABLE checkout.features (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  key             text NOT NULL CHECK (key <> ''),
  name            text,
  description     text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT features_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT features_org_key_key UNIQUE (organization_id, key)
);
COMMENT ON TABLE checkout.features IS 'Entitlements a subscription grants (feature_grants).';
COMMENT ON COLUMN checkout.features.key IS 'Stable identifier the application checks, unique per organization (e.g. ''sso'').';

CREATE TABLE checkout.subscriptions (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  customer_id     uuid NOT NULL,
  product_id      uuid NOT NULL,
  -- incomplete, trialing, active, past_due, canceled, unpaid, paused or expired
  status          text NOT NULL CONSTRAINT subscriptions_status_check CHECK (checkout.is_subscription_status(status)),
  stripe_subscription_id text,
  stripe_price_id text,
  amount          bigint NOT NULL,
  currency        text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
  "interval"      text NOT NULL CONSTRAINT subscriptions_interval_check CHECK (checkout.is_billing_interval("interval")), -- day, week, month, year
  interval_count  integer NOT NULL DEFAULT 1 CHECK (interval_count >= 1),
  trial_start     timestamptz,
  trial_end       timestamptz,
  current_period_start timestamptz NOT NULL,
  current_period_end   timestamptz NOT NULL,
  cancel_at_period_end boolean NOT NULL DEFAULT false,
  canceled_at     timestamptz,
  ended_at        timestamptz,
  cancellation_reason text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  idempotency_key varchar(255),
  product_version_id uuid,
  price_version_id   uuid,
  original_created_at timestamptz NOT NULL DEFAULT now(),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT subscriptions_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999),
  -- An ended subscription says when (reactivation restores the grants revoked since ended_at).
  -- The ending statuses: twin of states::ENDED (src/subscriptions/states.rs).
  CONSTRAINT check_ended_stamped CHECK (status NOT IN ('canceled', 'expired') OR ended_at IS NOT NULL),
  CONSTRAINT check_canceled_stamped CHECK (status <> 'canceled' OR canceled_at IS NOT NULL),
  CONSTRAINT check_subscription_dates CHECK (current_period_start <= current_period_end),
  CONSTRAINT check_trial_dates CHECK (trial_start IS NULL OR trial_end IS NULL OR trial_start <= trial_end),
  CONSTRAINT check_positive_amount CHECK (amount >= 0),
  -- NO ACTION rather than RESTRICT: a customer with subscriptions cannot be deleted (checked at the
  -- end of the statement), yet deleting the whole organization cascades through both tables.
  CONSTRAINT subscriptions_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE NO ACTION,
  CONSTRAINT subscriptions_product_id_fkey FOREIGN KEY (organization_id, product_id)
    REFERENCES checkout.products (organization_id, id) ON DELETE NO ACTION
);
-- 001's intent: at most one active-or-trialing subscription per (customer, product). The seed put
-- status in the key, which allowed one 'active' and one 'trialing' row for the same pair.
-- Each index below names the query it serves.
-- create_subscription_atomic's ON CONFLICT, and the pair's active subscription (reactivation,
-- plan change, the answer naming the existing one). Twins: refuse_if_other_active
-- (subscriptions/lifecycle/frame.rs), ACTIVE_SQL and create_subscription.sql's ON CONFLICT
-- (subscriptions/mod.rs), active_or_trialing (subscriptions/triggers.rs).
CREATE UNIQUE INDEX unique_active_subscription ON checkout.subscriptions (organization_id, customer_id, product_id)
  WHERE status IN ('active', 'trialing');
-- The provider's subscription id, unique per organization where it is set (webhook lookups).
CREATE UNIQUE INDEX subscriptions_stripe_subscription_id_key ON checkout.subscriptions (organization_id, stripe_subscription_id)
  WHERE stripe_subscription_id IS NOT NULL;
-- A customer's subscriptions: the foreign key check when a customer is deleted, and listings.
CREATE INDEX idx_subscriptions_customer_product ON checkout.subscriptions (organization_id, customer_id, product_id);
-- The audit trigger's recount of has_active_subscription when a subscription stops being active.
CREATE INDEX idx_subscriptions_active ON checkout.subscriptions (organization_id, customer_id)
  WHERE status IN ('active', 'trialing');
-- The seed's 005 jobs: active subscriptions by period end, trials by trial end, across organizations.
CREATE INDEX idx_subscriptions_ending ON checkout.subscriptions (current_period_end) WHERE status = 'active';
CREATE INDEX idx_subscriptions_trial_ending ON checkout.subscriptions (trial_end)
  WHERE status = 'trialing' AND trial_end IS NOT NULL;
-- refresh_product_metrics' counts and sums per (product, status), and the foreign key check when
-- a product is deleted.
CREATE INDEX idx_subscriptions_product ON checkout.subscriptions (organization_id, product_id, status);
COMMENT ON TABLE checkout.subscriptions IS 'A customer''s subscription to a product. At most one active or trialing per (organization, customer, product).';
COMMENT ON COLUMN checkout.subscriptions.status IS 'incomplete, trialing, active, past_due, canceled, unpaid, paused or expired (Stripe''s set plus expired).';
COMMENT ON COLUMN checkout.subscriptions.amount IS 'Price per interval in minor units of currency (cents for usd).';
COMMENT ON COLUMN checkout.subscriptions.currency IS 'ISO 4217 code, lowercase as Stripe sends it (usd).';
COMMENT ON COLUMN checkout.subscriptions.interval_count IS 'Billing period = interval_count x interval (e.g. 3 x month).';
COMMENT ON COLUMN checkout.subscriptions.cancel_at_period_end IS 'A pending cancellation: access continues until current_period_end.';
COMMENT ON COLUMN checkout.subscriptions.idempotency_key IS 'The key of the call that created the row, kept as plain text (no foreign key) so expired keys can be deleted.';
COMMENT ON COLUMN checkout.subscriptions.original_created_at IS 'Creation time of the first subscription in a chain of plan changes or renewals.';

CREATE TABLE checkout.checkout_sessions (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  customer_id     uuid,
  product_id      uuid,
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'expired', 'canceled')),
  stripe_session_id text,
  amount          bigint CHECK (amount >= 0),
  currency        text CHECK (currency ~ '^[a-z]{3}$'),
  success_url     text,
  cancel_url      text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  idempotency_key varchar(255),
  expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
  completed_at    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT checkout_sessions_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999),
  CONSTRAINT checkout_sessions_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT checkout_sessions_product_id_fkey FOREIGN KEY (organization_id, product_id)
    REFERENCES checkout.products (organization_id, id) ON DELETE CASCADE
);
-- The provider's session id, unique per organization where it is set.
CREATE UNIQUE INDEX checkout_sessions_stripe_session_id_key ON checkout.checkout_sessions (organization_id, stripe_session_id)
  WHERE stripe_session_id IS NOT NULL;
-- expire_checkout_sessions: pending sessions past expires_at; then expired ones past the retention.
CREATE INDEX idx_checkout_sessions_expires ON checkout.checkout_sessions (expires_at) WHERE status = 'pending';
CREATE INDEX idx_checkout_sessions_expired ON checkout.checkout_sessions (expires_at) WHERE status = 'expired';
-- A customer's sessions, newest first, and the foreign key cascade when a customer is deleted.
CREATE INDEX idx_checkout_sessions_customer ON checkout.checkout_sessions (organization_id, customer_id, created_at DESC);
COMMENT ON TABLE checkout.checkout_sessions IS 'A checkout in progress. Pending sessions past expires_at are expired, then deleted after a retention, by maintenance.';
COMMENT ON COLUMN checkout.checkout_sessions.idempotency_key IS 'Plain text, no foreign key: references survive the expiry of the key.';

CREATE TABLE checkout.payment_intents (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  customer_id     uuid,
  subscription_id uuid,
  checkout_session_id uuid,
  stripe_payment_intent_id text NOT NULL,
  amount          bigint NOT NULL,
  currency        text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
  status          text NOT NULL CHECK (status IN ('requires_payment_method', 'requires_confirmation',
                    'requires_action', 'processing', 'requires_capture', 'canceled', 'succeeded')),
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT payment_intents_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT payment_intents_org_stripe_key UNIQUE (organization_id, stripe_payment_intent_id),
  CONSTRAINT check_positive_payment_amount CHECK (amount > 0),
  CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999),
  CONSTRAINT payment_intents_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT payment_intents_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE SET NULL (subscription_id),
  CONSTRAINT payment_intents_checkout_session_id_fkey FOREIGN KEY (organization_id, checkout_session_id)
    REFERENCES checkout.checkout_sessions (organization_id, id) ON DELETE SET NULL (checkout_session_id)
);
-- The foreign key actions when a subscription, customer or session is deleted.
CREATE INDEX idx_payment_intents_subscription ON checkout.payment_intents (organization_id, subscription_id)
  WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_payment_intents_customer ON checkout.payment_intents (organization_id, customer_id)
  WHERE customer_id IS NOT NULL;
CREATE INDEX idx_payment_intents_session ON checkout.payment_intents (organization_id, checkout_session_id)
  WHERE checkout_session_id IS NOT NULL;
COMMENT ON TABLE checkout.payment_intents IS 'Payments as the provider reports them; refunds reference them by stripe_payment_intent_id.';
COMMENT ON COLUMN checkout.payment_intents.amount IS 'Minor units, > 0.';

CREATE TABLE checkout.feature_grants (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL, -- its organization's existence follows from the customer's (or payment's) key
  customer_id     uuid NOT NULL,
  feature_id      uuid NOT NULL,
  subscription_id uuid,
  granted_at      timestamptz NOT NULL DEFAULT now(),
  revoked_at      timestamptz,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT feature_grants_pkey PRIMARY KEY (organization_id, id),
  -- 001's UNIQUE ... WHERE subscription_id IS NOT NULL: a plain unique constraint has the same effect
  -- (NULLs are distinct) and, unlike a partial index, is a target for INSERT ... ON CONFLICT
  -- (change_subscription_plan_atomic). Subscription first: it also serves the grants of one
  -- subscription (revoked and restored by the audit trigger, deleted with it).
  CONSTRAINT unique_feature_grant UNIQUE (organization_id, subscription_id, feature_id, customer_id),
  CONSTRAINT feature_grants_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT feature_grants_feature_id_fkey FOREIGN KEY (organization_id, feature_id)
    REFERENCES checkout.features (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT feature_grants_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT feature_grants_revoked_after_granted CHECK (revoked_at IS NULL OR revoked_at >= granted_at)
);
-- A customer's grants (the application's entitlement check), and the cascade when a customer is deleted.
CREATE INDEX idx_feature_grants_customer ON checkout.feature_grants (organization_id, customer_id, feature_id);
-- The cascade when a feature is deleted.
CREATE INDEX idx_feature_grants_feature ON checkout.feature_grants (organization_id, feature_id);
COMMENT ON TABLE checkout.feature_grants IS 'Entitlements held by a customer, usually through a subscription (deleted with it).';
COMMENT ON COLUMN checkout.feature_grants.revoked_at IS 'Set when access ends (cancellation, plan change); NULL while the grant is in force.';

CREATE TABLE checkout.webhook_events (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  provider        text NOT NULL DEFAULT 'stripe',
  provider_event_id text NOT NULL,
  type            text NOT NULL,
  object_id       text,
  status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'processed', 'failed', 'deferred', 'stale')),
  payload         jsonb NOT NULL DEFAULT '{}',
  event_created_at timestamptz,
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  error_message   text,
  processed_at    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT webhook_events_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT webhook_events_provider_event_key UNIQUE (organization_id, provider, provider_event_id)
);
-- Each index below names the query it serves.
-- The processor's calls by event id alone (mark_webhook_event_*): ids are unique per organization.
CREATE INDEX idx_webhook_events_id ON checkout.webhook_events (id);
-- The seed's 005 reports by type and status.
CREATE INDEX idx_webhook_events_type_status ON checkout.webhook_events (type, status, created_at);
-- claim_webhook_events: the oldest claimable events across organizations.
CREATE INDEX idx_webhook_events_unprocessed ON checkout.webhook_events (created_at) WHERE status IN ('pending', 'deferred');
-- Claims whose lease may have run out (claim_webhook_events).
CREATE INDEX idx_webhook_events_processing ON checkout.webhook_events (updated_at) WHERE status = 'processing';
CREATE INDEX idx_webhook_events_object ON checkout.webhook_events (organization_id, provider, object_id, event_created_at)
  WHERE object_id IS NOT NULL;
COMMENT ON TABLE checkout.webhook_events IS 'Provider events, stored once per (organization, provider, provider_event_id).';
COMMENT ON COLUMN checkout.webhook_events.object_id IS 'Provider id of the object the event is about; orders events of one object.';
COMMENT ON COLUMN checkout.webhook_events.status IS 'pending, processing, processed, failed, deferred, or stale (older than an event already applied to the same object).';
COMMENT ON COLUMN checkout.webhook_events.event_created_at IS 'When the provider created the event (not when we received it).';

-- 002: idempotency keys, scoped per organization (the seed's were global: org B could replay org A's key).
CREATE TABLE checkout.idempotency_keys (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  key             varchar(255) NOT NULL CHECK (length(key) >= 1),
  operation       text,
  request_hash    varchar(64),
  request_params  jsonb NOT NULL DEFAULT '{}',
  response        jsonb,
  status          varchar(50) NOT NULL DEFAULT 'pending'
                    -- pending, processing, completed, failed
                    CONSTRAINT idempotency_keys_status_check CHECK (checkout.is_idempotency_status(status)),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
  error_message   text,
  retry_count     integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
  -- The key is the row's identity: every statement finds a key by (organization, key), so the
  -- primary key is that pair and no index on id is kept (id stays a column, for the audit).
  CONSTRAINT idempotency_keys_org_key_key PRIMARY KEY (organization_id, key),
  CONSTRAINT idempotency_keys_completed_has_response CHECK (status <> 'completed' OR response IS NOT NULL)
);
-- cleanup_expired_idempotency_keys: expired keys no call is working on.
CREATE INDEX idx_idempotency_keys_expires ON checkout.idempotency_keys (expires_at) WHERE status <> 'processing';
-- check_invariants' and monitoring's keys stuck in processing or failed (002's name); completed
-- keys, nearly all of them, are not indexed.
CREATE INDEX idx_idempotency_keys_status ON checkout.idempotency_keys (status) WHERE status <> 'completed';
COMMENT ON TABLE checkout.idempotency_keys IS 'Stripe-style idempotency: a key is bound to one operation and one request hash per organization; its stored response is replayed on retry.';
COMMENT ON COLUMN checkout.idempotency_keys.operation IS 'The function the key was first used with (e.g. create_subscription_atomic); NULL for a row registered beforehand.';
COMMENT ON COLUMN checkout.idempotency_keys.request_hash IS 'SHA-256 (hex) of the canonical request parameters; NULL until the key is claimed.';
COMMENT ON COLUMN checkout.idempotency_keys.expires_at IS 'After this the key counts as absent and may be deleted; rows that recorded the key keep it as text.';

-- 003: trial tracking.
CREATE TABLE checkout.trial_history (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL, -- its organization's existence follows from the customer's (or payment's) key
  customer_id     uuid NOT NULL,
  product_id      uuid NOT NULL,
  subscription_id uuid,
  trial_start     timestamptz NOT NULL,
  trial_end       timestamptz NOT NULL,
  converted       boolean NOT NULL DEFAULT false,
  conversion_date timestamptz,
  cancellation_reason text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT trial_history_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT trial_history_one_per_product UNIQUE (organization_id, customer_id, product_id),
  CONSTRAINT trial_history_dates CHECK (trial_start <= trial_end),
  CONSTRAINT trial_history_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT trial_history_product_id_fkey FOREIGN KEY (organization_id, product_id)
    REFERENCES checkout.products (organization_id, id) ON DELETE CASCADE,
  CONSTRAINT trial_history_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE SET NULL (subscription_id)
);
-- The seed's 003 indexes, tenant-first: a customer's trials (and the cascade when one is
-- deleted), a product's (its cascade), trials by date and converted trials (reports).
CREATE INDEX idx_trial_history_customer ON checkout.trial_history (organization_id, customer_id);
CREATE INDEX idx_trial_history_product ON checkout.trial_history (organization_id, product_id);
CREATE INDEX idx_trial_history_dates ON checkout.trial_history (trial_start, trial_end);
CREATE INDEX idx_trial_history_converted ON checkout.trial_history (converted) WHERE converted = true;
-- The trial of a subscription (the audit trigger's conversion; SET NULL when it is deleted).
CREATE INDEX idx_trial_history_subscription ON checkout.trial_history (organization_id, subscription_id)
  WHERE subscription_id IS NOT NULL;
COMMENT ON TABLE checkout.trial_history IS 'Every trial ever granted: at most one per (organization, customer, product).';
COMMENT ON COLUMN checkout.trial_history.converted IS 'True once the trial became a paid subscription (conversion_date says when).';

CREATE TABLE checkout.customer_email_variants (
  id               uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id  uuid NOT NULL,
  customer_id      uuid NOT NULL,
  email            text NOT NULL,
  email_normalized text NOT NULL,
  email_domain     text NOT NULL,
  rules_version    integer NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT customer_email_variants_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT customer_email_variants_customer_id_fkey FOREIGN KEY (organization_id, customer_id)
    REFERENCES checkout.customers (organization_id, id) ON DELETE CASCADE
);
-- Per organization (the seed's global UNIQUE(email) dropped a second organization's customer), and per
-- customer, so a new customer re-using a soft-deleted customer's email still records it.
-- Both carry the column check_trial_eligibility reads from them (index-only lookups).
CREATE UNIQUE INDEX customer_email_variants_key ON checkout.customer_email_variants
  (organization_id, customer_id, lower(email)) INCLUDE (email_normalized);
CREATE INDEX idx_email_variants_normalized ON checkout.customer_email_variants (organization_id, email_normalized)
  INCLUDE (customer_id);
-- Abuse reports by domain (003's index).
CREATE INDEX idx_email_variants_domain ON checkout.customer_email_variants (email_domain);
COMMENT ON TABLE checkout.customer_email_variants IS 'Every email a customer has had, with its canonical form (normalize_email), to catch trial abuse through address variants. Maintained by a trigger on customers.';
COMMENT ON COLUMN checkout.customer_email_variants.email_normalized IS 'normalize_email(email) under rules_version; recompute with renormalize_email_variants() when the rules change.';
COMMENT ON COLUMN checkout.customer_email_variants.rules_version IS 'email_rules_version() that produced email_normalized.';

-- 004: audit and tracking.
CREATE TABLE checkout.subscription_changes (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  subscription_id uuid NOT NULL,
  -- created, updated, cancelled, reactivated, expired, upgraded, downgraded, renewed, past_due,
  -- converted or deleted
  change_type     varchar(50) NOT NULL
                    CONSTRAINT subscription_changes_change_type_check CHECK (checkout.is_change_type(change_type)),
  old_values      jsonb,
  new_values      jsonb,
  changed_by      uuid,
  changed_by_type varchar(50) NOT NULL DEFAULT 'system' -- user, system, webhook, support
                    CONSTRAINT subscription_changes_changed_by_type_check CHECK (checkout.is_actor_type(changed_by_type)),
  reason          text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT subscription_changes_pkey PRIMARY KEY (organization_id, id),
  -- No foreign key to subscriptions: the trail outlives a deleted subscription (its 'deleted' row).
  CONSTRAINT subscription_changes_changed_by_fkey FOREIGN KEY (organization_id, changed_by)
    REFERENCES checkout.users (organization_id, id) ON DELETE SET NULL (changed_by),
  changed_by_role text -- last: 0.2.0 added it (default set in lifecycle.sql)
);
-- A subscription's trail in order (check_invariants, support).
CREATE INDEX idx_subscription_changes_sub ON checkout.subscription_changes (organization_id, subscription_id, created_at);
-- The seed's 004 reports: changes by type, changes by date.
CREATE INDEX idx_subscription_changes_type ON checkout.subscription_changes (change_type);
CREATE INDEX idx_subscription_changes_date ON checkout.subscription_changes (created_at);
-- SET NULL when a user is deleted (only rows that name one).
CREATE INDEX idx_subscription_changes_changed_by ON checkout.subscription_changes (organization_id, changed_by)
  WHERE changed_by IS NOT NULL;
COMMENT ON TABLE checkout.subscription_changes IS 'Audit trail of subscriptions: one row per change, with old and new values.';
COMMENT ON COLUMN checkout.subscription_changes.changed_by IS 'The staff user (users.id) who made the change, when known.';
COMMENT ON COLUMN checkout.subscription_changes.changed_by_type IS 'user, system, webhook or support.';
COMMENT ON COLUMN checkout.subscription_changes.changed_by_role IS 'The database role that made the change (the caller of a checkout function, not its owner); NULL in rows written before 0.2.0.';
COMMENT ON COLUMN checkout.subscription_changes.change_type IS 'created, updated (direct SQL), cancelled, reactivated, expired, upgraded, downgraded, renewed, past_due, converted (trial became paid) or deleted.';

CREATE TABLE checkout.refunds (
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL, -- its organization's existence follows from the customer's (or payment's) key
  payment_intent_id text NOT NULL,
  stripe_refund_id text,
  subscription_id uuid,
  amount          bigint NOT NULL,
  currency        text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
  reason          varchar(100),
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
  initiated_by    text CHECK (initiated_by IN ('automatic', 'manual', 'customer_request')),
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  completed_at    timestamptz,
  CONSTRAINT check_positive_refund_amount CHECK (amount > 0),
  CONSTRAINT check_amount_in_range CHECK (amount <= 999999999999),
  CONSTRAINT refunds_pkey PRIMARY KEY (organization_id, id),
  CONSTRAINT refunds_payment_intent_id_fkey FOREIGN KEY (organization_id, payment_intent_id)
    REFERENCES checkout.payment_intents (organization_id, stripe_payment_intent_id) ON DELETE CASCADE,
  CONSTRAINT refunds_subscription_id_fkey FOREIGN KEY (organization_id, subscription_id)
    REFERENCES checkout.subscriptions (organization_id, id) ON DELETE SET NULL (subscription_id)
);
-- The provider's refund id, unique per organization where it is set (record_refund's replay).
CREATE UNIQUE INDEX refunds_stripe_refund_id_key ON checkout.refunds (organization_id, stripe_refund_id)
  WHERE stripe_refund_id IS NOT NULL;
-- A payment's refunds (the bound's sum; the cascade when a payment is deleted).
CREATE INDEX idx_refunds_payment ON checkout.refunds (organization_id, payment_intent_id);
-- SET NULL when a subscription is deleted.
CREATE INDEX idx_refunds_subscription ON checkout.refunds (organization_id, subscription_id) WHERE subscription_id IS NOT NULL;
-- The seed's 004 report of refunds by status.
CREATE INDEX idx_refunds_status ON checkout.refunds (status);
COMMENT ON TABLE checkout.refunds IS 'Refunds of a payment intent (referenced by the provider''s id, as in the seed).';
COMMENT ON COLUMN checkout.refunds.payment_intent_id IS 'payment_intents.stripe_payment_intent_id of the same organization.';
COMMENT ON COLUMN checkout.refunds.initiated_by IS 'automatic, manual or customer_request.';

CREATE TABLE checkout.reconciliation_queue (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid REFERENCES checkout.organizations (id) ON DELETE CASCADE,
  type            varchar(100) NOT NULL,
  reference_id    varchar(255) NOT NULL,
  status          varchar(50) NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'manual_review')),
  priority        integer NOT NULL DEFAULT 5,
  error_message   text,
  error_count     integer NOT NULL DEFAULT 0 CHECK (error_count >= 0),
  details         jsonb NOT NULL DEFAULT '{}',
  locked_by       text,
  locked_until    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  processed_at    timestamptz,
  next_retry_at   timestamptz,
  CONSTRAINT check_reconciliation_priority CHECK (priority BETWEEN 1 AND 10)
);
CREATE INDEX idx_reconciliation_status ON checkout.reconciliation_queue (status, priority);
CREATE INDEX idx_reconciliation_retry ON checkout.reconciliation_queue (next_retry_at) WHERE status IN ('pending', 'failed');
-- One open item per (organization, type, reference_id): enqueueing the same problem twice is a
-- no-op, and one organization's item never absorbs another's. Items of no organization (NULL)
-- dedupe among themselves.
CREATE UNIQUE INDEX reconciliation_queue_open_item ON checkout.reconciliation_queue (organization_id, type, reference_id)
  NULLS NOT DISTINCT WHERE status IN ('pending', 'processing', 'failed');
COMMENT ON TABLE checkout.reconciliation_queue IS 'Operations to retry or review; claimed by workers with a lease (locked_by, locked_until).';
COMMENT ON COLUMN checkout.reconciliation_queue.priority IS '1 (most urgent) to 10.';
COMMENT ON COLUMN checkout.reconciliation_queue.locked_until IS 'Lease of the worker that claimed the item; past it the item is claimable again.';

-- pg_dump dumps the rows of these tables (extension member tables are otherwise skipped).
-- One statement each: several calls in one statement fail with "tuple already updated by self".
SELECT pg_catalog.pg_extension_config_dump('checkout.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.users', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.customers', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.products', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.features', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.checkout_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.payment_intents', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.feature_grants', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.webhook_events', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.trial_history', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.customer_email_variants', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.subscription_changes', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('checkout.reconciliation_queue', '');
