# Issue 17: checkout distributed by Citus. A coordinator and two workers (PostgreSQL 15 and 16,
# the servers scripts/setup builds Citus for), checkout.distribute(), then the contract through the
# coordinator: tenants on different workers, the lifecycle and its audit, replays, the state
# machine, trial abuse within a tenant and not across, refunds, webhooks, the maintenance worker
# and the webhook queue across nodes, 16-session races on one pair and on one key, a shard move
# and a rebalance onto a node added later under writes, check_invariants() and verify().
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../../scripts/env.sh"
case "$E2E_VERSION" in
  15 | 16) ;;
  *) echo "skipped: Citus 13.2 supports PostgreSQL 15 to 17, not $E2E_VERSION"; exit 0 ;;
esac
[ -f "$("$E2E_BIN/pg_config" --pkglibdir)/citus.so" ] \
  || skip "Citus is not installed for PostgreSQL $E2E_VERSION (scripts/setup builds it from ../shared/vendor)"

base=$((E2E_PORT + 400)) # coordinator (t_settings uses + 300); the workers on base + 1 and base + 2, and base + 3 added later
nodes=($base $((base + 1)) $((base + 2)) $((base + 3)))
dir() { echo "$PGDATA_BASE/citus-$1"; }
cleanup() { for p in "${nodes[@]}"; do stop_cluster "$E2E_VERSION" "$(dir "$p")" || true; rm -rf "$(dir "$p")" || true; done; }
keep_logs() { # after a failure: the nodes' logs outlive the cleanup
  local kept="$PGDATA_BASE/t_citus-$E2E_VERSION-logs"; rm -rf "$kept"; mkdir -p "$kept"
  for p in "${nodes[@]}"; do cp "$(dir "$p")/server.log" "$kept/$p.log" 2>/dev/null || true; done
  echo "the nodes' logs: $kept" >&2
}
work=$(mktemp -d)
trap 'rc=$?; [ $rc = 0 ] || keep_logs; rm -rf "$work"; cleanup' EXIT
cleanup
for p in "${nodes[@]}"; do
  # The coordinator runs checkout's maintenance worker (idle until the maintenance section).
  preload=citus; [ "$p" = "$base" ] && preload=citus,checkout
  start_cluster "$E2E_VERSION" "$(dir "$p")" "$p" "shared_preload_libraries = '$preload'" "citus.enable_unsafe_triggers = on" \
    "max_prepared_transactions = 100" "max_connections = 100" "fsync = off" \
    "checkout.maintenance_databases = 'postgres'" "checkout.maintenance_interval = '1h'"
