//! Refunds (sql/refunds.sql): idempotent on the provider's refund id, bounded by the payment,
//! status guarded by a trigger.
use pgrx::prelude::*;

extension_sql_file!(
    "../sql/refunds.sql",
    name = "refunds",
    requires = ["schema"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, json, sqlstate_of, text};
    use pgrx::prelude::*;

    // The fixture's payment pi_1 of org A: 1000 usd.
    fn refund(id: &str, amount: i64) -> String {
        format!("SELECT checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_1', '{id}', {amount}, 'USD')")
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
        json("SELECT checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', 're_2', 'failed')");
        assert_eq!(json(&refund("re_3", 400))["refunded_total"], 1000);
        assert_eq!(count("SELECT count(*) FROM checkout.refunds"), 3);
    }

    #[pg_test]
    fn refund_arguments_and_tenancy() {
        fixture();
        assert_eq!(sqlstate_of("SELECT checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_1', 're_x', 10, 'eur')"), "22023", "currency differs");
        assert_eq!(sqlstate_of("SELECT checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_1', 're_x', 0, 'usd')"), "22023");
        assert_eq!(sqlstate_of("SELECT checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_1', NULL, 10, 'usd')"), "22004");
        assert_eq!(sqlstate_of("SELECT checkout.record_refund('a0000000-0000-0000-0000-000000000001', 'pi_1', 're_x', 10, 'usd', repeat('r', 101))"), "22023", "reason too long");
        assert_eq!(sqlstate_of("SELECT checkout.record_refund('a0000000-0000-0000-0000-000000000002', 'pi_1', 're_x', 10, 'usd')"), "P0002", "org B cannot refund org A's payment");
        assert_eq!(count("SELECT count(*) FROM checkout.refunds"), 0);
    }

    #[pg_test]
    fn refund_status_moves_once_from_pending() {
        fixture();
        json(&refund("re_1", 100));
        let done = json("SELECT checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', 're_1', 'succeeded')");
        assert!(done["completed_at"].is_string(), "{done}");
        // Redelivery of the same verdict: a no-op.
        assert_eq!(json("SELECT checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', 're_1', 'succeeded')")["status"], "succeeded");
        assert_eq!(sqlstate_of("SELECT checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', 're_1', 'failed')"), "09000");
        // The trigger guards direct updates as well.
        assert_eq!(
            sqlstate_of("UPDATE checkout.refunds SET status = 'pending'"),
            "09000"
        );
        assert_eq!(text("SELECT status FROM checkout.refunds"), "succeeded");
        assert_eq!(sqlstate_of("SELECT checkout.update_refund_status('a0000000-0000-0000-0000-000000000001', 're_9', 'failed')"), "P0002");
    }
}
