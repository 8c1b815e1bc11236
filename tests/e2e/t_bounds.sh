# Issue 15, cases 11 and 12, as the application role docs/operations.md grants (with the
# organization-scoped check_trial_eligibility) and, for direct SQL, as a DBA (superuser).
# 11: amounts are bounded at 999,999,999,999 minor units: create_subscription_atomic refuses more
#     with 22023, a direct INSERT with 23514 (subscriptions, payment_intents, refunds,
#     checkout_sessions); a legacy row beyond the bound (its CHECK dropped by the DBA) costs only
#     itself: refresh_product_metrics (MRR in numeric) still refreshes every other product.
# 12: normalize_email drops every Default_Ignorable_Code_Point, so an address with a zero-width space
#     is the same mailbox (trial refused: email_variation_detected); email_rules_version() is 2 (0.5.0's
#     rules were version 1, src/email/rules.rs RULES_VERSION); renormalize_email_variants() fixes a
#     row stored under the old rules and returns how many rows it changed.
# After the shared setup each case runs in its own subshell, and a failing case does not stop the
# other: one line per case, "case N: ok" or "case N: FAILED: <message>"; non-zero exit if any failed.
source "$(dirname "$0")/lib.sh"
db=e2e_bounds
app=e2e_bounds_app
fresh_db $db
psql_db postgres -c "DROP ROLE IF EXISTS $app" -c "CREATE ROLE $app LOGIN"
psql_db $db -c "CREATE EXTENSION checkout" -c "SELECT checkout_test.fixture()" >/dev/null
psql_db $db <<SQL
$(readme_app_grants $app)
SQL
as_app() { "$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$E2E_PORT" -U "$app" -d "$db" "$@"; }
as_dba() { psql_db "$db" "$@"; }
state() { # as_app|as_dba SQL: the SQLSTATE the statement fails with, 00000 when it succeeds
  local out
  if out=$("$1" -v VERBOSITY=sqlstate -c "$2" 2>&1); then echo 00000
  else echo "$out" | sed -n '/^ERROR:  [0-9A-Z]\{5\}$/{s/^ERROR:  //p;q}'; fi
}
org="'a0000000-0000-0000-0000-000000000001'"
bob="'c0000000-0000-0000-0000-0000000000a2'"
p1="'b0000000-0000-0000-0000-0000000000a1'"   # Pro, org A: alice's 1000/month (fixture)
team="'b0000000-0000-0000-0000-0000000000a2'" # Team, org A
sub() { # AMOUNT INTERVAL: a p_subscription
  echo "'{\"status\": \"active\", \"amount\": $1, \"currency\": \"usd\", \"interval\": \"$2\", \"current_period_start\": \"2026-01-01T00:00:00Z\", \"current_period_end\": \"2026-02-01T00:00:00Z\"}'"
}
insert_sub() { # CUSTOMER PRODUCT AMOUNT INTERVAL: a direct INSERT of an active subscription
  echo "INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval,
          current_period_start, current_period_end) SELECT c.organization_id, c.id, $2::uuid, 'active', $3, 'usd', '$4', now(), now() + interval '1 month'
        FROM checkout.customers c WHERE c.id = $1::uuid"
}

# The cases. Each runs in a subshell of its own, errexit on inside and off out here, so a failing case
# is reported and the next one still runs (on the data the cases before it left). One line per case,
# "case N: ok" or "case N: FAILED: <message>"; exit status 1 if any failed.
errs=$(mktemp -d /tmp/checkout-bounds.XXXXXX)
trap 'rm -rf "$errs"' EXIT
set +e
report() { report_case "case $1" "$2" "$errs/case_$1.err"; } # N STATUS

