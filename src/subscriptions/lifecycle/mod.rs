//! Lifecycle functions (issue 7): cancel, reactivate, change plan, renew, past due, expire, end of
//! trial. Each call locks the subscription, checks what the state machine and the period allow,
//! and writes with one statement; the native subscriptions triggers (subscriptions/triggers.rs)
//! then write the audit row (with this call's change type, actor and reason), counters, grants and
//! trial. An optional idempotency key has create_subscription_atomic's semantics.
//!
//! frame.rs is what every call shares (arguments, key, lock, answer); the statements are in
//! sql/queries/lifecycle/; the rules a call checks first are twins of the trigger's (states.rs).
use super::states::{self, allowed, LIVE};
use super::{input, parse_uuid, require_product_and_features};
use crate::errors::{raise, required, Kind};
use crate::json_arg::JsonText;
use crate::plans::{first_row, ok, select, update};
use frame::{run, Request};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::json;

mod frame;
#[cfg(any(test, feature = "pg_test"))]
mod tests;
#[cfg(any(test, feature = "pg_test"))]
mod transition_tests;

/// A statement of sql/queries/ (lifecycle/...), with `{subscription}` replaced by subscription.sql: the
/// row `sub` as every answer shows it.
macro_rules! statement {
    ($file:literal) => {
        crate::plans::query!(
            $file,
            "subscription" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/sql/queries/lifecycle/subscription.sql"
            ))
            .trim_end()
        )
    };
}
use statement;

/// A write answering with `RETURNING {subscription}`, and the same write returning the id for a
/// Citus cluster (`Call::write`).
macro_rules! returning {
    ($file:literal) => {
        (
            statement!($file),
            crate::plans::query!($file, "subscription" => "sub.id"),
        )
    };
}
use returning;

const PLAN_TENANT_SQL: &str = "
SELECT EXISTS (SELECT 1 FROM checkout.products p WHERE p.organization_id = $1 AND p.id = $2),
       (SELECT pg_catalog.count(*) FROM checkout.features f WHERE f.organization_id = $1 AND f.id = ANY ($3))";

/// Cancels now (access ends: grants revoked, canceled_at/ended_at set) or at the end of the paid
/// period (access continues; undone by reactivate_subscription_atomic).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn cancel_subscription_atomic(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_at_period_end: default!(Option<bool>, "false"),
    p_reason: default!(Option<&str>, "NULL"),
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    let at_period_end = required(p_at_period_end, "p_at_period_end");
    run(
        Request {
            operation: "cancel_subscription_atomic",
            organization: p_organization_id,
            subscription: p_subscription_id,
            changed_by: p_changed_by,
            reason: p_reason,
            key: p_idempotency_key,
            parameters: json!({"at_period_end": at_period_end}),
        },
        |client, call, s| {
            if at_period_end {
                if !LIVE.contains(&s.status.as_str()) {
                    call.refuse(
                        "only an active, trialing or past_due subscription can be canceled at period end",
                        &s.status,
                        "Cancel it now (p_at_period_end => false), or leave it as it is.",
                    );
                }
                if s.cancel_pending {
                    return None;
                }
                Some(("cancelled", call.set_pending_cancel(client, true)))
            } else {
                // Pre-check; twin: the state-machine trigger refuses expired -> canceled;
                // canceled -> canceled is refused only here (the trigger lets a status stay).
                if s.status == "canceled" || !allowed(&s.status, "canceled") {
                    call.refuse(
                        format!("a {} subscription cannot be canceled", s.status),
                        &s.status,
                        "The subscription has already ended.",
                    );
                }
                Some((
                    "cancelled",
                    call.set_status(client, "cancelled", "canceled", call.reason.as_deref()),
                ))
            }
        },
    )
}

/// Undoes a pending cancellation, or reactivates a canceled subscription within its paid period
/// (its grants come back). Refused (23505) if the customer has since subscribed to the product again.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reactivate_subscription_atomic(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_reason: default!(Option<&str>, "NULL"),
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    run(
        Request {
            operation: "reactivate_subscription_atomic",
            organization: p_organization_id,
            subscription: p_subscription_id,
            changed_by: p_changed_by,
            reason: p_reason,
            key: p_idempotency_key,
            parameters: json!({}),
        },
        |client, call, s| {
            if s.cancel_pending && LIVE.contains(&s.status.as_str()) {
                return Some(("reactivated", call.set_pending_cancel(client, false)));
            }
            if s.status != "canceled" {
                call.refuse(
                    "the subscription has no cancellation to undo",
                    &s.status,
                    "Only a canceled subscription, or one set to cancel at period end, can be reactivated.",
                );
            }
            if !s.in_period {
                // Pre-check; twin: the state-machine trigger (subscriptions/triggers.rs).
                let (message, hint) = states::REACTIVATION_TOO_LATE;
                call.refuse(message, &s.status, hint);
            }
            call.refuse_if_other_active(client, s.customer, s.product);
            Some((
                "reactivated",
                call.set_status(client, "reactivated", "active", None),
            ))
        },
    )
}

