# Hardening (issue 15, release 0.6.0): the attacks of the issue, run as an application role `app`
# granted exactly what docs/operations.md grants an application (check_trial_eligibility in its
# organization-scoped form), as a `reconciler` role with that file's reconciliation grants, or as
# the DBA (superuser) for the direct-SQL cases. Two tenants, A and B. Every check is a SQLSTATE and
# the data effect that matters:
#  1. trigger functions cannot be borrowed: the app cannot attach them (42501); attached by a
#     superuser to another table they raise 39P01 when they fire; nothing of org B changes;
#  2. COPY into a temporary table named `subscriptions` (a DEFAULT that cancels) is audited;
#  3. provider ids (refund, subscription, checkout session) are unique per organization, and a
#     conflict's DETAIL names only the caller's own refund;
#  4. reconciliation items of two organizations with one (type, reference) stay apart;
#  5. check_trial_eligibility(organization, customer, product[, email]): another organization's
#     customer or product is P0002 with a missing customer's message; the seed form takes 2 arguments;
#  6. the key lifetime and the other job settings are superuser-only; a live key keeps refusing
#     other parameters (55000) and survives maintenance;
#  7. 8 concurrent refunds of 300 on a payment of 1000, under REPEATABLE READ, SERIALIZABLE and
#     READ COMMITTED, released together by an advisory-lock barrier: never more than 1000 refunded;
#     the same with the DBA's direct INSERTs into checkout.refunds under REPEATABLE READ;
#  8. direct writes by the DBA: refunds bounded by the payment and in its currency (23514), a
#     payment's amount and currency cover its refunds (23514), check_invariants() reports an
#     over-refunded payment (made with the payment's trigger disabled), a subscription inserted as
#     canceled/expired gets its end times and cannot lose them (23514);
#  9. jsonb arguments of the app's calls holding 1e400 (22023) or nested 200 levels (54001);
# 10. p_features beyond 10,000 elements (22023); 10,000 unknown feature ids: P0002 fast, short DETAIL.
#     Neither 9 nor 10 writes a row.
# After the shared setup each case runs in its own subshell, and a failing case does not stop the
# others: one line per case, "case N: ok" or "case N: FAILED: <message>"; non-zero exit if any failed.
source "$(dirname "$0")/lib.sh"
DB=e2e_hardening
A=a0000000-0000-0000-0000-000000000001
B=a0000000-0000-0000-0000-000000000002
PA=b0000000-0000-0000-0000-0000000000a1
PA2=b0000000-0000-0000-0000-0000000000a2
PB=b0000000-0000-0000-0000-0000000000b1
FA=f0000000-0000-0000-0000-0000000000a1
FB=f0000000-0000-0000-0000-0000000000b1
out=$(mktemp -d /tmp/checkout-hardening.XXXXXX)
trap 'rm -rf "$out"' EXIT

run_as() { # ROLE [psql args...]: one session as ROLE running the script on stdin; stops at the first
  # error, which is reported with its SQLSTATE (VERBOSITY verbose: "ERROR:  42501: ...")
  local role=$1; shift
  "$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h 127.0.0.1 -p "$E2E_PORT" \
    -U "$role" -d "$DB" "$@"
}
error_of() { # ROLE SQL: "SQLSTATE: message" of the first error SQL raises as ROLE, 00000 when all succeeds
  local stderr line
  if stderr=$(run_as "$1" <<<"$2" 2>&1 >/dev/null); then echo 00000; return; fi
  line=$(grep -m1 -E '(ERROR|FATAL):  [0-9A-Z]{5}: ' <<<"$stderr" || true)
  if [ -n "$line" ]; then sed -E 's/^.*(ERROR|FATAL):  //' <<<"$line"; else echo "(no SQLSTATE) $stderr"; fi
}
state_of() { # ROLE SQL: the SQLSTATE alone
  local e; e=$(error_of "$1" "$2")
  if [[ $e =~ ^[0-9A-Z]{5}(:|$) ]]; then echo "${e:0:5}"; else echo "$e"; fi
}
detail_of() { # ROLE SQL: the DETAIL line of the error SQL raises as ROLE
  local stderr; stderr=$(run_as "$1" <<<"$2" 2>&1 >/dev/null) || true
  grep -m1 '^DETAIL:' <<<"$stderr" || true
}
states_of() { # ROLE SQL: the SQLSTATE of every failing statement, in order, one session going on after errors
  local stderr; stderr=$(run_as "$1" -v ON_ERROR_STOP=0 <<<"$2" 2>&1 >/dev/null) || true
  { grep -oE '(ERROR|FATAL):  [0-9A-Z]{5}' <<<"$stderr" || true; } | awk '{ printf "%s%s", s, $2; s = " " }'
}
q() { psql_db "$DB" -c "$1"; } # a value, read as the DBA
NOW=$(date +%s)
sub_json() { # STATUS [EXTRA_FIELDS]: a p_subscription of 1000 usd a month from now (times in Unix seconds)
  local trial=""
  [ "$1" = trialing ] && trial=", \"trial_end\": $((NOW + 14 * 86400))"
  echo "{\"status\": \"$1\", \"amount\": 1000, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": $NOW, \"current_period_end\": $((NOW + 30 * 86400))$trial${2:-}}"
}

# Setup, as the DBA: the extension, the two roles and their grants, two tenants.
fresh_db "$DB"
psql_db postgres -c "DROP ROLE IF EXISTS app" -c "DROP ROLE IF EXISTS reconciler" \
  -c "CREATE ROLE app LOGIN" -c "CREATE ROLE reconciler LOGIN"