# --- 11: the amount bound -------------------------------------------------------------------------
(
set -e
for amount in 9223372036854775807 1000000000000; do
  assert_eq 22023 "$(state as_app "SELECT checkout.create_subscription_atomic($(sub $amount day), NULL, $bob, $team, $org)")" \
    "create_subscription_atomic with amount $amount, interval day"
done
assert_eq "true active" "$(as_app -c "SELECT r->>'success' || ' ' || (r->>'status') FROM checkout.create_subscription_atomic($(sub 999999999999 day), NULL, $bob, $team, $org) r")" \
  "create_subscription_atomic with amount 999999999999 (the bound), interval day"
for amount in 9223372036854775807 1000000000000; do
  s=$(state as_app "SELECT checkout.change_subscription_plan_atomic('d0000000-0000-0000-0000-0000000000a1', $org, $p1, $amount)")
  [ "$s" = 22023 ] || [ "$s" = 23514 ] || fail "change_subscription_plan_atomic to amount $amount: SQLSTATE [$s], expected 22023 (or 23514)"
done
assert_eq 1000 "$(as_dba -c "SELECT amount FROM checkout.subscriptions WHERE id = 'd0000000-0000-0000-0000-0000000000a1'")" "amount after the refused plan changes"
# Direct writes as the DBA.
for amount in 9223372036854775807 1000000000000; do
  assert_eq 23514 "$(state as_dba "$(insert_sub $bob $p1 $amount day)")" "direct INSERT of a subscription of amount $amount"
  assert_eq 23514 "$(state as_dba "INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status)
    VALUES ($org, 'pi_big', $amount, 'usd', 'succeeded')")" "direct INSERT of a payment of amount $amount"
  assert_eq 23514 "$(state as_dba "INSERT INTO checkout.checkout_sessions (organization_id, amount, currency) VALUES ($org, $amount, 'usd')")" \
    "direct INSERT of a checkout session of amount $amount"
done
as_dba -c "INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status)
  VALUES ($org, 'pi_max', 999999999999, 'usd', 'succeeded')" \
  -c "INSERT INTO checkout.checkout_sessions (organization_id, amount, currency) VALUES ($org, 999999999999, 'usd')"
assert_eq 23514 "$(state as_dba "INSERT INTO checkout.refunds (organization_id, payment_intent_id, amount, currency, status)
  VALUES ($org, 'pi_max', 1000000000000, 'usd', 'pending')")" "direct INSERT of a refund of amount 1000000000000"

# A legacy row beyond the bound: the DBA drops the CHECK that bounds subscriptions.amount (found by
# its definition) and inserts one, interval day, on Pro. Org B gets a subscription of its own.
bounds=$(as_dba -c "SELECT string_agg(conname, ' ') FROM pg_constraint
  WHERE conrelid = 'checkout.subscriptions'::regclass AND contype = 'c'
    AND pg_get_constraintdef(oid) ~ '\mamount\M' AND pg_get_constraintdef(oid) ~ '999999999999'")
[ -n "$bounds" ] || fail "no CHECK constraint of checkout.subscriptions bounds amount by 999999999999: $(as_dba -c \
  "SELECT string_agg(conname || ': ' || pg_get_constraintdef(oid), '; ') FROM pg_constraint WHERE conrelid = 'checkout.subscriptions'::regclass AND contype = 'c'")"
for c in $bounds; do as_dba -c "ALTER TABLE checkout.subscriptions DROP CONSTRAINT \"$c\""; done
as_dba -c "$(insert_sub $bob $p1 9223372036854775807 day)" \
  -c "$(insert_sub "'c0000000-0000-0000-0000-0000000000b1'" "'b0000000-0000-0000-0000-0000000000b1'" 500 month)" \
  -c "UPDATE checkout.products SET metrics_active_subscriptions = NULL, metrics_trialing_subscriptions = NULL,
        metrics_mrr = NULL, metrics_last_calculated_at = NULL"
refreshed=$(as_dba -c "SELECT checkout.refresh_product_metrics()" 2>&1) || fail "refresh_product_metrics with a legacy amount: $refreshed"
[ "$refreshed" -ge 2 ] || fail "refresh_product_metrics refreshed $refreshed products"
# Every other product: refreshed, with its figures (Team: 999999999999 a day = 29999999999970 a month).
others="SELECT string_agg(name || ' ' || (metrics_last_calculated_at IS NOT NULL) || ' ' || metrics_active_subscriptions
                          || ' ' || metrics_trialing_subscriptions || ' ' || trim_scale((metrics_mrr->>'usd')::numeric), '; ' ORDER BY id)
        FROM checkout.products WHERE id <> $p1"
