# check_trial_eligibility reads like an index-only scan: once VACUUM has marked the heap pages
# all-visible, its lookups take their columns from the index tuples (no heap fetch), except the
# customer's email when no p_email is passed; the answers are the same as through the heap. On pages
# that writes have touched since, the heap decides what is visible: a deleted trial and a
# soft-deleted customer (whose old index entry still says deleted_at NULL). The interleavings (an
# uncommitted trial, SERIALIZABLE conflicts) are in tests/isolation/specs/trial_visibility.spec.
source "$(dirname "$0")/lib.sh"
db=e2e_index_only
fresh_db $db
psql_db $db -c "CREATE EXTENSION checkout"
org="'a0000000-0000-0000-0000-00000000000a'::uuid"
product="'b0000000-0000-0000-0000-00000000000a'::uuid"
customer() { echo "'c0000000-0000-0000-0000-$(printf %012d "$1")'::uuid"; }

# All calls over every customer, once with its own email (p_email NULL) and once with a variant of
# the next customer's: a digest of the answers, then the heap fetches of each index the calls made.
calls="SELECT md5(string_agg(checkout.check_trial_eligibility(c.id, $product, NULL)::text || ' '
                             || checkout.check_trial_eligibility(c.id, $product, 'User' || (n + 1) || '+x@Example.com')::text, '|' ORDER BY n))
       FROM checkout.customers c, LATERAL (SELECT split_part(split_part(c.email, '@', 1), 'user', 2)::int AS n) x
       WHERE c.deleted_at IS NULL;
       SELECT string_agg(i || ' ' || pg_stat_get_xact_tuples_fetched(('checkout.' || i)::regclass)
                         || ' ' || (pg_stat_get_xact_numscans(('checkout.' || i)::regclass) > 0), ', ' ORDER BY i)
       FROM unnest(ARRAY['customers_id_idx', 'products_pkey', 'trial_history_one_per_product',
                         'customer_email_variants_key', 'idx_email_variants_normalized']) i;"

# Load and the first calls in one transaction: its own rows are not all-visible, so every lookup
# goes through the heap.
before=$(psql_db $db <<SQL
BEGIN;
INSERT INTO checkout.organizations (id, name) VALUES ($org, 'org');
INSERT INTO checkout.products (id, organization_id, name) VALUES ($product, $org, 'pro');
INSERT INTO checkout.customers (id, organization_id, email)
SELECT ('c0000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, $org, 'user' || g || '@example.com'
FROM generate_series(1, 3000) g;
-- A third had a trial; a tenth changed address since (the history counts).
INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
SELECT $org, id, $product, now() - interval '30 days', now() - interval '16 days'
FROM checkout.customers WHERE split_part(split_part(email, '@', 1), 'user', 2)::int % 3 = 0;
UPDATE checkout.customers SET email = 'user' || split_part(split_part(email, '@', 1), 'user', 2) || '@new.example.org'
WHERE split_part(split_part(email, '@', 1), 'user', 2)::int % 10 = 1;
\o /dev/null
SELECT 1;
\o
$calls
COMMIT;
SQL
)
digest_before=$(echo "$before" | sed -n 1p)
fetches_before=$(echo "$before" | sed -n 2p)
echo "$fetches_before" | grep -q "customer_email_variants_key 0 " && fail "no heap fetch before VACUUM: $fetches_before"
psql_db $db -c "VACUUM ANALYZE checkout.customers, checkout.products, checkout.trial_history, checkout.customer_email_variants"
after=$(psql_db $db -c "BEGIN" -c "$calls" -c "COMMIT" | grep -v '^BEGIN\|^COMMIT')
digest_after=$(echo "$after" | sed -n 1p)
fetches_after=$(echo "$after" | sed -n 2p)
assert_eq "$digest_before" "$digest_after" "answers through the heap and from the index tuples"
[ -n "$digest_after" ] || fail "no answers"
# The only heap fetches: the email of each customer called with p_email NULL (3000 calls).
assert_eq "customer_email_variants_key 0 true, customers_id_idx 3000 true, idx_email_variants_normalized 0 true, products_pkey 0 true, trial_history_one_per_product 0 true" \
  "$fetches_after" "heap fetches per index after VACUUM"
# The answers are the ones the data gives (spot checks; the digest holds the rest).
check() { psql_db $db -c "SELECT checkout.check_trial_eligibility($1, $product, ${2:-NULL})->>'reason'"; }
assert_eq already_had_trial "$(check "$(customer 3)")" "customer 3 had a trial"
assert_eq email_variation_detected "$(check "$(customer 5)" "'User6+x@Example.com'")" "a variant of customer 6's address"
assert_eq no_previous_trial "$(check "$(customer 5)")" "customer 5"

# A deleted trial and a soft-deleted customer: their index entries stay until VACUUM, the heap says
# they are gone (the customer's old entry still holds deleted_at NULL).
psql_db $db -c "DELETE FROM checkout.trial_history WHERE customer_id = $(customer 9)" \
  -c "UPDATE checkout.customers SET deleted_at = now() WHERE id = $(customer 8)"
assert_eq no_previous_trial "$(check "$(customer 9)")" "after its trial was deleted"
assert_eq "ERROR:  P0002" "$(psql_db $db -v VERBOSITY=sqlstate -c "SELECT checkout.check_trial_eligibility($(customer 8), $product, NULL)" 2>&1)" \
  "a soft-deleted customer"

assert_eq "" "$(violations $db)" "invariants"
psql_db postgres -c "DROP DATABASE $db"
