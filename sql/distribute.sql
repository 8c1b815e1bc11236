-- Scaling out with Citus (docs/operations.md, "Scaling out with Citus"). checkout.distribute(),
-- run once on the coordinator, distributes checkout's tables by tenant: organizations becomes a
-- reference table (on every node, so its global uniques and every tenant table's foreign key to
-- it stay checked), each tenant table is hash-distributed by organization_id in one colocation
-- group, and each function that names its organization runs whole on that organization's node.

-- The tenant tables in foreign-key order; the operational tables (reconciliation_queue,
-- maintenance_runs, import_report) stay on the coordinator.
CREATE FUNCTION checkout.distributed_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT ARRAY['users', 'customers', 'products', 'features', 'subscriptions', 'checkout_sessions',
               'payment_intents', 'refunds', 'feature_grants', 'trial_history', 'subscription_changes',
               'customer_email_variants', 'idempotency_keys', 'webhook_events']
$$;

-- One row: whether Citus distributes checkout here, and how far (verify() reports it).
CREATE FUNCTION checkout.distribution_state(OUT state text, OUT ok boolean, OUT detail text)
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

CREATE FUNCTION checkout.distribute() RETURNS text
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
