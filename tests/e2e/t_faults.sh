# Faults: a backend killed in the middle of create_subscription_atomic; lock_timeout and
# statement_timeout set by the caller; the server stopped with -m immediate under a concurrent
# load of the write functions. After each: nothing half-written, check_invariants() empty.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_faults
psql_db e2e_faults -c "CREATE EXTENSION checkout" >/dev/null
psql_db e2e_faults -v products=10 -v customers=50 -f "$(dirname "$0")/hot_set.sql" >/dev/null
C1=c0000000-0000-0000-0000-000000000001
CALL="SELECT checkout.create_subscription_atomic('{\"status\": \"active\", \"amount\": 100, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": \"2026-01-01\", \"current_period_end\": \"2026-02-01\"}', ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-000000000001\"}'::jsonb], '$C1', 'b0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000001', 'fault-key')"
counts() { psql_db e2e_faults -c "SELECT (SELECT count(*) FROM checkout.subscriptions) || '/' || (SELECT count(*) FROM checkout.subscription_changes) || '/' || (SELECT count(*) FROM checkout.feature_grants) || '/' || (SELECT count(*) FROM checkout.idempotency_keys)"; }
invariants() { psql_db e2e_faults -c "SELECT count(*) FROM checkout.check_invariants()"; }
hold_customer() { # holds C1's row lock for 30 s in the background; its pid is the first line of /tmp/e2e-holder.out
  # (output to a file, not a pipe: a closed pipe would kill psql and release the lock)
  "$E2E_BIN/psql" -X -q -At -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d e2e_faults \
    -c "BEGIN" -c "SELECT pg_backend_pid()" -c "SELECT 1 FROM checkout.customers WHERE id = '$C1' FOR UPDATE" -c "SELECT pg_sleep(30)" -c "END" > /tmp/e2e-holder.out 2>/dev/null &
  for i in $(seq 1 100); do  # until the holder sleeps with the lock taken
    [ "$(psql_db e2e_faults -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")" = 1 ] && return
    sleep 0.1
  done
  fail "the lock holder did not start"
}
before=$(counts)

# 1. Killed mid-call: the victim has written its rows and waits on the customer's lock.
hold_customer
holder=$(head -n1 /tmp/e2e-holder.out)
psql_db e2e_faults -c "$CALL" >/dev/null 2>&1 &
for i in $(seq 1 50); do
  victim=$(psql_db e2e_faults -c "SELECT pid FROM pg_stat_activity WHERE query LIKE '%create_subscription_atomic%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
  [ -n "$victim" ] && break; sleep 0.1
done
[ -n "$victim" ] || fail "the victim never waited on the lock"
psql_db e2e_faults -c "SELECT pg_terminate_backend($victim)" >/dev/null
wait %2 2>/dev/null || true
assert_eq "$before" "$(counts)" "rows after the kill (subscriptions/changes/grants/keys)"

# 2. The caller's lock_timeout and statement_timeout: their own SQLSTATEs, nothing written.
out=$(psql_db e2e_faults -c "SET lock_timeout = '200ms'" -c "$CALL" 2>&1 || true)
echo "$out" | grep -q "canceling statement due to lock timeout" || fail "lock_timeout: $out"
out=$(psql_db e2e_faults -c "SET statement_timeout = '200ms'" -c "$CALL" 2>&1 || true)
echo "$out" | grep -q "canceling statement due to statement timeout" || fail "statement_timeout: $out"
assert_eq "$before" "$(counts)" "rows after the timeouts"
psql_db e2e_faults -c "SELECT pg_terminate_backend($holder)" >/dev/null
assert_eq 0 "$(invariants)" "invariant violations after the kill and timeouts"
# The key was rolled back with the work: the same call now succeeds.
psql_db e2e_faults -c "$CALL" | grep -q '"success": true' || fail "retry with the key after the kill"

# 3. Immediate stop under 8 clients of creates (keyed and not) and upserts.
cat > /tmp/e2e-load-create.sql <<'PGB'
\set c random(1, 50)
\set p random(1, 10)
\set k random(0, 1)
SELECT checkout.create_subscription_atomic('{"status": "active", "amount": 100, "currency": "usd", "interval": "month", "current_period_start": "2026-01-01", "current_period_end": "2026-02-01"}',
  ARRAY['{"feature_id": "f0000000-0000-0000-0000-000000000001"}'::jsonb], ('c0000000-0000-0000-0000-' || lpad(:c::text, 12, '0'))::uuid,
  ('b0000000-0000-0000-0000-' || lpad(:p::text, 12, '0'))::uuid, 'a0000000-0000-0000-0000-000000000001',
  CASE WHEN :k = 1 THEN 'load-' || :c || '-' || :p END);
PGB
cat > /tmp/e2e-load-upsert.sql <<'PGB'
\set u random(1, 200)
SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'U' || :u || '@Example.com', NULL, 'name ' || :u);
PGB
"$E2E_BIN/pgbench" -n -h 127.0.0.1 -p "$E2E_PORT" -U postgres -c 8 -j 2 -T 20 -f /tmp/e2e-load-create.sql -f /tmp/e2e-load-upsert.sql e2e_faults > /tmp/e2e-load.out 2>&1 &
load=$!
sleep 3
done_before=$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscriptions")
sudo -u postgres "$E2E_BIN/pg_ctl" -D "$E2E_DATA" -m immediate -w stop >/dev/null
wait $load || true
sudo -u postgres env -u RUST_BACKTRACE "$E2E_BIN/pg_ctl" -D "$E2E_DATA" -l "$E2E_DATA/server.log" -w start >/dev/null
[ "$done_before" -gt 10 ] || fail "the load did too little before the stop ($done_before subscriptions)"
violations=$(psql_db e2e_faults -c "SELECT invariant || ': ' || detail FROM checkout.check_invariants()")
[ -z "$violations" ] || fail "after crash recovery: $violations"
echo "subscriptions before the immediate stop: $done_before; after recovery: $(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscriptions")"