done
at() { # PORT [psql args]: quiet, unaligned, stop on error, NOTICEs off
  local port=$1; shift
  PGOPTIONS="-c client_min_messages=warning" "$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}
C() { at "$base" "$@"; } # the coordinator
state_of() { C -v VERBOSITY=sqlstate -c "$1" 2>&1 | sed -n 's/^ERROR:  //p'; }
for p in "${nodes[@]}"; do at "$p" -c "CREATE EXTENSION citus" >/dev/null; done
C -c "SELECT citus_set_coordinator_host('127.0.0.1', $base)" -c "SELECT citus_add_node('127.0.0.1', $((base + 1)))" \
  -c "SELECT citus_add_node('127.0.0.1', $((base + 2)))" >/dev/null
C -c "CREATE EXTENSION checkout" # propagated to the workers
assert_eq "not distributed" "$(C -c "SELECT state FROM checkout.distribution_state()")" "before distribute()"

# distribute(): organizations a reference table, 14 tenant tables, the tenant functions; again: nothing.
# Meanwhile the maintenance worker runs every second: a job deciding while distribute() runs waits
# for it (a tick once failed, deciding "one server" just before the tables became distributed).
C -c "ALTER SYSTEM SET checkout.maintenance_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 100); do [ "$(C -c "SELECT count(*) FROM checkout.maintenance_runs")" = 5 ] && break; sleep 0.1; done
done_lines=$(C -c "SELECT checkout.distribute()")
distributed_at=$(C -c "SELECT clock_timestamp()")
for _ in $(seq 100); do
  [ "$(C -c "SELECT count(*) FROM checkout.maintenance_runs WHERE last_run_at > '$distributed_at'")" = 5 ] && break; sleep 0.1
done
C -c "ALTER SYSTEM SET checkout.maintenance_interval = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
assert_eq "5 none" "$(C -c "SELECT count(*) FILTER (WHERE last_run_at > '$distributed_at') || ' ' ||
  coalesce(string_agg(job || ': ' || last_error, '; ') FILTER (WHERE last_error IS NOT NULL), 'none') FROM checkout.maintenance_status()")" \
  "maintenance runs around distribute(), and their errors"
echo "$done_lines" | grep -q '^organizations: reference table$' || fail "organizations: $done_lines"
assert_eq 14 "$(echo "$done_lines" | grep -c ': distributed by organization_id$')" "tenant tables distributed"
assert_eq 5 "$(echo "$done_lines" | grep -c 'now ON DELETE NO ACTION$')" "SET NULL foreign keys replaced"
assert_eq 15 "$(echo "$done_lines" | grep -c "runs on its organization's node$")" "functions delegated"
assert_eq "already distributed: nothing to do" "$(C -c "SELECT checkout.distribute()")" "distribute() again"
assert_eq none "$(C -c "SELECT coalesce(string_agg(\"check\", ', '), 'none') FROM checkout.verify() WHERE NOT ok")" "verify() failures"
C -c "SELECT detail FROM checkout.verify() WHERE \"check\" = 'distribution: distributed'" | grep -q '14 of 14 tenant tables' \
  || fail "verify() distribution row"

# Two tenants whose shards are on different workers.
node_of() { C -c "SELECT n.nodeport FROM pg_dist_placement pl JOIN pg_dist_node n USING (groupid)
                  WHERE pl.shardid = get_shard_id_for_distribution_column('checkout.users', '$1'::uuid)"; }
A="" B=""
for i in $(seq 1 40); do
  org=$(printf 'a0000000-0000-0000-0000-%012d' "$i")
  case "$(node_of "$org")" in
    $((base + 1))) [ -n "$A" ] || A=$org ;;
    $((base + 2))) [ -n "$B" ] || B=$org ;;
  esac
  [ -n "$A" ] && [ -n "$B" ] && break
done
[ -n "$A" ] && [ -n "$B" ] || fail "no two tenants on different workers among 40 ids"
pA1=b0000000-0000-0000-0000-0000000000a1 pA2=b0000000-0000-0000-0000-0000000000a2 pB1=b0000000-0000-0000-0000-0000000000b1
sso=f0000000-0000-0000-0000-0000000000a1
C -c "INSERT INTO checkout.organizations (id, name, slug) VALUES ('$A', 'A', 'a'), ('$B', 'B', 'b')" \
  -c "INSERT INTO checkout.products (id, organization_id, name) VALUES ('$pA1', '$A', 'Pro'), ('$pA2', '$A', 'Team'), ('$pB1', '$B', 'Pro')" \
  -c "INSERT INTO checkout.features (id, organization_id, key) VALUES ('$sso', '$A', 'sso')"
json() { C -c "$1" | head -n1; }         # a bare call (Citus delegates only a call that is the whole statement)
field() { sed -n "s/.*\"$1\": \"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"; }
upsert() { json "SELECT checkout.upsert_customer_atomic('$1', '$2')"; }

# Customers and trials; the trial check reads the tenant's shards on its worker.
first=$(upsert "$A" 'Jane.Doe@Gmail.com'); jane=$(echo "$first" | field customer_id)
assert_eq false "$(upsert "$A" 'jane.doe@gmail.com' | field created)" "second upsert of one email"
assert_eq "$jane" "$(upsert "$A" 'JANE.DOE@gmail.com' | field customer_id)" "the upserts name one customer"
trial_of() { json "SELECT checkout.check_trial_eligibility('$1'::uuid, '$2'::uuid, '$3'::uuid)" | field reason; }
assert_eq no_previous_trial "$(trial_of "$A" "$jane" "$pA1")" "first trial check"
sub() { echo "'{\"status\": \"$1\", \"amount\": $2, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": \"2026-01-01T00:00:00Z\", \"current_period_end\": \"2099-01-01T00:00:00Z\"${3:-}}'"; }
create="SELECT checkout.create_subscription_atomic($(sub trialing 100 ', "trial_end": "2099-01-01T00:00:00Z"'), ARRAY['{\"feature_id\": \"$sso\"}'::jsonb], '$jane', '$pA1', '$A', 'key-1')"
created=$(json "$create"); s1=$(echo "$created" | field subscription_id)
assert_eq true "$(echo "$created" | field trial_eligible)" "a trial granted"
replay=$(json "$create")
assert_eq "$s1 true" "$(echo "$replay" | field subscription_id) $(echo "$replay" | field replayed)" "the key replays"
assert_eq 55000 "$(state_of "SELECT checkout.create_subscription_atomic($(sub active 999), NULL, '$jane', '$pA1', '$A', 'key-1')")" \
  "the key with other parameters"
assert_eq already_had_trial "$(trial_of "$A" "$jane" "$pA1")" "second trial check"
variant=$(upsert "$A" 'janedoe+promo@gmail.com' | field customer_id)
assert_eq email_variation_detected "$(trial_of "$A" "$variant" "$pA1")" "a variant address within the tenant"
other=$(upsert "$B" 'jane.doe@gmail.com' | field customer_id)
assert_eq no_previous_trial "$(trial_of "$B" "$other" "$pB1")" "the same address in a tenant on the other worker"
assert_eq 0A000 "$(state_of "SELECT checkout.check_trial_eligibility('$jane'::uuid, '$pA1'::uuid)")" "the seed form"
assert_eq P0002 "$(state_of "SELECT checkout.check_trial_eligibility('$B'::uuid, '$jane'::uuid, '$pB1'::uuid)")" \
  "another tenant's customer"

# The lifecycle through the coordinator, with its audit trail, grants and counters.
call() { json "SELECT checkout.$1('$s1', '$A'$2)" | field "$3"; }
assert_eq active "$(call end_subscription_trial ', true' status)" "trial converted"
assert_eq true "$(call cancel_subscription_atomic ", true, 'moving'" cancel_at_period_end)" "cancel at period end"
assert_eq reactivated "$(call reactivate_subscription_atomic '' change_type)" "reactivate"
assert_eq upgraded "$(call change_subscription_plan_atomic ", '$pA2', 500, NULL, NULL, ARRAY['{\"feature_id\": \"$sso\"}'::jsonb]" change_type)" "plan change"
assert_eq past_due "$(call mark_subscription_past_due '' status)" "past due"
assert_eq renewed "$(call renew_subscription_period '' change_type)" "renew"
assert_eq 09000 "$(state_of "SELECT checkout.end_subscription_trial('$s1', '$A', true)")" "ending a trial that is over"
assert_eq 09000 "$(state_of "UPDATE checkout.subscriptions SET status = 'incomplete' WHERE organization_id = '$A' AND id = '$s1'")" \
  "a direct UPDATE outside the state machine"
assert_eq canceled "$(call cancel_subscription_atomic '' status)" "cancel now"
assert_eq "created:create_subscription_atomic converted:- cancelled:moving reactivated:- upgraded:- past_due:- renewed:- cancelled:-" \
  "$(C -c "SELECT string_agg(change_type || ':' || coalesce(reason, '-'), ' ' ORDER BY created_at) FROM checkout.subscription_changes
           WHERE organization_id = '$A' AND subscription_id = '$s1'")" "the audit trail"
assert_eq "1 true" "$(C -c "SELECT count(*) || ' ' || bool_and(revoked_at IS NOT NULL) FROM checkout.feature_grants WHERE organization_id = '$A'")" \
  "the grant, revoked when it ended"
assert_eq "false 1" "$(C -c "SELECT has_active_subscription || ' ' || subscription_count FROM checkout.customers WHERE organization_id = '$A' AND id = '$jane'")" \
  "the customer's counters"
# Not delegated (inside a transaction block): refused, not run elsewhere with a wrong audit.
assert_eq 0A000 "$(state_of "BEGIN; SELECT checkout.reactivate_subscription_atomic('$s1', '$A'); COMMIT;")" "a call in a transaction block"

# Refunds and webhooks.
C -c "INSERT INTO checkout.payment_intents (organization_id, customer_id, stripe_payment_intent_id, amount, currency, status)
      VALUES ('$A', '$jane', 'pi_1', 1000, 'usd', 'succeeded')"
assert_eq pending "$(json "SELECT checkout.record_refund('$A', 'pi_1', 're_1', 400, 'usd')" | field status)" "a refund"
assert_eq 23514 "$(state_of "SELECT checkout.record_refund('$A', 'pi_1', 're_2', 700, 'usd')")" "a refund beyond the payment"
assert_eq succeeded "$(json "SELECT checkout.update_refund_status('$A', 're_1', 'succeeded')" | field status)" "the refund's status"
assert_eq 09000 "$(state_of "SELECT checkout.update_refund_status('$A', 're_1', 'pending')")" "a refund's status going back"
event="SELECT checkout.record_webhook_event('$B'::uuid, 'evt_1', 'invoice.paid', '{}'::jsonb, '2026-12-01T00:00:00Z')"
assert_eq "false true" "$(json "$event" | field duplicate) $(json "$event" | field duplicate)" "a webhook event recorded once"

# Ending a subscription by a direct UPDATE through the coordinator: the triggers on the shard stamp
# it and revoke its grants (their statements there need the settings checkout sets on a shard).
direct=$(json "SELECT checkout.create_subscription_atomic($(sub active 100), ARRAY['{\"feature_id\": \"$sso\"}'::jsonb], '$variant', '$pA2', '$A')" | field subscription_id)
# (First, plan changes that revoke its grant and bring it back: on a cluster, three statements.)
grants_of() { C -c "SELECT count(*) || ' ' || bool_and(revoked_at IS NULL) FROM checkout.feature_grants WHERE organization_id = '$A' AND subscription_id = '$1'"; }
json "SELECT checkout.change_subscription_plan_atomic('$direct', '$A', '$pA2', 200, NULL, NULL, ARRAY[]::jsonb[])" \
  | grep -q "\"features_revoked\": \[\"$sso\"\]" || fail "a plan change without the feature does not report it revoked"
assert_eq "1 false" "$(grants_of "$direct")" "the grant after a plan without it"
json "SELECT checkout.change_subscription_plan_atomic('$direct', '$A', '$pA2', 300, NULL, NULL, ARRAY['{\"feature_id\": \"$sso\"}'::jsonb])" \
  | grep -q '"features_revoked": \[\]' || fail "a plan change with the feature back reports a revocation"
assert_eq "1 true" "$(grants_of "$direct")" "the grant back with the plan"
C -c "UPDATE checkout.subscriptions SET status = 'canceled' WHERE organization_id = '$A' AND id = '$direct'"
assert_eq "true true" "$(C -c "SELECT (s.ended_at IS NOT NULL) || ' ' || bool_and(g.revoked_at IS NOT NULL) FROM checkout.subscriptions s
  JOIN checkout.feature_grants g ON g.organization_id = s.organization_id AND g.subscription_id = s.id
  WHERE s.organization_id = '$A' AND s.id = '$direct' GROUP BY s.ended_at")" "a direct UPDATE that ends a subscription"

# Maintenance: the coordinator's background worker runs every job, organization by organization on
# the tenants' nodes (A and B are on different workers), with the audit context of each job.
ending() { # TENANT PRODUCT EMAIL KEY: an active subscription set to cancel at the end of a period that is over
  local c s; c=$(upsert "$1" "$3" | field customer_id)
  s=$(json "SELECT checkout.create_subscription_atomic($(sub active 100), NULL, '$c', '$2', '$1', '$4')" | field subscription_id)
  json "SELECT checkout.cancel_subscription_atomic('$s', '$1', true, 'ending')" >/dev/null
  C -c "UPDATE checkout.subscriptions SET current_period_start = '2025-01-01', current_period_end = '2026-01-01'
        WHERE organization_id = '$1' AND id = '$s'"
  echo "$s"
}
endA=$(ending "$A" "$pA2" 'ending@example.com' 'end-a') endB=$(ending "$B" "$pB1" 'ending@example.com' 'end-b')
C -c "INSERT INTO checkout.checkout_sessions (organization_id, status, expires_at, stripe_session_id) VALUES
        ('$A', 'pending', now() - interval '1 minute', 'cs_a_due'), ('$A', 'pending', now() + interval '1 hour', 'cs_a_open'),
        ('$B', 'pending', now() - interval '1 minute', 'cs_b_due'), ('$B', 'expired', now() - interval '2 days', 'cs_b_old')" \
  -c "UPDATE checkout.idempotency_keys SET expires_at = now() - interval '1 minute' WHERE key IN ('end-a', 'end-b')"
# p_batch bounds a run over several organizations: B's two rows (its most overdue first), not A's.
assert_eq '{"deleted": 1, "expired": 1}' "$(C -c "SELECT checkout.expire_checkout_sessions(1)")" "a batch of 1 over two workers"
assert_eq cs_a_due "$(C -c "SELECT string_agg(stripe_session_id, ' ') FROM checkout.checkout_sessions WHERE status = 'pending' AND expires_at < now()")" \
  "the due session left for the next run"
C -c "ALTER SYSTEM SET checkout.maintenance_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 300); do
  [ "$(C -c "SELECT count(*) FROM checkout.subscriptions WHERE status = 'canceled' AND id IN ('$endA', '$endB')")" = 2 ] \
    && [ "$(C -c "SELECT count(*) FROM checkout.maintenance_runs WHERE last_run_at > now() - interval '1 second'")" = 5 ] && break
  sleep 0.1
done
C -c "ALTER SYSTEM SET checkout.maintenance_interval = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
assert_eq none "$(C -c "SELECT coalesce(string_agg(job || ': ' || last_error, '; '), 'none') FROM checkout.maintenance_status() WHERE last_error IS NOT NULL")" \
  "maintenance errors"
assert_eq "created:create_subscription_atomic cancelled:ending updated:- cancelled:cancel_at_period_end" \
  "$(C -c "SELECT string_agg(change_type || ':' || coalesce(reason, '-'), ' ' ORDER BY created_at) FROM checkout.subscription_changes
           WHERE organization_id = '$A' AND subscription_id = '$endA'")" "the audit trail of a period ended on A's worker"
assert_eq "created:create_subscription_atomic cancelled:ending updated:- cancelled:cancel_at_period_end" \
  "$(C -c "SELECT string_agg(change_type || ':' || coalesce(reason, '-'), ' ' ORDER BY created_at) FROM checkout.subscription_changes
           WHERE organization_id = '$B' AND subscription_id = '$endB'")" "the audit trail of a period ended on B's worker"
assert_eq "cs_a_due=expired cs_a_open=pending cs_b_due=expired" \
  "$(C -c "SELECT string_agg(stripe_session_id || '=' || status, ' ' ORDER BY stripe_session_id) FROM checkout.checkout_sessions")" \
  "checkout sessions expired, and the old one deleted, on both workers"
assert_eq 0 "$(C -c "SELECT count(*) FROM checkout.idempotency_keys WHERE key IN ('end-a', 'end-b')")" "expired keys deleted"
# Every subscription here is monthly: a product's MRR is the sum of its active amounts.
want=$(C -c "SELECT p.name || ' ' || coalesce(sum(s.n), 0) || ' ' || coalesce(jsonb_object_agg(s.currency, s.total) FILTER (WHERE s.currency IS NOT NULL), '{}')
  FROM checkout.products p LEFT JOIN (SELECT organization_id, product_id, currency, count(*) AS n, sum(amount) AS total
                                      FROM checkout.subscriptions WHERE status = 'active' GROUP BY 1, 2, 3) s
    ON s.organization_id = p.organization_id AND s.product_id = p.id
  GROUP BY p.organization_id, p.id, p.name ORDER BY p.name, p.organization_id")
[ "$(echo "$want" | wc -l)" = 3 ] || fail "the three products' figures: $want"
assert_eq "$want" "$(C -c "SELECT name || ' ' || metrics_active_subscriptions || ' ' || metrics_mrr FROM checkout.products ORDER BY name, organization_id")" \
  "the products' refreshed metrics"

# The webhook queue across nodes: 4 workers claim 2 at a time from both tenants until every event is
# processed, completing each with its organization (on its node); one attempt fails once. No event goes to two claims, and each object's events are
# applied one at a time, oldest first.
for t in A B; do for o in 1 2 3; do for e in 1 2 3 4; do
  org=$A; [ $t = B ] && org=$B
  json "SELECT checkout.record_webhook_event('$org'::uuid, 'evt_${t}${o}_$e', 'invoice.paid', '{\"object_id\": \"obj_${t}$o\"}'::jsonb,
        '2026-12-01T00:00:00Z'::timestamptz + interval '$e minutes' - interval '$o seconds')" >/dev/null
done; done; done
claimer() {
  local rows org id attempt name
  for _ in $(seq 2000); do
    rows=$(C -c "SELECT organization_id || ' ' || id || ' ' || attempts || ' ' || provider_event_id FROM checkout.claim_webhook_events(2)")
    if [ -z "$rows" ]; then
      [ "$(C -c "SELECT count(*) FROM checkout.webhook_events WHERE status <> 'processed'")" = 0 ] && return
      sleep 0.02; continue
    fi
    while read -r org id attempt name; do
      echo "$id"
      if [ "$name" = evt_B2_2 ] && [ "$attempt" = 1 ]; then
        C -c "SELECT checkout.fail_webhook_event('$org', '$id', 'first attempt fails', $attempt)" >/dev/null
      else
        C -c "SELECT checkout.complete_webhook_event('$org', '$id', $attempt)" >/dev/null
      fi
    done <<< "$rows"
  done
}
for i in 1 2 3 4; do claimer > "$work/claims.$i" 2> "$work/claims.$i.err" & done
wait
assert_eq "" "$(cat "$work"/claims.*.err)" "errors of the claimers"
assert_eq 0 "$(C -c "SELECT count(*) FROM checkout.webhook_events WHERE status <> 'processed'")" "events left unprocessed"
assert_eq "$(C -c "SELECT id FROM checkout.webhook_events WHERE provider_event_id = 'evt_B2_2'")" "$(sort "$work"/claims.[1-4] | uniq -d)" \
  "the only event claimed twice: the one whose first attempt failed"
assert_eq 26 "$(cat "$work"/claims.[1-4] | wc -l)" "claims of 25 events, one of them twice"
assert_eq 0 "$(C -c "SELECT count(*) FROM checkout.webhook_events a JOIN checkout.webhook_events b
  ON b.organization_id = a.organization_id AND b.object_id = a.object_id AND b.event_created_at > a.event_created_at
  WHERE b.processed_at < a.processed_at")" "events of one object applied out of order"
# A claim whose lease ran out (its worker died) is handed out again, its attempt counted.
json "SELECT checkout.record_webhook_event('$A'::uuid, 'evt_lease', 'invoice.paid', '{}'::jsonb, '2026-12-02T00:00:00Z')" >/dev/null
assert_eq "evt_lease 1" "$(C -c "SELECT provider_event_id || ' ' || attempts FROM checkout.claim_webhook_events(5)")" "a claim"
C -c "UPDATE checkout.webhook_events SET updated_at = now() - interval '1 hour' WHERE provider_event_id = 'evt_lease'"
assert_eq "evt_lease 2 claim lease expired (attempt 1)" \
  "$(C -c "SELECT provider_event_id || ' ' || attempts || ' ' || error_message FROM checkout.claim_webhook_events(5)")" "the claim again after its lease"
# The forms by id alone (every shard asked) give the same answers.
lease=$(C -c "SELECT id FROM checkout.webhook_events WHERE provider_event_id = 'evt_lease'")
assert_eq "false true" "$(C -c "SELECT checkout.complete_webhook_event('$lease', 1)::text") $(C -c "SELECT checkout.complete_webhook_event('$lease', 2)::text")" \
  "completing by id the old claim, then the current one"

# 16 sessions released at once: on one pair without a key, and on one key.
gate() { # SQL: run SQL in 16 sessions that wait on an advisory lock, released together
  local out=$1 sql=$2 pids=() i
  PGOPTIONS="-c client_min_messages=warning" "$E2E_BIN/psql" -X -q -h 127.0.0.1 -p "$base" -U postgres -d postgres \
    -c "SELECT pg_advisory_lock(4242)" -c "SELECT pg_sleep(30)" >/dev/null 2>&1 &
  local holder=$!
  for _ in $(seq 300); do [ "$(C -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")" = 1 ] && break; sleep 0.05; done
  for i in $(seq 1 16); do
    C -c "SELECT pg_advisory_lock_shared(4242)" -c "$sql" > "$out.$i" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 600); do [ "$(C -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted")" = 16 ] && break; sleep 0.05; done
  C -c "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted AND mode = 'ExclusiveLock'" >/dev/null
  wait "$holder" || true
  for p in "${pids[@]}"; do wait "$p" || true; done
}
racer=$(upsert "$A" 'racer@example.com' | field customer_id)
gate "$work/pair" "SELECT checkout.create_subscription_atomic($(sub active 100), NULL, '$racer', '$pA1', '$A')"
winner=$(C -c "SELECT id FROM checkout.subscriptions WHERE organization_id = '$A' AND customer_id = '$racer'")
assert_eq 1 "$(echo "$winner" | wc -l)" "subscriptions of the raced pair"
assert_eq 1 "$(cat "$work"/pair.* | grep -c '"success": true')" "successes on one pair"
assert_eq 15 "$(cat "$work"/pair.* | grep -c "\"existing_subscription_id\": \"$winner\"")" "answers naming the winner"
gate "$work/key" "SELECT checkout.create_subscription_atomic($(sub active 100), NULL, '$racer', '$pA2', '$A', 'race-key')"
keyed=$(C -c "SELECT id FROM checkout.subscriptions WHERE organization_id = '$A' AND customer_id = '$racer' AND product_id = '$pA2'")
assert_eq 16 "$(cat "$work"/key.* | grep -c "\"subscription_id\": \"$keyed\"")" "callers answered with the one keyed subscription"
assert_eq 15 "$(cat "$work"/key.* | grep -c '"replayed": true')" "replays of one key"
assert_eq 0 "$(cat "$work"/pair.* "$work"/key.* | grep -c 'ERROR')" "errors in the races"

