# import_seed (issue 18): a database built by the seed's migrations (bench/reference.sql, schema ref)
# holding clean rows and every kind of dirty row the seed lets in (tests/e2e/import_source.sql)
# moves into checkout. Checked: the accounting (read = imported + merged + refused, read = the
# source's rows); each dirty row's outcome and reason; clean rows keep their ids and values; the
# derived data (email variants, trials, counters, audit rows) with check_invariants() and verify()
# empty; a dry run writes nothing; a second run imports nothing; a source lacking optional columns
# and tables; an imported key replays its answer; the errors of a bad call.
source "$(dirname "$0")/lib.sh"
DB=e2e_import
here=$(dirname "$0")
fresh_db $DB
psql_db $DB -c "CREATE EXTENSION checkout" -f "$here/../../bench/reference.sql" -f "$here/import_source.sql" >/dev/null

outcome() { # TABLE ID: "outcome reason" of a source row in checkout.import_report, "imported" when not reported
  local r; r=$(psql_db $DB -c "SELECT outcome || ' ' || reason FROM checkout.import_report WHERE source_table = '$1' AND source_id = '$2'")
  echo "${r:-imported}"
}
accounting() { # the rows of import_seed whose counts do not add up, or that did not read every source row
  # (the source table's rows are counted by a function of the session: no XML, which the PostgreSQL
  # 16 wheel is built without)
  or_die psql_db $DB -c "CREATE FUNCTION pg_temp.rows_of(s text, t text) RETURNS bigint LANGUAGE plpgsql AS
      \$f\$ DECLARE n bigint; BEGIN EXECUTE format('SELECT count(*) FROM %I.%I', s, t) INTO n; RETURN n; END \$f\$" \
    -c "SELECT string_agg(source_table || ' ' || read || '=' || imported || '+' || merged || '+' || refused, '; ')
    FROM checkout.import_seed('$1', $2) r
    WHERE read <> imported + merged + refused
       OR read <> coalesce(pg_temp.rows_of('$1', r.source_table), 0)"
}

# The dry run: counts add up, nothing written to checkout's tables, the report in pg_temp.
before=$(fingerprint $DB)
dry=$(psql_db $DB -c "SELECT string_agg(source_table || ':' || imported || '/' || merged || '/' || refused, ' ') FROM checkout.import_seed('ref')" \
                  -c "SELECT count(*) FROM pg_temp.import_report WHERE outcome = 'refused'")
assert_eq "$before" "$(fingerprint $DB)" "a dry run leaves checkout's tables as they were"
expected="organizations:2/0/1 users:1/0/1 customers:7/1/2 products:3/0/0 features:3/0/0 subscriptions:9/0/6 checkout_sessions:1/0/2 payment_intents:1/0/1 refunds:1/0/2 feature_grants:4/0/1 subscription_changes:1/0/2 trial_history:2/1/0 customer_email_variants:1/1/1 idempotency_keys:1/0/3 webhook_events:0/0/1 reconciliation_queue:3/0/0"
assert_eq "$expected" "$(echo "$dry" | head -1)" "dry run counts"
assert_eq 23 "$(echo "$dry" | tail -1)" "the dry run's report in pg_temp.import_report"
assert_eq "" "$(accounting ref true)" "accounting of a dry run"

# The real run: the same counts, then every dirty row reported with its reason.
real=$(psql_db $DB -c "SELECT string_agg(source_table || ':' || imported || '/' || merged || '/' || refused, ' ') FROM checkout.import_seed('ref', false)")
assert_eq "$expected" "$real" "a real run imports what the dry run said"
assert_eq "refused invalid_name" "$(outcome organizations a0000000-0000-0000-0000-00000000000c)" "organization without a name"
assert_eq "refused organization_not_imported" "$(outcome customers c0000000-0000-0000-0000-000000000009)" "customer of a refused organization"
assert_eq "merged email_case_duplicate" "$(outcome customers c0000000-0000-0000-0000-000000000003)" "emails differing by case"
assert_eq '{"into": "c0000000-0000-0000-0000-000000000002", "email": "bob@example.com", "into_email": "Bob@Example.com", "external_id": "ext-3", "stripe_customer_id": null}' \
  "$(psql_db $DB -c "SELECT detail FROM checkout.import_report WHERE source_id = 'c0000000-0000-0000-0000-000000000003'")" "a merge's detail names both customers"
