# DROP EXTENSION leaves no object behind: the catalog after DROP equals the catalog before CREATE
# (an empty schema 'checkout' may remain). A second CREATE/DROP cycle works as well.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_drop
snapshot() {
  psql_db e2e_drop <<'SQL'
SELECT 'class ' || c.oid::regclass || ' ' || c.relkind::text FROM pg_class c
  WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)
UNION ALL SELECT 'proc ' || p.oid::regprocedure FROM pg_proc p
  WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL SELECT 'type ' || t.oid::regtype FROM pg_type t
  WHERE t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)
UNION ALL SELECT 'constraint ' || conname FROM pg_constraint
  WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
UNION ALL SELECT 'namespace ' || nspname FROM pg_namespace WHERE nspname <> 'checkout'
UNION ALL SELECT 'extension ' || extname FROM pg_extension
UNION ALL SELECT 'cast ' || castsource::regtype || '->' || casttarget::regtype FROM pg_cast WHERE oid >= 16384
UNION ALL SELECT 'operator ' || oid::regoperator FROM pg_operator WHERE oid >= 16384
UNION ALL SELECT 'policy ' || polname FROM pg_policy
ORDER BY 1;
SQL
}
before=$(snapshot)
for cycle in 1 2; do
  psql_db e2e_drop -c "CREATE EXTENSION checkout"
  during=$(snapshot)
  [ "$(echo "$during" | grep -c '^class checkout\.')" -gt 30 ] || fail "CREATE EXTENSION created too little"
  psql_db e2e_drop -c "DROP EXTENSION checkout"
  after=$(snapshot)
  diff <(echo "$before") <(echo "$after") || fail "catalog differs after DROP EXTENSION (cycle $cycle)"
done
left=$(psql_db e2e_drop -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'checkout'::regnamespace")
assert_eq 0 "$left" "relations left in schema checkout"
