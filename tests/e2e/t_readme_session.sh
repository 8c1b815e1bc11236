# The README's "Try it" session runs as written against the demo (examples/demo.sql), twice: the
# second time the upsert finds Sam, the trial is taken, and the create replays the first answer.
# The demo itself runs twice too, and says which of its errors are expected.
source "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
fresh_db e2e_readme
demo() { "$E2E_BIN/psql" -X -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d e2e_readme -v ON_ERROR_STOP=1 -f "$root/examples/demo.sql" 2>&1; }
out=$(demo) || fail "demo: $out"
out=$(demo) || fail "demo, second run: $out"
[ "$(echo "$out" | grep -c '^psql:.*ERROR:')" = 2 ] || fail "the demo should show exactly its two expected errors: $out"
[ "$(echo "$out" | grep -c 'EXPECTED: the ERROR')" = 2 ] || fail "the demo does not mark its errors as expected: $out"
echo "$out" | grep -q 'feature *| sso' || fail "the demo does not print the feature's id: $out"
session=$(sed -n '/^## Try it$/,/^## /p' "$root/README.md" | sed -n '/^```sql$/,/^```$/p' | sed '1d;$d')
[ -n "$session" ] || fail "no sql block in the README's Try it section"
try() { echo "$session" | psql_db e2e_readme; }
first=$(try) || fail "Try it, first run: $first"
second=$(try) || fail "Try it, second run: $second"
echo "$first" | grep -q '"created": false' || fail "the upsert should match Sam: $first"
echo "$first" | grep -q '"reason": "no_previous_trial"' || fail "first trial check: $first"
echo "$first" | grep -q '"trial_eligible": true' || fail "first create: $first"
echo "$second" | grep -q '"reason": "already_had_trial"' || fail "second trial check: $second"
echo "$second" | grep -q '"replayed": true' || fail "second create should replay: $second"
sub_first=$(echo "$first" | grep -o '"subscription_id": "[^"]*"'); sub_second=$(echo "$second" | grep -o '"subscription_id": "[^"]*"')
assert_eq "$sub_first" "$sub_second" "the replay answers with the first subscription"
echo "$second" | grep -q '^trialing|.*|sso$' || fail "Sam's subscription and grant: $second"
assert_eq 1 "$(psql_db e2e_readme -c "SELECT count(*) FROM checkout.subscriptions WHERE idempotency_key = 'try-it-sam-team'")" "subscriptions under the key"
assert_eq 2 "$(psql_db e2e_readme -c "SELECT count(*) FROM checkout.customers")" "customers (the upsert made none)"
assert_eq "" "$(violations e2e_readme)" "invariants"
psql_db postgres -c "DROP DATABASE e2e_readme"