# Moving tenant A's shards to the other worker while creates with keys run through the coordinator:
# the writer starts before the move and goes on after it (blocked while the move copies).
shards=$(C -c "SELECT get_shard_id_for_distribution_column('checkout.users', '$A'::uuid)")
(
  i=0
  while [ ! -f "$work/stop" ] && [ $i -lt 2000 ]; do
    i=$((i + 1))
    c=$(upsert "$A" "mover$i@example.com" | field customer_id)
    echo "$i $(json "SELECT checkout.create_subscription_atomic($(sub active $i), NULL, '$c', '$pA1', '$A', 'move-$i')" | field subscription_id)"
  done
) > "$work/moving" 2> "$work/moving.err" &
mover=$!
lines() { grep -c . "$work/moving" || true; }
for _ in $(seq 600); do [ "$(lines)" -ge 5 ] && break; sleep 0.05; done
C -c "SELECT citus_move_shard_placement($shards, '127.0.0.1', $((base + 1)), '127.0.0.1', $((base + 2)), shard_transfer_mode => 'block_writes')" >/dev/null
moved_at=$(lines)
for _ in $(seq 600); do [ "$(lines)" -ge $((moved_at + 5)) ] && break; sleep 0.05; done
touch "$work/stop"
wait "$mover" || fail "creates during the move: $(cat "$work/moving.err")"
[ -s "$work/moving.err" ] && fail "errors during the move: $(cat "$work/moving.err")"
[ "$(lines)" -ge $((moved_at + 5)) ] || fail "the writer did not go on after the move ($(lines) creates, $moved_at at the move)"
assert_eq $((base + 2)) "$(node_of "$A")" "tenant A's worker after the move"
assert_eq "" "$(awk 'NF != 2' "$work/moving")" "every create during the move answered with a subscription"
replayed=$(while read -r i _; do c=$(C -c "SELECT id FROM checkout.customers WHERE organization_id = '$A' AND email = 'mover$i@example.com'")
  echo "$i $(json "SELECT checkout.create_subscription_atomic($(sub active $i), NULL, '$c', '$pA1', '$A', 'move-$i')" | field subscription_id)"; done < "$work/moving")