psql_db "$DB" >/dev/null <<SQL
CREATE EXTENSION checkout;
-- docs/operations.md "Using it", with check_trial_eligibility in its organization-scoped form.
$(readme_app_grants app)
-- The reconciliation worker (USAGE on the schema too, or it could call nothing).
GRANT USAGE ON SCHEMA checkout TO reconciler;
GRANT EXECUTE ON FUNCTION checkout.enqueue_reconciliation(text, text, jsonb, integer, uuid),
  checkout.claim_reconciliation(integer, text), checkout.complete_reconciliation(uuid),
  checkout.fail_reconciliation(uuid, text) TO reconciler;

INSERT INTO checkout.organizations (id, name) VALUES ('$A', 'Org A'), ('$B', 'Org B');
INSERT INTO checkout.products (id, organization_id, name) VALUES
  ('$PA', '$A', 'Pro'), ('$PA2', '$A', 'Team'), ('$PB', '$B', 'Pro');
INSERT INTO checkout.features (id, organization_id, key) VALUES ('$FA', '$A', 'sso'), ('$FB', '$B', 'sso');
INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status) VALUES
  ('$A', 'pi_A1', 1000, 'usd', 'succeeded'), ('$B', 'pi_B1', 1000, 'usd', 'succeeded'),
  ('$A', 'pi_A3', 1000, 'usd', 'succeeded'), ('$A', 'pi_A3s', 1000, 'usd', 'succeeded'),
  ('$A', 'pi_A3c', 1000, 'usd', 'succeeded'), ('$A', 'pi_A8', 1000, 'usd', 'succeeded');
SQL
customer() { q "SELECT checkout.upsert_customer_atomic('$1'::uuid, '$2')->>'customer_id'"; }
CA1=$(customer "$A" alice@example.com)
CA2=$(customer "$A" carol@example.com)
CA3=$(customer "$A" dave@example.com)
CB1=$(customer "$B" alice@example.com)
CB2=$(customer "$B" erin@example.com)
create() { # SUBSCRIPTION_JSON FEATURE|NULL CUSTOMER PRODUCT ORG: the new subscription's id (as the DBA)
  local features=NULL
  [ "$2" = NULL ] || features="ARRAY['{\"feature_id\": \"$2\"}'::jsonb]"
  q "SELECT checkout.create_subscription_atomic('$1'::jsonb, $features, '$3'::uuid, '$4'::uuid, '$5'::uuid)->>'subscription_id'"
}
SUB_A=$(create "$(sub_json active ', "stripe_subscription_id": "sub_shared"')" "$FA" "$CA1" "$PA" "$A")
SUB_B=$(create "$(sub_json active)" "$FB" "$CB1" "$PB" "$B")
SUB_T=$(create "$(sub_json trialing)" NULL "$CA2" "$PA" "$A") # carol's trial of Pro
[ -n "$SUB_A" ] && [ -n "$SUB_B" ] && [ -n "$SUB_T" ] || fail "setup: a subscription was not created"
assert_eq "trialing 1" "$(q "SELECT status || ' ' || (SELECT count(*) FROM checkout.trial_history WHERE subscription_id = s.id)
  FROM checkout.subscriptions s WHERE id = '$SUB_T'")" "setup: carol's trial"
assert_eq "" "$(violations "$DB")" "check_invariants() after setup"

# The cases. Each runs in a subshell of its own, errexit on inside and off out here, so a failing case
# is reported and the next one still runs (on the data the cases before it left). One line per case,
# "case N: ok" or "case N: FAILED: <message>", then the checks at the end; exit status 1 if any failed.
set +e
report() { report_case "$1" "$2" "$out/${1// /_}.err"; } # LABEL STATUS

# 1. Trigger functions cannot be borrowed. What org B has, before and after every attempt.
(
set -e
b_state() {
  q "SELECT format('audit %s, grants in force %s, trials %s, variants %s, count %s, active %s',
    (SELECT count(*) FROM checkout.subscription_changes WHERE subscription_id = '$SUB_B'),
    (SELECT count(*) FROM checkout.feature_grants WHERE subscription_id = '$SUB_B' AND revoked_at IS NULL),
    (SELECT count(*) FROM checkout.trial_history WHERE customer_id = '$CB1'),
    (SELECT string_agg(email || '=' || email_normalized, ',' ORDER BY email) FROM checkout.customer_email_variants WHERE customer_id = '$CB1'),
    subscription_count, has_active_subscription) FROM checkout.customers WHERE id = '$CB1'"
}
b_before=$(b_state)
[[ $b_before == "audit 1, grants in force 1, trials 0, variants alice@example.com="*", count 1, active t" ]] ||
  fail "org B before the attacks: $b_before"
everything_before=$(fingerprint "$DB")
# The app: the issue's attack (a temporary table with the columns of checkout.subscriptions, org B's
# subscription inserted as trialing, then canceled), the same with track_customer_email, and every
# other trigger function on a table of its own. CREATE TRIGGER needs EXECUTE: 42501.
cols=$(q "SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = 'checkout.subscriptions'::regclass AND attnum > 0 AND NOT attisdropped")
assert_eq 42501 "$(state_of app "CREATE TEMP TABLE subscriptions ($cols);
CREATE TRIGGER forge AFTER INSERT OR UPDATE ON pg_temp.subscriptions FOR EACH ROW EXECUTE FUNCTION checkout.audit_subscription_change();
INSERT INTO pg_temp.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, \"interval\",
  interval_count, trial_end, current_period_start, current_period_end, cancel_at_period_end, metadata)
