//! Lifecycle functions (issue 7): cancel, reactivate, change plan, renew, past due, expire, end of
//! trial. Each call locks the subscription, checks what the state machine and the period allow,
//! and writes with one statement; the subscriptions triggers (sql/lifecycle.sql) then write the
//! audit row (with this call's change type, actor and reason), counters, grants and trial. An
//! optional idempotency key has create_subscription_atomic's semantics.
use super::states::{allowed, LIVE};
use super::{
    input, parse_uuid, require_product_and_features, ACTIVE_SQL, BOOL, INT4, INT8, JSONB_ARRAY,
    TEXT, TIMESTAMPTZ, UUID, UUID_ARRAY,
};
use crate::audit::{self, Change};
use crate::errors::{raise, required, Kind};
use crate::idempotency::{self, Claim};
use crate::json_arg::JsonText;
use crate::plans::{first_row, kept, not_null, ok};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};

/// The subscription as a caller sees it in every answer (`sub` is the row's alias).
macro_rules! row_json {
    () => {
        "pg_catalog.jsonb_build_object('subscription_id', sub.id, 'status', sub.status, 'product_id', sub.product_id,
  'amount', sub.amount, 'currency', sub.currency, 'interval', sub.\"interval\", 'interval_count', sub.interval_count,
  'cancel_at_period_end', sub.cancel_at_period_end, 'canceled_at', sub.canceled_at, 'ended_at', sub.ended_at,
  'current_period_start', sub.current_period_start, 'current_period_end', sub.current_period_end)"
    };
}

const LOCK_SQL: &str = concat!(
    "SELECT sub.status, sub.customer_id, sub.product_id, sub.amount, sub.\"interval\", sub.interval_count,
       sub.cancel_at_period_end, sub.current_period_end > pg_catalog.now(), ",
    row_json!(),
    "
FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2 FOR NO KEY UPDATE"
);

const SET_STATUS_SQL: &str = concat!(
    "UPDATE checkout.subscriptions sub SET status = $3, cancellation_reason = coalesce($4, sub.cancellation_reason)
WHERE sub.organization_id = $1 AND sub.id = $2 RETURNING ",
    row_json!()
);

const SET_PENDING_CANCEL_SQL: &str = concat!(
    "UPDATE checkout.subscriptions sub SET cancel_at_period_end = $3,
  canceled_at = CASE WHEN $3 THEN pg_catalog.now() END, cancellation_reason = CASE WHEN $3 THEN $4 END
WHERE sub.organization_id = $1 AND sub.id = $2 RETURNING ",
    row_json!()
);

/// The next period starts where this one ends; it lasts interval_count x interval unless the
/// caller gives its end (which must lie after the current end, or nothing is updated).
const RENEW_SQL: &str = concat!(
    "UPDATE checkout.subscriptions sub SET status = 'active', current_period_start = sub.current_period_end,
  current_period_end = coalesce($3, sub.current_period_end + sub.interval_count * CASE sub.\"interval\"
    WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week' WHEN 'month' THEN interval '1 month'
    ELSE interval '1 year' END)
WHERE sub.organization_id = $1 AND sub.id = $2 AND ($3 IS NULL OR $3 > sub.current_period_end) RETURNING ",
    row_json!()
);

const USER_SQL: &str = "SELECT 1 FROM checkout.users WHERE organization_id = $1 AND id = $2";

const PLAN_TENANT_SQL: &str = "
SELECT EXISTS (SELECT 1 FROM checkout.products p WHERE p.organization_id = $1 AND p.id = $2),
       (SELECT pg_catalog.count(*) FROM checkout.features f WHERE f.organization_id = $1 AND f.id = ANY ($3))";

/// The plan and the grants move together: grants the new plan lacks are revoked, its features
/// granted (a revoked grant of the same feature comes back).
const CHANGE_PLAN_SQL: &str = concat!(
    "
WITH sub AS (
  UPDATE checkout.subscriptions s SET product_id = $3, amount = $4, \"interval\" = $5, interval_count = $6,
    stripe_price_id = coalesce($7, s.stripe_price_id)
  WHERE s.organization_id = $1 AND s.id = $2
  RETURNING s.*
), revoked AS (
  UPDATE checkout.feature_grants g SET revoked_at = GREATEST(pg_catalog.now(), g.granted_at) -- GREATEST is syntax, not a function
  FROM sub WHERE g.organization_id = sub.organization_id AND g.subscription_id = sub.id AND g.revoked_at IS NULL
    AND g.feature_id <> ALL ($8)
  RETURNING g.feature_id
), granted AS (
  INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id, metadata)
  SELECT sub.organization_id, sub.customer_id, f.id, sub.id, f.metadata
  FROM sub, unnest($8::uuid[], $9::jsonb[]) AS f(id, metadata) -- multi-array unnest cannot be schema-qualified
  ON CONFLICT (organization_id, subscription_id, feature_id, customer_id) DO UPDATE SET revoked_at = NULL, metadata = EXCLUDED.metadata
)
SELECT ",
    row_json!(),
    " || pg_catalog.jsonb_build_object('features_revoked',
  (SELECT coalesce(pg_catalog.jsonb_agg(revoked.feature_id ORDER BY revoked.feature_id), '[]') FROM revoked))
