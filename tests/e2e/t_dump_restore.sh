# pg_dump of a database using checkout, restored with pg_restore into a fresh database, brings back
# every row of every table (the tables are registered with pg_extension_config_dump), exactly, even
# legacy rows that today's triggers would refuse or stamp: the triggers stand aside only for a
# superuser's COPY into checkout.<table> written schema-qualified, as pg_dump writes it.
source "$(dirname "$0")/lib.sh"
here=$(dirname "$0")
A=a0000000-0000-0000-0000-000000000001
fresh_db e2e_src
psql_db e2e_src -c "CREATE EXTENSION checkout" -f "$here/populate.sql"
# Legacy rows, which an older release let in and only a bypass of the refunds trigger makes now: a
# payment of 1000 refunded 600 (pending) + 600 (succeeded), and a refund inserted as succeeded
# without completed_at (which the trigger would stamp).
psql_db e2e_src >/dev/null <<SQL
BEGIN;
INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status) VALUES
  ('$A', 'pi_legacy', 1000, 'usd', 'succeeded'), ('$A', 'pi_unstamped', 1000, 'usd', 'succeeded');
ALTER TABLE checkout.refunds DISABLE TRIGGER refunds_guard_status;
INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, amount, currency, status, completed_at) VALUES
  ('$A', 'pi_legacy', 're_legacy_1', 600, 'usd', 'pending', NULL),
  ('$A', 'pi_legacy', 're_legacy_2', 600, 'usd', 'succeeded', now() - interval '1 day'),
  ('$A', 'pi_unstamped', 're_unstamped', 100, 'usd', 'succeeded', NULL);
ALTER TABLE checkout.refunds ENABLE TRIGGER refunds_guard_status;
COMMIT;
SQL
legacy() { # DB: the legacy rows as they are
  psql_db "$1" -c "SELECT string_agg(stripe_refund_id || ' ' || amount || ' ' || status || ' ' || (completed_at IS NULL), ', '
    ORDER BY stripe_refund_id) FROM checkout.refunds WHERE payment_intent_id IN ('pi_legacy', 'pi_unstamped')"
}
legacy_rows="re_legacy_1 600 pending true, re_legacy_2 600 succeeded false, re_unstamped 100 succeeded true"
assert_eq "$legacy_rows" "$(legacy e2e_src)" "legacy refunds before the dump"
assert_eq pi_legacy "$(over_refunded e2e_src)" "over-refunded payments before the dump"
src=$(fingerprint e2e_src)
tables=$(echo "$src" | wc -l)
[ "$tables" -ge 16 ] || fail "expected 16 tables, got $tables"
empty=$(echo "$src" | awk '$2 == 0 {print $1}')
[ -z "$empty" ] || fail "populate.sql left tables empty: $empty"
dump=$(mktemp /tmp/checkout-dump.XXXXXX)
"$E2E_BIN/pg_dump" -h 127.0.0.1 -p "$E2E_PORT" -U postgres -Fc -f "$dump" e2e_src
fresh_db e2e_dst
"$E2E_BIN/pg_restore" -h 127.0.0.1 -p "$E2E_PORT" -U postgres --exit-on-error -d e2e_dst "$dump" || fail "pg_restore failed"
rm -f "$dump"
dst=$(fingerprint e2e_dst)
diff <(echo "$src") <(echo "$dst") || fail "restored rows differ"
assert_eq 0 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.verify() WHERE NOT ok")" "verify() after restore"
# The variants table kept the historical email (recorded by the trigger, merged on restore).
assert_eq 3 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.customer_email_variants")" "variant rows after restore"
assert_eq 1 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.customer_email_variants WHERE email = 'Alice@Example.com'")" "historical email after restore"
# The subscriptions triggers stood aside during the restore's COPY: no audit row or counter twice.
assert_eq 5 "$(psql_db e2e_dst -c "SELECT count(*) FROM checkout.subscription_changes")" "audit rows after restore"
# The refunds trigger stood aside too: the legacy rows as they were (also in the fingerprints above),
# and check_invariants() reports the over-refunded payment, and only it.
assert_eq "$legacy_rows" "$(legacy e2e_dst)" "legacy refunds after restore"
legacy_violation="payment refunded beyond its amount: payment $A/pi_legacy: 1000, refunded or pending: 1200"
assert_eq "$legacy_violation" "$(violations e2e_dst)" "invariants after restore"
# Only the schema-qualified COPY pg_dump writes is a restore: an unqualified COPY into subscriptions
# by the superuser, resolved to checkout.subscriptions through search_path, is audited (its
# 'created' row) and stamped like any insert.
SU=d0000000-0000-0000-0000-0000000000a3
row=$(printf '%s\t' "$SU" "$A" c0000000-0000-0000-0000-0000000000a1 b0000000-0000-0000-0000-0000000000a1 canceled 1999 usd month \
  '2025-01-01 00:00:00+00' '2025-02-01 00:00:00+00' '2025-01-15 00:00:00+00')
row="${row}2025-01-15 00:00:00+00"
psql_db e2e_dst >/dev/null <<SQL
SET search_path = checkout;
COPY subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, "interval",
  current_period_start, current_period_end, canceled_at, ended_at) FROM stdin;
$row
\\.
SQL
assert_eq "canceled 1" "$(psql_db e2e_dst -c "SELECT s.status || ' ' || (SELECT count(*) FROM checkout.subscription_changes c
  WHERE c.subscription_id = s.id AND c.change_type = 'created') FROM checkout.subscriptions s WHERE s.id = '$SU'")" \
  "a subscription loaded by an unqualified COPY: status, 'created' audit rows"
assert_eq "$legacy_violation" "$(violations e2e_dst)" "invariants after the unqualified COPY"
# Only a COPY that loads subscriptions is taken as a restore: a COPY of a query that changes one is
# audited like any other call.
psql_db e2e_dst -c "COPY (SELECT checkout.expire_subscription('d0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001')) TO STDOUT" >/dev/null
assert_eq "expired" "$(psql_db e2e_dst -c "SELECT change_type FROM checkout.subscription_changes ORDER BY created_at DESC LIMIT 1")" "audit row of a call inside COPY"
assert_eq "$legacy_violation" "$(violations e2e_dst)" "invariants after a call inside COPY"