VALUES ('$SUB_B', '$B', '$CB1', '$PB', 'trialing', 1000, 'usd', 'month', 1, now() + interval '7 days', now(), now() + interval '30 days', false, '{}');
UPDATE pg_temp.subscriptions SET status = 'canceled';")" "app attaches audit_subscription_change() to its own subscriptions table"
assert_eq 42501 "$(state_of app "CREATE TEMP TABLE customers (id uuid, organization_id uuid, email text);
CREATE TRIGGER forge AFTER INSERT ON pg_temp.customers FOR EACH ROW EXECUTE FUNCTION checkout.track_customer_email();
INSERT INTO pg_temp.customers VALUES ('$CB1', '$B', 'mallory@evil.example');")" "app attaches track_customer_email()"
for f in merge_duplicate_email_variant guard_subscription_update guard_refund_status guard_payment_refunded; do
  assert_eq 42501 "$(state_of app "CREATE TEMP TABLE borrowed (id uuid);
CREATE TRIGGER borrowed BEFORE INSERT OR UPDATE ON pg_temp.borrowed FOR EACH ROW EXECUTE FUNCTION checkout.$f();")" \
    "app attaches $f()"
done
# The DBA attaches each one to a copy of its table holding org B's rows: 39P01 when it fires.
psql_db "$DB" >/dev/null <<SQL
CREATE TABLE public.fake_subscriptions (LIKE checkout.subscriptions INCLUDING DEFAULTS);
INSERT INTO public.fake_subscriptions SELECT * FROM checkout.subscriptions WHERE id = '$SUB_B';
CREATE TABLE public.fake_customers (LIKE checkout.customers INCLUDING DEFAULTS);
INSERT INTO public.fake_customers SELECT * FROM checkout.customers WHERE id = '$CB1';
CREATE TABLE public.fake_variants (LIKE checkout.customer_email_variants INCLUDING DEFAULTS);
CREATE TABLE public.fake_refunds (LIKE checkout.refunds INCLUDING DEFAULTS);
INSERT INTO public.fake_refunds (id, organization_id, payment_intent_id, stripe_refund_id, amount, currency, status)
VALUES (gen_random_uuid(), '$B', 'pi_B1', 're_fake', 100, 'usd', 'pending');
CREATE TABLE public.fake_payments (LIKE checkout.payment_intents INCLUDING DEFAULTS);
INSERT INTO public.fake_payments SELECT * FROM checkout.payment_intents WHERE organization_id = '$B';
SQL
fires() { # TRIGGER_SPEC DML WHAT: the DBA attaches and fires it in one transaction; expects 39P01
  assert_eq 39P01 "$(state_of postgres "BEGIN;
CREATE TRIGGER borrowed $1;
$2;
COMMIT;")" "$3"
}
audit_on_fake="AFTER INSERT OR UPDATE OR DELETE ON public.fake_subscriptions FOR EACH ROW EXECUTE FUNCTION checkout.audit_subscription_change()"
fires "$audit_on_fake" "INSERT INTO public.fake_subscriptions SELECT * FROM checkout.subscriptions WHERE id = '$SUB_B'" \
  "audit_subscription_change() on another table: insert (forged created row, counters)"
fires "$audit_on_fake" "UPDATE public.fake_subscriptions SET status = 'trialing', trial_end = current_period_end" \
  "audit_subscription_change() on another table: to trialing (planted trial)"
fires "$audit_on_fake" "UPDATE public.fake_subscriptions SET status = 'canceled'" \
  "audit_subscription_change() on another table: to canceled (grant revoked)"
fires "$audit_on_fake" "DELETE FROM public.fake_subscriptions" "audit_subscription_change() on another table: delete"
fires "BEFORE UPDATE ON public.fake_subscriptions FOR EACH ROW EXECUTE FUNCTION checkout.guard_subscription_update()" \
  "UPDATE public.fake_subscriptions SET status = 'canceled'" "guard_subscription_update() on another table"
fires "AFTER INSERT OR UPDATE ON public.fake_customers FOR EACH ROW EXECUTE FUNCTION checkout.track_customer_email()" \
  "UPDATE public.fake_customers SET email = 'mallory@evil.example'" "track_customer_email() on another table (variant added)"
fires "BEFORE INSERT ON public.fake_variants FOR EACH ROW EXECUTE FUNCTION checkout.merge_duplicate_email_variant()" \
  "INSERT INTO public.fake_variants SELECT gen_random_uuid(), organization_id, customer_id, email, 'mallory@evil.example',
     'evil.example', rules_version, created_at - interval '1 day' FROM checkout.customer_email_variants WHERE customer_id = '$CB1'" \
  "merge_duplicate_email_variant() on another table (normalized email rewritten)"
fires "BEFORE INSERT OR UPDATE ON public.fake_refunds FOR EACH ROW EXECUTE FUNCTION checkout.guard_refund_status()" \
  "UPDATE public.fake_refunds SET status = 'succeeded', amount = 5000" "guard_refund_status() on another table"
fires "BEFORE UPDATE ON public.fake_payments FOR EACH ROW EXECUTE FUNCTION checkout.guard_payment_refunded()" \
  "UPDATE public.fake_payments SET amount = 1" "guard_payment_refunded() on another table"
assert_eq "$b_before" "$(b_state)" "org B after the borrowed triggers (audit rows, grant, trial, variants, counters)"
[ "$everything_before" = "$(fingerprint "$DB")" ] || fail "a borrowed trigger function wrote to a checkout table"
assert_eq "" "$(violations "$DB")" "check_invariants() after case 1"
) 2>"$out/case_1.err"; report "case 1" $?

