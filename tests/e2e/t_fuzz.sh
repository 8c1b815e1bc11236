# Hostile arguments (fuzz.sql): thousands of calls of every function; each rejection must carry a
# documented SQLSTATE (23514 and 09000 are the refund limit and the refund state machine, 54001 a jsonb
# argument nested too deeply) (never XX000, the mark of a Rust panic or a bug), and the backend must survive.
# Then the targeted calls (issue 15): a number beyond a double's range (1e400, -1e400; 1e-400 may be
# read as 0) anywhere in a jsonb argument is 22023, nesting past serde_json's 128 levels 22023 or
# 54001; p_features of more than 10,000 elements 22023, 10,000 unknown feature ids P0002 with a
# DETAIL under 1 KB; under statement_timeout 2s no call takes more than 3 s (1 s for the P0002).
source "$(dirname "$0")/lib.sh"
fresh_db e2e_fuzz
psql_db e2e_fuzz -c "CREATE EXTENSION checkout"
calls=${FUZZ_CALLS:-4000}
all=$(psql_db e2e_fuzz -v calls="$calls" -f "$(dirname "$0")/fuzz.sql") || fail "fuzz run died"
out=$(echo "$all" | grep -E '^[a-z_]+ [0-9A-Z]{5} [0-9]+$') || fail "no SQLSTATE counts"
echo "$out"
total=$(echo "$out" | awk '{s += $3} END {print s}')
assert_eq $((calls * 8)) "$total" "calls counted"
allowed="00000 22023 22004 P0002 55000 23505 23514 09000 54001"
bad=$(echo "$out" | awk -v ok="$allowed" 'BEGIN {split(ok, a, " "); for (i in a) good[a[i]] = 1} !($2 in good)')
[ -z "$bad" ] || fail "undocumented SQLSTATEs: $bad"
for fn in normalize_email check_trial_eligibility upsert_customer_atomic create_subscription_atomic lifecycle; do
  echo "$out" | grep -q "^$fn 00000 " || fail "$fn never succeeded: the fuzzer is not reaching the happy path"
done

# The targeted calls: case FN LABEL EXPECTED STATE MS MAX_MS DETAIL_BYTES MAX_DETAIL_BYTES (-1: any).
cases=$(echo "$all" | grep -E '^case ') || fail "no targeted calls"
echo "$cases" | awk '{printf "%s %s %s %sms detail %sB\n", $2, $3, $5, $6, $8}'
# 10 per function of the JSON classes at least, and the 6 sizes of create and of change.
for fn in create_subscription_atomic change_subscription_plan_atomic upsert_customer_atomic; do
  [ "$(echo "$cases" | awk -v fn="$fn" '$2 == fn' | wc -l)" -ge 10 ] || fail "too few targeted calls of $fn"
done
assert_eq 12 "$(echo "$cases" | awk '$3 ~ /^features_[0-9]+_/' | wc -l)" "p_features size calls"
wrong=$(echo "$cases" | awk '
  { n = split($4, e, "|"); ok = 0; for (i = 1; i <= n; i++) if ($5 == e[i]) ok = 1
    if (!ok) print $2 " " $3 ": SQLSTATE " $5 ", expected " $4
    if ($6 + 0 > $7 + 0) print $2 " " $3 ": " $6 " ms, at most " $7
    if ($9 + 0 >= 0 && $8 + 0 > $9 + 0) print $2 " " $3 ": DETAIL of " $8 " bytes, at most " $9 }')
if [ -n "$wrong" ]; then
  # With the error messages of the calls that went wrong.
  why=$(echo "$wrong" | awk '{print $2}' | tr -d ':' | sort -u | while read -r label; do
          echo "$all" | grep -E "^why $label " || true; done)
  fail "targeted calls:
$wrong
$why"
fi
# The data the fuzzer left is consistent.
assert_eq "" "$(violations e2e_fuzz)" "invariants after the fuzz run"
