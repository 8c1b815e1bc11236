//! Every status change, by direct UPDATE and by each lifecycle function, against the transition
//! table (states.rs).
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::subscriptions::states::allowed;
    use crate::test_support::{CUSTOMER_A2, ORG_A, PRODUCT_A2, SUBSCRIPTION_A1};
    // Written out, not taken from states::LIVE, so a wrong LIVE fails the test.
    const LIVE: [&str; 3] = ["trialing", "active", "past_due"];
    use crate::test_support::{count, fixture, sqlstate_of, text, value};
    use pgrx::prelude::*;

    /// Every status, from the one list the CHECK calls (check_rules).
    const STATUSES: &[&str] = crate::check_rules::SUBSCRIPTION_STATUSES;

    /// A subscription of customer a2 to product a2 in `status` (inserted directly: inserts are not
    /// transitions), with its period running.
    fn subscription_in(status: &str) -> String {
        text(&format!("INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end, trial_end)
                       VALUES ('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A2}', '{status}', 1000, 'usd', 'month', now(), now() + interval '1 month',
                               CASE WHEN '{status}' = 'trialing' THEN now() + interval '1 week' END) RETURNING id::text"))
    }

    #[pg_test]
    fn every_transition_allowed_or_refused_by_direct_update() {
        fixture();
        let mut allowed_count = 0;
        for &from in STATUSES {
            for to in STATUSES.iter().copied().filter(|to| *to != from) {
                let id = subscription_in(from);
                let code = sqlstate_of(&format!(
                    "UPDATE checkout.subscriptions SET status = '{to}' WHERE id = '{id}'"
                ));
                let expected = if allowed(from, to) { "00000" } else { "09000" };
                assert_eq!(code, expected, "{from} -> {to}");
                allowed_count += usize::from(code == "00000");
                Spi::run(&format!(
                    "DELETE FROM checkout.subscriptions WHERE id = '{id}'"
                ))
                .unwrap();
            }
        }
        assert_eq!(
            allowed_count,
            crate::subscriptions::states::TRANSITIONS.len()
        );
        // Spot checks that do not come from the table itself.
        for (from, to) in [
            ("expired", "active"),
            ("canceled", "past_due"),
            ("active", "incomplete"),
            ("active", "trialing"),
        ] {
            let id = subscription_in(from);
            assert_eq!(
                sqlstate_of(&format!(
                    "UPDATE checkout.subscriptions SET status = '{to}' WHERE id = '{id}'"
                )),
                "09000",
                "{from} -> {to}"
            );
            Spi::run(&format!(
                "DELETE FROM checkout.subscriptions WHERE id = '{id}'"
            ))
            .unwrap();
        }
        assert_eq!(sqlstate_of(&format!("UPDATE checkout.subscriptions SET customer_id = '{CUSTOMER_A2}' WHERE id = '{SUBSCRIPTION_A1}'")), "09000");
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
    }

    #[pg_test]
    fn every_status_change_function_follows_the_table() {
        fixture();
        for &from in STATUSES {
            for (function, to) in [
                ("mark_subscription_past_due", "past_due"),
                ("expire_subscription", "expired"),
                ("cancel_subscription_atomic", "canceled"),
            ] {
                let id = subscription_in(from);
                let code = sqlstate_of(&format!("SELECT checkout.{function}('{id}', '{ORG_A}')"));
                let expected = if from == to && to != "canceled" || from != to && allowed(from, to)
                {
                    "00000"
                } else {
                    "09000"
                };
                assert_eq!(code, expected, "{function} from {from}");
                Spi::run(&format!(
                    "DELETE FROM checkout.subscriptions WHERE id = '{id}'"
                ))
                .unwrap();
            }
            let id = subscription_in(from);
            let expected = if from == "trialing" { "00000" } else { "09000" };
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.end_subscription_trial('{id}', '{ORG_A}', true)"
                )),
                expected,
                "end trial from {from}"
            );
            Spi::run(&format!(
                "DELETE FROM checkout.subscriptions WHERE id = '{id}'"
            ))
            .unwrap();
            let id = subscription_in(from);
            let expected = if matches!(from, "active" | "past_due") {
                "00000"
            } else {
                "09000"
            };
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.renew_subscription_period('{id}', '{ORG_A}')"
                )),
                expected,
                "renew from {from}"
            );
            Spi::run(&format!(
                "DELETE FROM checkout.subscriptions WHERE id = '{id}'"
            ))
            .unwrap();
        }
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
    }

    /// reactivate (with and without a pending cancellation), cancel at period end and change plan
    /// from every status. Expected: what the table allows for the status change the function makes,
    /// within the statuses its rule names (states::LIVE); anything else is 09000 and leaves the row,
    /// its audit trail and every table as they were.
    #[pg_test]
    fn reactivate_cancel_at_period_end_change_plan_follow_the_table() {
        fixture();
        let row = |id: &str| {
            text(&format!(
                "SELECT to_jsonb(s)::text FROM checkout.subscriptions s WHERE id = '{id}'"
            ))
        };
        let changes = |id: &str| {
            count(&format!(
                "SELECT count(*) FROM checkout.subscription_changes WHERE subscription_id = '{id}'"
            ))
        };
        for &from in STATUSES {
            let live = LIVE.contains(&from);
            for with_pending in [false, true] {
                for function in ["reactivate", "cancel_at_period_end", "change_plan"] {
                    let id = subscription_in(from);
                    if with_pending {
                        // Entering canceled or expired clears the flag (the guard) and direct SQL
                        // cannot set it there: those rows stay without one.
                        Spi::run(&format!("UPDATE checkout.subscriptions SET cancel_at_period_end = true WHERE id = '{id}'")).unwrap();
                    }
                    let pending: bool = value(&format!(
                        "SELECT cancel_at_period_end FROM checkout.subscriptions WHERE id = '{id}'"
                    ));
                    // The call; whether it may run; status, flag and amount after it; audit rows added.
                    let (sql, may, after, added): (String, bool, String, i64) = match function {
                        "reactivate" => {
                            let sql = format!(
                                "SELECT checkout.reactivate_subscription_atomic('{id}', '{ORG_A}')"
                            );
                            if pending && live {
                                // Undoes the pending cancellation; the status stays.
                                (sql, true, format!("{from} false 1000"), 1)
                            } else {
                                // The table's canceled -> active, from a canceled subscription
                                // (its period is running).
                                let may = from == "canceled" && allowed(from, "active");
                                (sql, may, "active false 1000".to_owned(), 1)
                            }
                        }
                        "cancel_at_period_end" => (
                            format!(
                                "SELECT checkout.cancel_subscription_atomic('{id}', '{ORG_A}', true)"
                            ),
                            live && allowed(from, "canceled"),
                            format!("{from} true 1000"),
                            // Already pending: nothing to change, no audit row.
                            if pending { 0 } else { 1 },
                        ),
                        "change_plan" => (
                            format!("SELECT checkout.change_subscription_plan_atomic('{id}', '{ORG_A}', '{PRODUCT_A2}', 2000)"),
                            live,
                            format!("{from} {pending} 2000"),
                            1,
                        ),
                        _ => unreachable!(),
                    };
                    let what = format!("{function} from {from} (pending: {pending})");
                    let before_row = row(&id);
                    let before_changes = changes(&id);
                    let before_counts = text("SELECT checkout_test.row_counts()");
                    let code = sqlstate_of(&sql);
                    if may {
                        assert_eq!(code, "00000", "{what}");
                        assert_eq!(text(&format!("SELECT status || ' ' || cancel_at_period_end || ' ' || amount FROM checkout.subscriptions WHERE id = '{id}'")), after, "{what}");
                        assert_eq!(changes(&id), before_changes + added, "{what}");
                    } else {
                        assert_eq!(code, "09000", "{what}");
                        assert_eq!(row(&id), before_row, "{what}");
                        assert_eq!(changes(&id), before_changes, "{what}");
                        assert_eq!(
                            text("SELECT checkout_test.row_counts()"),
                            before_counts,
                            "{what}"
                        );
                    }
                    Spi::run(&format!(
                        "DELETE FROM checkout.subscriptions WHERE id = '{id}'"
                    ))
                    .unwrap();
                }
            }
        }
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
    }
}
