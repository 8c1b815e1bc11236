//! The lifecycle functions inside Postgres: each path, its grants, counters and audit rows.
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, json, sqlstate_of, text};
    use crate::test_support::{
        CUSTOMER_A1, CUSTOMER_A2, ORG_A, ORG_B, PRODUCT_A1, PRODUCT_A2, PRODUCT_B1, SUBSCRIPTION_A1,
    };
    use pgrx::prelude::*;

    // Active, customer a1, product a1, 1000 usd a month, grant of feature a1 (tests/sql/fixtures.sql).

    fn call(function: &str, extra: &str) -> serde_json::Value {
        json(&format!(
            "SELECT checkout.{function}('{SUBSCRIPTION_A1}', '{ORG_A}'{extra})"
        ))
    }

    fn state() -> String {
        text(&format!("SELECT status || ' ' || cancel_at_period_end || ' ' || (ended_at IS NOT NULL) FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'"))
    }

    fn grants() -> String {
        text(&format!("SELECT coalesce(string_agg(right(feature_id::text, 2) || CASE WHEN revoked_at IS NULL THEN '+' ELSE '-' END, ' ' ORDER BY feature_id), '') FROM checkout.feature_grants WHERE subscription_id = '{SUBSCRIPTION_A1}'"))
    }

    fn audit() -> String {
        text(&format!("SELECT string_agg(change_type, ' ' ORDER BY created_at, change_type <> 'created') FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}'"))
    }

    fn active_flag() -> String {
        text(&format!("SELECT has_active_subscription || ' ' || subscription_count FROM checkout.customers WHERE id = '{CUSTOMER_A1}'"))
    }

    #[pg_test]
    fn cancel_now_ends_access_and_is_audited_once() {
        fixture();
        assert_eq!((grants(), active_flag()), ("a1+".into(), "true 1".into()));
        let r = call("cancel_subscription_atomic", ", false, 'too expensive'");
        assert_eq!(
            (
                r["success"].as_bool(),
                r["changed"].as_bool(),
                r["change_type"].as_str(),
                r["status"].as_str()
            ),
            (Some(true), Some(true), Some("cancelled"), Some("canceled"))
        );
        assert_eq!(state(), "canceled false true");
        assert_eq!(grants(), "a1-");
        assert_eq!(active_flag(), "false 1");
        assert_eq!(audit(), "created cancelled");
        let row = text(&format!("SELECT reason || ' ' || changed_by_type || ' ' || (changed_by_role = current_user) || ' ' || (new_values->>'status') || ' ' || (old_values->>'status') FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}' AND change_type = 'cancelled'"));
        assert_eq!(row, "too expensive system true canceled active");
        // Canceling again is refused: nothing left to cancel.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.cancel_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}')"
            )),
            "09000"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.cancel_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_B}')"
            )),
            "P0002"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.cancel_subscription_atomic(NULL, '{ORG_A}')"
            )),
            "22004"
        );
    }

    #[pg_test]
    fn cancel_at_period_end_keeps_access_and_can_be_undone() {
        fixture();
        let r = call("cancel_subscription_atomic", ", true, 'moving'");
        assert_eq!(r["cancel_at_period_end"], true);
        assert_eq!(state(), "active true false");
        assert_eq!(grants(), "a1+");
        assert_eq!(active_flag(), "true 1");
        let again = call("cancel_subscription_atomic", ", true");
        assert_eq!(again["changed"], false);
        assert_eq!(audit(), "created cancelled", "a no-op writes no audit row");
        // A subscription set to end does not renew.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.renew_subscription_period('{SUBSCRIPTION_A1}', '{ORG_A}')"
            )),
            "09000"
        );
        let r = call("reactivate_subscription_atomic", "");
        assert_eq!(
            (
                r["change_type"].as_str(),
                r["cancel_at_period_end"].as_bool()
            ),
            (Some("reactivated"), Some(false))
        );
        assert_eq!(state(), "active false false");
        assert_eq!(text(&format!("SELECT (canceled_at IS NULL AND cancellation_reason IS NULL)::text FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'")), "true");
        assert_eq!(audit(), "created cancelled reactivated");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}')"
            )),
            "09000"
        );
    }

    #[pg_test]
    fn maintenance_ends_pending_cancellations_when_the_period_is_over() {
        fixture();
        call("cancel_subscription_atomic", ", true, 'moving'");
        assert_eq!(
            count("SELECT checkout.end_subscription_periods()::bigint"),
            0,
            "period still running"
        );
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now() - interval '1 month', current_period_end = now() - interval '1 second' WHERE id = '{SUBSCRIPTION_A1}'")).unwrap();
        assert_eq!(
            count("SELECT checkout.end_subscription_periods()::bigint"),
            1
        );
        assert_eq!(state(), "canceled false true");
        assert_eq!(grants(), "a1-");
        assert_eq!(text(&format!("SELECT change_type || ' ' || reason FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}' ORDER BY created_at DESC LIMIT 1")), "cancelled cancel_at_period_end");
        assert_eq!(
            count("SELECT checkout.end_subscription_periods()::bigint"),
            0
        );
        // The job's settings do not leak into the session.
        assert_eq!(
            text("SELECT coalesce(current_setting('checkout.change_type', true), '')"),
            ""
        );
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
    }

    #[pg_test]
    fn reactivation_within_the_period_restores_grants_unless_resubscribed() {
        fixture();
        call("cancel_subscription_atomic", "");
        let r = call("reactivate_subscription_atomic", ", 'came back'");
        assert_eq!(
            (r["status"].as_str(), r["ended_at"].is_null()),
            (Some("active"), true)
        );
        assert_eq!(grants(), "a1+");
        assert_eq!(active_flag(), "true 1");
        // Canceled again, and the customer subscribed anew: reactivating the old one is a conflict.
        call("cancel_subscription_atomic", "");
        let new = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, '{CUSTOMER_A1}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(new["success"], true);
        let before = text("SELECT checkout_test.row_counts()");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}')"
            )),
            "23505"
        );
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
        // After its period, a canceled subscription stays canceled, by function and by direct SQL.
        Spi::run(&format!(
            "SELECT checkout.cancel_subscription_atomic('{}', '{ORG_A}')",
            new["subscription_id"].as_str().unwrap()
        ))
        .unwrap();
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now() - interval '2 months', current_period_end = now() - interval '1 day' WHERE id = '{SUBSCRIPTION_A1}'")).unwrap();
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}')"
            )),
            "09000"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "UPDATE checkout.subscriptions SET status = 'active' WHERE id = '{SUBSCRIPTION_A1}'"
            )),
            "09000"
        );
        assert_eq!(grants(), "a1-");
    }

    /// The period that counts is the one the subscription was canceled in: an UPDATE that moves
    /// current_period_end along with the status cannot revive a subscription whose period is over.
    #[pg_test]
    fn a_direct_update_moving_the_period_cannot_reactivate_after_it() {
        fixture();
        call("cancel_subscription_atomic", "");
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now() - interval '2 months', current_period_end = now() - interval '1 day' WHERE id = '{SUBSCRIPTION_A1}'")).unwrap();
        let row = || {
            text(&format!(
                "SELECT to_jsonb(s)::text FROM checkout.subscriptions s WHERE id = '{SUBSCRIPTION_A1}'"
            ))
        };
        let before = row();
        let counts = text("SELECT checkout_test.row_counts()");
        for set in [
            "status = 'active', current_period_end = now() + interval '1 month'",
            "status = 'active', current_period_start = now(), current_period_end = now() + interval '1 month'",
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "UPDATE checkout.subscriptions SET {set} WHERE id = '{SUBSCRIPTION_A1}'"
                )),
                "09000",
                "{set}"
            );
        }
        assert_eq!(row(), before);
        assert_eq!(text("SELECT checkout_test.row_counts()"), counts);
        assert_eq!(state(), "canceled false true");
        assert_eq!((grants(), active_flag()), ("a1-".into(), "false 1".into()));
        assert_eq!(audit(), "created cancelled updated");
        // The function agrees.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}')"
            )),
            "09000"
        );
        // Within the period the same statement reactivates (the function keeps the period, so
        // reactivate_subscription_atomic passes the same check).
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now(), current_period_end = now() + interval '1 day' WHERE id = '{SUBSCRIPTION_A1}'")).unwrap();
        // ...but not into a period that is already over.
        assert_eq!(
            sqlstate_of(&format!("UPDATE checkout.subscriptions SET status = 'active', current_period_end = now() - interval '1 hour' WHERE id = '{SUBSCRIPTION_A1}'")),
            "09000"
        );
        assert_eq!(
            sqlstate_of(&format!("UPDATE checkout.subscriptions SET status = 'active', current_period_end = now() + interval '1 month' WHERE id = '{SUBSCRIPTION_A1}'")),
            "00000"
        );
        assert_eq!(state(), "active false false");
        assert_eq!((grants(), active_flag()), ("a1+".into(), "true 1".into()));
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
    }

    #[pg_test]
    fn plan_changes_move_grants_and_say_up_or_down() {
        fixture();
        let to_team = &format!("'{PRODUCT_A2}'");
        let r = call("change_subscription_plan_atomic", &format!(", {to_team}, 2500, NULL, NULL, ARRAY['{{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a2\"}}'::jsonb], 'price_team'"));
        assert_eq!(
            (r["change_type"].as_str(), r["amount"].as_i64()),
            (Some("upgraded"), Some(2500))
        );
        assert_eq!(
            r["features_revoked"],
            serde_json::json!(["f0000000-0000-0000-0000-0000000000a1"])
        );
        assert_eq!(grants(), "a1- a2+");
        assert_eq!(text(&format!("SELECT product_id::text || ' ' || stripe_price_id FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'")), "b0000000-0000-0000-0000-0000000000a2 price_team");
        // Yearly at 20000 is cheaper than 2500 a month: a downgrade; feature a1 comes back.
        let r = call("change_subscription_plan_atomic", &format!(", '{PRODUCT_A1}', 20000, 'year', 1, ARRAY['{{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a1\"}}'::jsonb]"));
        assert_eq!(r["change_type"], "downgraded");
        assert_eq!(grants(), "a1+ a2-");
        assert_eq!(audit(), "created upgraded downgraded");
        let diff = text(&format!("SELECT string_agg(k, ',' ORDER BY k) FROM checkout.subscription_changes, jsonb_object_keys(new_values) k WHERE subscription_id = '{SUBSCRIPTION_A1}' AND change_type = 'downgraded'"));
        assert_eq!(
            diff, "amount,interval,product_id",
            "only changed columns in new_values"
        );
        // One active subscription per product: moving onto a product the customer has is refused.
        json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, '{CUSTOMER_A1}', '{PRODUCT_A2}', '{ORG_A}')"));
        let before = text("SELECT checkout_test.row_counts()");
        for (args, code) in [
            (format!(", {to_team}, 100"), "23505"),
            (format!(", '{PRODUCT_B1}', 100"), "P0002"),
            (format!(", '{PRODUCT_A1}', 100, NULL, NULL, ARRAY['{{\"feature_id\": \"f0000000-0000-0000-0000-0000000000b1\"}}'::jsonb]"), "P0002"),
            (format!(", '{PRODUCT_A1}', -1"), "22023"),
            (format!(", '{PRODUCT_A1}', 100, 'fortnight'"), "22023"),
            (format!(", '{PRODUCT_A1}', NULL"), "22004"),
        ] {
            assert_eq!(sqlstate_of(&format!("SELECT checkout.change_subscription_plan_atomic('{SUBSCRIPTION_A1}', '{ORG_A}'{args})")), code, "{args}");
        }
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
    }

    /// renew computes the default end of the next period only when the caller gives none, as
    /// before it moved out of the UPDATE: a period that never ends renews to one that never ends.
    #[pg_test]
    fn renewing_a_period_that_never_ends_keeps_it() {
        fixture();
        Spi::run(&format!(
            "UPDATE checkout.subscriptions SET current_period_end = 'infinity' WHERE id = '{SUBSCRIPTION_A1}'"
        ))
        .unwrap();
        let renewed = call("renew_subscription_period", "");
        assert_eq!(renewed["current_period_end"], "infinity");
        assert_eq!(renewed["change_type"], "renewed");
    }

    #[pg_test]
    fn past_due_renew_and_expire() {
        fixture();
        let end = text(&format!(
            "SELECT current_period_end::text FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'"
        ));
        assert_eq!(
            call("mark_subscription_past_due", ", 'card declined'")["status"],
            "past_due"
        );
        assert_eq!(call("mark_subscription_past_due", "")["changed"], false);
        assert_eq!(grants(), "a1+", "access continues while past due");
        let r = call("renew_subscription_period", "");
        assert_eq!(
            (r["status"].as_str(), r["change_type"].as_str()),
            (Some("active"), Some("renewed"))
        );
        assert_eq!(text(&format!("SELECT (current_period_start::text = '{end}' AND current_period_end = current_period_start + interval '1 month')::text FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'")), "true");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.renew_subscription_period('{SUBSCRIPTION_A1}', '{ORG_A}', now())"
            )),
            "22023"
        );
        let r = call("renew_subscription_period", ", now() + interval '1 year'");
        assert_eq!(r["changed"], true);
        assert_eq!(
            call("expire_subscription", ", 'payment never recovered'")["status"],
            "expired"
        );
        assert_eq!(grants(), "a1-");
        assert_eq!(call("expire_subscription", "")["changed"], false);
        for function in [
            "renew_subscription_period",
            "mark_subscription_past_due",
            "cancel_subscription_atomic",
            "reactivate_subscription_atomic",
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.{function}('{SUBSCRIPTION_A1}', '{ORG_A}')"
                )),
                "09000",
                "{function}"
            );
        }
        assert_eq!(audit(), "created past_due renewed renewed expired");
        assert_eq!(active_flag(), "false 1");
    }

    #[pg_test]
    fn trial_end_converts_or_expires() {
        fixture();
        let trial = |product: &str| {
            json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2026-01-15T00:00:00Z\"}}'), ARRAY['{{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a2\"}}'::jsonb], '{CUSTOMER_A2}', '{product}', '{ORG_A}')"))["subscription_id"].as_str().unwrap().to_owned()
        };
        let paid = trial("b0000000-0000-0000-0000-0000000000a1");
        let r = json(&format!(
            "SELECT checkout.end_subscription_trial('{paid}', '{ORG_A}', true)"
        ));
        assert_eq!(
            (r["status"].as_str(), r["change_type"].as_str()),
            (Some("active"), Some("converted"))
        );
        assert_eq!(text(&format!("SELECT converted || ' ' || (conversion_date IS NOT NULL) FROM checkout.trial_history WHERE subscription_id = '{paid}'")), "true true");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.end_subscription_trial('{paid}', '{ORG_A}', true)"
            )),
            "09000"
        );
        // The audit trail: change type, status before > after (the refused second call wrote none).
        let trail = |id: &str| {
            text(&format!("SELECT string_agg(change_type || ':' || coalesce(old_values->>'status', '') || '>' || coalesce(new_values->>'status', ''), ' ' ORDER BY created_at, change_type <> 'created') FROM checkout.subscription_changes WHERE subscription_id = '{id}'"))
        };
        assert_eq!(trail(&paid), "created:>trialing converted:trialing>active");
        let lapsed = trial("b0000000-0000-0000-0000-0000000000a2");
        let r = json(&format!(
            "SELECT checkout.end_subscription_trial('{lapsed}', '{ORG_A}', false)"
        ));
        assert_eq!(r["status"], "expired");
        assert_eq!(text(&format!("SELECT converted || ' ' || cancellation_reason FROM checkout.trial_history WHERE subscription_id = '{lapsed}'")), "false trial_not_converted");
        assert_eq!(count(&format!("SELECT count(*) FROM checkout.feature_grants WHERE subscription_id = '{lapsed}' AND revoked_at IS NULL")), 0);
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.end_subscription_trial('{lapsed}', '{ORG_A}', NULL)"
            )),
            "22004"
        );
        assert_eq!(trail(&lapsed), "created:>trialing expired:trialing>expired");
        assert_eq!(count(&format!("SELECT count(*) FROM checkout.subscription_changes WHERE subscription_id IN ('{paid}', '{lapsed}') AND change_type IN ('converted', 'expired')")), 2);
    }

    #[pg_test]
    fn direct_sql_is_audited_with_actor_and_reason_and_deletes_leave_a_trail() {
        fixture();
        Spi::run(&format!("INSERT INTO checkout.users (id, organization_id, email) VALUES ('e0000000-0000-0000-0000-0000000000a1', '{ORG_A}', 'ops@example.com')")).unwrap();
        Spi::run("SET LOCAL checkout.actor = 'e0000000-0000-0000-0000-0000000000a1'; SET LOCAL checkout.change_reason = 'ticket 42'").unwrap();
        Spi::run(&format!(
            "UPDATE checkout.subscriptions SET amount = 1200 WHERE id = '{SUBSCRIPTION_A1}'"
        ))
        .unwrap();
        // new_values: the changed columns only (updated_at is now(), the same in one transaction).
        let row = text(&format!("SELECT change_type || ' ' || changed_by || ' ' || changed_by_type || ' ' || reason || ' ' || (old_values->>'amount') || ' ' || new_values::text FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}' AND change_type = 'updated'"));
        assert_eq!(
            row,
            "updated e0000000-0000-0000-0000-0000000000a1 user ticket 42 1000 {\"amount\": 1200}"
        );
        // A function's own actor argument wins over the setting; no double rows.
        Spi::run("RESET checkout.actor").unwrap();
        call(
            "cancel_subscription_atomic",
            ", true, 'asked', 'e0000000-0000-0000-0000-0000000000a1'",
        );
        assert_eq!(audit(), "created updated cancelled");
        assert_eq!(text(&format!("SELECT changed_by || ' ' || reason FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}' AND change_type = 'cancelled'")), "e0000000-0000-0000-0000-0000000000a1 asked");
        // An update that changes nothing but updated_at still records that (direct SQL touched it);
        // one that matches no row records nothing.
        Spi::run("UPDATE checkout.subscriptions SET amount = amount WHERE false").unwrap();
        Spi::run(&format!(
            "DELETE FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'"
        ))
        .unwrap();
        assert_eq!(audit(), "created updated cancelled deleted");
        assert_eq!(active_flag(), "false 0");
        // Deleting the organization takes its trail with it, and nothing fails.
        Spi::run(&format!(
            "DELETE FROM checkout.organizations WHERE id = '{ORG_A}'"
        ))
        .unwrap();
        assert_eq!(count(&format!("SELECT count(*) FROM checkout.subscription_changes WHERE organization_id = '{ORG_A}'")), 0);
    }

    #[pg_test]
    fn lifecycle_keys_replay_and_refuse_other_parameters() {
        fixture();
        // Renewing twice with one key advances the period once.
        let r1 = call("renew_subscription_period", ", NULL, NULL, 'k-renew'");
        let r2 = call("renew_subscription_period", ", NULL, NULL, 'k-renew'");
        assert_eq!(r1["replayed"], serde_json::Value::Null);
        assert_eq!(
            (r2["replayed"].as_bool(), &r2["current_period_end"]),
            (Some(true), &r1["current_period_end"])
        );
        assert_eq!(audit(), "created renewed");
        let first = call(
            "cancel_subscription_atomic",
            ", true, NULL, NULL, 'k-cancel'",
        );
        let before = text("SELECT checkout_test.row_counts()");
        let replay = call(
            "cancel_subscription_atomic",
            ", true, NULL, NULL, 'k-cancel'",
        );
        let mut expected = first.clone();
        expected["replayed"] = true.into();
        assert_eq!(replay, expected);
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
        assert_eq!(sqlstate_of(&format!("SELECT checkout.cancel_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', false, NULL, NULL, 'k-cancel')")), "55000");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.expire_subscription('{SUBSCRIPTION_A1}', '{ORG_A}', NULL, NULL, 'k-cancel')"
            )),
            "55000"
        );
        // A refused call rolls its key back: the key is free for a retry.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.renew_subscription_period('{SUBSCRIPTION_A1}', '{ORG_A}', NULL, NULL, 'k-refused')"
            )),
            "09000"
        );
        assert_eq!(
            count("SELECT count(*) FROM checkout.idempotency_keys WHERE key = 'k-refused'"),
            0
        );
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
    }

    /// The functions lifecycle_keys_replay_and_refuse_other_parameters leaves out: a replay answers
    /// the first response with "replayed": true and writes nothing (no audit row); the key with other
    /// parameters, or for another operation, is 55000 and writes nothing.
    #[pg_test]
    fn keys_of_reactivate_plan_past_due_trial_end_replay_or_refuse() {
        fixture();
        let sub = SUBSCRIPTION_A1;
        let trial = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2099-01-15T00:00:00Z\"}}'), NULL, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(trial["status"], "trialing");
        let trial = trial["subscription_id"].as_str().unwrap().to_owned();
        // `call` with its key, then `other` (the same key, other parameters) on subscription `id`.
        let check = |call: &str, other: &str, id: &str, status: &str| {
            let first = json(&format!("SELECT checkout.{call}"));
            assert_eq!(
                (
                    first["changed"].as_bool(),
                    first["status"].as_str(),
                    first["replayed"].as_bool()
                ),
                (Some(true), Some(status), None),
                "{call}"
            );
            let counts = text("SELECT checkout_test.row_counts()");
            let row =
                format!("SELECT to_jsonb(s)::text FROM checkout.subscriptions s WHERE id = '{id}'");
            let before = text(&row);
            let replay = json(&format!("SELECT checkout.{call}"));
            let mut expected = first.clone();
            expected["replayed"] = true.into();
            assert_eq!(replay, expected, "{call}");
            assert_eq!(
                sqlstate_of(&format!("SELECT checkout.{other}")),
                "55000",
                "{other}"
            );
            assert_eq!(
                text("SELECT checkout_test.row_counts()"),
                counts,
                "{call}: the replay and the refused call wrote nothing"
            );
            assert_eq!(text(&row), before, "{call}");
        };
        check(
            &format!("mark_subscription_past_due('{SUBSCRIPTION_A1}', '{ORG_A}', 'card declined', p_idempotency_key => 'k-past-due')"),
            &format!("mark_subscription_past_due('{SUBSCRIPTION_A1}', '{ORG_A}', 'insufficient funds', p_idempotency_key => 'k-past-due')"),
            sub,
            "past_due",
        );
        check(
            &format!("change_subscription_plan_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', '{PRODUCT_A2}', 2500, p_idempotency_key => 'k-plan')"),
            &format!("change_subscription_plan_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', '{PRODUCT_A2}', 3000, p_idempotency_key => 'k-plan')"),
            sub,
            "past_due",
        );
        call("cancel_subscription_atomic", "");
        check(
            &format!("reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', 'came back', p_idempotency_key => 'k-reactivate')"),
            &format!("reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', 'other reason', p_idempotency_key => 'k-reactivate')"),
            sub,
            "active",
        );
        check(
            &format!(
                "end_subscription_trial('{trial}', '{ORG_A}', true, p_idempotency_key => 'k-trial')"
            ),
            &format!(
                "end_subscription_trial('{trial}', '{ORG_A}', false, p_idempotency_key => 'k-trial')"
            ),
            &trial,
            "active",
        );
        // A key is bound to its operation too.
        let counts = text("SELECT checkout_test.row_counts()");
        for other in [
            format!(
                "mark_subscription_past_due('{SUBSCRIPTION_A1}', '{ORG_A}', p_idempotency_key => 'k-reactivate')"
            ),
            format!(
                "reactivate_subscription_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', p_idempotency_key => 'k-past-due')"
            ),
            format!("expire_subscription('{trial}', '{ORG_A}', p_idempotency_key => 'k-trial')"),
            format!("end_subscription_trial('{SUBSCRIPTION_A1}', '{ORG_A}', true, p_idempotency_key => 'k-plan')"),
        ] {
            assert_eq!(
                sqlstate_of(&format!("SELECT checkout.{other}")),
                "55000",
                "{other}"
            );
        }
        assert_eq!(text("SELECT checkout_test.row_counts()"), counts);
        // One audit row per call that did something.
        assert_eq!(audit(), "created past_due upgraded cancelled reactivated");
        assert_eq!(
            text(&format!("SELECT string_agg(change_type, ' ' ORDER BY created_at, change_type <> 'created') FROM checkout.subscription_changes WHERE subscription_id = '{trial}'")),
            "created converted"
        );
    }

    #[pg_test]
    fn lifecycle_ignores_objects_planted_in_the_search_path() {
        fixture();
        Spi::run("CREATE SCHEMA evil;
                  CREATE TABLE evil.subscriptions (LIKE checkout.subscriptions);
                  CREATE TABLE evil.subscription_changes (LIKE checkout.subscription_changes);
                  CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT ''2000-01-01''::timestamptz';
                  CREATE FUNCTION evil.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql AS 'SELECT ''{}''::jsonb';
                  SET LOCAL search_path = evil, checkout, public;").unwrap();
        let r = call("cancel_subscription_atomic", "");
        assert_eq!(r["status"], "canceled");
        assert_ne!(r["canceled_at"], "2000-01-01T00:00:00+00:00");
        // A direct update through the triggers, under the same search_path.
        Spi::run(&format!(
            "UPDATE checkout.subscriptions SET metadata = '{{\"x\": 1}}' WHERE id = '{SUBSCRIPTION_A1}'"
        ))
        .unwrap();
        assert_eq!(
            count("SELECT count(*) FROM evil.subscriptions")
                + count("SELECT count(*) FROM evil.subscription_changes"),
            0
        );
        assert_eq!(audit(), "created cancelled updated");
        assert_eq!(text(&format!("SELECT new_values::text FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}' AND change_type = 'updated'")), "{\"metadata\": {\"x\": 1}}");
    }

    #[pg_test]
    fn a_role_that_may_only_update_subscriptions_is_audited_by_name() {
        fixture();
        Spi::run(
            "CREATE ROLE ck_ops; GRANT USAGE ON SCHEMA checkout, checkout_test TO ck_ops;
                  GRANT SELECT, UPDATE ON checkout.subscriptions TO ck_ops; SET LOCAL ROLE ck_ops",
        )
        .unwrap();
        // The triggers keep the audit, grants and counters with their own rights.
        Spi::run(&format!(
            "UPDATE checkout.subscriptions SET status = 'canceled' WHERE id = '{SUBSCRIPTION_A1}'"
        ))
        .unwrap();
        // ...and the role cannot write the trail itself.
        assert_eq!(sqlstate_of(&format!("INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type) VALUES ('{ORG_A}', '{SUBSCRIPTION_A1}', 'updated')")), "42501");
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(text(&format!("SELECT change_type || ' ' || changed_by_role FROM checkout.subscription_changes WHERE subscription_id = '{SUBSCRIPTION_A1}' AND change_type <> 'created'")), "updated ck_ops");
        assert_eq!((grants(), active_flag()), ("a1-".into(), "false 1".into()));
    }

    #[pg_test]
    fn a_plan_change_during_a_trial_takes_the_new_products_trial() {
        fixture();
        let trial = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2099-01-15T00:00:00Z\"}}'), NULL, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')"));
        let id = trial["subscription_id"].as_str().unwrap().to_owned();
        let moved = json(&format!("SELECT checkout.change_subscription_plan_atomic('{id}', '{ORG_A}', '{PRODUCT_A2}', 2000)"));
        assert_eq!(moved["status"], "trialing");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM checkout.trial_history WHERE subscription_id = '{id}'"
            )),
            2
        );
        // Back to the first product: that trial was used already (by this subscription: allowed).
        json(&format!("SELECT checkout.change_subscription_plan_atomic('{id}', '{ORG_A}', '{PRODUCT_A1}', 2000)"));
        // Another customer's trialing subscription cannot move onto a product whose trial it had.
        Spi::run(&format!("UPDATE checkout.trial_history SET subscription_id = NULL WHERE subscription_id = '{id}' AND product_id = '{PRODUCT_A2}'")).unwrap();
        Spi::run(&format!("INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end) SELECT '{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A2}', '{SUBSCRIPTION_A1}', now(), now() ON CONFLICT (organization_id, customer_id, product_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id")).unwrap();
        assert_eq!(sqlstate_of(&format!("SELECT checkout.change_subscription_plan_atomic('{id}', '{ORG_A}', '{PRODUCT_A2}', 2000)")), "09000");
        let converted = json(&format!(
            "SELECT checkout.end_subscription_trial('{id}', '{ORG_A}', true)"
        ));
        assert_eq!(converted["status"], "active");
        assert_eq!(text(&format!("SELECT string_agg(right(product_id::text, 2) || ':' || converted, ' ' ORDER BY product_id) FROM checkout.trial_history WHERE customer_id = '{CUSTOMER_A2}'")), "a1:true a2:false");
    }

    #[pg_test]
    fn lifecycle_functions_need_the_grant() {
        fixture();
        Spi::run("CREATE ROLE ck_lc_nobody; GRANT USAGE ON SCHEMA checkout, checkout_test TO ck_lc_nobody; SET LOCAL ROLE ck_lc_nobody").unwrap();
        for function in [
            "cancel_subscription_atomic",
            "reactivate_subscription_atomic",
            "mark_subscription_past_due",
            "expire_subscription",
            "renew_subscription_period",
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.{function}('{SUBSCRIPTION_A1}', '{ORG_A}')"
                )),
                "42501",
                "{function}"
            );
        }
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.end_subscription_trial('{SUBSCRIPTION_A1}', '{ORG_A}', true)"
            )),
            "42501"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.change_subscription_plan_atomic('{SUBSCRIPTION_A1}', '{ORG_A}', '{ORG_A}', 1)"
            )),
            "42501"
        );
        Spi::run("RESET ROLE").unwrap();
    }

    /// Random operations through every path (functions and direct SQL), then the counters,
    /// grants and audit trail are checked against the tables (check_invariants).
    #[pg_test]
    fn invariants_hold_after_thousands_of_random_operations() {
        fixture();
        Spi::run(include_str!("../../../tests/sql/random_lifecycle.sql")).unwrap();
        let ops = count("SELECT count(*) FROM checkout.subscription_changes");
        assert!(ops > 1000, "only {ops} changes recorded");
        let kinds = count("SELECT count(DISTINCT change_type) FROM checkout.subscription_changes");
        assert!(kinds >= 10, "only {kinds} change types exercised");
        let violations = text("SELECT coalesce(string_agg(invariant || ': ' || detail, '; '), '') FROM checkout.check_invariants()");
        assert_eq!(violations, "");
    }
}
