# Concurrent claimers never get the same item, for both SKIP LOCKED queues (reconciliation items,
# webhook events): 4 sessions drain 200 items in batches of 7; every item is claimed exactly once.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_queue
psql_db e2e_queue -c "CREATE EXTENSION checkout" \
  -c "INSERT INTO checkout.organizations (id, name) VALUES ('a0000000-0000-0000-0000-000000000001', 'A')" \
  -c "SELECT count(checkout.enqueue_reconciliation('payment', 'pi_' || g)) FROM generate_series(1, 200) g" \
  -c "SELECT count(checkout.record_webhook_event('a0000000-0000-0000-0000-000000000001', 'evt_' || g, 'invoice.paid',
        jsonb_build_object('data', jsonb_build_object('object', jsonb_build_object('id', 'in_' || g))), now())) FROM generate_series(1, 200) g" >/dev/null
drain() { # NAME CLAIM_SQL (with WORKER in it)
  local name=$1 sql=$2 out
  out=$(mktemp -d /tmp/checkout-queue.XXXXXX)
  for w in 1 2 3 4; do
    ( for round in $(seq 1 60); do psql_db e2e_queue -c "${sql//WORKER/worker-$w}" >> "$out/$w"; done ) &
  done
  wait
  local claimed unique workers
  claimed=$(cat "$out"/* | grep -c .)
  unique=$(cat "$out"/* | grep . | sort -u | wc -l)
  workers=$(for w in 1 2 3 4; do [ -s "$out/$w" ] && echo "$w"; done | wc -l)
  rm -rf "$out"
  assert_eq 200 "$claimed" "$name items claimed"
  assert_eq 200 "$unique" "$name distinct items claimed"
  [ "$workers" -ge 2 ] || fail "$name: only $workers worker(s) got items: not concurrent"
}
drain reconciliation "SELECT reference_id FROM checkout.claim_reconciliation(7, 'WORKER')"
assert_eq 200 "$(psql_db e2e_queue -c "SELECT count(*) FROM checkout.reconciliation_queue WHERE status = 'processing'")" "processing items"
drain webhooks "SELECT provider_event_id FROM checkout.claim_webhook_events(7)"
assert_eq 200 "$(psql_db e2e_queue -c "SELECT count(*) FROM checkout.webhook_events WHERE status = 'processing'")" "processing events"
