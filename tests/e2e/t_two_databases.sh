# CREATE EXTENSION works in two databases of one cluster, and verify() is all ok in both.
source "$(dirname "$0")/lib.sh"
for db in e2e_one e2e_two; do
  fresh_db $db
  psql_db $db -c "CREATE EXTENSION checkout"
  bad=$(psql_db $db -c "SELECT count(*) FROM checkout.verify() WHERE NOT ok")
  assert_eq 0 "$bad" "verify() failures in $db"
  assert_eq checkout "$(psql_db $db -c "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'checkout'")" "schema"
done
