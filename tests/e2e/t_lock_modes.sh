# Explicit row locks never wait on foreign-key checks. An insert's foreign-key check holds FOR KEY
# SHARE on the rows it references until commit (create_subscription_atomic's trial claim takes it
# on the customer and the product before the subscription is written). A FOR UPDATE elsewhere waits
# on it; with the create then waiting on that session's subscription, the two deadlock (40P01, which
# the stress run met). Part 1: while a session holds key-share locks on a customer, its products,
# a payment and a checkout session, the functions that lock those rows run under lock_timeout = 2s
# and must finish, and the SKIP LOCKED jobs must not skip them. Part 2: the deadlock itself. Part 3:
# a trialing plan change and a trial-claiming create of the same pair queue instead of deadlocking.
source "$(dirname "$0")/lib.sh"
here=$(dirname "$0")
fresh_db e2e_locks
psql_db e2e_locks -c "CREATE EXTENSION checkout" >/dev/null
psql_db e2e_locks -v products=2 -v customers=3 -f "$here/hot_set.sql" >/dev/null
org="'a0000000-0000-0000-0000-000000000001'" c1="'c0000000-0000-0000-0000-000000000001'"
c2="'c0000000-0000-0000-0000-000000000002'" p1="'b0000000-0000-0000-0000-000000000001'"
p2="'b0000000-0000-0000-0000-000000000002'" c3="'c0000000-0000-0000-0000-000000000003'"
create() { # CUSTOMER PRODUCT PERIOD_END: a new active subscription's id
  psql_db e2e_locks -c "SELECT checkout.create_subscription_atomic(jsonb_build_object('status', 'active', 'amount', 100,
    'currency', 'usd', 'interval', 'month', 'current_period_start', '2026-01-01', 'current_period_end', '$3'),
    NULL, $1, $2, $org)->>'subscription_id'"
}
sub1=$(create "$c1" "$p1" 2099-01-01)
sub2=$(create "$c1" "$p2" 2026-02-01) # its period is over: set to cancel at period end, the job ends it
sub3=$(create "$c2" "$p1" 2099-01-01)
psql_db e2e_locks >/dev/null <<SQL
SELECT checkout.cancel_subscription_atomic('$sub2', $org, true);
SELECT checkout.refresh_product_metrics(); -- computed metrics: the job locks the products it clears
INSERT INTO checkout.payment_intents (organization_id, customer_id, stripe_payment_intent_id, amount, currency, status)
VALUES ($org, $c1, 'pi_1', 1000, 'usd', 'succeeded');
INSERT INTO checkout.checkout_sessions (organization_id, customer_id, product_id, expires_at)
VALUES ($org, $c1, $p1, now() - interval '1 minute');
SQL

# Part 1. The holder stands in for foreign-key checks of concurrent inserts.
"$E2E_BIN/psql" -X -q -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d e2e_locks >/dev/null <<SQL &
BEGIN;
SELECT 1 FROM checkout.customers WHERE id = $c1 FOR KEY SHARE;
SELECT 1 FROM checkout.products FOR KEY SHARE;
SELECT 1 FROM checkout.payment_intents FOR KEY SHARE;
SELECT 1 FROM checkout.checkout_sessions FOR KEY SHARE;
SELECT pg_sleep(8);
COMMIT;
SQL
holder=$!
sleep 1
out=$(psql_db e2e_locks 2>&1 <<SQL
SET lock_timeout = '2s';
SELECT 'periods ' || checkout.end_subscription_periods();
SELECT 'metrics ' || checkout.refresh_product_metrics();
SELECT 'sessions ' || (checkout.expire_checkout_sessions()->>'expired');
SELECT 'refund ' || (checkout.record_refund($org, 'pi_1', 're_1', 100, 'usd')->>'status');
SELECT 'cancel ' || (checkout.cancel_subscription_atomic('$sub1', $org)->>'status');
SQL
) || fail "a lock waited on a key-share lock: $out"
wait $holder
assert_eq "periods 1|metrics 1|sessions 1|refund pending|cancel canceled" "$(echo "$out" | paste -sd '|')" "calls beside key-share locks"