assert_eq "refused invalid_email" "$(outcome customers c0000000-0000-0000-0000-000000000004)" "invalid email"
assert_eq "imported second_active_subscription_ended" "$(outcome subscriptions 50000000-0000-0000-0000-000000000003)" "trialing beside an active one (after the merge)"
assert_eq "imported second_active_subscription_ended" "$(outcome subscriptions 50000000-0000-0000-0000-000000000004)" "active and trialing for one pair"
assert_eq "refused tenant_mismatch" "$(outcome subscriptions 50000000-0000-0000-0000-000000000006)" "customer of another organization"
assert_eq "refused unknown_status" "$(outcome subscriptions 50000000-0000-0000-0000-000000000007)" "unknown status"
assert_eq "refused customer_refused" "$(outcome subscriptions 50000000-0000-0000-0000-000000000008)" "subscription of a refused customer"
assert_eq "refused invalid_amount" "$(outcome subscriptions 50000000-0000-0000-0000-000000000009)" "no amount"
assert_eq "refused invalid_period" "$(outcome subscriptions 50000000-0000-0000-0000-000000000010)" "no period end"
assert_eq "refused invalid_currency" "$(outcome subscriptions 50000000-0000-0000-0000-000000000014)" "not a currency"
assert_eq "refused tenant_mismatch" "$(outcome feature_grants 90000000-0000-0000-0000-000000000004)" "grant of another organization's feature"
assert_eq "refused subscription_refused" "$(outcome subscription_changes e0000000-0000-0000-0000-000000000002)" "audit row of a refused subscription"
assert_eq "refused unknown_actor_type" "$(outcome subscription_changes e0000000-0000-0000-0000-000000000003)" "unknown actor type"
assert_eq "merged duplicate_trial" "$(outcome trial_history 70000000-0000-0000-0000-000000000002)" "second trial of a pair (after the merge)"
assert_eq "merged current_email" "$(outcome customer_email_variants d0000000-0000-0000-0000-000000000001)" "the customer's own email"
assert_eq "refused customer_refused" "$(outcome customer_email_variants d0000000-0000-0000-0000-000000000003)" "variant of a refused customer"
assert_eq "refused no_organization" "$(outcome idempotency_keys 60000000-0000-0000-0000-000000000002)" "key without an organization"
assert_eq "refused still_processing" "$(outcome idempotency_keys 60000000-0000-0000-0000-000000000003)" "key whose call never finished"
assert_eq "refused answer_not_imported" "$(outcome idempotency_keys 60000000-0000-0000-0000-000000000004)" "key answering with a refused subscription"
assert_eq "frank@example.com" "$(psql_db $DB -c "SELECT email FROM checkout.customers WHERE id = 'c0000000-0000-0000-0000-000000000010'")" "a tab trimmed from an email"
assert_eq "50000000-0000-0000-0000-000000000015" "$(psql_db $DB -c "SELECT subscription_id FROM checkout.trial_history WHERE customer_id = 'c0000000-0000-0000-0000-000000000010'")" \
  "a trialing subscription without trial dates gets its trial"
assert_eq "refused missing_email" "$(outcome users 11000000-0000-0000-0000-000000000002)" "user without an email"
assert_eq "refused customer_refused" "$(outcome checkout_sessions 12000000-0000-0000-0000-000000000002)" "session of a refused customer"
assert_eq "refused no_organization" "$(outcome checkout_sessions 12000000-0000-0000-0000-000000000003)" "session without a customer or an organization"
assert_eq "refused no_organization" "$(outcome payment_intents 13000000-0000-0000-0000-000000000002)" "payment in the seed's shape"
assert_eq "refused exceeds_payment" "$(outcome refunds 14000000-0000-0000-0000-000000000002)" "refund beyond its payment"
assert_eq "refused currency_mismatch" "$(outcome refunds 14000000-0000-0000-0000-000000000003)" "refund in another currency"
assert_eq "refused no_organization" "$(outcome webhook_events 15000000-0000-0000-0000-000000000001)" "webhook event without an organization"
assert_eq "imported processing_released" "$(outcome reconciliation_queue 16000000-0000-0000-0000-000000000002)" "queue item the seed was processing"
assert_eq "pending" "$(psql_db $DB -c "SELECT status FROM checkout.reconciliation_queue WHERE id = '16000000-0000-0000-0000-000000000002'")" "released to pending"
assert_eq "a0000000-0000-0000-0000-00000000000a|usd" "$(psql_db $DB -c "SELECT organization_id || '|' || currency FROM checkout.payment_intents WHERE id = '13000000-0000-0000-0000-000000000001'")" \
  "a payment, currency normalized"
