# Faults: a backend killed in the middle of create_subscription_atomic; lock_timeout and
# statement_timeout set by the caller; the server stopped with -m immediate under a concurrent
# load of the write functions (creates, upserts, lifecycle calls, refunds, webhook events and their
# workers). After each: nothing half-written, check_invariants() empty; after the stop, a key
# completed before it replays and the key in flight at it runs once.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_faults
psql_db e2e_faults -c "CREATE EXTENSION checkout" >/dev/null
psql_db e2e_faults -v products=10 -v customers=51 -f "$(dirname "$0")/hot_set.sql" >/dev/null
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
# VERBOSITY verbose prints the SQLSTATE with the message: "ERROR:  55P03: canceling statement ...".
out=$(psql_db e2e_faults -c "\\set VERBOSITY verbose" -c "SET lock_timeout = '200ms'" -c "$CALL" 2>&1 || true)
echo "$out" | grep -q "ERROR:  55P03: canceling statement due to lock timeout" || fail "lock_timeout: $out"
out=$(psql_db e2e_faults -c "\\set VERBOSITY verbose" -c "SET statement_timeout = '200ms'" -c "$CALL" 2>&1 || true)
echo "$out" | grep -q "ERROR:  57014: canceling statement due to statement timeout" || fail "statement_timeout: $out"
assert_eq "$before" "$(counts)" "rows after the timeouts"
psql_db e2e_faults -c "SELECT pg_terminate_backend($holder)" >/dev/null
assert_eq 0 "$(invariants)" "invariant violations after the kill and timeouts"
# The key was rolled back with the work: the same call now succeeds.
psql_db e2e_faults -c "$CALL" | grep -q '"success": true' || fail "retry with the key after the kill"

# 3. Immediate stop under 8 clients of every write function: creates (keyed and not), upserts,
# lifecycle calls on the pair's latest subscription (cancel, reactivate, renew, past due, plan
# change; keyed and not), refunds and their verdicts, webhook events (redeliveries included), and
# workers claiming and completing or failing them. Customer 51 stays out of the load: one session
# holds an uncommitted keyed create for it when the server stops.
psql_db e2e_faults >/dev/null <<'SQL'
CREATE SCHEMA e2e_load;
-- A lifecycle call on the latest subscription of (customer c, product p). The documented refusals
-- are answers here (09000: not allowed from its status; 23505: the customer has the product
-- already); any other error aborts the pgbench client and fails the test. Keyed calls use keys
-- bound to (operation, subscription, product, n), so a replay never meets other parameters.
CREATE FUNCTION e2e_load.lifecycle(c int, p int, op int, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_org constant uuid := 'a0000000-0000-0000-0000-000000000001';
  v_id uuid;
  v_key text;
BEGIN
  SELECT id INTO v_id FROM checkout.subscriptions
  WHERE customer_id = ('c0000000-0000-0000-0000-' || lpad(c::text, 12, '0'))::uuid
    AND product_id = ('b0000000-0000-0000-0000-' || lpad(p::text, 12, '0'))::uuid
  ORDER BY created_at DESC LIMIT 1;
  IF v_id IS NULL THEN
    RETURN 'none';
  END IF;
  v_key := CASE WHEN n > 0 THEN format('lc-%s-%s-%s-%s', op, v_id, p, n) END;
  CASE op
  WHEN 0 THEN PERFORM checkout.cancel_subscription_atomic(v_id, v_org, c % 2 = 0, 'load', NULL, v_key);
  WHEN 1 THEN PERFORM checkout.reactivate_subscription_atomic(v_id, v_org, NULL, NULL, v_key);
  WHEN 2 THEN PERFORM checkout.renew_subscription_period(v_id, v_org, NULL, NULL, v_key);
  WHEN 3 THEN PERFORM checkout.mark_subscription_past_due(v_id, v_org, NULL, NULL, v_key);
  ELSE PERFORM checkout.change_subscription_plan_atomic(v_id, v_org,
         ('b0000000-0000-0000-0000-' || lpad((p % 10 + 1)::text, 12, '0'))::uuid, (100 * (1 + (c + p) % 5))::bigint,
         NULL, NULL, ARRAY['{"feature_id": "f0000000-0000-0000-0000-000000000001"}'::jsonb], NULL, NULL, NULL, v_key);
  END CASE;
  RETURN 'ok';
EXCEPTION WHEN SQLSTATE '09000' OR SQLSTATE '23505' THEN
  RETURN SQLSTATE;
END $$;
-- A refund of customer c's payment (1000): refund ids are shared by all clients (redeliveries),
-- 100 or 250 each, so the limit is reached (23514, an answer); verdict v (0: none) may meet a
-- refund that had another verdict already (09000, an answer).
CREATE FUNCTION e2e_load.refund(c int, r int, v int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_hot_' || c, format('re-%s-%s', c, r),
                                 100 + 150 * (r % 2), 'usd', 'load', 'automatic');
  IF v > 0 THEN
    PERFORM checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', format('re-%s-%s', c, r),
                                          (ARRAY['succeeded', 'failed', 'canceled'])[v]);
  END IF;
  RETURN 'ok';