FROM sub"
);

/// A trialing subscription moving to another product takes that product's trial with it. The
/// audit trigger records it too, but only after the subscription row has entered the pair's unique
/// index; claiming it here first keeps the order create_subscription_atomic follows (trial, then
/// subscription), so a plan change and a create of the same pair queue instead of deadlocking. The
/// values are the trigger's; a trial held by another subscription is left for the trigger to refuse.
const TRIAL_MOVE_SQL: &str = "
INSERT INTO checkout.trial_history AS t (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end)
SELECT sub.organization_id, sub.customer_id, $3, sub.id,
       LEAST(coalesce(sub.trial_start, pg_catalog.now()), coalesce(sub.trial_end, sub.current_period_end)),
       coalesce(sub.trial_end, sub.current_period_end)
FROM checkout.subscriptions sub WHERE sub.organization_id = $1 AND sub.id = $2
ON CONFLICT (organization_id, customer_id, product_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id,
  updated_at = pg_catalog.now()
WHERE t.subscription_id IS NULL OR t.subscription_id = EXCLUDED.subscription_id";

/// A locked subscription (LOCK_SQL).
struct Locked {
    status: String,
    customer: Uuid,
    product: Uuid,
    amount: i64,
    interval: String,
    interval_count: i32,
    cancel_pending: bool,
    in_period: bool,
    row: Value,
}

/// One lifecycle call: who asks, about which subscription.
struct Call {
    organization: Uuid,
    id: Uuid,
    changed_by: Option<Uuid>,
    reason: Option<String>,
}

impl Call {
    /// Tells the audit trigger what this call does while `update` runs, then returns the row.
    fn write(
        &self,
        client: &mut SpiClient<'_>,
        change_type: &'static str,
        sql: &'static str,
        types: &[pgrx::pg_sys::PgOid],
        args: &[DatumWithOid<'_>],
    ) -> Option<Value> {
        let _scope = audit::begin(Change {
            change_type,
            changed_by: self.changed_by,
            reason: self.reason.clone(),
            self_audited: false,
        });
        let plan = kept(client, sql, types, true);
        first_row(ok(client.update(plan, None, args)))
            .and_then(|row| ok(row.get::<JsonB>(1)))
            .map(|j| j.0)
    }

    fn set_status(
        &self,
        client: &mut SpiClient<'_>,
        change_type: &'static str,
        status: &str,
        cancellation_reason: Option<&str>,
    ) -> Value {
        self.write(
            client,
            change_type,
            SET_STATUS_SQL,
            &[UUID, UUID, TEXT, TEXT],
            &[
                self.organization.into(),
                self.id.into(),
                status.into(),
                cancellation_reason.into(),
            ],
        )
        .unwrap_or_else(|| self.vanished())
    }

    fn set_pending_cancel(&self, client: &mut SpiClient<'_>, pending: bool) -> Value {
        let change_type = if pending { "cancelled" } else { "reactivated" };
        self.write(
            client,
            change_type,
            SET_PENDING_CANCEL_SQL,
            &[UUID, UUID, BOOL, TEXT],
            &[
                self.organization.into(),
                self.id.into(),
                pending.into(),
                self.reason.as_deref().into(),
            ],
        )
        .unwrap_or_else(|| self.vanished())
    }

    #[track_caller]
    fn refuse(&self, message: impl Into<String>, status: &str, hint: &str) -> ! {
        raise(
            Kind::InvalidTransition,
            message,
            Some(format!("subscription_id: {}, status: {status}", self.id)),
            Some(hint),
        )
    }

    #[track_caller]
    fn vanished(&self) -> ! {
        raise(
            Kind::Internal,
            "checkout: a locked subscription was not updated",
            Some(format!("subscription_id: {}", self.id)),
            None,
        )
    }

    /// 23505 when the customer already has another active/trialing subscription to `product`.
    fn refuse_if_other_active(&self, client: &mut SpiClient<'_>, customer: Uuid, product: Uuid) {
        let plan = kept(client, ACTIVE_SQL, &[UUID, UUID, UUID, UUID], false);
        let other = ok(client.select(
            plan,
            Some(1),
            &[
                self.organization.into(),
                customer.into(),
                product.into(),
                self.id.into(),
            ],
        ));
        if let Some(other) = first_row(other).and_then(|row| ok(row.get::<Uuid>(1))) {
            raise(
                Kind::Conflict,
                "the customer already has an active subscription to this product",
                Some(format!(
                    "subscription_id: {}, existing_subscription_id: {other}, product_id: {product}",
                    self.id
                )),
                Some("Cancel or change the existing subscription first."),
            );
        }
    }
}

/// The frame every lifecycle function shares: required arguments, the idempotency key, the row
/// lock, and the answer `{"success": true, "changed": ..., "change_type": ..., <subscription>}`.
/// `act` returns the change type and the updated row, or None when nothing had to change.
#[allow(clippy::too_many_arguments)]
fn run(
    operation: &'static str,
    organization: Option<Uuid>,
    subscription: Option<Uuid>,
    changed_by: Option<Uuid>,
    reason: Option<&str>,
    key: Option<&str>,
    request: Value,
    act: impl FnOnce(&mut SpiClient<'_>, &Call, &Locked) -> Option<(&'static str, Value)>,
) -> JsonB {
    let call = Call {
        organization: required(organization, "p_organization_id"),
        id: required(subscription, "p_subscription_id"),
        changed_by,
        reason: reason.map(str::to_owned),
    };
    Spi::connect_mut(|client| {
        let key_id = match key {
            None => None,
            Some(key) => {
                let request = json!({"subscription_id": call.id.to_string(), "changed_by": changed_by.map(|u| u.to_string()), "reason": reason, "request": request}).to_string();
                match idempotency::claim(client, call.organization, key, operation, &request) {
                    Claim::Replay(response) => return JsonB(response),
                    Claim::Owned(id) => Some(id),
                }
            }
        };
        if let Some(user) = changed_by {
            let plan = kept(client, USER_SQL, &[UUID, UUID], false);
            let found = ok(client.select(plan, Some(1), &[call.organization.into(), user.into()]));
            if found.is_empty() {
                raise(
                    Kind::NotFound,
                    "user not found in organization",
                    Some(format!(
                        "changed_by: {user}, organization_id: {}",
                        call.organization
                    )),
                    Some(
                        "p_changed_by is a checkout.users id of the organization (staff), or NULL.",
                    ),
                );
            }
        }
        let plan = kept(client, LOCK_SQL, &[UUID, UUID], true);
        let locked = ok(client.update(plan, Some(1), &[call.organization.into(), call.id.into()]));
        let Some(row) = first_row(locked) else {
            raise(
                Kind::NotFound,
                "subscription not found in organization",
                Some(format!(
                    "subscription_id: {}, organization_id: {}",
                    call.id, call.organization
                )),
                None,
            );
        };
        let locked = Locked {
            status: not_null(row.get(1), "subscriptions.status"),
            customer: not_null(row.get(2), "subscriptions.customer_id"),
            product: not_null(row.get(3), "subscriptions.product_id"),
            amount: not_null(row.get(4), "subscriptions.amount"),
            interval: not_null(row.get(5), "subscriptions.interval"),
            interval_count: not_null(row.get(6), "subscriptions.interval_count"),
            cancel_pending: not_null(row.get(7), "subscriptions.cancel_at_period_end"),
            in_period: not_null(row.get(8), "period check"),
            row: not_null(row.get::<JsonB>(9), "subscription").0,
        };
        let (changed, change_type, mut response) = match act(client, &call, &locked) {
            Some((change_type, row)) => (true, Some(change_type), row),
            None => (false, None, locked.row.clone()),
        };
        if let Some(object) = response.as_object_mut() {
            object.insert("success".into(), true.into());
            object.insert("changed".into(), changed.into());
            object.insert("change_type".into(), change_type.into());
        }
        if let Some(id) = key_id {
            idempotency::complete(client, &id, &response);
        }
        JsonB(response)
    })
}

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
        "cancel_subscription_atomic",
        p_organization_id,
        p_subscription_id,
        p_changed_by,
        p_reason,
        p_idempotency_key,
        json!({"at_period_end": at_period_end}),
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
        "reactivate_subscription_atomic",
        p_organization_id,
        p_subscription_id,
        p_changed_by,
        p_reason,
        p_idempotency_key,
        json!({}),
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
                call.refuse(
                    "a canceled subscription can only be reactivated within its period",
                    &s.status,
                    "Create a new subscription instead.",
                );
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
#[allow(clippy::too_many_arguments)]
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
            Some("See the README's change_subscription_plan_atomic."),
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
        "change_subscription_plan_atomic",
        p_organization_id,
        p_subscription_id,
        p_changed_by,
        p_reason,
        p_idempotency_key,
        request,
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
            let plan = kept(client, PLAN_TENANT_SQL, &[UUID, UUID, UUID_ARRAY], false);
            let found = ok(client.select(
                plan,
                Some(1),
                &[
                    call.organization.into(),
                    product.into(),
                    feature_ids.clone().into(),
                ],
            ));
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
                let plan = kept(client, TRIAL_MOVE_SQL, &[UUID, UUID, UUID], true);
                ok(client.update(
                    plan,
                    None,
                    &[call.organization.into(), call.id.into(), product.into()],
                ));
            }
            let metadata: Vec<JsonB> = features.iter().map(|f| JsonB(f.metadata.clone())).collect();
            let row = call
                .write(
                    client,
                    change_type,
                    CHANGE_PLAN_SQL,
                    &[
                        UUID,
                        UUID,
                        UUID,
                        INT8,
                        TEXT,
                        INT4,
                        TEXT,
                        UUID_ARRAY,
                        JSONB_ARRAY,
                    ],
                    &[
                        call.organization.into(),
                        call.id.into(),
                        product.into(),
                        amount.into(),
                        interval.into(),
                        interval_count.into(),
                        p_stripe_price_id.into(),
                        feature_ids.into(),
                        metadata.into(),
                    ],
                )
                .unwrap_or_else(|| call.vanished());
            Some((change_type, row))
        },
    )
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
        "renew_subscription_period",
        p_organization_id,
        p_subscription_id,
        p_changed_by,
        None,
        p_idempotency_key,
        json!({"period_end": period_end}),
        |client, call, s| {
            if !matches!(s.status.as_str(), "active" | "past_due") || s.cancel_pending {
                call.refuse(
                    "only an active or past_due subscription that is not set to cancel can renew",
                    &s.status,
                    "Reactivate a subscription set to cancel at period end before renewing it.",
                );
            }
            let row = call.write(
                client,
                "renewed",
                RENEW_SQL,
                &[UUID, UUID, TIMESTAMPTZ],
                &[
                    call.organization.into(),
                    call.id.into(),
                    p_period_end.into(),
                ],
            );
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
    status_change(
        "mark_subscription_past_due",
        "past_due",
        "past_due",
        p_subscription_id,
        p_organization_id,
        p_reason,
        p_changed_by,
        p_idempotency_key,
    )
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
    status_change(
        "expire_subscription",
        "expired",
        "expired",
        p_subscription_id,
        p_organization_id,
        p_reason,
        p_changed_by,
        p_idempotency_key,
    )
}