# Part 2. Session A does what a trial-claiming create does: key-shares the customer (the claim's
# foreign-key check), then inserts the pair's subscription. Session X cancels the pair's
# subscription in between. With FOR UPDATE in the cancel's trigger, X waited on A and A on X.
d0=$(deadlocks e2e_locks)
psql_db e2e_locks > /tmp/checkout-locks-a.out 2>&1 <<SQL &
\\o /dev/null
BEGIN;
SELECT 1 FROM checkout.customers WHERE id = $c2 FOR KEY SHARE;
SELECT pg_sleep(2);
INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval,
  current_period_start, current_period_end)
VALUES ($org, $c2, $p1, 'active', 100, 'usd', 'month', '2026-01-01', '2099-01-01')
ON CONFLICT (organization_id, customer_id, product_id) WHERE status IN ('active', 'trialing') DO NOTHING;
COMMIT;
SQL
a=$!
sleep 1
x_out=$(psql_db e2e_locks -c "SELECT checkout.cancel_subscription_atomic('$sub3', $org)->>'status'" 2>&1) || true
wait $a || true
a_out=$(cat /tmp/checkout-locks-a.out); rm -f /tmp/checkout-locks-a.out
assert_eq "canceled" "$x_out" "the cancel beside a key-share lock"
assert_eq "" "$a_out" "the insert after the cancel"
assert_eq 2 "$(psql_db e2e_locks -c "SELECT count(*) FROM checkout.subscriptions WHERE customer_id = $c2")" "subscriptions of the second customer"
d1=$(deadlocks e2e_locks)
assert_eq 0 "$((d1 - d0))" "deadlocks"
assert_eq "" "$(violations e2e_locks)" "invariants"

# Part 3. Session A claims the trial of (c3, p2) as a create does, then inserts that pair's trialing
# subscription; session X moves c3's trialing p1 subscription to p2 in between. X takes the trial
# before its row enters the pair's unique index (the create's order), so it waits for A, then finds
# the product taken: 23505, the documented conflict. Before, X entered the index first and then
# waited on A's trial while A waited on X's row.
trialing=$(psql_db e2e_locks -c "SELECT checkout.create_subscription_atomic(jsonb_build_object('status', 'trialing',
  'amount', 100, 'currency', 'usd', 'interval', 'month', 'current_period_start', '2026-01-01',
  'current_period_end', '2099-01-01', 'trial_end', '2099-01-01'), NULL, $c3, $p1, $org)->>'subscription_id'")
d0=$(deadlocks e2e_locks)
psql_db e2e_locks > /tmp/checkout-locks-a.out 2>&1 <<SQL &
\\o /dev/null
BEGIN;
INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
VALUES ($org, $c3, $p2, now(), '2099-01-01');
SELECT pg_sleep(2);
INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval,
  trial_end, current_period_start, current_period_end)
VALUES ($org, $c3, $p2, 'trialing', 100, 'usd', 'month', '2099-01-01', '2026-01-01', '2099-01-01')
ON CONFLICT (organization_id, customer_id, product_id) WHERE status IN ('active', 'trialing') DO NOTHING;
COMMIT;
SQL
a=$!
sleep 1
x_out=$(psql_db e2e_locks -v VERBOSITY=sqlstate -c "SELECT checkout.change_subscription_plan_atomic('$trialing', $org, $p2, 100)" 2>&1) || true
wait $a || true
a_out=$(cat /tmp/checkout-locks-a.out); rm -f /tmp/checkout-locks-a.out
assert_eq "ERROR:  23505" "$x_out" "the plan change beside a trial-claiming create"
assert_eq "" "$a_out" "the create beside a plan change"
d1=$(deadlocks e2e_locks)
assert_eq 0 "$((d1 - d0))" "deadlocks"
assert_eq "" "$(violations e2e_locks)" "invariants at the end"