EXCEPTION WHEN SQLSTATE '23514' OR SQLSTATE '09000' THEN
  RETURN SQLSTATE;
END $$;
-- A webhook worker's turn: claims a batch and completes (4 in 5) or fails each, in one transaction.
CREATE FUNCTION e2e_load.work_webhooks(batch int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  v_id uuid;
  v_n int := 0;
BEGIN
  FOR v_id IN SELECT id FROM checkout.claim_webhook_events(batch) LOOP
    IF random() < 0.8 THEN PERFORM checkout.complete_webhook_event(v_id);
    ELSE PERFORM checkout.fail_webhook_event(v_id, 'load'); END IF;
    v_n := v_n + 1;
  END LOOP;
  RETURN v_n;
END $$;
SQL
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
cat > /tmp/e2e-load-lifecycle.sql <<'PGB'
\set c random(1, 50)
\set p random(1, 10)
\set op random(0, 4)
\set n random(0, 2)
SELECT e2e_load.lifecycle(:c, :p, :op, :n);
PGB
cat > /tmp/e2e-load-refund.sql <<'PGB'
\set c random(1, 50)
\set r random(1, 12)
\set v random(0, 3)
SELECT e2e_load.refund(:c, :r, :v);
PGB
cat > /tmp/e2e-load-webhook.sql <<'PGB'
\set e random(1, 400)
SELECT checkout.record_webhook_event('a0000000-0000-0000-0000-000000000001', 'evt-' || :e, 'invoice.paid',
  jsonb_build_object('data', jsonb_build_object('object', jsonb_build_object('id', 'in_' || (:e % 25)))),
  timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => :e));
PGB
cat > /tmp/e2e-load-claim.sql <<'PGB'
SELECT e2e_load.work_webhooks(3);
PGB
"$E2E_BIN/pgbench" -n -h 127.0.0.1 -p "$E2E_PORT" -U postgres -c 8 -j 2 -T 20 -f /tmp/e2e-load-create.sql@3 \
  -f /tmp/e2e-load-upsert.sql@2 -f /tmp/e2e-load-lifecycle.sql@4 -f /tmp/e2e-load-refund.sql@2 \
  -f /tmp/e2e-load-webhook.sql@2 -f /tmp/e2e-load-claim.sql@1 e2e_faults > /tmp/e2e-load.out 2>&1 &
load=$!
# The keyed create in flight at the stop: written, not committed.
C51=c0000000-0000-0000-0000-000000000051
INFLIGHT="SELECT checkout.create_subscription_atomic('{\"status\": \"active\", \"amount\": 100, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": \"2026-01-01\", \"current_period_end\": \"2026-02-01\"}', NULL, '$C51', 'b0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000001', 'inflight-key')"
"$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d e2e_faults \
  -c "BEGIN" -c "$INFLIGHT" -c "SELECT pg_sleep(61)" -c "END" > /tmp/e2e-inflight.out 2>&1 &
inflight=$!
sleep 3
[ "$(psql_db e2e_faults -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(61)'")" = 1 ] \
  || fail "the in-flight create did not get to its sleep: $(cat /tmp/e2e-inflight.out)"