assert_eq "Team true 1 0 29999999999970; Pro true 1 0 500" "$(as_dba -c "$others")" "the other products' metrics"
# Pro itself: either left stale or right (computed in numeric), never a wrong figure.
p1_state="SELECT CASE WHEN metrics_last_calculated_at IS NULL THEN 'stale'
                      WHEN metrics_active_subscriptions = 2 AND (metrics_mrr->>'usd')::numeric = 9223372036854775807::numeric * 30 + 1000 THEN 'right'
                      ELSE 'wrong: ' || metrics_active_subscriptions || ' ' || metrics_mrr END
          FROM checkout.products WHERE id = $p1"
pro=$(as_dba -c "$p1_state")
[ "$pro" = stale ] || [ "$pro" = right ] || fail "the legacy row's product: $pro"
echo "the legacy row's product after refresh_product_metrics: $pro"
# The maintenance run too: its metrics job records no error, and refreshes the others.
as_dba -c "UPDATE checkout.products SET metrics_last_calculated_at = NULL"
job=$(as_dba -c "SELECT checkout.run_maintenance()->'refresh_product_metrics'")
case "$job" in *error*|"") fail "run_maintenance's refresh_product_metrics with a legacy amount: [$job]" ;; esac
assert_eq "Team true 1 0 29999999999970; Pro true 1 0 500" "$(as_dba -c "$others")" "the other products' metrics after run_maintenance"
) 2>"$errs/case_11.err"; report 11 $?