# 2. COPY into the app's own temporary table named subscriptions, whose DEFAULT cancels org A's
# subscription: the cancellation is audited like any other (the restore exemption is for
# checkout.subscriptions itself).
(
set -e
assert_eq 00000 "$(state_of app "CREATE TEMP TABLE subscriptions (n int, r jsonb DEFAULT
  checkout.cancel_subscription_atomic('$SUB_A'::uuid, '$A'::uuid, false, 'x', NULL, NULL));
COPY subscriptions (n) FROM stdin;
1
\\.
")" "the app's COPY"
assert_eq "canceled 1 0 false" "$(q "SELECT s.status
  || ' ' || (SELECT count(*) FROM checkout.subscription_changes c WHERE c.subscription_id = s.id AND c.change_type = 'cancelled')
  || ' ' || (SELECT count(*) FROM checkout.feature_grants g WHERE g.subscription_id = s.id AND g.revoked_at IS NULL)
  || ' ' || (SELECT has_active_subscription FROM checkout.customers WHERE id = s.customer_id)
  FROM checkout.subscriptions s WHERE s.id = '$SUB_A'")" "canceled through COPY: status, 'cancelled' audit rows, grants in force, customer active"
assert_eq "" "$(violations "$DB")" "check_invariants() after the COPY"
) 2>"$out/case_2.err"; report "case 2" $?

# 3. Provider ids are unique per organization. Refunds (record_refund is not the app's: the DBA).
(
set -e
RA=$(q "SELECT checkout.record_refund('$A'::uuid, 'pi_A1', 're_shared', 100, 'usd')->>'refund_id'")
answer=$(q "SELECT checkout.record_refund('$B'::uuid, 'pi_B1', 're_shared', 200, 'usd')")
RB=$(q "SELECT '$answer'::jsonb->>'refund_id'")
assert_eq "false" "$(q "SELECT '$answer'::jsonb->>'duplicate'")" "org B's refund with org A's refund id is new"
[ -n "$RB" ] && [ "$RB" != "$RA" ] || fail "org B's refund: $answer (org A's: $RA)"
assert_eq "true $RB" "$(q "SELECT r->>'duplicate' || ' ' || (r->>'refund_id') FROM checkout.record_refund('$B'::uuid, 'pi_B1', 're_shared', 200, 'usd') r")" \
  "org B's refund redelivered"
conflict="SELECT checkout.record_refund('$B'::uuid, 'pi_B1', 're_shared', 300, 'usd');"
assert_eq 23505 "$(state_of postgres "$conflict")" "org B's refund id again with another amount"
detail=$(detail_of postgres "$conflict")
[[ $detail == *"$RB"* && $detail != *"$RA"* ]] || fail "the conflict's DETAIL must name org B's refund ($RB) only: $detail"
conflict="SELECT checkout.record_refund('$A'::uuid, 'pi_A1', 're_shared', 500, 'usd');"
assert_eq 23505 "$(state_of postgres "$conflict")" "org A's refund id again with another amount"
detail=$(detail_of postgres "$conflict")
[[ $detail == *"$RA"* && $detail != *"$RB"* ]] || fail "the conflict's DETAIL must name org A's refund ($RA) only: $detail"
assert_eq "$A 100,$B 200" "$(q "SELECT string_agg(organization_id || ' ' || amount, ',' ORDER BY organization_id)
  FROM checkout.refunds WHERE stripe_refund_id = 're_shared'")" "the two refunds re_shared"
# Subscriptions: the app creates in org B with org A's stripe_subscription_id.
answer=$(run_as app <<<"SELECT checkout.create_subscription_atomic('$(sub_json active ', "stripe_subscription_id": "sub_shared"')'::jsonb,
  NULL, '$CB2'::uuid, '$PB'::uuid, '$B'::uuid)")
[[ $answer == *'"success": true'* ]] || fail "org B's subscription with org A's stripe_subscription_id: $answer"
assert_eq "$A,$B" "$(q "SELECT string_agg(organization_id::text, ',' ORDER BY organization_id)
  FROM checkout.subscriptions WHERE stripe_subscription_id = 'sub_shared'")" "subscriptions sub_shared"
assert_eq 23505 "$(state_of postgres "INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status,
  stripe_subscription_id, amount, currency, \"interval\", current_period_start, current_period_end)
VALUES ('$A', '$CA3', '$PA', 'incomplete', 'sub_shared', 1000, 'usd', 'month', now(), now() + interval '1 month')")" \
  "a second sub_shared in org A"
# Checkout sessions, written directly by the DBA.
assert_eq 00000 "$(state_of postgres "INSERT INTO checkout.checkout_sessions (organization_id, stripe_session_id) VALUES ('$A', 'cs_shared');
INSERT INTO checkout.checkout_sessions (organization_id, stripe_session_id) VALUES ('$B', 'cs_shared');")" \
  "cs_shared in org A and in org B"
assert_eq 23505 "$(state_of postgres "INSERT INTO checkout.checkout_sessions (organization_id, stripe_session_id) VALUES ('$A', 'cs_shared')")" \
  "a second cs_shared in org A"
assert_eq 2 "$(q "SELECT count(*) FROM checkout.checkout_sessions WHERE stripe_session_id = 'cs_shared'")" "sessions cs_shared"
) 2>"$out/case_3.err"; report "case 3" $?

# 4. Reconciliation items, as the reconciler: one (type, reference) in two organizations is two items.
(
set -e
enqueue() { run_as reconciler <<<"SELECT checkout.enqueue_reconciliation('payment_mismatch', '$1', '$2'::jsonb, $3, $4);"; }
I1=$(enqueue ref-1 '{"a": 1}' 5 "'$A'::uuid")
I2=$(enqueue ref-1 '{"b": 2}' 1 "'$B'::uuid")
[ -n "$I1" ] && [ -n "$I2" ] && [ "$I1" != "$I2" ] || fail "org B's item must not be org A's: $I1 / $I2"
item() { q "SELECT organization_id || ' ' || details::text || ' ' || priority FROM checkout.reconciliation_queue WHERE id = '$1'"; }
assert_eq "$A {\"a\": 1} 5" "$(item "$I1")" "org A's item (organization, details, priority)"
assert_eq "$B {\"b\": 2} 1" "$(item "$I2")" "org B's item"
assert_eq "$I1" "$(enqueue ref-1 '{"c": 3}' 7 "'$A'::uuid")" "org A enqueueing its item again"
I3=$(enqueue ref-2 '{"x": 1}' 5 NULL)
assert_eq "$I3" "$(enqueue ref-2 '{"y": 2}' 3 NULL)" "items without organization dedupe among themselves"
assert_eq 1 "$(q "SELECT count(*) FROM checkout.reconciliation_queue WHERE reference_id = 'ref-2'")" "items ref-2"
) 2>"$out/case_4.err"; report "case 4" $?