assert_eq "a0000000-0000-0000-0000-00000000000a" "$(psql_db $DB -c "SELECT organization_id FROM checkout.checkout_sessions WHERE id = '12000000-0000-0000-0000-000000000001'")" \
  "a session's organization from its customer"
assert_eq "11000000-0000-0000-0000-000000000001" "$(psql_db $DB -c "SELECT changed_by FROM checkout.subscription_changes WHERE id = 'e0000000-0000-0000-0000-000000000001'")" \
  "an audit row keeps its user"
assert_eq '{"seed_columns": {"legacy_tier": "gold"}}' \
  "$(psql_db $DB -c "SELECT metadata FROM checkout.customers WHERE id = 'c0000000-0000-0000-0000-000000000001'")" "an unknown column kept in metadata"

# Clean rows keep their ids and values; normalized values are normalized.
assert_eq "alice@example.com|ext-1|active|1999|usd|month|2024-03-01 00:00:00+00" \
  "$(psql_db $DB -c "SET TIME ZONE 'UTC'" -c "SELECT c.email, c.external_id, s.status, s.amount, s.currency, s.interval, s.current_period_start
     FROM checkout.subscriptions s JOIN checkout.customers c ON c.organization_id = s.organization_id AND c.id = s.customer_id
     WHERE s.id = '50000000-0000-0000-0000-000000000001'")" "a clean subscription and its customer"
assert_eq "Carol@Example.com" "$(psql_db $DB -c "SELECT email FROM checkout.customers WHERE id = 'c0000000-0000-0000-0000-000000000005'")" "email trimmed"
assert_eq "c0000000-0000-0000-0000-000000000002|expired" \
  "$(psql_db $DB -c "SELECT customer_id || '|' || status FROM checkout.subscriptions WHERE id = '50000000-0000-0000-0000-000000000003'")" \
  "a merged customer's subscription follows the surviving customer, ended"
assert_eq "active|expired" "$(psql_db $DB -c "SELECT string_agg(status, '|' ORDER BY id DESC) FROM checkout.subscriptions WHERE id IN ('50000000-0000-0000-0000-000000000004', '50000000-0000-0000-0000-000000000005')")" \
  "the active one stays in force"
assert_eq "true|true" "$(psql_db $DB -c "SELECT (ended_at IS NOT NULL)::text || '|' || (canceled_at IS NOT NULL)::text FROM checkout.subscriptions WHERE id = '50000000-0000-0000-0000-000000000012'")" "canceled stamped"

# Derived: audit rows, trials, counters, variants, grants; invariants and verify() clean.
assert_eq 9 "$(psql_db $DB -c "SELECT count(*) FROM checkout.subscription_changes WHERE change_type = 'imported'")" "one imported audit row per subscription"
assert_eq "Payment completed" "$(psql_db $DB -c "SELECT reason FROM checkout.subscription_changes WHERE id = 'e0000000-0000-0000-0000-000000000001'")" "the seed's own audit row kept"
assert_eq "50000000-0000-0000-0000-000000000011" "$(psql_db $DB -c "SELECT subscription_id FROM checkout.trial_history WHERE customer_id = 'c0000000-0000-0000-0000-000000000008'")" \
  "a trial the seed did not record"
assert_eq "2|true" "$(psql_db $DB -c "SELECT subscription_count || '|' || has_active_subscription FROM checkout.customers WHERE id = 'c0000000-0000-0000-0000-000000000002'")" \
  "counters of the surviving customer"
assert_eq "t" "$(psql_db $DB -c "SELECT revoked_at IS NOT NULL FROM checkout.feature_grants WHERE id = '90000000-0000-0000-0000-000000000005'")" "grant of a canceled subscription revoked"
assert_eq "aliceold@gmail.com" "$(psql_db $DB -c "SELECT email_normalized FROM checkout.customer_email_variants WHERE id = 'd0000000-0000-0000-0000-000000000002'")" \
  "a variant's canonical form recomputed"
assert_eq "" "$(violations $DB)" "check_invariants() after the import"
assert_eq "" "$(or_die psql_db $DB -c "SELECT string_agg(\"check\", ', ') FROM checkout.verify() WHERE NOT ok")" "verify() after the import"