# --- 12: invisible characters ---------------------------------------------------------------------
(
set -e
assert_eq "alice@gmail.com" "$(as_app -c "SELECT checkout.normalize_email(E'alice\\u200b@gmail.com')")" "normalize_email of alice<U+200B>@gmail.com"
# Every code point of every Default_Ignorable_Code_Point range, at the start, in the middle and at
# the end of the local part, changes nothing.
sweep=$(as_app 2>&1 <<'SQL'
DO $$
DECLARE
  r record;
  got text;
  email text;
  expected text;
  bad text := '';
  n int := 0;
BEGIN
  FOR r IN SELECT * FROM (VALUES (x'00AD', x'00AD'), (x'034F', x'034F'), (x'061C', x'061C'), (x'115F', x'1160'),
      (x'17B4', x'17B5'), (x'180B', x'180F'), (x'200B', x'200F'), (x'202A', x'202E'), (x'2060', x'206F'),
      (x'3164', x'3164'), (x'FE00', x'FE0F'), (x'FEFF', x'FEFF'), (x'FFA0', x'FFA0'), (x'FFF0', x'FFF8'),
      (x'1BCA0', x'1BCA3'), (x'1D173', x'1D17A'), (x'E0000', x'E0FFF')) v(lo, hi) LOOP
    FOR cp IN r.lo::int .. r.hi::int LOOP
      FOR email, expected IN VALUES ('al' || chr(cp) || 'ice@gmail.com', 'alice@gmail.com'),
                                   (chr(cp) || 'bob@example.com', 'bob@example.com'),
                                   ('bob' || chr(cp) || '@example.com', 'bob@example.com') LOOP
        BEGIN
          got := checkout.normalize_email(email);
        EXCEPTION WHEN OTHERS THEN
          got := 'ERROR ' || SQLSTATE;
        END;
        n := n + 1;
        IF got IS DISTINCT FROM expected THEN
          bad := bad || format(' U+%s in %s: %s;', upper(to_hex(cp)), expected, got);
        END IF;
      END LOOP;
    END LOOP;
  END LOOP;
  IF bad <> '' THEN
    RAISE EXCEPTION 'default-ignorable code points not dropped:%', left(bad, 2000);
  END IF;
  IF n < 3 * 4000 THEN
    RAISE EXCEPTION 'only % addresses checked', n;
  END IF;
END $$;
SQL
) || fail "$sweep"
# Nothing but invisible characters before the @: an empty local part.
assert_eq 22023 "$(state as_app "SELECT checkout.normalize_email(U&'\\200B\\200C@example.com')")" "an address whose local part is only default-ignorable"
assert_eq 2 "$(as_app -c "SELECT checkout.email_rules_version()")" "email_rules_version() (0.5.0: 1)"

# alice@gmail.com had a trial of Team; al<U+200B>ice@gmail.com, a new customer, may not have one.
alice=$(as_app -c "SELECT checkout.upsert_customer_atomic($org, 'alice@gmail.com')->>'customer_id'")
trial="'{\"status\": \"trialing\", \"amount\": 1999, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": \"2026-01-01T00:00:00Z\", \"current_period_end\": \"2026-02-01T00:00:00Z\", \"trial_end\": \"2026-01-15T00:00:00Z\"}'"
assert_eq "trialing true" "$(as_app -c "SELECT r->>'status' || ' ' || (r->>'trial_eligible') FROM checkout.create_subscription_atomic($trial, NULL, '$alice', $team, $org) r")" \
  "alice@gmail.com's trial"
created=$(as_app -c "SELECT r->>'customer_id' || ' ' || (r->>'created') FROM checkout.upsert_customer_atomic($org, 'al' || U&'\\200B' || 'ice@gmail.com') r")
variant=${created% *}
assert_eq "true" "${created#* }" "al<U+200B>ice@gmail.com is a customer of its own"
[ "$variant" != "$alice" ] || fail "al<U+200B>ice@gmail.com was matched to alice@gmail.com's customer"
eligibility="SELECT r->>'eligible' || ' ' || (r->>'reason') || ' ' || (r->>'matched_customer_id')
             FROM checkout.check_trial_eligibility($org::uuid, '$variant'::uuid, $team::uuid) r"
assert_eq "false email_variation_detected $alice" "$(as_app -c "$eligibility")" "check_trial_eligibility of al<U+200B>ice@gmail.com"
assert_eq "false email_variation_detected" "$(as_app -c "SELECT r->>'eligible' || ' ' || (r->>'reason')
  FROM checkout.check_trial_eligibility($org::uuid, $bob::uuid, $team::uuid, 'Ali' || U&'\\FEFF' || 'ce' || U&'\\+0E0041' || '@googlemail.com') r")" \
  "check_trial_eligibility of bob with p_email Ali<U+FEFF>ce<U+E0041>@googlemail.com"
assert_eq "false email_variation_detected" "$(as_app -c "SELECT (r->>'trial_eligible') || ' ' || (r->>'trial_reason')
  FROM checkout.create_subscription_atomic($trial, NULL, '$variant', $team, $org) r")" "create_subscription_atomic trialing for al<U+200B>ice@gmail.com"

# A variant stored under the 0.5.0 rules (the zero-width space kept, version 1) is fixed by
# renormalize_email_variants(), which counts it.
assert_eq 1 "$(as_dba -c "WITH u AS (UPDATE checkout.customer_email_variants SET email_normalized = 'al' || U&'\\200B' || 'ice@gmail.com', rules_version = 1
  WHERE customer_id = '$variant' RETURNING 1) SELECT count(*) FROM u")" "variant rows set to the 0.5.0 form"
changed=$(as_dba -c "SELECT checkout.renormalize_email_variants()")
[ "$changed" -ge 1 ] || fail "renormalize_email_variants() returned $changed"
assert_eq "alice@gmail.com gmail.com 2" "$(as_dba -c "SELECT email_normalized || ' ' || email_domain || ' ' || rules_version
  FROM checkout.customer_email_variants WHERE customer_id = '$variant'")" "the variant row after renormalize_email_variants()"
assert_eq 0 "$(as_dba -c "SELECT checkout.renormalize_email_variants()")" "renormalize_email_variants() run again"
assert_eq "false email_variation_detected $alice" "$(as_app -c "$eligibility")" "check_trial_eligibility of al<U+200B>ice@gmail.com after renormalizing"
) 2>"$errs/case_12.err"; report 12 $?
cases_passed
