# A bounded stress run: 16 clients for STRESS_SECONDS (default 10) on loopback, every write
# function over a hot set, plus idempotent retries and redeliveries. Only success may come back
# (the conflict answers are JSON, not errors), except the documented refusals: from lifecycle calls
# on a random subscription 09000 (transition not allowed), 23505 (the product is taken) and 22004
# (the pair has no subscription yet); from refunds 23514 (beyond the payment); from refund verdicts
# 09000 (the refund had another verdict) and P0002 (the payment has no refund yet). No deadlock;
# check_invariants() empty; no payment refunded beyond its amount; no webhook event left claimed.
# STRESS_REPORT: where the report goes (scripts/stress prints it).
source "$(dirname "$0")/lib.sh"
seconds=${STRESS_SECONDS:-10} clients=${STRESS_CLIENTS:-16} report=${STRESS_REPORT:-/dev/stdout}
fresh_db e2e_stress
psql_db e2e_stress -c "CREATE EXTENSION checkout" -f "$(dirname "$0")/stress.sql" >/dev/null
psql_db e2e_stress -v products=2 -v customers=3 -f "$(dirname "$0")/hot_set.sql" >/dev/null
d0=$(deadlocks e2e_stress)
for c in $(seq 1 "$clients"); do
  psql_db e2e_stress -c "CALL stress($c, $seconds)" &
done
wait
d1=$(deadlocks e2e_stress)
{
  echo "stress: $clients clients, $seconds s, PostgreSQL $E2E_VERSION"
  psql_db e2e_stress -c "SELECT op || ' ' || state || ' ' || sum(n) FROM stress_results GROUP BY op, state ORDER BY op, state"
  echo "total operations: $(psql_db e2e_stress -c "SELECT sum(n) FROM stress_results")"
  echo "refunds by status: $(psql_db e2e_stress -c "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM checkout.refunds GROUP BY status) t")"
  echo "webhook events by status: $(psql_db e2e_stress -c "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM checkout.webhook_events GROUP BY status) t")"
  echo "deadlocks: $((d1 - d0))"
  echo "check_invariants() violations: $(psql_db e2e_stress -c "SELECT count(*) FROM checkout.check_invariants()")"
} > "$report"
bad=$(psql_db e2e_stress -c "SELECT op || ' ' || state || ' ' || sum(n) FROM stress_results
  WHERE state <> '00000' AND NOT (op = 'lifecycle' AND state IN ('09000', '23505', '22004'))
    AND NOT (op = 'refund' AND state = '23514') AND NOT (op = 'refund_status' AND state IN ('09000', 'P0002'))
  GROUP BY op, state")
[ -z "$bad" ] || fail "errors under stress: $bad"
assert_eq "$clients" "$(psql_db e2e_stress -c "SELECT count(DISTINCT client) FROM stress_results")" "clients that finished"
[ "$((d1 - d0))" = 0 ] || fail "deadlocks: $((d1 - d0)); from the server log:
$(grep -A 6 'deadlock detected' "$E2E_LOG" | head -n 60)"
found=$(violations e2e_stress)
[ -z "$found" ] || fail "invariants: $found"
# The mix reached the paths it is for: refunds recorded and redelivered, verdicts applied, events
# redelivered, claimed and processed.
for op in refund refund_redelivery refund_status webhook webhook_redelivery webhook_work; do
  [ "$(psql_db e2e_stress -c "SELECT coalesce(sum(n), 0) FROM stress_results WHERE op = '$op' AND state = '00000'")" -gt 0 ] \
    || fail "no successful $op under stress"
done
[ "$(psql_db e2e_stress -c "SELECT count(*) FROM checkout.webhook_events WHERE status = 'processed'")" -gt 0 ] \
  || fail "no webhook event processed under stress"
# Claims commit with their completion or failure: none left processing. Refunds of a payment are
# serialized on its row: pending and succeeded ones never add up beyond it.
assert_eq 0 "$(psql_db e2e_stress -c "SELECT count(*) FROM checkout.webhook_events WHERE status = 'processing'")" "webhook events left processing"
assert_eq "" "$(over_refunded e2e_stress)" "payments refunded beyond their amount"
