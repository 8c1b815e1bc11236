//! The value lists of the write path's CHECK constraints, as native functions the constraints call
//! (sql/schema.sql declares them, before the tables).
//!
//! PostgreSQL re-reads a CHECK constraint's expression from its stored text (`stringToNode`) and
//! plans it on every statement that writes the table: an `IN` list of eleven strings is a 2.7 kB
//! node tree, a call of one of these functions a tenth of that. The constraints keep their names,
//! so a violation reads as before (23514, naming the constraint).
use pgrx::prelude::*;

/// subscriptions.status: Stripe's statuses, plus expired.
pub const SUBSCRIPTION_STATUSES: &[&str] = &[
    "incomplete",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
    "expired",
];

/// subscriptions.interval.
pub const BILLING_INTERVALS: &[&str] = &["day", "week", "month", "year"];

/// subscription_changes.change_type.
pub const CHANGE_TYPES: &[&str] = &[
    "created",
    "updated",
    "cancelled",
    "reactivated",
    "expired",
    "upgraded",
    "downgraded",
    "renewed",
    "past_due",
    "converted",
    "deleted",
    "imported",
];

/// subscription_changes.changed_by_type.
pub const ACTOR_TYPES: &[&str] = &["user", "system", "webhook", "support"];

/// idempotency_keys.status.
pub const IDEMPOTENCY_STATUSES: &[&str] = &["pending", "processing", "completed", "failed"];

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn is_subscription_status(value: &str) -> bool {
    SUBSCRIPTION_STATUSES.contains(&value)
}

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn is_billing_interval(value: &str) -> bool {
    BILLING_INTERVALS.contains(&value)
}

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn is_change_type(value: &str) -> bool {
    CHANGE_TYPES.contains(&value)
}

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn is_actor_type(value: &str) -> bool {
    ACTOR_TYPES.contains(&value)
}

#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn is_idempotency_status(value: &str) -> bool {
    IDEMPOTENCY_STATUSES.contains(&value)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::ORG_A;
    use crate::test_support::{count, fixture, sqlstate_of};
    use pgrx::prelude::*;

    /// Each list accepts its values and nothing else, through the constraint that calls it (a
    /// violation names the constraint, as the IN lists did).
    #[pg_test]
    fn constraints_accept_the_listed_values_only() {
        fixture();
        for (list, function) in [
            (super::SUBSCRIPTION_STATUSES, "is_subscription_status"),
            (super::BILLING_INTERVALS, "is_billing_interval"),
            (super::CHANGE_TYPES, "is_change_type"),
            (super::ACTOR_TYPES, "is_actor_type"),
            (super::IDEMPOTENCY_STATUSES, "is_idempotency_status"),
        ] {
            for value in list {
                assert_eq!(
                    count(&format!(
                        "SELECT count(*) FROM (SELECT checkout.{function}('{value}')) t(ok) WHERE ok"
                    )),
                    1,
                    "{function}({value})"
                );
            }
            for value in ["", "Active", "active ", "x"] {
                assert_eq!(
                    count(&format!(
                        "SELECT count(*) FROM (SELECT checkout.{function}('{value}')) t(ok) WHERE ok"
                    )),
                    0,
                    "{function}({value:?})"
                );
            }
        }
        // An INSERT: an UPDATE's status change meets the state machine's trigger first (09000).
        let sub = "INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, \"interval\", current_period_start, current_period_end) SELECT organization_id, customer_id, product_id, 'bogus', amount, currency, \"interval\", current_period_start, current_period_end FROM checkout.subscriptions LIMIT 1";
        assert_eq!(sqlstate_of(sub), "23514");
        assert_eq!(
            crate::test_support::text(&format!(
                "SELECT checkout_test.error_of($q${sub}$q$)"
            )),
            "23514: new row for relation \"subscriptions\" violates check constraint \"subscriptions_status_check\""
        );
        for (statement, constraint) in [
            ("UPDATE checkout.subscriptions SET \"interval\" = 'fortnight'", "subscriptions_interval_check"),
            ("UPDATE checkout.subscription_changes SET change_type = 'moved'", "subscription_changes_change_type_check"),
            ("UPDATE checkout.subscription_changes SET changed_by_type = 'robot'", "subscription_changes_changed_by_type_check"),
            (&format!("INSERT INTO checkout.idempotency_keys (organization_id, key, status) VALUES ('{ORG_A}', 'k', 'done')"), "idempotency_keys_status_check"),
        ] {
            let error = crate::test_support::text(&format!(
                "SELECT checkout_test.error_of($q${statement}$q$)"
            ));
            assert!(
                error.starts_with("23514: ") && error.ends_with(&format!("\"{constraint}\"")),
                "{statement}: {error}"
            );
        }
    }
}