# 5. check_trial_eligibility scoped by organization (the app's form), against the seed form (the DBA's).
(
set -e
new_form() { run_as app <<<"SELECT checkout.check_trial_eligibility('$1'::uuid, '$2'::uuid, '$3'::uuid${4:+, '$4'});"; }
seed_form() { # CUSTOMER PRODUCT [EMAIL]
  local email=NULL
  [ -z "${3:-}" ] || email="'$3'"
  q "SELECT checkout.check_trial_eligibility('$1'::uuid, '$2'::uuid, $email::text)"
}
r=$(new_form "$A" "$CA2" "$PA")
assert_eq already_had_trial "$(q "SELECT '$r'::jsonb->>'reason'")" "carol, who had the trial"
assert_eq "$(seed_form "$CA2" "$PA")" "$r" "carol: the organization-scoped form answers as the seed form"
r=$(new_form "$A" "$CA1" "$PA")
assert_eq true "$(q "SELECT '$r'::jsonb->>'eligible'")" "alice of org A"
assert_eq "$(seed_form "$CA1" "$PA")" "$r" "alice: the organization-scoped form answers as the seed form"
r=$(new_form "$A" "$CA1" "$PA" Carol@Example.com)
assert_eq email_variation_detected "$(q "SELECT '$r'::jsonb->>'reason'")" "alice checked with carol's address"
assert_eq "$(seed_form "$CA1" "$PA" Carol@Example.com)" "$r" "with p_email: the organization-scoped form answers as the seed form"
assert_eq true "$(q "SELECT '$(new_form "$B" "$CB1" "$PB")'::jsonb->>'eligible'")" "org B's alice in org B"
call="SELECT checkout.check_trial_eligibility"
NOBODY=c0000000-0000-0000-0000-000000000999
same_as_missing() { # ORG CUSTOMER PRODUCT: P0002 with the message a missing customer gets (ids masked)
  local e missing
  missing=$(error_of app "$call('$1'::uuid, '$NOBODY'::uuid, '$3'::uuid);")
  assert_eq P0002 "${missing:0:5}" "a missing customer in $1"
  e=$(error_of app "$call('$1'::uuid, '$2'::uuid, '$3'::uuid);")
  assert_eq "${missing//$NOBODY/<id>}" "${e//$2/<id>}" "another organization's customer $2 in $1 answers as a missing one"
}
same_as_missing "$A" "$CB1" "$PA"
same_as_missing "$B" "$CA2" "$PB"
assert_eq P0002 "$(state_of app "$call('$A'::uuid, '$CB1'::uuid, '$PB'::uuid);")" "another organization's customer and product"
assert_eq P0002 "$(state_of app "$call('$A'::uuid, '$CA2'::uuid, '$PB'::uuid);")" "another organization's product"
assert_eq 42501 "$(state_of app "$call('$CA2'::uuid, '$PA'::uuid, NULL::text);")" "the seed form, not granted to the app"
# The seed form's p_email defaults to NULL: two arguments (42883 on 0.5.0).
assert_eq "$(seed_form "$CA2" "$PA")" "$(q "$call('$CA2'::uuid, '$PA'::uuid);")" "the seed form with two arguments"
) 2>"$out/case_5.err"; report "case 5" $?

# 6. Lifetimes are not the caller's choice.
(
set -e
key_call() { # AMOUNT: dave's subscription to Team under key-6
  echo "SELECT checkout.create_subscription_atomic('$(sub_json active | sed "s/\"amount\": 1000/\"amount\": $1/")'::jsonb,
    NULL, '$CA3'::uuid, '$PA2'::uuid, '$A'::uuid, 'key-6');"
}
first=$(run_as app <<<"$(key_call 1000)")
S6=$(q "SELECT '$first'::jsonb->>'subscription_id'")
[ -n "$S6" ] || fail "the keyed create: $first"
for setting in "idempotency_key_ttl = '1s'" "session_retention = '1s'" "reconciliation_lease = '1s'" \
               "reconciliation_max_attempts = 1" "webhook_lease = '1s'"; do
  assert_eq 42501 "$(state_of app "SET checkout.$setting")" "the app sets checkout.$setting"
done
assert_eq 42501 "$(state_of app "SELECT set_config('checkout.idempotency_key_ttl', '1', false)")" "the app's set_config of the key lifetime"
# As if a minute had passed since the key's first use: with a 1 s lifetime it would be over.
q "UPDATE checkout.idempotency_keys SET created_at = created_at - interval '1 minute' WHERE organization_id = '$A' AND key = 'key-6'" >/dev/null
assert_eq "42501 55000" "$(states_of app "SET checkout.idempotency_key_ttl = '1s';
$(key_call 2000)")" "one session: the SET, then the key with other parameters"
q "SELECT checkout.run_maintenance()" >/dev/null
assert_eq "completed" "$(q "SELECT status FROM checkout.idempotency_keys WHERE organization_id = '$A' AND key = 'key-6'")" \
  "the live key after run_maintenance()"
again=$(run_as app <<<"$(key_call 1000)")
assert_eq "true $S6" "$(q "SELECT r->>'replayed' || ' ' || (r->>'subscription_id') FROM (SELECT '$again'::jsonb r) x")" \
  "the original request replays"
