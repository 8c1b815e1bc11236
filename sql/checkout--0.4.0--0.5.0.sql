-- checkout 0.4.0 -> 0.5.0 (three indexes rebuilt wider; no table, data or function changes):
--  check_trial_eligibility's lookups read like index-only scans: on heap pages the visibility map
--  marks all-visible they take what they need from the index tuple. Three of its indexes gain the
--  columns it reads, so those lookups skip the heap:
--  * customers_pkey: PRIMARY KEY (id) INCLUDE (organization_id, deleted_at);
--  * customer_email_variants_key: INCLUDE (email_normalized);
--  * idx_email_variants_normalized: INCLUDE (customer_id).
--  Keys and uniqueness are unchanged. The rebuild holds an ACCESS EXCLUSIVE lock on customers and
--  customer_email_variants while it runs (measured: about 4 s for a million customers).
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.5.0'" to load this file. \quit

ALTER TABLE checkout.customers DROP CONSTRAINT customers_pkey,
  ADD CONSTRAINT customers_pkey PRIMARY KEY (id) INCLUDE (organization_id, deleted_at);

DROP INDEX checkout.customer_email_variants_key;
CREATE UNIQUE INDEX customer_email_variants_key ON checkout.customer_email_variants
  (organization_id, customer_id, lower(email)) INCLUDE (email_normalized);

DROP INDEX checkout.idx_email_variants_normalized;
CREATE INDEX idx_email_variants_normalized ON checkout.customer_email_variants (organization_id, email_normalized)
  INCLUDE (customer_id);