# An imported key replays its answer (the seed's parameters are unknown, so any are accepted).
assert_eq "50000000-0000-0000-0000-000000000001|true" "$(psql_db $DB -c "SELECT r->>'subscription_id' || '|' || (r->>'replayed') FROM checkout.create_subscription_atomic(
    '{\"status\": \"active\", \"amount\": 1, \"currency\": \"usd\", \"interval\": \"month\", \"current_period_start\": \"2024-03-01T00:00:00Z\", \"current_period_end\": \"2024-04-01T00:00:00Z\"}',
    ARRAY[]::jsonb[], 'c0000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'order-1') r")" \
  "an imported key's answer"

# A second run imports nothing and changes no row of checkout's tables.
before=$(fingerprint $DB | grep -v '^import_report ')
assert_eq "0" "$(psql_db $DB -c "SELECT sum(imported) FROM checkout.import_seed('ref', false)")" "a second run imports nothing"
assert_eq "$before" "$(fingerprint $DB | grep -v '^import_report ')" "a second run changes nothing"
assert_eq "" "$(accounting ref false)" "accounting of a second run"

# Rows written to the source after the import follow, against checkout's rows as they are now:
# a grant on a subscription the application has since canceled in checkout comes in revoked.
psql_db $DB -c "UPDATE checkout.subscriptions SET status = 'canceled' WHERE id = '50000000-0000-0000-0000-000000000001'" \
  -c "INSERT INTO ref.feature_grants (id, customer_id, feature_id, subscription_id) VALUES ('90000000-0000-0000-0000-000000000006',
      'c0000000-0000-0000-0000-000000000001', 'f0000000-0000-0000-0000-000000000002', '50000000-0000-0000-0000-000000000001')"
assert_eq "feature_grants:1" "$(psql_db $DB -c "SELECT string_agg(source_table || ':' || imported, ' ') FROM checkout.import_seed('ref', false) WHERE imported > 0")" \
  "only the new row follows"
assert_eq "true" "$(psql_db $DB -c "SELECT (revoked_at IS NOT NULL)::text FROM checkout.feature_grants WHERE id = '90000000-0000-0000-0000-000000000006'")" \
  "a new grant on a subscription canceled in checkout is revoked"
assert_eq "" "$(violations $DB)" "check_invariants() after a later run"

# A source without the optional columns and tables.
assert_eq "organizations:1 users:0 customers:1 products:1 features:0 subscriptions:1 checkout_sessions:0 payment_intents:0 refunds:0 feature_grants:0 subscription_changes:0 trial_history:0 customer_email_variants:0 idempotency_keys:0 webhook_events:0 reconciliation_queue:0" \
  "$(psql_db $DB -c "SELECT string_agg(source_table || ':' || imported, ' ') FROM checkout.import_seed('thin', false)")" "a thin source"
assert_eq "1|{}" "$(psql_db $DB -c "SELECT s.interval_count || '|' || c.metadata FROM checkout.subscriptions s JOIN checkout.customers c ON c.id = s.customer_id WHERE s.id = '50000000-0000-0000-0000-0000000000d1'")" \
  "defaults where the source lacks a column"
assert_eq "" "$(violations $DB)" "check_invariants() after the thin import"

# Bad calls.
err=$(psql_db $DB -c "\set VERBOSITY sqlstate" -c "SELECT checkout.import_seed('no_such_schema')" 2>&1 || true)
assert_eq "ERROR:  3F000" "$err" "a missing source schema"
err=$(psql_db $DB -c "\set VERBOSITY sqlstate" -c "SELECT checkout.import_seed(NULL)" 2>&1 || true)
assert_eq "ERROR:  22004" "$err" "a NULL source schema"
# A column of a type its owner made (a cast from it could run the owner's function as the DBA).
psql_db $DB -c "CREATE SCHEMA typed" -c "CREATE DOMAIN typed.tier AS text" \
  -c "CREATE TABLE typed.customers (id uuid, organization_id uuid, email text, tier typed.tier)"
err=$(psql_db $DB -c "\set VERBOSITY sqlstate" -c "SELECT checkout.import_seed('typed')" 2>&1 || true)
assert_eq "ERROR:  22023" "$err" "a source column of a type outside pg_catalog"
# 0.5.0 has neither the report nor the 'imported' change type: the downgrade refuses, and says why.
psql_db $DB -c "SELECT count(*) FROM checkout.import_seed('ref', false)" >/dev/null  # a report of refusals
err=$(psql_db $DB -c "\set VERBOSITY sqlstate" -c "ALTER EXTENSION checkout UPDATE TO '0.5.0'" 2>&1 || true)
assert_eq "ERROR:  55000" "$err" "a downgrade with an import report"
err=$(psql_db $DB -c "DELETE FROM checkout.import_report" -c "\set VERBOSITY sqlstate" -c "ALTER EXTENSION checkout UPDATE TO '0.5.0'" 2>&1 || true)
assert_eq "ERROR:  23514" "$err" "a downgrade with imported audit rows"
echo "t_import: ok"