assert_eq 1 "$(q "SELECT count(*) FROM checkout.subscriptions WHERE customer_id = '$CA3' AND product_id = '$PA2'")" "dave's Team subscriptions"
) 2>"$out/case_6.err"; report "case 6" $?

# 7. The refund bound under concurrency: 8 sessions per isolation level, each with its snapshot
# taken (SELECT 1) before it waits on a shared advisory lock that a controller session holds; the
# controller lets them all go at once. Run by the DBA (record_refund is not granted to the app):
# record_refund at each level, then plain INSERTs into checkout.refunds (the trigger's bound alone).
(
set -e
advisory_42() { # CONDITION: advisory locks on key 42 in this database matching CONDITION
  q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = 42 AND objsubid = 1
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND $1"
}
wait_for_locks() { # CONDITION N
  local tries=0
  until [ "$(advisory_42 "$1")" -ge "$2" ]; do
    tries=$((tries + 1)); [ $tries -le 400 ] || fail "case 7: $2 advisory locks ($1) not seen in 20 s"
    sleep 0.05
  done
}
race_refunds() { # LEVEL PAYMENT TAG MODE: session i refunds 300, with record_refund as re_TAG_i (MODE
  # record) or by a direct INSERT of a pending refund without provider id (MODE direct); outputs in $out/TAG.i.err
  local level=$1 pi=$2 tag=$3 mode=$4 i ctl pids=() refund
  mkfifo "$out/ctl.$tag"
  "$E2E_BIN/psql" -X -q -At -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d "$DB" <"$out/ctl.$tag" >/dev/null 2>&1 &
  ctl=$!
  exec 3>"$out/ctl.$tag"
  echo "SELECT pg_advisory_lock(42);" >&3
  wait_for_locks "granted AND mode = 'ExclusiveLock'" 1
  for i in 1 2 3 4 5 6 7 8; do
    if [ "$mode" = direct ]; then
      refund="INSERT INTO checkout.refunds (organization_id, payment_intent_id, amount, currency, status)
  VALUES ('$A', '$pi', 300, 'usd', 'pending');"
    else
      refund="SELECT checkout.record_refund('$A'::uuid, '$pi', 're_${tag}_$i', 300, 'usd');"
    fi
    # 3>&-: only the controller's input may hold the fifo open, or it never sees its end.
    run_as postgres >"$out/$tag.$i.out" 2>"$out/$tag.$i.err" 3>&- <<SQL &
BEGIN ISOLATION LEVEL $level;
SELECT 1;
SELECT pg_advisory_lock_shared(42);
$refund
COMMIT;
SQL
    pids+=($!)
  done
  wait_for_locks "NOT granted AND mode = 'ShareLock'" 8
  exec 3>&- # the controller reads its end of input and quits: the lock is released
  wait "$ctl" || true
  for i in "${pids[@]}"; do wait "$i" || true; done
  rm -f "$out/ctl.$tag"
}
check_race() { # LEVEL PAYMENT TAG [MODE]: the bound, and every session's outcome (MODE as race_refunds: record)
  local level=$1 pi=$2 tag=$3 mode=${4:-record} i line s ok=0 bound=0 refunded=() total rows
  race_refunds "$level" "$pi" "$tag" "$mode"
  [ "$mode" = record ] || level="$level, direct INSERTs"
  for i in 1 2 3 4 5 6 7 8; do
    line=$(grep -m1 -oE '(ERROR|FATAL):  [0-9A-Z]{5}' "$out/$tag.$i.err" || true)
    s=${line: -5}; s=${s:-00000}
    case $s in
      00000) ok=$((ok + 1)); refunded+=("re_${tag}_$i") ;;
      23514) bound=$((bound + 1)) ;;
      40001) ;;
      *) fail "$level: session $i ended with $s, not success, 40001 or 23514: $(cat "$out/$tag.$i.err")" ;;
    esac
  done
  total=$(q "SELECT coalesce(sum(amount), 0) FROM checkout.refunds
    WHERE organization_id = '$A' AND payment_intent_id = '$pi' AND status IN ('pending', 'succeeded')")
  [ "$total" -le 1000 ] || fail "$level: $total refunded on a payment of 1000"
  [ "$ok" -ge 1 ] || fail "$level: no refund succeeded"
  assert_eq "$((ok * 300))" "$total" "$level: refunded total of the $ok successful sessions"
  if [ "$mode" = direct ]; then # no provider ids to tell them apart: as many rows as successes
    rows=$(q "SELECT count(*) FROM checkout.refunds WHERE payment_intent_id = '$pi'")
    assert_eq "$ok" "$rows" "$level: refund rows are those of the sessions that succeeded"
  else
    rows=$(q "SELECT string_agg(stripe_refund_id, ' ' ORDER BY stripe_refund_id) FROM checkout.refunds WHERE payment_intent_id = '$pi'")
    assert_eq "${refunded[*]}" "$rows" "$level: refunds recorded are those of the sessions that succeeded"
  fi
  echo "$level: $ok succeeded, $bound refused by the bound (23514), $((8 - ok - bound)) serialization failures (40001)"
  RACE_OK=$ok RACE_BOUND=$bound
}
check_race "REPEATABLE READ" pi_A3 rr
check_race "SERIALIZABLE" pi_A3s ser
check_race "READ COMMITTED" pi_A3c rc
assert_eq "3 5" "$RACE_OK $RACE_BOUND" "READ COMMITTED: successes and 23514"
# The DBA's own INSERTs, on a fresh payment of 1000: the refunds trigger bounds them alone.
q "INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status)
   VALUES ('$A', 'pi_A3d', 1000, 'usd', 'succeeded')" >/dev/null
check_race "REPEATABLE READ" pi_A3d rrd direct
assert_eq "" "$(over_refunded "$DB")" "over-refunded payments after the races"
) 2>"$out/case_7.err"; report "case 7" $?