/// Billing periods per year of one interval, for comparing plans at a monthly (here: yearly) rate.
fn per_year(interval: &str) -> i128 {
    match interval {
        "day" => 365,
        "week" => 52,
        "month" => 12,
        _ => 1,
    }
}

/// `upgraded` when the new plan costs more per month than the old one, `downgraded` when less,
/// `updated` when the same.
fn plan_change_type(old: (i64, &str, i32), new: (i64, &str, i32)) -> &'static str {
    // amount * periods-per-year / interval_count, compared without division.
    let old_rate = old.0 as i128 * per_year(old.1) * new.2 as i128;
    let new_rate = new.0 as i128 * per_year(new.1) * old.2 as i128;
    match new_rate.cmp(&old_rate) {
        std::cmp::Ordering::Greater => "upgraded",
        std::cmp::Ordering::Less => "downgraded",
        std::cmp::Ordering::Equal => "updated",
    }
}

/// Moves a subscription to another product and/or price. `p_features` are the new plan's
/// features (as in create_subscription_atomic; NULL = none): grants the new plan lacks are revoked.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)] // the SQL signature: one argument per SQL parameter
fn change_subscription_plan_atomic(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_product_id: Option<Uuid>,
    p_amount: Option<i64>,
    p_interval: default!(Option<&str>, "NULL"),
    p_interval_count: default!(Option<i32>, "NULL"),
    p_features: default!(Option<Array<JsonText>>, "NULL"),
    p_stripe_price_id: default!(Option<&str>, "NULL"),
    p_reason: default!(Option<&str>, "NULL"),
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    let product = required(p_product_id, "p_product_id");
    let amount = required(p_amount, "p_amount");
    let invalid = |message: String| -> ! {
        raise(
            Kind::InvalidParameter,
            message,
            None,
            Some("See docs/api.md, Subscription lifecycle: change_subscription_plan_atomic."),
        )
    };
    if !(0..=input::MAX_AMOUNT).contains(&amount) {
        invalid(format!(
            "p_amount must be from 0 to {}, got {amount}",
            input::MAX_AMOUNT
        ));
    }
    if let Some(interval) = p_interval {
        if !matches!(interval, "day" | "week" | "month" | "year") {
            invalid(format!(
                "p_interval must be day, week, month or year, got \"{}\"",
                input::shown(interval)
            ));
        }
    }
    if let Some(count) = p_interval_count.filter(|c| *c < 1) {
        invalid(format!("p_interval_count must be >= 1, got {count}"));
    }
    let elements = super::feature_elements(p_features).unwrap_or_else(|e| invalid(e));
    let features = input::features(&elements).unwrap_or_else(|e| invalid(e));
    let request = json!({
        "product_id": product.to_string(), "amount": amount, "interval": p_interval,
        "interval_count": p_interval_count, "stripe_price_id": p_stripe_price_id,
        "features": features.iter().map(|f| json!([f.feature_id, f.metadata])).collect::<Vec<_>>(),
    });
    run(
        Request {
            operation: "change_subscription_plan_atomic",
            organization: p_organization_id,
            subscription: p_subscription_id,
            changed_by: p_changed_by,
            reason: p_reason,
            key: p_idempotency_key,
            parameters: request,
        },
        |client, call, s| {
            if !LIVE.contains(&s.status.as_str()) {
                call.refuse(
                    format!("the plan of a {} subscription cannot change", s.status),
                    &s.status,
                    "Only an active, trialing or past_due subscription changes plan.",
                );
            }
            let feature_ids: Vec<Uuid> =
                features.iter().map(|f| parse_uuid(&f.feature_id)).collect();
            let args = [
                call.organization.into(),
                product.into(),
                feature_ids.clone().into(),
            ];
            let found = select(client, PLAN_TENANT_SQL, Some(1), &args);
            let found = found.first();
            require_product_and_features(
                call.organization,
                product,
                ok(found.get::<bool>(1)).unwrap_or(false),
                ok(found.get::<i64>(2)).unwrap_or(0),
                &features,
            );
            if product != s.product {
                call.refuse_if_other_active(client, s.customer, product);
            }
            let interval = p_interval.unwrap_or(&s.interval);
            let interval_count = p_interval_count.unwrap_or(s.interval_count);
            let change_type = plan_change_type(
                (s.amount, &s.interval, s.interval_count),
                (amount, interval, interval_count),
            );
            if s.status == "trialing" && product != s.product {
                let args = [call.organization.into(), call.id.into(), product.into()];
                update(client, statement!("lifecycle/trial_move.sql"), None, &args);
            }
            let metadata =
                || -> Vec<JsonB> { features.iter().map(|f| JsonB(f.metadata.clone())).collect() };
            let args = [
                call.organization.into(),
                call.id.into(),
                product.into(),
                amount.into(),
                interval.into(),
                interval_count.into(),
                p_stripe_price_id.into(),
                feature_ids.clone().into(),
                metadata().into(),
            ];
            let row = call
                .write(
                    client,
                    change_type,
                    statement!("lifecycle/change_plan.sql"),
                    Some(crate::plans::query!("lifecycle/plan_subscription.sql")),
                    &args,
                )
                .unwrap_or_else(|| call.vanished());
            let row = if crate::citus::distributed() {
                move_grants(client, call, s.customer, feature_ids, metadata(), row)
            } else {
                row
            };
            Some((change_type, row))
        },
    )
}

