-- checkout 0.5.0 -> 0.4.0: the three indexes as 0.4.0 had them (without the INCLUDE columns). The
-- lookups fetch from the heap any column an index lacks, so they stay correct, only slower.
\echo Use "ALTER EXTENSION checkout UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE checkout.customers DROP CONSTRAINT customers_pkey,
  ADD CONSTRAINT customers_pkey PRIMARY KEY (id);

DROP INDEX checkout.customer_email_variants_key;
CREATE UNIQUE INDEX customer_email_variants_key ON checkout.customer_email_variants
  (organization_id, customer_id, lower(email));

DROP INDEX checkout.idx_email_variants_normalized;
CREATE INDEX idx_email_variants_normalized ON checkout.customer_email_variants (organization_id, email_normalized);