/// A status change the state machine decides alone; repeating it changes nothing.
#[allow(clippy::too_many_arguments)]
fn status_change(
    operation: &'static str,
    status: &'static str,
    change_type: &'static str,
    subscription: Option<Uuid>,
    organization: Option<Uuid>,
    reason: Option<&str>,
    changed_by: Option<Uuid>,
    key: Option<&str>,
) -> JsonB {
    run(
        operation,
        organization,
        subscription,
        changed_by,
        reason,
        key,
        json!({}),
        |client, call, s| {
            if s.status == status {
                return None;
            }
            if !allowed(&s.status, status) {
                call.refuse(
                    format!(
                        "subscription status cannot change from {} to {status}",
                        s.status
                    ),
                    &s.status,
                    "See the README's table of status transitions.",
                );
            }
            let cancellation_reason = if status == "expired" { reason } else { None };
            Some((
                change_type,
                call.set_status(client, change_type, status, cancellation_reason),
            ))
        },
    )
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
        "end_subscription_trial",
        p_organization_id,
        p_subscription_id,
        p_changed_by,
        None,
        p_idempotency_key,
        json!({"converted": converted}),
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

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::subscriptions::states::allowed;
    // Written out, not taken from states::LIVE, so a wrong LIVE fails the test.
    const LIVE: [&str; 3] = ["trialing", "active", "past_due"];
    use crate::test_support::{count, fixture, json, sqlstate_of, text, value};
    use pgrx::prelude::*;

    const ORG: &str = "'a0000000-0000-0000-0000-000000000001'";
    // Active, customer a1, product a1, 1000 usd a month, grant of feature a1 (tests/sql/fixtures.sql).
    const SUB: &str = "'d0000000-0000-0000-0000-0000000000a1'";

    fn call(function: &str, extra: &str) -> serde_json::Value {
        json(&format!("SELECT checkout.{function}({SUB}, {ORG}{extra})"))
    }

    fn state() -> String {
        text(&format!("SELECT status || ' ' || cancel_at_period_end || ' ' || (ended_at IS NOT NULL) FROM checkout.subscriptions WHERE id = {SUB}"))
    }

    fn grants() -> String {
        text(&format!("SELECT coalesce(string_agg(right(feature_id::text, 2) || CASE WHEN revoked_at IS NULL THEN '+' ELSE '-' END, ' ' ORDER BY feature_id), '') FROM checkout.feature_grants WHERE subscription_id = {SUB}"))
    }

    fn audit() -> String {
        text(&format!("SELECT string_agg(change_type, ' ' ORDER BY created_at, change_type <> 'created') FROM checkout.subscription_changes WHERE subscription_id = {SUB}"))
    }

    fn active_flag() -> String {
        text("SELECT has_active_subscription || ' ' || subscription_count FROM checkout.customers WHERE id = 'c0000000-0000-0000-0000-0000000000a1'")
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
        let row = text(&format!("SELECT reason || ' ' || changed_by_type || ' ' || (changed_by_role = current_user) || ' ' || (new_values->>'status') || ' ' || (old_values->>'status') FROM checkout.subscription_changes WHERE subscription_id = {SUB} AND change_type = 'cancelled'"));
        assert_eq!(row, "too expensive system true canceled active");
        // Canceling again is refused: nothing left to cancel.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.cancel_subscription_atomic({SUB}, {ORG})"
            )),
            "09000"
        );
        assert_eq!(sqlstate_of(&format!("SELECT checkout.cancel_subscription_atomic({SUB}, 'a0000000-0000-0000-0000-000000000002')")), "P0002");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.cancel_subscription_atomic(NULL, {ORG})"
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
                "SELECT checkout.renew_subscription_period({SUB}, {ORG})"
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
        assert_eq!(text(&format!("SELECT (canceled_at IS NULL AND cancellation_reason IS NULL)::text FROM checkout.subscriptions WHERE id = {SUB}")), "true");
        assert_eq!(audit(), "created cancelled reactivated");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic({SUB}, {ORG})"
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
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now() - interval '1 month', current_period_end = now() - interval '1 second' WHERE id = {SUB}")).unwrap();
        assert_eq!(
            count("SELECT checkout.end_subscription_periods()::bigint"),
            1
        );
        assert_eq!(state(), "canceled false true");
        assert_eq!(grants(), "a1-");
        assert_eq!(text(&format!("SELECT change_type || ' ' || reason FROM checkout.subscription_changes WHERE subscription_id = {SUB} ORDER BY created_at DESC LIMIT 1")), "cancelled cancel_at_period_end");
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
        let new = json("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, 'c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001')");
        assert_eq!(new["success"], true);
        let before = text("SELECT checkout_test.row_counts()");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic({SUB}, {ORG})"
            )),
            "23505"
        );
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
        // After its period, a canceled subscription stays canceled, by function and by direct SQL.
        Spi::run(&format!(
            "SELECT checkout.cancel_subscription_atomic('{}', {ORG})",
            new["subscription_id"].as_str().unwrap()
        ))
        .unwrap();
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now() - interval '2 months', current_period_end = now() - interval '1 day' WHERE id = {SUB}")).unwrap();
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.reactivate_subscription_atomic({SUB}, {ORG})"
            )),
            "09000"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "UPDATE checkout.subscriptions SET status = 'active' WHERE id = {SUB}"
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
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now() - interval '2 months', current_period_end = now() - interval '1 day' WHERE id = {SUB}")).unwrap();
        let row = || {
            text(&format!(
                "SELECT to_jsonb(s)::text FROM checkout.subscriptions s WHERE id = {SUB}"
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
                    "UPDATE checkout.subscriptions SET {set} WHERE id = {SUB}"
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
                "SELECT checkout.reactivate_subscription_atomic({SUB}, {ORG})"
            )),
            "09000"
        );
        // Within the period the same statement reactivates (the function keeps the period, so
        // reactivate_subscription_atomic passes the same check).
        Spi::run(&format!("UPDATE checkout.subscriptions SET current_period_start = now(), current_period_end = now() + interval '1 day' WHERE id = {SUB}")).unwrap();
        // ...but not into a period that is already over.
        assert_eq!(
            sqlstate_of(&format!("UPDATE checkout.subscriptions SET status = 'active', current_period_end = now() - interval '1 hour' WHERE id = {SUB}")),
            "09000"
        );
        assert_eq!(
            sqlstate_of(&format!("UPDATE checkout.subscriptions SET status = 'active', current_period_end = now() + interval '1 month' WHERE id = {SUB}")),
            "00000"
        );
        assert_eq!(state(), "active false false");
        assert_eq!((grants(), active_flag()), ("a1+".into(), "true 1".into()));
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
    }

    #[pg_test]
    fn plan_changes_move_grants_and_say_up_or_down() {
        fixture();
        let to_team = "'b0000000-0000-0000-0000-0000000000a2'";
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
        assert_eq!(text(&format!("SELECT product_id::text || ' ' || stripe_price_id FROM checkout.subscriptions WHERE id = {SUB}")), "b0000000-0000-0000-0000-0000000000a2 price_team");
        // Yearly at 20000 is cheaper than 2500 a month: a downgrade; feature a1 comes back.
        let r = call("change_subscription_plan_atomic", ", 'b0000000-0000-0000-0000-0000000000a1', 20000, 'year', 1, ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a1\"}'::jsonb]");
        assert_eq!(r["change_type"], "downgraded");
        assert_eq!(grants(), "a1+ a2-");
        assert_eq!(audit(), "created upgraded downgraded");
        let diff = text(&format!("SELECT string_agg(k, ',' ORDER BY k) FROM checkout.subscription_changes, jsonb_object_keys(new_values) k WHERE subscription_id = {SUB} AND change_type = 'downgraded'"));
        assert_eq!(
            diff, "amount,interval,product_id",
            "only changed columns in new_values"
        );
        // One active subscription per product: moving onto a product the customer has is refused.
        json("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, 'c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a2', 'a0000000-0000-0000-0000-000000000001')");
        let before = text("SELECT checkout_test.row_counts()");
        for (args, code) in [
            (format!(", {to_team}, 100"), "23505"),
            (", 'b0000000-0000-0000-0000-0000000000b1', 100".to_owned(), "P0002"),
            (", 'b0000000-0000-0000-0000-0000000000a1', 100, NULL, NULL, ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-0000000000b1\"}'::jsonb]".to_owned(), "P0002"),
            (", 'b0000000-0000-0000-0000-0000000000a1', -1".to_owned(), "22023"),
            (", 'b0000000-0000-0000-0000-0000000000a1', 100, 'fortnight'".to_owned(), "22023"),
            (", 'b0000000-0000-0000-0000-0000000000a1', NULL".to_owned(), "22004"),
        ] {
            assert_eq!(sqlstate_of(&format!("SELECT checkout.change_subscription_plan_atomic({SUB}, {ORG}{args})")), code, "{args}");
        }
        assert_eq!(text("SELECT checkout_test.row_counts()"), before);
    }

    #[pg_test]
    fn past_due_renew_and_expire() {
        fixture();
        let end = text(&format!(
            "SELECT current_period_end::text FROM checkout.subscriptions WHERE id = {SUB}"
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
        assert_eq!(text(&format!("SELECT (current_period_start::text = '{end}' AND current_period_end = current_period_start + interval '1 month')::text FROM checkout.subscriptions WHERE id = {SUB}")), "true");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.renew_subscription_period({SUB}, {ORG}, now())"
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
                sqlstate_of(&format!("SELECT checkout.{function}({SUB}, {ORG})")),
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
            json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2026-01-15T00:00:00Z\"}}'), ARRAY['{{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a2\"}}'::jsonb], 'c0000000-0000-0000-0000-0000000000a2', '{product}', {ORG})"))["subscription_id"].as_str().unwrap().to_owned()
        };
        let paid = trial("b0000000-0000-0000-0000-0000000000a1");
        let r = json(&format!(
            "SELECT checkout.end_subscription_trial('{paid}', {ORG}, true)"
        ));
        assert_eq!(
            (r["status"].as_str(), r["change_type"].as_str()),
            (Some("active"), Some("converted"))
        );
        assert_eq!(text(&format!("SELECT converted || ' ' || (conversion_date IS NOT NULL) FROM checkout.trial_history WHERE subscription_id = '{paid}'")), "true true");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.end_subscription_trial('{paid}', {ORG}, true)"
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
            "SELECT checkout.end_subscription_trial('{lapsed}', {ORG}, false)"
        ));
        assert_eq!(r["status"], "expired");
        assert_eq!(text(&format!("SELECT converted || ' ' || cancellation_reason FROM checkout.trial_history WHERE subscription_id = '{lapsed}'")), "false trial_not_converted");
        assert_eq!(count(&format!("SELECT count(*) FROM checkout.feature_grants WHERE subscription_id = '{lapsed}' AND revoked_at IS NULL")), 0);
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.end_subscription_trial('{lapsed}', {ORG}, NULL)"
            )),
            "22004"
        );
        assert_eq!(trail(&lapsed), "created:>trialing expired:trialing>expired");
        assert_eq!(count(&format!("SELECT count(*) FROM checkout.subscription_changes WHERE subscription_id IN ('{paid}', '{lapsed}') AND change_type IN ('converted', 'expired')")), 2);
    }

    /// Every status, from the one list the CHECK calls (check_rules).
    const STATUSES: &[&str] = crate::check_rules::SUBSCRIPTION_STATUSES;

    /// A subscription of customer a2 to product a2 in `status` (inserted directly: inserts are not
    /// transitions), with its period running.
    fn subscription_in(status: &str) -> String {
        text(&format!("INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, current_period_start, current_period_end, trial_end)
                       VALUES ({ORG}, 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a2', '{status}', 1000, 'usd', 'month', now(), now() + interval '1 month',
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
        assert_eq!(sqlstate_of(&format!("UPDATE checkout.subscriptions SET customer_id = 'c0000000-0000-0000-0000-0000000000a2' WHERE id = {SUB}")), "09000");
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
                let code = sqlstate_of(&format!("SELECT checkout.{function}('{id}', {ORG})"));
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
                    "SELECT checkout.end_subscription_trial('{id}', {ORG}, true)"
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
                    "SELECT checkout.renew_subscription_period('{id}', {ORG})"
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
                                "SELECT checkout.reactivate_subscription_atomic('{id}', {ORG})"
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
                                "SELECT checkout.cancel_subscription_atomic('{id}', {ORG}, true)"
                            ),
                            live && allowed(from, "canceled"),
                            format!("{from} true 1000"),
                            // Already pending: nothing to change, no audit row.
                            if pending { 0 } else { 1 },
                        ),
                        "change_plan" => (
                            format!("SELECT checkout.change_subscription_plan_atomic('{id}', {ORG}, 'b0000000-0000-0000-0000-0000000000a2', 2000)"),
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

    #[pg_test]
    fn direct_sql_is_audited_with_actor_and_reason_and_deletes_leave_a_trail() {
        fixture();
        Spi::run("INSERT INTO checkout.users (id, organization_id, email) VALUES ('e0000000-0000-0000-0000-0000000000a1', 'a0000000-0000-0000-0000-000000000001', 'ops@example.com')").unwrap();
        Spi::run("SET LOCAL checkout.actor = 'e0000000-0000-0000-0000-0000000000a1'; SET LOCAL checkout.change_reason = 'ticket 42'").unwrap();
        Spi::run(&format!(
            "UPDATE checkout.subscriptions SET amount = 1200 WHERE id = {SUB}"
        ))
        .unwrap();
        // new_values: the changed columns only (updated_at is now(), the same in one transaction).
        let row = text(&format!("SELECT change_type || ' ' || changed_by || ' ' || changed_by_type || ' ' || reason || ' ' || (old_values->>'amount') || ' ' || new_values::text FROM checkout.subscription_changes WHERE subscription_id = {SUB} AND change_type = 'updated'"));
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
        assert_eq!(text(&format!("SELECT changed_by || ' ' || reason FROM checkout.subscription_changes WHERE subscription_id = {SUB} AND change_type = 'cancelled'")), "e0000000-0000-0000-0000-0000000000a1 asked");
        // An update that changes nothing but updated_at still records that (direct SQL touched it);
        // one that matches no row records nothing.
        Spi::run("UPDATE checkout.subscriptions SET amount = amount WHERE false").unwrap();
        Spi::run(&format!(
            "DELETE FROM checkout.subscriptions WHERE id = {SUB}"
        ))
        .unwrap();
        assert_eq!(audit(), "created updated cancelled deleted");
        assert_eq!(active_flag(), "false 0");
        // Deleting the organization takes its trail with it, and nothing fails.
        Spi::run(
            "DELETE FROM checkout.organizations WHERE id = 'a0000000-0000-0000-0000-000000000001'",
        )
        .unwrap();
        assert_eq!(count("SELECT count(*) FROM checkout.subscription_changes WHERE organization_id = 'a0000000-0000-0000-0000-000000000001'"), 0);
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
        assert_eq!(sqlstate_of(&format!("SELECT checkout.cancel_subscription_atomic({SUB}, {ORG}, false, NULL, NULL, 'k-cancel')")), "55000");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.expire_subscription({SUB}, {ORG}, NULL, NULL, 'k-cancel')"
            )),
            "55000"
        );
        // A refused call rolls its key back: the key is free for a retry.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.renew_subscription_period({SUB}, {ORG}, NULL, NULL, 'k-refused')"
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
        let sub = SUB.trim_matches('\'');
        let trial = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2099-01-15T00:00:00Z\"}}'), NULL, 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a1', {ORG})"));
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
            &format!("mark_subscription_past_due({SUB}, {ORG}, 'card declined', p_idempotency_key => 'k-past-due')"),
            &format!("mark_subscription_past_due({SUB}, {ORG}, 'insufficient funds', p_idempotency_key => 'k-past-due')"),
            sub,
            "past_due",
        );
        check(
            &format!("change_subscription_plan_atomic({SUB}, {ORG}, 'b0000000-0000-0000-0000-0000000000a2', 2500, p_idempotency_key => 'k-plan')"),
            &format!("change_subscription_plan_atomic({SUB}, {ORG}, 'b0000000-0000-0000-0000-0000000000a2', 3000, p_idempotency_key => 'k-plan')"),
            sub,
            "past_due",
        );
        call("cancel_subscription_atomic", "");
        check(
            &format!("reactivate_subscription_atomic({SUB}, {ORG}, 'came back', p_idempotency_key => 'k-reactivate')"),
            &format!("reactivate_subscription_atomic({SUB}, {ORG}, 'other reason', p_idempotency_key => 'k-reactivate')"),
            sub,
            "active",
        );
        check(
            &format!(
                "end_subscription_trial('{trial}', {ORG}, true, p_idempotency_key => 'k-trial')"
            ),
            &format!(
                "end_subscription_trial('{trial}', {ORG}, false, p_idempotency_key => 'k-trial')"
            ),
            &trial,
            "active",
        );
        // A key is bound to its operation too.
        let counts = text("SELECT checkout_test.row_counts()");
        for other in [
            format!(
                "mark_subscription_past_due({SUB}, {ORG}, p_idempotency_key => 'k-reactivate')"
            ),
            format!(
                "reactivate_subscription_atomic({SUB}, {ORG}, p_idempotency_key => 'k-past-due')"
            ),
            format!("expire_subscription('{trial}', {ORG}, p_idempotency_key => 'k-trial')"),
            format!("end_subscription_trial({SUB}, {ORG}, true, p_idempotency_key => 'k-plan')"),
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
            "UPDATE checkout.subscriptions SET metadata = '{{\"x\": 1}}' WHERE id = {SUB}"
        ))
        .unwrap();
        assert_eq!(
            count("SELECT count(*) FROM evil.subscriptions")
                + count("SELECT count(*) FROM evil.subscription_changes"),
            0
        );
        assert_eq!(audit(), "created cancelled updated");
        assert_eq!(text(&format!("SELECT new_values::text FROM checkout.subscription_changes WHERE subscription_id = {SUB} AND change_type = 'updated'")), "{\"metadata\": {\"x\": 1}}");
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
            "UPDATE checkout.subscriptions SET status = 'canceled' WHERE id = {SUB}"
        ))
        .unwrap();
        // ...and the role cannot write the trail itself.
        assert_eq!(sqlstate_of(&format!("INSERT INTO checkout.subscription_changes (organization_id, subscription_id, change_type) VALUES ({ORG}, {SUB}, 'updated')")), "42501");
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(text(&format!("SELECT change_type || ' ' || changed_by_role FROM checkout.subscription_changes WHERE subscription_id = {SUB} AND change_type <> 'created'")), "updated ck_ops");
        assert_eq!((grants(), active_flag()), ("a1-".into(), "false 1".into()));
    }

    #[pg_test]
    fn a_plan_change_during_a_trial_takes_the_new_products_trial() {
        fixture();
        let trial = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2099-01-15T00:00:00Z\"}}'), NULL, 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a1', {ORG})"));
        let id = trial["subscription_id"].as_str().unwrap().to_owned();
        let moved = json(&format!("SELECT checkout.change_subscription_plan_atomic('{id}', {ORG}, 'b0000000-0000-0000-0000-0000000000a2', 2000)"));
        assert_eq!(moved["status"], "trialing");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM checkout.trial_history WHERE subscription_id = '{id}'"
            )),
            2
        );
        // Back to the first product: that trial was used already (by this subscription: allowed).
        json(&format!("SELECT checkout.change_subscription_plan_atomic('{id}', {ORG}, 'b0000000-0000-0000-0000-0000000000a1', 2000)"));
        // Another customer's trialing subscription cannot move onto a product whose trial it had.
        Spi::run(&format!("UPDATE checkout.trial_history SET subscription_id = NULL WHERE subscription_id = '{id}' AND product_id = 'b0000000-0000-0000-0000-0000000000a2'")).unwrap();
        Spi::run(&format!("INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end) SELECT {ORG}, 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a2', {SUB}, now(), now() ON CONFLICT (organization_id, customer_id, product_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id")).unwrap();
        assert_eq!(sqlstate_of(&format!("SELECT checkout.change_subscription_plan_atomic('{id}', {ORG}, 'b0000000-0000-0000-0000-0000000000a2', 2000)")), "09000");
        let converted = json(&format!(
            "SELECT checkout.end_subscription_trial('{id}', {ORG}, true)"
        ));
        assert_eq!(converted["status"], "active");
        assert_eq!(text(&format!("SELECT string_agg(right(product_id::text, 2) || ':' || converted, ' ' ORDER BY product_id) FROM checkout.trial_history WHERE customer_id = 'c0000000-0000-0000-0000-0000000000a2'")), "a1:true a2:false");
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
                sqlstate_of(&format!("SELECT checkout.{function}({SUB}, {ORG})")),
                "42501",
                "{function}"
            );
        }
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.end_subscription_trial({SUB}, {ORG}, true)"
            )),
            "42501"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.change_subscription_plan_atomic({SUB}, {ORG}, {ORG}, 1)"
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
        Spi::run(include_str!("../../tests/sql/random_lifecycle.sql")).unwrap();
        let ops = count("SELECT count(*) FROM checkout.subscription_changes");
        assert!(ops > 1000, "only {ops} changes recorded");
        let kinds = count("SELECT count(DISTINCT change_type) FROM checkout.subscription_changes");
        assert!(kinds >= 10, "only {kinds} change types exercised");
        let violations = text("SELECT coalesce(string_agg(invariant || ': ' || detail, '; '), '') FROM checkout.check_invariants()");
        assert_eq!(violations, "");
    }
}
