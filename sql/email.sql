-- customer_email_variants maintenance: every email a customer has ever had, with its canonical
-- form, recorded by a trigger so that direct writes are tracked too.

-- track_customer_email() records NEW.email (native: src/email/triggers.rs, created before this
-- file). SECURITY DEFINER: the caller may write customers without any privilege on
-- customer_email_variants. Invalid emails raise 22023, so customers only ever hold valid ones.
-- Runs only as the trigger below (39P01 on any other table); EXECUTE is not PUBLIC's.
CREATE TRIGGER customers_track_email
  AFTER INSERT OR UPDATE OF email ON checkout.customers
  FOR EACH ROW EXECUTE FUNCTION checkout.track_customer_email();

-- pg_restore reloads customers (whose trigger records each current email, stamped now()) before
-- this table. A duplicate incoming row is merged instead of failing the COPY: when it is older it
-- is the original and replaces the trigger's copy, so a restore reproduces every row exactly
-- (merge_duplicate_email_variant(), native: src/email/triggers.rs).
-- Only for rows written at top level (pg_restore's COPY, direct inserts): the customers trigger
-- inserts at depth 1 and handles duplicates with ON CONFLICT, so the hot path skips this.
CREATE TRIGGER customer_email_variants_merge_duplicate
  BEFORE INSERT ON checkout.customer_email_variants
  FOR EACH ROW WHEN (pg_catalog.pg_trigger_depth() < 1)
  EXECUTE FUNCTION checkout.merge_duplicate_email_variant();

-- Recomputes forms stored under other rules (or edited by hand); returns how many rows changed.
CREATE FUNCTION checkout.renormalize_email_variants() RETURNS bigint
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
REVOKE ALL ON FUNCTION checkout.renormalize_email_variants() FROM PUBLIC;
-- The triggers' functions are SECURITY DEFINER: only the owner attaches them (and each checks the
-- table it fires on).
REVOKE ALL ON FUNCTION checkout.track_customer_email(), checkout.merge_duplicate_email_variant() FROM PUBLIC;
COMMENT ON FUNCTION checkout.renormalize_email_variants() IS 'Recomputes customer_email_variants.email_normalized where it was computed under other rules; returns the number of rows changed.';