# 8. Direct writes by the DBA.
(
set -e
refund() { echo "INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, amount, currency, status)
  VALUES ('$A', 'pi_A8', '$1', $2, '${4:-usd}', '$3');"; }
payment() { echo "UPDATE checkout.payment_intents SET $1 WHERE organization_id = '$A' AND stripe_payment_intent_id = 'pi_A8'"; }
pi_a8() { q "SELECT amount || ' ' || currency FROM checkout.payment_intents WHERE organization_id = '$A' AND stripe_payment_intent_id = 'pi_A8'"; }
assert_eq 23514 "$(state_of postgres "$(refund re_8x 2000 succeeded)")" "a refund of 2000 on a payment of 1000"
assert_eq 0 "$(q "SELECT count(*) FROM checkout.refunds WHERE payment_intent_id = 'pi_A8'")" "refunds of pi_A8 after the refused insert"
assert_eq 00000 "$(state_of postgres "$(refund re_8a 600 succeeded)
$(refund re_8b 300 pending)")" "refunds within the payment (600 + 300)"
assert_eq 23514 "$(state_of postgres "UPDATE checkout.refunds SET amount = 500 WHERE stripe_refund_id = 're_8b'")" \
  "raising a refund beyond the remaining amount (600 + 500)"
assert_eq 300 "$(q "SELECT amount FROM checkout.refunds WHERE stripe_refund_id = 're_8b'")" "the refund after the refused update"
# A refund in another currency than its payment's, within the remaining amount (pending or succeeded).
assert_eq 23514 "$(state_of postgres "$(refund re_8eur 50 pending eur)")" "a pending refund in eur of a usd payment"
assert_eq 23514 "$(state_of postgres "$(refund re_8eur 50 succeeded eur)")" "a succeeded refund in eur of a usd payment"
assert_eq "2 900" "$(q "SELECT count(*) || ' ' || sum(amount) FROM checkout.refunds WHERE payment_intent_id = 'pi_A8'")" \
  "refunds of pi_A8 after the refused refunds in eur"
assert_eq "" "$(violations "$DB")" "check_invariants() with refunds within their payments"
# The payment keeps covering its refunds (900): its amount cannot drop below them, nor its currency change.
assert_eq 23514 "$(state_of postgres "$(payment "amount = 500")")" "lowering a payment's amount below its refunds (500 < 900)"
assert_eq "1000 usd" "$(pi_a8)" "the payment after the refused lowering"
assert_eq 23514 "$(state_of postgres "$(payment "currency = 'eur'")")" "changing the currency of a refunded payment"
assert_eq "1000 usd" "$(pi_a8)" "the payment after the refused currency change"
assert_eq 00000 "$(state_of postgres "$(payment "amount = 900")")" "lowering a payment's amount to its refunds (900)"
assert_eq 00000 "$(state_of postgres "$(payment "amount = 1000")")" "raising it back to 1000"
# An over-refunded payment for check_invariants(): only with the payment's trigger disabled by the DBA.
q "ALTER TABLE checkout.payment_intents DISABLE TRIGGER payments_guard_refunded;
   $(payment "amount = 500");
   ALTER TABLE checkout.payment_intents ENABLE TRIGGER payments_guard_refunded" >/dev/null
assert_eq "500 usd" "$(pi_a8)" "the payment lowered with its trigger disabled"
found=$(violations "$DB")
[[ ${found,,} == *refund* && $found == *pi_A8* ]] || fail "check_invariants() must report pi_A8 (500, refunds 900): [$found]"
q "$(payment "amount = 1000")" >/dev/null
assert_eq "" "$(violations "$DB")" "check_invariants() once the payment is back to 1000"
assert_eq 23514 "$(state_of postgres "$(payment "amount = 899")")" "lowering below the refunds once the trigger is enabled again"
SC=d0000000-0000-0000-0000-0000000008c1
SE=d0000000-0000-0000-0000-0000000008e1
q "INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, \"interval\",
     current_period_start, current_period_end, canceled_at, ended_at) VALUES
   ('$SC', '$A', '$CA3', '$PA', 'canceled', 1000, 'usd', 'month', now() - interval '1 month', now(), NULL, NULL),
   ('$SE', '$A', '$CA3', '$PA', 'expired', 1000, 'usd', 'month', now() - interval '1 month', now(), NULL, NULL)" >/dev/null
ended() { q "SELECT status || ' ' || (canceled_at IS NOT NULL) || ' ' || (ended_at IS NOT NULL) FROM checkout.subscriptions WHERE id = '$1'"; }
assert_eq "canceled true true" "$(ended "$SC")" "a subscription inserted as canceled: canceled_at, ended_at"
assert_eq "expired false true" "$(ended "$SE")" "a subscription inserted as expired: ended_at"
# ...and keep them (CHECK check_ended_stamped, check_canceled_stamped).
assert_eq 23514 "$(state_of postgres "UPDATE checkout.subscriptions SET ended_at = NULL WHERE id = '$SC'")" \
  "clearing ended_at of a canceled subscription"
assert_eq 23514 "$(state_of postgres "UPDATE checkout.subscriptions SET canceled_at = NULL WHERE id = '$SC'")" \
  "clearing canceled_at of a canceled subscription"
assert_eq 23514 "$(state_of postgres "UPDATE checkout.subscriptions SET ended_at = NULL WHERE id = '$SE'")" \
  "clearing ended_at of an expired subscription"
assert_eq "canceled true true" "$(ended "$SC")" "the canceled subscription after the refused updates"
assert_eq "expired false true" "$(ended "$SE")" "the expired subscription after the refused update"
# Last (it does not hide the checks above): a counted refund moved to another currency than its
# payment's is such a refund too.
assert_eq 23514 "$(state_of postgres "UPDATE checkout.refunds SET currency = 'eur' WHERE stripe_refund_id = 're_8b'")" \
  "moving a pending refund of a usd payment to eur"
assert_eq usd "$(q "SELECT currency FROM checkout.refunds WHERE stripe_refund_id = 're_8b'")" "the refund after the refused currency change"
) 2>"$out/case_8.err"; report "case 8" $?