assert_eq "$(cat "$work/moving")" "$replayed" "every key created around the move replays its subscription"
assert_eq already_had_trial "$(trial_of "$A" "$jane" "$pA1")" "the trial check on the new worker"

# A node added later, and a rebalance onto it while creates with keys run on both tenants. The new
# node gets checkout from Citus (CREATE EXTENSION); calls delegated there need nothing more.
C -c "SELECT citus_add_node('127.0.0.1', $((base + 3)))" >/dev/null
rm -f "$work/stop"
(
  i=0
  while [ ! -f "$work/stop" ] && [ $i -lt 2000 ]; do
    i=$((i + 1)); org=$A; [ $((i % 2)) = 0 ] && org=$B; product=$pA1; [ "$org" = "$B" ] && product=$pB1
    c=$(upsert "$org" "rebalance$i@example.com" | field customer_id)
    echo "$i $org $c $product $(json "SELECT checkout.create_subscription_atomic($(sub active $i), NULL, '$c', '$product', '$org', 'rebalance-$i')" | field subscription_id)"
  done
) > "$work/rebalancing" 2> "$work/rebalancing.err" &
writer=$!
for _ in $(seq 600); do [ "$(grep -c . "$work/rebalancing")" -ge 5 ] && break; sleep 0.05; done
C -c "SELECT citus_rebalance_start(shard_transfer_mode => 'block_writes')" -c "SELECT citus_rebalance_wait()" >/dev/null
rebalanced_at=$(grep -c . "$work/rebalancing")
for _ in $(seq 600); do [ "$(grep -c . "$work/rebalancing")" -ge $((rebalanced_at + 5)) ] && break; sleep 0.05; done
touch "$work/stop"
wait "$writer" || fail "creates during the rebalance: $(cat "$work/rebalancing.err")"
[ -s "$work/rebalancing.err" ] && fail "errors during the rebalance: $(cat "$work/rebalancing.err")"
assert_eq "" "$(awk 'NF != 5' "$work/rebalancing")" "every create during the rebalance answered with a subscription"
moved=$(C -c "SELECT count(*) FROM pg_dist_placement pl JOIN pg_dist_node n USING (groupid) JOIN pg_dist_shard s USING (shardid)
              WHERE n.nodeport = $((base + 3)) AND s.logicalrelid = 'checkout.users'::regclass")
[ "$moved" -gt 0 ] || fail "the rebalance moved no shard group to the new node"
replayed=$(while read -r i org c product _; do
  echo "$i $org $c $product $(json "SELECT checkout.create_subscription_atomic($(sub active $i), NULL, '$c', '$product', '$org', 'rebalance-$i')" | field subscription_id)"
done < "$work/rebalancing")
assert_eq "$(cat "$work/rebalancing")" "$replayed" "every key created around the rebalance replays its subscription"
# A tenant on the new node: the contract there, as on the first two.
Cn=""
for i in $(seq 100 400); do
  org=$(printf 'c0000000-0000-0000-0000-%012d' "$i")
  [ "$(node_of "$org")" = $((base + 3)) ] && { Cn=$org; break; }
done
[ -n "$Cn" ] || fail "no tenant on the new node among 300 ids"
pC1=b0000000-0000-0000-0000-0000000000c1 ssoC=f0000000-0000-0000-0000-0000000000c1
C -c "INSERT INTO checkout.organizations (id, name, slug) VALUES ('$Cn', 'C', 'c')" \
  -c "INSERT INTO checkout.products (id, organization_id, name) VALUES ('$pC1', '$Cn', 'Pro')" \
  -c "INSERT INTO checkout.features (id, organization_id, key) VALUES ('$ssoC', '$Cn', 'sso')"
carol=$(upsert "$Cn" 'carol@example.com' | field customer_id)
createC="SELECT checkout.create_subscription_atomic($(sub trialing 100 ', "trial_end": "2099-01-01T00:00:00Z"'), ARRAY['{\"feature_id\": \"$ssoC\"}'::jsonb], '$carol', '$pC1', '$Cn', 'key-c')"
sC=$(json "$createC" | field subscription_id)
assert_eq "$sC true" "$(json "$createC" | field subscription_id) $(json "$createC" | field replayed)" "a key on the new node replays"
assert_eq already_had_trial "$(trial_of "$Cn" "$carol" "$pC1")" "the trial check on the new node"
assert_eq converted "$(json "SELECT checkout.end_subscription_trial('$sC', '$Cn', true)" | field change_type)" "a lifecycle call on the new node"
C -c "UPDATE checkout.subscriptions SET status = 'canceled' WHERE organization_id = '$Cn' AND id = '$sC'"
assert_eq "created converted updated 1" "$(C -c "SELECT string_agg(change_type, ' ' ORDER BY created_at) || ' ' ||
  (SELECT count(*) FROM checkout.feature_grants WHERE organization_id = '$Cn' AND revoked_at IS NOT NULL)
  FROM checkout.subscription_changes WHERE organization_id = '$Cn'")" "the audit and grants of a direct ending on the new node"
assert_eq "already distributed: nothing to do" "$(C -c "SELECT checkout.distribute()")" "distribute() after adding a node"

assert_eq none "$(C -c "SELECT coalesce(string_agg(invariant || ': ' || detail, '; '), 'none') FROM checkout.check_invariants()")" "invariants"
assert_eq none "$(C -c "SELECT coalesce(string_agg(\"check\", ', '), 'none') FROM checkout.verify() WHERE NOT ok")" "verify() at the end"
for p in "${nodes[@]}"; do # a node that crashed and recovered would pass every check above
  assert_eq 0 "$(grep -c 'terminated by signal' "$(dir "$p")/server.log")" "server processes crashed on port $p"
done
echo "t_citus: ok (tenants on ports $((base + 1)) and $((base + 2)); $(lines) creates around the shard move, $moved_at of them before it returned; $(grep -c . "$work/rebalancing") around the rebalance, $moved shard groups moved to port $((base + 3)))"
