# Concurrent claimers never get the same reconciliation item: 4 sessions drain 200 items in
# batches of 7, each recording what it claimed; every item is claimed exactly once.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_queue
psql_db e2e_queue -c "CREATE EXTENSION checkout" \
  -c "SELECT count(checkout.enqueue_reconciliation('payment', 'pi_' || g)) FROM generate_series(1, 200) g" >/dev/null
out=$(mktemp -d /tmp/checkout-queue.XXXXXX)
for w in 1 2 3 4; do
  (
    for round in $(seq 1 60); do
      psql_db e2e_queue -c "SELECT reference_id FROM checkout.claim_reconciliation(7, 'worker-$w')" >> "$out/$w"
    done
  ) &
done
wait
claimed=$(cat "$out"/* | grep -c .)
unique=$(cat "$out"/* | grep . | sort -u | wc -l)
workers=$(for w in 1 2 3 4; do [ -s "$out/$w" ] && echo "$w"; done | wc -l)
rm -rf "$out"
assert_eq 200 "$claimed" "items claimed"
assert_eq 200 "$unique" "distinct items claimed"
[ "$workers" -ge 2 ] || fail "only $workers worker(s) got items: not concurrent"
assert_eq 200 "$(psql_db e2e_queue -c "SELECT count(*) FROM checkout.reconciliation_queue WHERE status = 'processing'")" "processing items"
