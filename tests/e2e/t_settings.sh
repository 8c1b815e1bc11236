# checkout's job settings on a server that does NOT preload checkout (a second cluster of the same
# version, without shared_preload_libraries): a non-superuser's SET of a superuser-only setting made
# before the library is loaded in its session is only a placeholder; loading the library (any
# checkout function, setting_seconds() itself) discards it with a WARNING, so setting_seconds() and
# setting_integer() return the real values, SHOW shows them, and the jobs use them: a webhook event
# claimed by one worker is not handed to a claimer whose session set a 1 s lease, 2 s later. Once
# the library is loaded, the SET is 42501.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../../scripts/env.sh"
v=$E2E_VERSION
port=$((E2E_PORT + 300))
data="$PGDATA_BASE/e2e-$v-settings"
err=$(mktemp /tmp/checkout-settings.XXXXXX) # a session's stderr
stop_cluster "$v" "$data"; rm -rf "$data"
trap 'stop_cluster "$v" "$data"; rm -rf "$data" "$err"' EXIT
start_cluster "$v" "$data" "$port" "fsync = off"
DB=e2e_settings
ORG=a0000000-0000-0000-0000-000000000001

as() { # ROLE [psql args...]: one session of ROLE in the second cluster, script on stdin, stops at the
  # first error (reported with its SQLSTATE); WARNINGs go to stderr
  local role=$1; shift
  "$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h 127.0.0.1 -p "$port" -U "$role" -d "$DB" "$@"
}
states_of() { # ROLE SQL: the SQLSTATE of every failing statement, in order, one session going on after errors
  local stderr; stderr=$(as "$1" -v ON_ERROR_STOP=0 <<<"$2" 2>&1 >/dev/null) || true
  { grep -oE '(ERROR|FATAL):  [0-9A-Z]{5}' <<<"$stderr" || true; } | awk '{ printf "%s%s", s, $2; s = " " }'
}
lines() { tr '\n' ' ' | sed 's/ $//'; } # stdin's lines on one line

"$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c "CREATE DATABASE $DB" -c "CREATE ROLE worker LOGIN"
assert_eq "" "$(or_die as postgres -c "SHOW shared_preload_libraries")" "shared_preload_libraries of the second cluster"
as postgres >/dev/null <<SQL
CREATE EXTENSION checkout;
GRANT USAGE ON SCHEMA checkout TO worker;
GRANT EXECUTE ON FUNCTION checkout.claim_webhook_events(integer), checkout.email_rules_version() TO worker;
INSERT INTO checkout.organizations (id, name) VALUES ('$ORG', 'Org A');
SQL

# 1. One session of the worker role: SETs before the library is loaded are accepted (placeholders,
# SHOW echoes them), then discarded when setting_seconds() loads it.
got=$(as worker 2>"$err" <<'SQL' | lines
SELECT count(*) FROM pg_settings WHERE name LIKE 'checkout.%';
SET checkout.webhook_lease = '1s';
SET checkout.reconciliation_max_attempts = 1;
SET checkout.idempotency_key_ttl = '1s';
SET checkout.session_retention = '1s';
SET checkout.reconciliation_lease = '1s';
SHOW checkout.webhook_lease;
SHOW checkout.reconciliation_max_attempts;
SELECT checkout.setting_seconds('checkout.webhook_lease');
SHOW checkout.webhook_lease;
SELECT checkout.setting_integer('checkout.reconciliation_max_attempts');
SHOW checkout.reconciliation_max_attempts;
SELECT checkout.setting_seconds('checkout.idempotency_key_ttl'), checkout.setting_seconds('checkout.session_retention'),
       checkout.setting_seconds('checkout.reconciliation_lease');
SHOW checkout.idempotency_key_ttl;
SQL
) || fail "the worker's session before loading: $(cat "$err")"
# Before the load: no checkout setting defined, the placeholders 1s and 1; after: the defaults.
assert_eq "0 1s 1 300 5min 10 10 86400|86400|300 1d" "$got" \
  "SETs before the library loaded, then setting_seconds/setting_integer and SHOW after (stderr: $(cat "$err"))"
for setting in webhook_lease reconciliation_max_attempts idempotency_key_ttl session_retention reconciliation_lease; do
  grep -q "WARNING: .*checkout\.$setting" "$err" || fail "no WARNING discarding checkout.$setting: $(cat "$err")"
done

# A name that is not one of checkout's settings has no default to fall back on: 22023.
assert_eq "22023 22023" "$(states_of postgres "SELECT checkout.setting_seconds('checkout.nope');
SELECT checkout.setting_integer('work_mem');")" "unknown setting names"

# 2. A session in which the library is loaded first: the SET is refused.
assert_eq "42501 42501" "$(states_of worker "SELECT checkout.email_rules_version();
SET checkout.webhook_lease = '1s';
SET checkout.reconciliation_max_attempts = 1;")" "the worker's SETs once the library is loaded"

# 3. The jobs use the real lease. The superuser records an event and claims it; 2 s later a claimer
# whose session set a 1 s lease before loading the library gets nothing; a superuser's 1 s lease
# (its right) does hand it out again, so 2 s were enough for a lease of 1 s.
event() { as postgres -c "SELECT status || ' ' || attempts FROM checkout.webhook_events WHERE provider_event_id = 'evt_lease'"; }
as postgres -c "SELECT checkout.record_webhook_event('$ORG'::uuid, 'evt_lease', 'invoice.paid', '{}'::jsonb, now())" >/dev/null
assert_eq evt_lease "$(as postgres -c "SELECT provider_event_id FROM checkout.claim_webhook_events(10)")" "the first claim"
assert_eq "processing 1" "$(event)" "the event after the first claim"
got=$(as worker 2>"$err" <<'SQL'
SET checkout.webhook_lease = '1s';
SELECT pg_sleep(2);
SELECT count(*) FROM checkout.claim_webhook_events(10);
SQL
) || fail "the worker's claim: $(cat "$err")"
assert_eq 0 "$(tail -n1 <<<"$got")" "events handed to the worker (1 s lease SET before loading) 2 s after the first claim"
grep -q 'WARNING: .*checkout\.webhook_lease' "$err" || fail "no WARNING discarding the claimer's lease: $(cat "$err")"
assert_eq "processing 1" "$(event)" "the event after the worker's claim"
assert_eq evt_lease "$(as postgres <<'SQL' | tail -n1
SELECT checkout.email_rules_version();
SET checkout.webhook_lease = '1s';
SELECT provider_event_id FROM checkout.claim_webhook_events(10);
SQL
)" "the superuser's claim with a 1 s lease"
assert_eq "processing 2" "$(event)" "the event after the superuser's claim"