# 9. jsonb the app passes that serde_json cannot represent: a number beyond the range of a double
# (1e400) anywhere is 22023, nesting past its recursion limit is 54001; never XX000, and nothing is
# written. As the app, the role docs/operations.md grants these functions to.
(
set -e
before=$(fingerprint "$DB")
create_call() { # P_SUBSCRIPTION P_FEATURES_SQL: the app's create for dave, org A, Pro
  echo "SELECT checkout.create_subscription_atomic('$1'::jsonb, $2, '$CA3'::uuid, '$PA'::uuid, '$A'::uuid);"
}
upsert_call() { # P_METADATA: the app's upsert of zed in org A
  echo "SELECT checkout.upsert_customer_atomic('$A'::uuid, 'zed@example.com', NULL, NULL, NULL, '$1'::jsonb);"
}
plan_call() { # P_FEATURES_SQL: the app's plan change of carol's trial (org A) to Pro at 2000
  echo "SELECT checkout.change_subscription_plan_atomic('$SUB_T'::uuid, '$A'::uuid, '$PA'::uuid, 2000, NULL, NULL, $1);"
}
assert_eq 22023 "$(state_of app "$(create_call "$(sub_json active | sed 's/"amount": 1000/"amount": 1e400/')" NULL)")" \
  "1e400 as p_subscription's amount"
assert_eq 22023 "$(state_of app "$(create_call "$(sub_json active ', "metadata": {"note": 1e400}')" NULL)")" \
  "1e400 in p_subscription.metadata"
assert_eq 22023 "$(state_of app "$(create_call "$(sub_json active)" \
  "ARRAY['{\"feature_id\": \"$FA\", \"metadata\": {\"x\": [1, 1e400]}}'::jsonb]")")" \
  "1e400 in a p_features element's metadata"
assert_eq 22023 "$(state_of app "$(upsert_call '{"score": 1e400}')")" "1e400 in upsert_customer_atomic's p_metadata"
assert_eq 22023 "$(state_of app "$(plan_call "ARRAY['{\"feature_id\": \"$FA\", \"metadata\": {\"x\": -1e400}}'::jsonb]")")" \
  "-1e400 in a p_features element of change_subscription_plan_atomic"
deep="$(printf '{"a": %.0s' $(seq 200))1$(printf '}%.0s' $(seq 200))" # 200 levels
assert_eq 54001 "$(state_of app "$(create_call "$(sub_json active ", \"metadata\": $deep")" NULL)")" \
  "p_subscription.metadata nested 200 levels"
assert_eq 54001 "$(state_of app "$(upsert_call "$deep")")" "upsert_customer_atomic's p_metadata nested 200 levels"
[ "$before" = "$(fingerprint "$DB")" ] || fail "a refused call wrote to a checkout table"
) 2>"$out/case_9.err"; report "case 9" $?

# 10. p_features: more than 10,000 elements is 22023 before any is read; 10,000 unknown feature ids
# are P0002 within a statement_timeout of 2 s, with a DETAIL under 1,000 bytes; nothing is written. As the app.
(
set -e
before=$(fingerprint "$DB")
features() { echo "(SELECT array_agg(jsonb_build_object('feature_id', gen_random_uuid())) FROM generate_series(1, $1))"; }
create_call() { echo "SET statement_timeout = '2s';
SELECT checkout.create_subscription_atomic('$(sub_json active)'::jsonb, $1, '$CA3'::uuid, '$PA'::uuid, '$A'::uuid);"; }
assert_eq 22023 "$(state_of app "$(create_call "$(features 10001)")")" "create_subscription_atomic with 10,001 features"
assert_eq 22023 "$(state_of app "SET statement_timeout = '2s';
SELECT checkout.change_subscription_plan_atomic('$SUB_T'::uuid, '$A'::uuid, '$PA'::uuid, 2000, NULL, NULL, $(features 10001));")" \
  "change_subscription_plan_atomic with 10,001 features"
started=$(date +%s%N)
if stderr=$(run_as app <<<"$(create_call "$(features 10000)")" 2>&1 >/dev/null); then
  fail "10,000 unknown feature ids: the create succeeded"
fi
ms=$(( ($(date +%s%N) - started) / 1000000 ))
state=$(grep -m1 -oE '(ERROR|FATAL):  [0-9A-Z]{5}' <<<"$stderr" || true)
assert_eq P0002 "${state: -5}" "10,000 unknown feature ids (in $ms ms, statement_timeout 2 s): $(head -c 300 <<<"$stderr")"
detail=$(grep -m1 '^DETAIL:' <<<"$stderr" || true)
bytes=$(printf %s "$detail" | wc -c)
[ -n "$detail" ] && [ "$bytes" -lt 1000 ] || fail "the DETAIL of 10,000 unknown feature ids must be under 1,000 bytes: $bytes bytes"
echo "10,000 unknown feature ids: P0002 in $ms ms (with the session's start), DETAIL of $bytes bytes"
[ "$before" = "$(fingerprint "$DB")" ] || fail "a refused call wrote to a checkout table"
) 2>"$out/case_10.err"; report "case 10" $?

# At the end, whatever ran: the data is consistent and no payment is refunded beyond its amount.
(
set -e
assert_eq "" "$(violations "$DB")" "check_invariants() at the end"
assert_eq "" "$(over_refunded "$DB")" "over-refunded payments at the end"
) 2>"$out/end.err"; report end $?
cases_passed
