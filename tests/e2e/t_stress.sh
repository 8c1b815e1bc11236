# A bounded stress run: 16 clients for STRESS_SECONDS (default 10) on loopback, every write
# function over a hot set, plus idempotent retries. Only success may come back (the conflict
# answers are JSON, not errors), except from lifecycle calls on a random subscription, whose
# documented refusals are 09000 (transition not allowed) and 23505 (the product is taken), and
# 22004 when the pair has no subscription yet; no deadlock; check_invariants() empty. STRESS_REPORT: where the
# report goes (scripts/stress prints it).
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
  echo "deadlocks: $((d1 - d0))"
  echo "check_invariants() violations: $(psql_db e2e_stress -c "SELECT count(*) FROM checkout.check_invariants()")"
} > "$report"
bad=$(psql_db e2e_stress -c "SELECT op || ' ' || state || ' ' || sum(n) FROM stress_results
  WHERE state <> '00000' AND NOT (op = 'lifecycle' AND state IN ('09000', '23505', '22004')) GROUP BY op, state")
[ -z "$bad" ] || fail "errors under stress: $bad"
assert_eq "$clients" "$(psql_db e2e_stress -c "SELECT count(DISTINCT client) FROM stress_results")" "clients that finished"
[ "$((d1 - d0))" = 0 ] || fail "deadlocks: $((d1 - d0)); from the server log:
$(grep -A 6 'deadlock detected' "$E2E_LOG" | head -n 60)"
found=$(violations e2e_stress)
[ -z "$found" ] || fail "invariants: $found"
