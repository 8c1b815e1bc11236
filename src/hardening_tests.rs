//! The attacks of the 0.6.0 hardening, as `#[pg_test]`s (the application-role and concurrent
//! versions are in tests/e2e/t_hardening.sh). Each failed on 0.5.0.
use pgrx::prelude::*;

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, sqlstate_of, text};
    use crate::test_support::{CUSTOMER_A2, CUSTOMER_B1, ORG_A, ORG_B, PRODUCT_A1, PRODUCT_A2};
    use pgrx::prelude::*;

    #[pg_test]
    fn trigger_functions_run_only_on_their_own_table() {
        fixture();
        for f in [
            "guard_subscription_update()",
            "audit_subscription_change()",
            "track_customer_email()",
            "merge_duplicate_email_variant()",
            "guard_refund_status()",
        ] {
            let public = Spi::get_one::<bool>(&format!(
                "SELECT has_function_privilege('public', 'checkout.{f}', 'EXECUTE')"
            ))
            .unwrap();
            assert_eq!(public, Some(false), "{f} executable by PUBLIC");
        }
        // Even attached by a superuser, they refuse another table and write nothing.
        Spi::run(
            "CREATE TEMP TABLE subscriptions (LIKE checkout.subscriptions);
             CREATE TRIGGER borrowed AFTER INSERT OR UPDATE ON pg_temp.subscriptions
               FOR EACH ROW EXECUTE FUNCTION checkout.audit_subscription_change();
             CREATE TEMP TABLE customers (LIKE checkout.customers INCLUDING DEFAULTS);
             CREATE TRIGGER borrowed AFTER INSERT ON pg_temp.customers
               FOR EACH ROW EXECUTE FUNCTION checkout.track_customer_email();",
        )
        .unwrap();
        let before = text("SELECT checkout_test.row_counts()");
        let forged = format!(
            "INSERT INTO pg_temp.subscriptions SELECT * FROM checkout.subscriptions WHERE organization_id = '{ORG_A}'"
        );
        assert_eq!(sqlstate_of(&forged), "39P01");
        let variant = format!(
            "INSERT INTO pg_temp.customers (id, organization_id, email) VALUES ('{CUSTOMER_B1}', '{ORG_B}', 'mallory@example.com')"
        );
        assert_eq!(sqlstate_of(&variant), "39P01");
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
        // A Citus shard of the table (checkout.<table>_<shard id>, created by Citus with the
        // table's triggers) is the table; a look-alike name is not.
        Spi::run(
            "CREATE TABLE checkout.customers_102008 (LIKE checkout.customers INCLUDING DEFAULTS);
             CREATE TRIGGER track AFTER INSERT ON checkout.customers_102008
               FOR EACH ROW EXECUTE FUNCTION checkout.track_customer_email();
             CREATE TABLE checkout.customers_10x (LIKE checkout.customers INCLUDING DEFAULTS);
             CREATE TRIGGER track AFTER INSERT ON checkout.customers_10x
               FOR EACH ROW EXECUTE FUNCTION checkout.track_customer_email();",
        )
        .unwrap();
        let shard_row = |table: &str| {
            // Customer b1 exists in checkout.customers, so its new variant satisfies the foreign key.
            format!("INSERT INTO checkout.{table} (id, organization_id, email) VALUES ('{CUSTOMER_B1}', '{ORG_B}', 'shard@example.com')")
        };
        assert_eq!(sqlstate_of(&shard_row("customers_10x")), "39P01");
        assert_eq!(sqlstate_of(&shard_row("customers_102008")), "00000");
        assert_eq!(
            text(&format!("SELECT email_normalized FROM checkout.customer_email_variants WHERE organization_id = '{ORG_B}' AND email_normalized LIKE 'shard%'")),
            "shard@example.com"
        );
    }

    #[pg_test]
    fn provider_ids_are_unique_per_organization() {
        fixture();
        Spi::run(&format!(
            "INSERT INTO checkout.payment_intents (organization_id, stripe_payment_intent_id, amount, currency, status)
             VALUES ('{ORG_B}', 'pi_1', 1000, 'usd', 'succeeded')"
        ))
        .unwrap();
        let refund = |org: &str| {
            format!("SELECT checkout.record_refund('{org}', 'pi_1', 're_1', 100, 'usd')")
        };
        assert_eq!(sqlstate_of(&refund(ORG_A)), "00000");
        assert_eq!(
            sqlstate_of(&refund(ORG_B)),
            "00000",
            "another tenant's id is free"
        );
        assert_eq!(
            count("SELECT count(DISTINCT organization_id) FROM checkout.refunds WHERE stripe_refund_id = 're_1'"),
            2
        );
        // Within one organization the id is still one refund.
        let other_values =
            format!("SELECT checkout.record_refund('{ORG_B}', 'pi_1', 're_1', 200, 'usd')");
        assert_eq!(sqlstate_of(&other_values), "23505");
        let sub_id = |org: &str, customer: &str, product: &str| {
            format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('active', '{{\"stripe_subscription_id\": \"sub_1\"}}'), NULL, '{customer}', '{product}', '{org}')->>'success'")
        };
        let a = sub_id(
            ORG_A,
            "c0000000-0000-0000-0000-0000000000a2",
            "b0000000-0000-0000-0000-0000000000a1",
        );
        let b = sub_id(
            ORG_B,
            "c0000000-0000-0000-0000-0000000000b1",
            "b0000000-0000-0000-0000-0000000000b1",
        );
        assert_eq!(text(&a), "true");
        assert_eq!(text(&b), "true", "org B may use an id org A uses");
        let session = |org: &str| {
            format!("INSERT INTO checkout.checkout_sessions (organization_id, stripe_session_id) VALUES ('{org}', 'cs_1')")
        };
        assert_eq!(sqlstate_of(&session(ORG_A)), "00000");
        assert_eq!(sqlstate_of(&session(ORG_B)), "00000");
        assert_eq!(sqlstate_of(&session(ORG_A)), "23505");
    }

    #[pg_test]
    fn reconciliation_items_are_per_organization() {
        fixture();
        let enqueue = |org: &str, details: &str, priority: i32| {
            text(&format!(
                "SELECT checkout.enqueue_reconciliation('payment_mismatch', 'ref-1', '{details}', {priority}, {org})::text"
            ))
        };
        let a = enqueue(&format!("'{ORG_A}'"), r#"{"a": 1}"#, 5);
        let b = enqueue(&format!("'{ORG_B}'"), r#"{"b": 2}"#, 1);
        assert_ne!(a, b);
        assert_eq!(
            text(&format!("SELECT details::text || ' ' || priority FROM checkout.reconciliation_queue WHERE id = '{a}'")),
            r#"{"a": 1} 5"#
        );
        // Items of no organization still merge among themselves.
        let n1 = enqueue("NULL", "{}", 5);
        assert_eq!(enqueue("NULL", "{}", 5), n1);
    }

    #[pg_test]
    fn direct_refund_writes_keep_the_bound_and_invariants_catch_a_lowered_payment() {
        fixture();
        let insert = |amount: i64, status: &str| {
            format!(
                "INSERT INTO checkout.refunds (organization_id, payment_intent_id, amount, currency, status)
                 VALUES ('{ORG_A}', 'pi_1', {amount}, 'usd', '{status}')"
            )
        };
        assert_eq!(sqlstate_of(&insert(2000, "succeeded")), "23514");
        assert_eq!(sqlstate_of(&insert(600, "succeeded")), "00000");
        assert_eq!(sqlstate_of(&insert(500, "pending")), "23514");
        assert_eq!(
            sqlstate_of(&insert(500, "failed")),
            "00000",
            "a failed refund does not count"
        );
        assert_eq!(sqlstate_of(&insert(400, "pending")), "00000");
        assert_eq!(
            sqlstate_of("UPDATE checkout.refunds SET amount = amount + 1 WHERE status = 'pending'"),
            "23514"
        );
        assert_eq!(
            sqlstate_of(
                "UPDATE checkout.refunds SET status = 'succeeded' WHERE status = 'pending'"
            ),
            "00000"
        );
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
        // Nor may the payment shrink under its refunds, or change currency.
        let payment = |set: &str| {
            format!(
                "UPDATE checkout.payment_intents SET {set} WHERE stripe_payment_intent_id = 'pi_1'"
            )
        };
        assert_eq!(sqlstate_of(&payment("amount = 900")), "23514");
        assert_eq!(sqlstate_of(&payment("currency = 'eur'")), "23514");
        assert_eq!(sqlstate_of(&payment("amount = 1500")), "00000");
        assert_eq!(sqlstate_of(&payment("amount = 1000")), "00000");
        // A refund in another currency than its payment's is refused too.
        let eur = format!(
            "INSERT INTO checkout.refunds (organization_id, payment_intent_id, amount, currency, status)
             VALUES ('{ORG_A}', 'pi_1', 0 + 1, 'eur', 'failed')"
        );
        assert_eq!(sqlstate_of(&eur), "00000", "a failed refund does not count");
        assert_eq!(sqlstate_of(&eur.replace("'failed'", "'pending'")), "23514");
        // What only a DBA bypassing the triggers leaves (or 0.5.0 did) is still reported.
        Spi::run("ALTER TABLE checkout.payment_intents DISABLE TRIGGER payments_guard_refunded")
            .unwrap();
        Spi::run(&payment("amount = 900")).unwrap();
        Spi::run("ALTER TABLE checkout.payment_intents ENABLE TRIGGER payments_guard_refunded")
            .unwrap();
        assert_eq!(
            text("SELECT string_agg(invariant, ', ') FROM checkout.check_invariants()"),
            "payment refunded beyond its amount"
        );
    }

    #[pg_test]
    fn a_subscription_inserted_as_ended_is_stamped() {
        fixture();
        for status in ["canceled", "expired"] {
            Spi::run(&format!(
                "INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end, cancel_at_period_end)
                 VALUES ('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A2}', '{status}', 0, 'usd', 'month', now(), now(), true)"
            ))
            .unwrap();
        }
        assert_eq!(
            text(&format!("SELECT string_agg(status || ' ' || (canceled_at IS NOT NULL) || ' ' || (ended_at IS NOT NULL) || ' ' || cancel_at_period_end, ', ' ORDER BY status)
                  FROM checkout.subscriptions WHERE customer_id = '{CUSTOMER_A2}'")),
            "canceled true true false, expired false true false"
        );
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
        // Nor can the stamps be taken away afterwards.
        for column in ["ended_at", "canceled_at"] {
            assert_eq!(
                sqlstate_of(&format!(
                    "UPDATE checkout.subscriptions SET {column} = NULL WHERE status = 'canceled'"
                )),
                "23514",
                "{column}"
            );
        }
    }

    #[pg_test]
    fn amounts_are_bounded() {
        fixture();
        let create = |amount: &str| {
            format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('active', '{{\"amount\": {amount}, \"interval\": \"day\"}}'), NULL, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')")
        };
        assert_eq!(sqlstate_of(&create("9223372036854775807")), "22023");
        assert_eq!(sqlstate_of(&create("1000000000000")), "22023");
        assert_eq!(sqlstate_of(&create("999999999999")), "00000");
        let direct = format!(
            "INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end)
             VALUES ('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A2}', 'active', 9223372036854775807, 'usd', 'day', now(), now())"
        );
        assert_eq!(sqlstate_of(&direct), "23514");
        // Metrics in numeric: the largest amount, daily, refreshes with every other product.
        Spi::run("UPDATE checkout.products SET metrics_last_calculated_at = NULL").unwrap();
        assert_eq!(
            sqlstate_of("SELECT checkout.refresh_product_metrics()"),
            "00000"
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM checkout.products WHERE metrics_last_calculated_at IS NULL"
            ),
            0
        );
    }

    #[pg_test]
    fn unreadable_json_is_22023_or_54001_never_xx000() {
        fixture();
        let create = |sub: &str, features: &str| {
            format!("SELECT checkout.create_subscription_atomic({sub}, {features}, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')")
        };
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            (create("checkout_test.sub('active', '{\"amount\": 1e400}')", "NULL"), "22023"),
            (create("checkout_test.sub('active', '{\"metadata\": {\"x\": -1e400}}')", "NULL"), "22023"),
            (create(&format!("checkout_test.sub('active', '{{\"metadata\": {{\"x\": {deep}}}}}')"), "NULL"), "54001"),
            (create("checkout_test.sub()", "ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a1\", \"metadata\": {\"x\": 1e400}}']::jsonb[]"), "22023"),
            (create("checkout_test.sub()", &format!("ARRAY['{deep}']::jsonb[]")), "54001"),
            (format!("SELECT checkout.upsert_customer_atomic('{ORG_A}', 'z@example.com', p_metadata => '{{\"x\": 1e400}}')"), "22023"),
            (format!("SELECT checkout.upsert_customer_atomic('{ORG_A}', 'z@example.com', p_metadata => '{{\"x\": {deep}}}')"), "54001"),
        ];
        let before = text("SELECT checkout_test.row_counts()");
        for (sql, state) in cases {
            assert_eq!(sqlstate_of(&sql), state, "{sql}");
        }
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
    }

    #[pg_test]
    fn features_are_bounded_and_their_errors_short() {
        fixture();
        let unknown = |n: i32| {
            format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), (SELECT array_agg(jsonb_build_object('feature_id', gen_random_uuid())) FROM generate_series(1, {n})), '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')")
        };
        assert_eq!(sqlstate_of(&unknown(10_001)), "22023");
        let error = text(&format!(
            "SELECT checkout_test.error_of($q${}$q$)",
            unknown(10_000)
        ));
        assert!(error.starts_with("P0002"), "{error}");
        // The DETAIL names at most ten ids.
        Spi::run(&format!(
            "DO $d$ DECLARE d text; BEGIN PERFORM ({});
             EXCEPTION WHEN no_data_found THEN
               GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
               PERFORM set_config('checkout_test.detail', length(d)::text, true);
             END $d$",
            unknown(10_000).trim_start_matches("SELECT ")
        ))
        .unwrap();
        let detail_len = text("SELECT current_setting('checkout_test.detail')")
            .parse::<usize>()
            .ok();
        assert!(matches!(detail_len, Some(n) if n < 1000), "{detail_len:?}");
    }

    #[pg_test]
    fn lifetimes_are_not_the_callers_choice() {
        // The role may run checkout_test.sqlstate_of: its only missing privilege is the setting's.
        Spi::run("CREATE ROLE checkout_test_app; GRANT USAGE ON SCHEMA checkout_test TO checkout_test_app").unwrap();
        Spi::run("SET ROLE checkout_test_app").unwrap();
        for setting in [
            "idempotency_key_ttl",
            "session_retention",
            "reconciliation_lease",
            "webhook_lease",
            "reconciliation_max_attempts",
        ] {
            assert_eq!(
                sqlstate_of(&format!("SET checkout.{setting} = 1")),
                "42501",
                "{setting}"
            );
        }
        Spi::run("RESET ROLE").unwrap();
    }
}
