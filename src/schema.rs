//! The tables, constraints and indexes (sql/schema.sql), `checkout.verify()` (sql/verify.sql) and
//! `checkout.check_invariants()` (sql/invariants.sql).
use pgrx::prelude::*;

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/invariants.sql",
    name = "invariants",
    requires = ["schema"]
);
extension_sql_file!("../sql/verify.sql", name = "verify", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, sqlstate_of, text};
    use crate::test_support::{
        CUSTOMER_A1, CUSTOMER_A2, CUSTOMER_B1, FEATURE_A1, FEATURE_B1, ORG_A, ORG_B, PRODUCT_A1,
        PRODUCT_A2, SUBSCRIPTION_A1,
    };
    use pgrx::prelude::*;

    #[pg_test]
    fn one_active_or_trialing_subscription_per_customer_and_product() {
        fixture();
        // The seed's index keyed on status let an 'active' and a 'trialing' row coexist.
        let second = &format!("INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end)
             VALUES ('{ORG_A}', '{CUSTOMER_A1}', '{PRODUCT_A1}', 'trialing', 0, 'usd', 'month', now(), now() + interval '1 month')");
        assert_eq!(sqlstate_of(second), "23505");
        // A canceled one alongside is fine.
        assert_eq!(
            sqlstate_of(&second.replace("'trialing'", "'canceled'")),
            "00000"
        );
        // Another product of the same customer is fine.
        assert_eq!(
            sqlstate_of(&second.replace(
                "b0000000-0000-0000-0000-0000000000a1",
                "b0000000-0000-0000-0000-0000000000a2"
            )),
            "00000"
        );
    }

    #[pg_test]
    fn subscription_checks() {
        fixture();
        let base = &format!("INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end, trial_start, trial_end)
             VALUES ('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A1}', 'active', 1000, 'usd', 'month', '2026-01-01', '2026-02-01', NULL, NULL)");
        assert_eq!(sqlstate_of(base), "00000", "valid row is accepted");
        let cases = [
            ("'2026-01-01', '2026-02-01'", "'2026-02-01', '2026-01-01'"), // period end < start
            ("NULL, NULL)", "'2026-01-10', '2026-01-01')"),               // trial end < start
            ("1000, 'usd'", "-1, 'usd'"),                                 // negative amount
            ("'usd'", "'USD'"),               // currency not lowercase ISO
            ("'month'", "'fortnight'"),       // interval
            ("'canceled'", "'bogus_status'"), // status
        ];
        for (from, to) in cases {
            let bad = base
                .replace("'active', 1000", "'canceled', 1000")
                .replace(from, to);
            assert_eq!(sqlstate_of(&bad), "23514", "{to}");
        }
    }

    #[pg_test]
    fn customer_uniqueness_is_case_insensitive_and_per_organization() {
        fixture();
        let dup = &format!("INSERT INTO checkout.customers (organization_id, email) VALUES ('{ORG_A}', 'ALICE@example.com')");
        assert_eq!(sqlstate_of(dup), "23505");
        // bob@example.com exists in org A only: org B may have its own.
        let bob_b = &format!("INSERT INTO checkout.customers (organization_id, email) VALUES ('{ORG_B}', 'Bob@Example.com')");
        assert_eq!(sqlstate_of(bob_b), "00000");
        assert_eq!(
            sqlstate_of(&bob_b.replace("000000000002", "000000000001")),
            "23505"
        );
        // A soft-deleted customer no longer holds the email.
        Spi::run(&format!(
            "UPDATE checkout.customers SET deleted_at = now() WHERE id = '{CUSTOMER_A1}'"
        ))
        .unwrap();
        assert_eq!(sqlstate_of(dup), "00000");
        let ext = &format!("INSERT INTO checkout.customers (organization_id, email, external_id) VALUES ('{ORG_A}', 'new@example.com', 'ext-a2')");
        assert_eq!(
            sqlstate_of(ext),
            "23505",
            "external_id is unique per organization"
        );
        assert_eq!(sqlstate_of(&ext.replace("ext-a2", "ext-new")), "00000");
    }

    #[pg_test]
    fn other_checks() {
        fixture();
        let pi = &format!("INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status) VALUES ('{ORG_A}', 'pi_2', 0, 'usd', 'succeeded')");
        assert_eq!(sqlstate_of(pi), "23514", "payment amount must be > 0");
        assert_eq!(sqlstate_of(&pi.replace(", 0,", ", 1,")), "00000");
        let refund = &format!("INSERT INTO checkout.refunds (organization_id, payment_intent_id, amount, currency) VALUES ('{ORG_A}', 'pi_1', 0, 'usd')");
        assert_eq!(sqlstate_of(refund), "23514", "refund amount must be > 0");
        assert_eq!(sqlstate_of(&refund.replace(", 0,", ", 5,")), "00000");
        let rq = "INSERT INTO checkout.reconciliation_queue (type, reference_id, priority) VALUES ('charge', 'ch_1', 11)";
        assert_eq!(sqlstate_of(rq), "23514", "priority is 1..10");
        assert_eq!(sqlstate_of(&rq.replace("11)", "10)")), "00000");
        assert_eq!(
            sqlstate_of(&rq.replace("11)", "1)")),
            "23505",
            "one open item per (type, reference_id)"
        );
    }

    #[pg_test]
    fn feature_grant_unique_and_on_conflict_target() {
        fixture();
        let grant = &format!("INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id) VALUES ('{ORG_A}', '{CUSTOMER_A1}', '{FEATURE_A1}', '{SUBSCRIPTION_A1}')");
        assert_eq!(sqlstate_of(grant), "23505", "fixture already granted it");
        // The seed's target (customer_id, feature_id, subscription_id) names a key that is now
        // tenant-first: the target names the organization too.
        let seed_target =
            format!("{grant} ON CONFLICT (customer_id, feature_id, subscription_id) DO NOTHING");
        assert_eq!(sqlstate_of(&seed_target), "42P10");
        let upsert = format!("{grant} ON CONFLICT (organization_id, customer_id, feature_id, subscription_id) DO UPDATE SET granted_at = EXCLUDED.granted_at");
        assert_eq!(sqlstate_of(&upsert), "00000");
        assert_eq!(count("SELECT count(*) FROM checkout.feature_grants"), 1);
    }

    #[pg_test]
    fn idempotency_keys_are_per_organization() {
        fixture();
        let key = &format!(
            "INSERT INTO checkout.idempotency_keys (organization_id, key) VALUES ('{ORG_A}', 'k1')"
        );
        assert_eq!(sqlstate_of(key), "00000");
        assert_eq!(sqlstate_of(key), "23505");
        assert_eq!(
            sqlstate_of(&key.replace("000000000001", "000000000002")),
            "00000"
        );
        assert_eq!(
            sqlstate_of(&key.replace("'k1'", "''")),
            "23514",
            "empty key"
        );
    }

    #[pg_test]
    fn cross_tenant_references_are_rejected() {
        fixture();
        // Org A subscription with org B's customer (the seed accepted this).
        let sub = &format!("INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end)
             VALUES ('{ORG_A}', '{CUSTOMER_B1}', '{PRODUCT_A2}', 'active', 0, 'usd', 'month', now(), now())");
        assert_eq!(sqlstate_of(sub), "23503");
        // ... or org B's product.
        let sub_b = sub
            .replace(
                "c0000000-0000-0000-0000-0000000000b1",
                "c0000000-0000-0000-0000-0000000000a2",
            )
            .replace(
                "b0000000-0000-0000-0000-0000000000a2",
                "b0000000-0000-0000-0000-0000000000b1",
            );
        assert_eq!(sqlstate_of(&sub_b), "23503");
        // Grant of org B's feature to org A's customer.
        let grant = &format!("INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id) VALUES ('{ORG_A}', '{CUSTOMER_A1}', '{FEATURE_B1}')");
        assert_eq!(sqlstate_of(grant), "23503");
        // Moving a subscription to the other organization is refused too (by the subscriptions
        // guard trigger, before the foreign key would).
        let moved = &format!("UPDATE checkout.subscriptions SET organization_id = '{ORG_B}' WHERE id = '{SUBSCRIPTION_A1}'");
        assert_eq!(sqlstate_of(moved), "09000");
        let grant_moved =
            &format!("UPDATE checkout.feature_grants SET organization_id = '{ORG_B}'");
        assert_eq!(sqlstate_of(grant_moved), "23503");
        let trial = &format!("INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end) VALUES ('{ORG_B}', '{CUSTOMER_B1}', '{PRODUCT_A1}', now(), now())");
        assert_eq!(sqlstate_of(trial), "23503");
        assert_eq!(
            sqlstate_of(&trial.replace("0000000000a1'", "0000000000b1'")),
            "00000"
        );
    }

    #[pg_test]
    fn deletes_follow_the_seed_cascade_intent() {
        fixture();
        // A customer with subscriptions cannot be deleted.
        assert_eq!(
            sqlstate_of(&format!(
                "DELETE FROM checkout.customers WHERE id = '{CUSTOMER_A1}'"
            )),
            "23503"
        );
        // Grants go with their subscription.
        assert_eq!(
            sqlstate_of(&format!(
                "DELETE FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'"
            )),
            "00000"
        );
        assert_eq!(count("SELECT count(*) FROM checkout.feature_grants"), 0);
        // Idempotency keys referenced by rows can expire and be deleted (the seed's FK blocked this).
        Spi::run(&format!("INSERT INTO checkout.idempotency_keys (organization_id, key, expires_at) VALUES ('{ORG_A}', 'used', now() - interval '1 day')")).unwrap();
        Spi::run(&format!("UPDATE checkout.subscriptions SET idempotency_key = 'used' WHERE organization_id = '{ORG_A}'")).unwrap();
        assert_eq!(
            sqlstate_of("DELETE FROM checkout.idempotency_keys WHERE expires_at < now()"),
            "00000"
        );
        // Deleting an organization removes everything it owns.
        assert_eq!(
            sqlstate_of(&format!(
                "DELETE FROM checkout.organizations WHERE id = '{ORG_A}'"
            )),
            "00000"
        );
        let left = count(&format!(
            "SELECT (SELECT count(*) FROM checkout.customers WHERE organization_id = '{ORG_A}')
                  + (SELECT count(*) FROM checkout.subscriptions WHERE organization_id = '{ORG_A}')
                  + (SELECT count(*) FROM checkout.products WHERE organization_id = '{ORG_A}')"
        ));
        assert_eq!(left, 0);
    }

    #[pg_test]
    fn verify_reports_all_ok_then_a_dropped_index() {
        let bad = count("SELECT count(*) FROM checkout.verify() WHERE NOT ok");
        assert_eq!(bad, 0, "fresh install verifies");
        assert!(count("SELECT count(*) FROM checkout.verify()") > 100);
        Spi::run("DROP INDEX checkout.idx_subscriptions_ending").unwrap();
        let failing = Spi::get_one::<String>(
            "SELECT string_agg(\"check\", ',') FROM checkout.verify() WHERE NOT ok",
        )
        .unwrap();
        assert_eq!(failing.as_deref(), Some("index idx_subscriptions_ending"));
    }

    /// Every primary and unique key of a tenant table starts with organization_id (what tenant
    /// isolation by constraint and distribution by organization need); verify() names one that
    /// does not.
    #[pg_test]
    fn keys_are_tenant_first_and_verify_names_one_that_is_not() {
        let global = count(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE c.relnamespace = 'checkout'::regnamespace AND i.indisunique AND a.attname <> 'organization_id'
               AND c.relname NOT IN ('organizations', 'reconciliation_queue', 'maintenance_runs')",
        );
        assert_eq!(global, 0);
        let primary = Spi::get_one::<String>(
            "SELECT pg_get_indexdef('checkout.subscriptions_pkey'::regclass)",
        )
        .unwrap()
        .unwrap();
        assert!(primary.ends_with("(organization_id, id)"), "{primary}");
        Spi::run("CREATE UNIQUE INDEX refunds_global_id ON checkout.refunds (id)").unwrap();
        let failing = Spi::get_one::<String>(
            "SELECT \"check\" || ': ' || detail FROM checkout.verify() WHERE NOT ok",
        )
        .unwrap();
        assert_eq!(
            failing.as_deref(),
            Some("keys: every primary and unique key of a tenant table starts with organization_id: not tenant-first: checkout.refunds_global_id")
        );
    }

    #[pg_test]
    fn public_cannot_create_in_schema() {
        let can =
            Spi::get_one::<bool>("SELECT has_schema_privilege('public', 'checkout', 'CREATE')")
                .unwrap();
        assert_eq!(can, Some(false));
        let usage = Spi::get_one::<bool>(
            "SELECT has_table_privilege('public', 'checkout.customers', 'SELECT')",
        )
        .unwrap();
        assert_eq!(usage, Some(false));
    }

    #[pg_test]
    fn invariants_hold_after_function_writes_and_catch_breakage() {
        Spi::run(
            &format!("INSERT INTO checkout.organizations (id, name) VALUES ('{ORG_A}', 'A');
             INSERT INTO checkout.products (id, organization_id, name) VALUES ('{PRODUCT_A1}', '{ORG_A}', 'Pro');"),
        )
        .unwrap();
        let customer = Spi::get_one::<String>(&format!(
            "SELECT checkout.upsert_customer_atomic('{ORG_A}', 'x@example.com')->>'customer_id'"
        ))
        .unwrap()
        .unwrap();
        Spi::run(&format!(
            "SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2026-01-15T00:00:00Z\"}}'), NULL, '{customer}', '{PRODUCT_A1}', '{ORG_A}', 'key')"
        ))
        .unwrap();
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
        Spi::run("UPDATE checkout.customers SET subscription_count = 5").unwrap();
        Spi::run("DELETE FROM checkout.trial_history").unwrap();
        Spi::run("UPDATE checkout.idempotency_keys SET status = 'processing'").unwrap();
        let found = Spi::get_one::<String>("SELECT string_agg(invariant, ', ' ORDER BY invariant) FROM checkout.check_invariants()").unwrap();
        assert_eq!(
            found.as_deref(),
            Some("customer counters differ from a recount, idempotency key stuck in processing, trialing subscription without trial_history")
        );
    }

    #[pg_test]
    fn invariants_catch_a_second_created_audit_row() {
        fixture();
        let sub = &format!("'{SUBSCRIPTION_A1}'");
        let created = || {
            count(&format!("SELECT count(*) FROM checkout.subscription_changes WHERE subscription_id = {sub} AND change_type = 'created'"))
        };
        let violations = || {
            text("SELECT coalesce(string_agg(invariant || ': ' || detail, '; '), '') FROM checkout.check_invariants()")
        };
        assert_eq!((created(), violations()), (1, String::new()));
        // Deleted and inserted again under its id: one 'created' row per life, which is fine.
        Spi::run(&format!(
            "CREATE TEMP TABLE kept_subscription AS SELECT * FROM checkout.subscriptions WHERE id = {sub};
             DELETE FROM checkout.subscriptions WHERE id = {sub};
             INSERT INTO checkout.subscriptions SELECT * FROM kept_subscription;"
        ))
        .unwrap();
        assert_eq!((created(), violations()), (2, String::new()));
        // A second one in the same life (what a path auditing itself and through the trigger would leave).
        Spi::run(&format!(
            "INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type, created_at)
             VALUES ('{ORG_A}', {sub}, 'created', clock_timestamp())"
        ))
        .unwrap();
        assert_eq!(
            violations(),
            "subscription with more than one created audit row: d0000000-0000-0000-0000-0000000000a1 (2)"
        );
    }
}
