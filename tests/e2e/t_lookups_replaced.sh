# The trial check's index lookups (src/lookups.rs) when the table they read is replaced while a
# call waits for its lock: session A holds checkout.customers in ACCESS EXCLUSIVE mode, session B's
# check_trial_eligibility waits (seen in pg_locks, no sleeps), A swaps in a new customers table
# (same name and key, one customer) and commits. B must read the new table by its name, as
# PostgreSQL's own name lookup does, never XX000 "could not open relation" through the dropped
# table's OID (what 0.6.0 before the re-check did).
source "$(dirname "$0")/lib.sh"
DB=e2e_lookups
ORG=a0000000-0000-0000-0000-000000000001
OLD=c0000000-0000-0000-0000-0000000000a1
NEW=c0000000-0000-0000-0000-0000000000b1
PRODUCT=b0000000-0000-0000-0000-0000000000a1
fresh_db $DB
psql_db $DB -c "CREATE EXTENSION checkout" \
  -c "INSERT INTO checkout.organizations (id, name) VALUES ('$ORG', 'A')" \
  -c "INSERT INTO checkout.products (id, organization_id, name) VALUES ('$PRODUCT', '$ORG', 'Pro')" \
  -c "INSERT INTO checkout.customers (id, organization_id, email) VALUES ('$OLD', '$ORG', 'old@example.com')" \

work=$(mktemp -d); trap 'exec 3>&- 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/a"
"$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d $DB < "$work/a" > "$work/a.out" 2>&1 &
a=$!
exec 3>"$work/a"
echo "BEGIN; LOCK TABLE checkout.customers IN ACCESS EXCLUSIVE MODE; SELECT 'locked';" >&3
for _ in $(seq 200); do grep -q locked "$work/a.out" && break; sleep 0.05; done
grep -q locked "$work/a.out" || fail "session A did not take its lock"

# B: looks checkout.customers up by name (the table A holds), then waits behind A for its lock.
"$E2E_BIN/psql" -X -q -At -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d $DB -c "\set VERBOSITY sqlstate" \
  -c "SELECT checkout.check_trial_eligibility('$ORG'::uuid, '$NEW'::uuid, '$PRODUCT'::uuid)->>'eligible'" > "$work/b.out" 2>&1 &
b=$!
waiting=0
for _ in $(seq 400); do
  waiting=$(psql_db $DB -c "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    WHERE c.relname = 'customers' AND c.relnamespace = 'checkout'::regnamespace AND NOT l.granted")
  [ "$waiting" = 1 ] && break; sleep 0.05
done
[ "$waiting" = 1 ] || fail "session B never waited for the lock: $(cat "$work/b.out")"

# A replaces the table: a copy with the same name, key and index names, holding one other customer.
cat >&3 <<SQL
CREATE TABLE checkout.customers_next (LIKE checkout.customers INCLUDING ALL);
INSERT INTO checkout.customers_next (id, organization_id, email) VALUES ('$NEW', '$ORG', 'new@example.com');
ALTER EXTENSION checkout DROP TABLE checkout.customers;
DROP TABLE checkout.customers CASCADE;
ALTER TABLE checkout.customers_next RENAME TO customers;
ALTER INDEX checkout.customers_next_pkey RENAME TO customers_pkey;
COMMIT;
SELECT 'replaced';
SQL
exec 3>&-
wait $a || true
wait $b || true
grep -q replaced "$work/a.out" || fail "session A: $(cat "$work/a.out")"
# The call reads the new table under its statement's snapshot, taken before A committed: the new
# table's customer is not visible to it yet, so the answer is "not found" (P0002), as for a
# customer created after the call began; never XX000.
assert_eq "ERROR:  P0002" "$(cat "$work/b.out")" "the waiting call reads the table that now has the name"
assert_eq "true" "$(psql_db $DB -c "SELECT checkout.check_trial_eligibility('$ORG'::uuid, '$NEW'::uuid, '$PRODUCT'::uuid)->>'eligible'")" \
  "the next call sees the new table's customer"
echo "t_lookups_replaced: ok"
