# pg_dump of a database using checkout, restored with pg_restore into a fresh database, brings back
# every row of every table (the tables are registered with pg_extension_config_dump).
source "$(dirname "$0")/lib.sh"
here=$(dirname "$0")
fresh_db e2e_src
psql_db e2e_src -c "CREATE EXTENSION checkout" -f "$here/populate.sql"
src=$(fingerprint e2e_src)
tables=$(echo "$src" | wc -l)
[ "$tables" -ge 16 ] || fail "expected 16 tables, got $tables"
empty=$(echo "$src" | awk '$2 == 0 {print $1}')
[ -z "$empty" ] || fail "populate.sql left tables empty: $empty"
dump=$(mktemp /tmp/checkout-dump.XXXXXX)
"$E2E_BIN/pg_dump" -h 127.0.0.1 -p "$E2E_PORT" -U postgres -Fc -f "$dump" e2e_src
fresh_db e2e_dst
"$E2E_BIN/pg_restore" -h 127.0.0.1 -p "$E2E_PORT" -U postgres --exit-on-error -d e2e_dst "$dump" || fail "pg_restore failed"
rm -f "$dump"
dst=$(fingerprint e2e_dst)
diff <(echo "$src") <(echo "$dst") || fail "restored rows differ"
assert_eq 0 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.verify() WHERE NOT ok")" "verify() after restore"
# The variants table kept the historical email (recorded by the trigger, merged on restore).
assert_eq 3 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.customer_email_variants")" "variant rows after restore"
assert_eq 1 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.customer_email_variants WHERE email = 'Alice@Example.com'")" "historical email after restore"
# The subscriptions triggers stood aside during the restore's COPY: no audit row or counter twice.
assert_eq 5 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.subscription_changes")" "audit rows after restore"
assert_eq "" "$(violations e2e_dst)" "invariants after restore"
# Only a COPY that loads subscriptions is taken as a restore: a COPY of a query that changes one is
# audited like any other call.
psql_db e2e_dst -c "COPY (SELECT checkout.expire_subscription('d0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001')) TO STDOUT" >/dev/null
assert_eq "expired" "$(psql_db e2e_dst -c "SELECT change_type FROM checkout.subscription_changes ORDER BY created_at DESC LIMIT 1")" "audit row of a call inside COPY"
assert_eq "" "$(violations e2e_dst)" "invariants after a call inside COPY"