done_before=$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscriptions")
changes_before=$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscription_changes WHERE change_type NOT IN ('created', 'updated')")
sudo -u postgres "$E2E_BIN/pg_ctl" -D "$E2E_DATA" -m immediate -w stop >/dev/null
wait $load || true
wait $inflight || true
sudo -u postgres env -u RUST_BACKTRACE "$E2E_BIN/pg_ctl" -D "$E2E_DATA" -l "$E2E_DATA/server.log" -w start >/dev/null
[ "$done_before" -gt 10 ] || fail "the load did too little before the stop ($done_before subscriptions)"
[ "$changes_before" -gt 10 ] || fail "the lifecycle load did too little before the stop ($changes_before lifecycle audit rows)"
# Clients end with the stop (FATAL / connection lost); an ERROR before it is a failure the load did
# not expect (the documented refusals are caught in the load functions).
unexpected=$(grep 'aborted in command' /tmp/e2e-load.out | grep 'ERROR:' || true)
[ -z "$unexpected" ] || fail "load errors before the stop: $unexpected"
violations=$(psql_db e2e_faults -c "SELECT invariant || ': ' || detail FROM checkout.check_invariants()")
[ -z "$violations" ] || fail "after crash recovery: $violations"
# What check_invariants() does not cover: no webhook event left claimed (claims commit with their
# completion), and no payment refunded (pending or succeeded) beyond its amount.
assert_eq 0 "$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.webhook_events WHERE status = 'processing'")" "webhook events left processing after recovery"
assert_eq "" "$(over_refunded e2e_faults)" "payments refunded beyond their amount after recovery"
for table in refunds webhook_events; do
  [ "$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.$table")" -gt 0 ] || fail "the load wrote no $table before the stop"
done

# Retries after recovery. A key the load completed before the stop replays its stored answer (and
# writes nothing); the key in flight at the stop was rolled back with its work: the retry runs
# once, and the next retry replays that.
key=$(psql_db e2e_faults -c "SELECT key FROM checkout.idempotency_keys WHERE key LIKE 'load-%' AND status = 'completed' ORDER BY updated_at DESC LIMIT 1")
[ -n "$key" ] || fail "no keyed create completed before the stop"
IFS=- read -r _ kc kp <<<"$key"
RETRY="SELECT checkout.create_subscription_atomic('{\"status\": \"active\", \"amount\": 100, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": \"2026-01-01\", \"current_period_end\": \"2026-02-01\"}',
  ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-000000000001\"}'::jsonb], ('c0000000-0000-0000-0000-' || lpad('$kc', 12, '0'))::uuid,
  ('b0000000-0000-0000-0000-' || lpad('$kp', 12, '0'))::uuid, 'a0000000-0000-0000-0000-000000000001', '$key')"
rows_before=$(counts)
assert_eq t "$(psql_db e2e_faults -c "SELECT ($RETRY) = (SELECT response || '{\"replayed\": true}' FROM checkout.idempotency_keys
  WHERE organization_id = 'a0000000-0000-0000-0000-000000000001' AND key = '$key')")" "retry of $key (completed before the stop) replays its answer"
assert_eq "$rows_before" "$(counts)" "rows after replaying $key"
assert_eq 0 "$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.idempotency_keys WHERE key = 'inflight-key'")" "the in-flight key after recovery"
assert_eq 0 "$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscriptions WHERE customer_id = '$C51'")" "the in-flight create's rows after recovery"
first=$(psql_db e2e_faults -c "SELECT r->>'success' || ' ' || coalesce(r->>'replayed', 'fresh') || ' ' || (r->>'subscription_id') FROM ($INFLIGHT) AS t(r)")
[[ "$first" == "true fresh "* ]] || fail "retry of the in-flight key: $first"
second=$(psql_db e2e_faults -c "SELECT r->>'success' || ' ' || coalesce(r->>'replayed', 'fresh') || ' ' || (r->>'subscription_id') FROM ($INFLIGHT) AS t(r)")
assert_eq "true true ${first#true fresh }" "$second" "second retry of the in-flight key"
assert_eq 1 "$(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscriptions WHERE customer_id = '$C51'")" "subscriptions of the in-flight key after its retries"
assert_eq "" "$(violations e2e_faults)" "invariants after the retries"
echo "subscriptions before the immediate stop: $done_before; after recovery: $(psql_db e2e_faults -c "SELECT count(*) FROM checkout.subscriptions")"
echo "refunds: $(psql_db e2e_faults -c "SELECT count(*) FROM checkout.refunds"); webhook events: $(psql_db e2e_faults -c "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM checkout.webhook_events GROUP BY status) t")"