/// On a Citus cluster, what change_plan.sql's grant CTEs do, each a statement Citus runs on the
/// tenant's shard, and its `features_revoked` added to the answer.
fn move_grants(
    client: &mut pgrx::spi::SpiClient<'_>,
    call: &frame::Call,
    customer: Uuid,
    features: Vec<Uuid>,
    metadata: Vec<JsonB>,
    mut row: serde_json::Value,
) -> serde_json::Value {
    let revoke = [
        call.organization.into(),
        call.id.into(),
        features.clone().into(),
    ];
    let mut revoked: Vec<Uuid> = update(
        client,
        statement!("lifecycle/plan_revoke.sql"),
        None,
        &revoke,
    )
    .filter_map(|r| ok(r.get::<Uuid>(1)))
    .collect();
    revoked.sort(); // uuid order, as jsonb_agg(... ORDER BY feature_id)
    let grant = [
        call.organization.into(),
        customer.into(),
        call.id.into(),
        features.into(),
        metadata.into(),
    ];
    update(client, statement!("lifecycle/plan_grant.sql"), None, &grant);
    row["features_revoked"] = json!(revoked.iter().map(Uuid::to_string).collect::<Vec<_>>());
    row
}

/// Starts the next billing period (payment received): a past_due subscription becomes active.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn renew_subscription_period(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_period_end: default!(Option<TimestampWithTimeZone>, "NULL"),
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    // Microseconds since 2000: the request hash must not depend on the session's time zone.
    let period_end = p_period_end.map(|t| t.into_inner());
    run(
        Request {
            operation: "renew_subscription_period",
            organization: p_organization_id,
            subscription: p_subscription_id,
            changed_by: p_changed_by,
            reason: None,
            key: p_idempotency_key,
            parameters: json!({"period_end": period_end}),
        },
        |client, call, s| {
            if !matches!(s.status.as_str(), "active" | "past_due") || s.cancel_pending {
                call.refuse(
                    "only an active or past_due subscription that is not set to cancel can renew",
                    &s.status,
                    "Reactivate a subscription set to cancel at period end before renewing it.",
                );
            }
            let end = p_period_end.or_else(|| {
                let key = [call.organization.into(), call.id.into()];
                let next = select(
                    client,
                    statement!("lifecycle/next_period_end.sql"),
                    Some(1),
                    &key,
                );
                first_row(next).and_then(|row| ok(row.get::<TimestampWithTimeZone>(1)))
            });
            let args = [
                call.organization.into(),
                call.id.into(),
                end.into(),
                p_period_end.is_none().into(),
            ];
            let (sql, distributed) = returning!("lifecycle/renew.sql");
            let row = call.write(client, "renewed", sql, Some(distributed), &args);
            match row {
                Some(row) => Some(("renewed", row)),
                None => raise(
                    Kind::InvalidParameter,
                    "p_period_end must be after the current period's end",
                    Some(format!(
                        "subscription_id: {}, p_period_end: {}",
                        call.id,
                        p_period_end.map(|t| t.to_string()).unwrap_or_default()
                    )),
                    None,
                ),
            }
        },
    )
}

