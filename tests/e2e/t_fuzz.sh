# Hostile arguments (fuzz.sql): thousands of calls of every function; each rejection must carry a
# documented SQLSTATE (23514 and 09000 are the refund limit and the refund state machine) (never XX000, the mark of a Rust panic or a bug), and the backend must survive.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_fuzz
psql_db e2e_fuzz -c "CREATE EXTENSION checkout"
calls=${FUZZ_CALLS:-4000}
out=$(psql_db e2e_fuzz -v calls="$calls" -f "$(dirname "$0")/fuzz.sql" | grep -E '^[a-z_]+ [0-9A-Z]{5} [0-9]+$') || fail "fuzz run died"
echo "$out"
total=$(echo "$out" | awk '{s += $3} END {print s}')
assert_eq $((calls * 8)) "$total" "calls counted"
allowed="00000 22023 22004 P0002 55000 23505 23514 09000"
bad=$(echo "$out" | awk -v ok="$allowed" 'BEGIN {split(ok, a, " "); for (i in a) good[a[i]] = 1} !($2 in good)')
[ -z "$bad" ] || fail "undocumented SQLSTATEs: $bad"
for fn in normalize_email check_trial_eligibility upsert_customer_atomic create_subscription_atomic lifecycle; do
  echo "$out" | grep -q "^$fn 00000 " || fail "$fn never succeeded: the fuzzer is not reaching the happy path"
done
# The data the fuzzer left is consistent.
assert_eq "" "$(violations e2e_fuzz)" "invariants after the fuzz run"
