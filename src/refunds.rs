//! Refunds (sql/refunds.sql): idempotent on the provider's refund id, bounded by the payment,
//! status guarded by a trigger (guards.rs).
use pgrx::prelude::*;

mod guards;

extension_sql_file!(
    "../sql/refunds.sql",
    name = "refunds",
    requires = [
        "schema",
        audit::restoring,
        citus::routed_here,
        refunds::guards::guard_refund_status,
        refunds::guards::guard_payment_refunded
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, json, sqlstate_of, text};
    use crate::test_support::{ORG_A, ORG_B};
    use pgrx::prelude::*;

    // The fixture's payment pi_1 of org A: 1000 usd.
    fn refund(id: &str, amount: i64) -> String {
        format!("SELECT checkout.record_refund('{ORG_A}', 'pi_1', '{id}', {amount}, 'USD')")
    }

    #[pg_test]
    fn refunds_are_idempotent_and_bounded_by_the_payment() {
        fixture();
        let first = json(&refund("re_1", 600));
        assert_eq!(
            (first["status"].as_str(), first["refunded_total"].as_i64()),
            (Some("pending"), Some(600))
        );
        let again = json(&refund("re_1", 600));
        assert_eq!(
            (again["duplicate"].as_bool(), again["refund_id"].clone()),
            (Some(true), first["refund_id"].clone())
        );
        assert_eq!(
            sqlstate_of(&refund("re_1", 700)),
            "23505",
            "same refund id, other amount"
        );
        assert_eq!(
            sqlstate_of(&refund("re_2", 401)),
            "23514",
            "600 + 401 > 1000"
        );
        assert_eq!(json(&refund("re_2", 400))["refunded_total"], 1000);
        // A failed refund no longer counts against the payment.
        json(&format!(
            "SELECT checkout.update_refund_status('{ORG_A}', 're_2', 'failed')"
        ));
        assert_eq!(json(&refund("re_3", 400))["refunded_total"], 1000);
        assert_eq!(count("SELECT count(*) FROM checkout.refunds"), 3);
    }

    #[pg_test]
    fn refund_arguments_and_tenancy() {
        fixture();
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.record_refund('{ORG_A}', 'pi_1', 're_x', 10, 'eur')"
            )),
            "22023",
            "currency differs"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.record_refund('{ORG_A}', 'pi_1', 're_x', 0, 'usd')"
            )),
            "22023"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.record_refund('{ORG_A}', 'pi_1', NULL, 10, 'usd')"
            )),
            "22004"
        );
        assert_eq!(sqlstate_of(&format!("SELECT checkout.record_refund('{ORG_A}', 'pi_1', 're_x', 10, 'usd', repeat('r', 101))")), "22023", "reason too long");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.record_refund('{ORG_B}', 'pi_1', 're_x', 10, 'usd')"
            )),
            "P0002",
            "org B cannot refund org A's payment"
        );
        assert_eq!(count("SELECT count(*) FROM checkout.refunds"), 0);
    }

    #[pg_test]
    fn refund_status_moves_once_from_pending() {
        fixture();
        json(&refund("re_1", 100));
        let done = json(&format!(
            "SELECT checkout.update_refund_status('{ORG_A}', 're_1', 'succeeded')"
        ));
        assert!(done["completed_at"].is_string(), "{done}");
        // Redelivery of the same verdict: a no-op.
        assert_eq!(
            json(&format!(
                "SELECT checkout.update_refund_status('{ORG_A}', 're_1', 'succeeded')"
            ))["status"],
            "succeeded"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.update_refund_status('{ORG_A}', 're_1', 'failed')"
            )),
            "09000"
        );
        // The trigger guards direct updates as well.
        assert_eq!(
            sqlstate_of("UPDATE checkout.refunds SET status = 'pending'"),
            "09000"
        );
        assert_eq!(text("SELECT status FROM checkout.refunds"), "succeeded");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.update_refund_status('{ORG_A}', 're_9', 'failed')"
            )),
            "P0002"
        );
    }

    #[pg_test]
    fn a_canceled_refund_frees_its_amount() {
        fixture();
        json(&refund("re_1", 1000));
        assert_eq!(sqlstate_of(&refund("re_2", 1)), "23514");
        let r = json(&format!(
            "SELECT checkout.update_refund_status('{ORG_A}', 're_1', 'canceled')"
        ));
        assert_eq!(
            (r["status"].as_str(), r["completed_at"].is_null()),
            (Some("canceled"), true),
            "{r}"
        );
        // Canceled is final, and no longer counts against the payment.
        for to in ["pending", "succeeded", "failed"] {
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.update_refund_status('{ORG_A}', 're_1', '{to}')"
                )),
                "09000",
                "canceled -> {to}"
            );
        }
        assert_eq!(json(&refund("re_2", 1000))["refunded_total"], 1000);
    }

    /// Every (from, to) pair of statuses, through update_refund_status and by direct UPDATE (the
    /// trigger): from pending to any status; from succeeded, failed or canceled only to the same
    /// status (a no-op), anything else 09000 with the refund unchanged.
    #[pg_test]
    fn refund_status_transitions_from_every_status() {
        fixture();
        const STATUSES: [&str; 4] = ["pending", "succeeded", "failed", "canceled"];
        for from in STATUSES {
            for to in STATUSES {
                let may = from == to || from == "pending";
                for path in ["function", "update"] {
                    let id = format!("re_{path}_{from}_{to}");
                    // Inserted directly in `from` (an insert is not a transition; one inserted as
                    // succeeded gets its completed_at, as one moved there does).
                    Spi::run(&format!("INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, amount, currency, status) VALUES ('{ORG_A}', 'pi_1', '{id}', 1, 'usd', '{from}')")).unwrap();
                    let row = format!("SELECT to_jsonb(r)::text FROM checkout.refunds r WHERE stripe_refund_id = '{id}'");
                    let before = text(&row);
                    let sql = if path == "function" {
                        format!("SELECT checkout.update_refund_status('{ORG_A}', '{id}', '{to}')")
                    } else {
                        format!("UPDATE checkout.refunds SET status = '{to}' WHERE stripe_refund_id = '{id}'")
                    };
                    let what = format!("{path}: {from} -> {to}");
                    if may {
                        assert_eq!(sqlstate_of(&sql), "00000", "{what}");
                        assert_eq!(text(&format!("SELECT status || ' ' || (completed_at IS NOT NULL) FROM checkout.refunds WHERE stripe_refund_id = '{id}'")),
                                   format!("{to} {}", to == "succeeded"), "{what}");
                    } else {
                        assert_eq!(sqlstate_of(&sql), "09000", "{what}");
                        assert_eq!(text(&row), before, "{what}");
                    }
                }
            }
        }
    }
}