/// A payment failed: the subscription keeps its access while the provider retries (dunning).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn mark_subscription_past_due(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_reason: default!(Option<&str>, "NULL"),
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    let request = Request {
        operation: "mark_subscription_past_due",
        organization: p_organization_id,
        subscription: p_subscription_id,
        changed_by: p_changed_by,
        reason: p_reason,
        key: p_idempotency_key,
        parameters: json!({}),
    };
    status_change(request, "past_due", "past_due")
}

/// Ends a subscription for good (period over, payment never recovered): grants revoked.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn expire_subscription(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_reason: default!(Option<&str>, "NULL"),
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    let request = Request {
        operation: "expire_subscription",
        organization: p_organization_id,
        subscription: p_subscription_id,
        changed_by: p_changed_by,
        reason: p_reason,
        key: p_idempotency_key,
        parameters: json!({}),
    };
    status_change(request, "expired", "expired")
}

/// A status change the state machine decides alone; repeating it changes nothing.
fn status_change(request: Request<'_>, status: &'static str, change_type: &'static str) -> JsonB {
    let reason = request.reason;
    run(request, |client, call, s| {
        if s.status == status {
            return None;
        }
        // Pre-check; twin: the state-machine trigger (subscriptions/triggers.rs), with the same
        // message from states::refusal.
        if !allowed(&s.status, status) {
            let (message, hint) = states::refused_transition(&s.status, status);
            call.refuse(message, &s.status, &hint);
        }
        let cancellation_reason = if status == "expired" { reason } else { None };
        Some((
            change_type,
            call.set_status(client, change_type, status, cancellation_reason),
        ))
    })
}

/// Ends a trial: converted, it becomes active (trial_history.converted); not converted, it expires.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn end_subscription_trial(
    p_subscription_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_converted: Option<bool>,
    p_changed_by: default!(Option<Uuid>, "NULL"),
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    let converted = required(p_converted, "p_converted");
    run(
        Request {
            operation: "end_subscription_trial",
            organization: p_organization_id,
            subscription: p_subscription_id,
            changed_by: p_changed_by,
            reason: None,
            key: p_idempotency_key,
            parameters: json!({"converted": converted}),
        },
        |client, call, s| {
            if s.status != "trialing" {
                call.refuse(
                    "the subscription is not trialing",
                    &s.status,
                    "Only a trialing subscription has a trial to end.",
                );
            }
            Some(if converted {
                (
                    "converted",
                    call.set_status(client, "converted", "active", None),
                )
            } else {
                (
                    "expired",
                    call.set_status(client, "expired", "expired", Some("trial_not_converted")),
                )
            })
        },
    )
}

extension_sql!(
    r#"
REVOKE ALL ON FUNCTION checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text),
  checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text),
  checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text),
  checkout.renew_subscription_period(uuid, uuid, timestamptz, uuid, text),
  checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text),
  checkout.expire_subscription(uuid, uuid, text, uuid, text),
  checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text) FROM PUBLIC;
-- Kept plans run generic (see sql/trials.sql).
ALTER FUNCTION checkout.cancel_subscription_atomic(uuid, uuid, boolean, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.reactivate_subscription_atomic(uuid, uuid, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.change_subscription_plan_atomic(uuid, uuid, uuid, bigint, text, integer, jsonb[], text, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.renew_subscription_period(uuid, uuid, timestamptz, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.mark_subscription_past_due(uuid, uuid, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.expire_subscription(uuid, uuid, text, uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION checkout.end_subscription_trial(uuid, uuid, boolean, uuid, text) SET plan_cache_mode = force_generic_plan;
"#,
    name = "lifecycle_grants",
    requires = [
        cancel_subscription_atomic,
        reactivate_subscription_atomic,
        change_subscription_plan_atomic,
        renew_subscription_period,
        mark_subscription_past_due,
        expire_subscription,
        end_subscription_trial
    ]
);

#[cfg(test)]
mod unit {
    use super::plan_change_type;

    #[test]
    fn plans_compare_at_a_monthly_rate() {
        assert_eq!(
            plan_change_type((1000, "month", 1), (1500, "month", 1)),
            "upgraded"
        );
        // 100/year is cheaper than 10/month.
        assert_eq!(
            plan_change_type((1000, "month", 1), (10000, "year", 1)),
            "downgraded"
        );
        assert_eq!(
            plan_change_type((1200, "year", 1), (100, "month", 1)),
            "updated"
        );
        assert_eq!(
            plan_change_type((3000, "month", 3), (1000, "month", 1)),
            "updated"
        );
        assert_eq!(
            plan_change_type((i64::MAX, "day", 1), (i64::MAX, "year", 1)),
            "downgraded"
        );
    }
}
