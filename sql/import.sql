-- checkout.import_seed() (src/import_seed.rs): moving a database built by the seed's migrations
-- into checkout. The report of the last real run: every source row merged into another or refused,
-- every imported row the import changed, and every source column left out.
CREATE TABLE checkout.import_report (
  source_table text NOT NULL,
  source_id    text,        -- the source row's id; NULL for a column left out
  outcome      text NOT NULL CHECK (outcome IN ('imported', 'merged', 'refused', 'not_imported')),
  reason       text NOT NULL,
  detail       jsonb NOT NULL DEFAULT '{}',
  reported_at  timestamptz NOT NULL DEFAULT now()
);
-- The report read by table and outcome (docs/operations.md, "Moving an existing database to checkout").
CREATE INDEX import_report_table_outcome ON checkout.import_report (source_table, outcome, reason);
REVOKE ALL ON TABLE checkout.import_report FROM PUBLIC;
-- pg_dump keeps the report with the data it describes.
SELECT pg_catalog.pg_extension_config_dump('checkout.import_report', '');
COMMENT ON TABLE checkout.import_report IS 'What the last real import_seed() run merged, refused or changed, one row each, with the ids involved in detail.';

REVOKE ALL ON FUNCTION checkout.import_seed(text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION checkout.import_seed(text, boolean) IS 'Moves the seed''s tables from a schema into checkout: one row per source table, read = imported + merged + refused. A dry run (the default) writes nothing to checkout''s tables.';
COMMENT ON FUNCTION checkout.email_is_valid(text) IS 'Whether normalize_email accepts the address and it fits customers.email (254 characters).';
