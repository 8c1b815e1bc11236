# Real concurrent sessions: 16 racers on one (customer, product), 16 on one idempotency key, and
# 16 upserts of one email. Each racer waits on a shared advisory lock that a blocker holds, so all
# 16 calls start together when it is released.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_race
psql_db e2e_race -c "CREATE EXTENSION checkout" -c "SELECT checkout_test.fixture()"
out=$(mktemp -d /tmp/checkout-race.XXXXXX)

race() { # NAME SQL: run SQL in 16 sessions released at once; outputs in $out/NAME.N
  local name=$1 sql=$2
  "$E2E_BIN/psql" -X -q -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d e2e_race \
    -c "SELECT pg_advisory_lock(4242)" -c "SELECT pg_sleep(2)" -c "SELECT pg_advisory_unlock(4242)" >/dev/null &
  local blocker=$!
  sleep 0.5
  local pids=()
  for i in $(seq 1 16); do
    psql_db e2e_race -c "SELECT pg_advisory_lock_shared(4242)" -c "$sql" > "$out/$name.$i" 2>&1 &
    pids+=($!)
  done
  wait $blocker
  for p in "${pids[@]}"; do wait "$p" || true; done
}
outputs() { cat "$out/$1".* | grep -v '^$'; }

# 1. 16 sessions create the same pair without a key: one success, 15 answers naming the winner.
race pair "SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001')"
winner=$(psql_db e2e_race -c "SELECT id FROM checkout.subscriptions WHERE customer_id = 'c0000000-0000-0000-0000-0000000000a2'")
assert_eq 1 "$(echo "$winner" | wc -l)" "subscriptions for the pair"
assert_eq 1 "$(outputs pair | grep -c '"success": true')" "successes"
assert_eq 15 "$(outputs pair | grep -c "\"existing_subscription_id\": \"$winner\"")" "subscription_exists answers with the winner's id"
assert_eq 0 "$(outputs pair | grep -ci 'error:')" "errors (deadlocks included)"

# 2. 16 sessions retry one idempotency key: one subscription, everyone gets its id.
race key "SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001', 'race-key')"
sub=$(psql_db e2e_race -c "SELECT id FROM checkout.subscriptions WHERE product_id = 'b0000000-0000-0000-0000-0000000000a2'")
assert_eq 1 "$(echo "$sub" | wc -l)" "subscriptions created under one key"
assert_eq 16 "$(outputs key | grep -c "\"subscription_id\": \"$sub\"")" "callers answered with the one subscription"
assert_eq 15 "$(outputs key | grep -c '"replayed": true')" "replays"
assert_eq "completed" "$(psql_db e2e_race -c "SELECT status FROM checkout.idempotency_keys WHERE key = 'race-key'")" "key status"

# 3. 16 sessions upsert one email: one customer, one 'created: true', everyone gets its id.
race upsert "SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'Race@Example.com')"
cust=$(psql_db e2e_race -c "SELECT id FROM checkout.customers WHERE lower(email) = 'race@example.com'")
assert_eq 1 "$(echo "$cust" | wc -l)" "customers with the email"
assert_eq 16 "$(outputs upsert | grep -c "\"customer_id\": \"$cust\"")" "callers answered with the one customer"
assert_eq 1 "$(outputs upsert | grep -c '"created": true')" "created: true answers"
rm -rf "$out"
