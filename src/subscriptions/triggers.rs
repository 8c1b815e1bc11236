//! The two trigger functions of subscriptions (sql/lifecycle.sql creates the triggers and says
//! what each keeps), native:
//!  * `guard_subscription_update` (BEFORE UPDATE; BEFORE INSERT of a canceled or expired row): the
//!    state machine, the stamps, no move to another customer or organization. It runs no SQL.
//!  * `audit_subscription_change` (AFTER INSERT/UPDATE/DELETE): the audit row, the customer's
//!    counters, grants, the trial, the product's metrics cache.
//!
//! Row locks are taken customer first, then product (two products in id order), as on every path.
use super::states::{allowed, refused_transition, ENDED, REACTIVATION_TOO_LATE};
use crate::audit;
use crate::audit::trigger::types::{BOOL, INT8, RECORD, TEXT, TIMESTAMPTZ, UUID};
use crate::audit::trigger::{
    differ, fired, now, run, setting, Col, Firing, Op, Returned, Row, When,
};
use crate::errors::{raise, Kind};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::ffi::CStr;
use std::num::NonZeroUsize;

// sql/lifecycle.sql attaches these functions as triggers (and holds end_subscription_periods):
// loaded here, beside them.
extension_sql_file!(
    "../../sql/lifecycle.sql",
    name = "lifecycle",
    requires = [
        "schema",
        audit::invoking_role,
        audit::subscription_audit_skipped,
        audit::restoring,
        citus::routed_here,
        guard_subscription_update,
        audit_subscription_change
    ]
);

/// The statuses a subscription ends in (canceled_at/ended_at stamped, grants revoked).
fn ending(status: Option<&str>) -> bool {
    status.is_some_and(|s| ENDED.contains(&s))
}

/// Active or trialing: the statuses that set the customer's has_active_subscription. Twins: the
/// unique index unique_active_subscription (sql/schema.sql), ACTIVE_SQL and create_subscription.sql's
/// ON CONFLICT (subscriptions/mod.rs), refuse_if_other_active (lifecycle/frame.rs).
fn active_or_trialing(status: Option<&str>) -> bool {
    matches!(status, Some("active" | "trialing"))
}

#[pg_trigger(sql = "
CREATE FUNCTION checkout.guard_subscription_update() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';")]
fn guard_subscription_update<'a>(trigger: &'a PgTrigger<'a>) -> Returned<'a> {
    let f = fired(
        trigger,
        "guard_subscription_update",
        c"subscriptions",
        When::Before,
    );
    Ok(guard(&f))
}

/// What the PL/pgSQL function did, in its order. NEW's columns may be NULL here (NOT NULL is
/// checked after BEFORE triggers): comparisons with NULL are unknown, as in SQL.
fn guard<'a>(f: &Firing<'a>) -> Option<PgHeapTuple<'a, AllocatedByPostgres>> {
    let (new, old) = (&f.new, &f.old);
    let now = now();
    let status = new.col(c"status", TEXT).text();
    let status = status.as_deref();
    let mut set = Vec::new();
    if f.op == Op::Insert {
        // The stamps entering canceled/expired by UPDATE gets below; CHECKs check_ended_stamped and
        // check_canceled_stamped hold them whatever writes the row.
        if ending(status) {
            stamp(new, c"ended_at", now, &mut set);
            if status == Some("canceled") {
                stamp(new, c"canceled_at", now, &mut set);
            }
            set.push((
                new.col(c"cancel_at_period_end", BOOL).attnum,
                Some(false.into()),
            ));
        }
        return new.with(&set);
    }
    let id = old.col(c"id", UUID);
    if differ(
        new.col(c"organization_id", UUID).uuid(),
        old.col(c"organization_id", UUID).uuid(),
    ) || differ(
        new.col(c"customer_id", UUID).uuid(),
        old.col(c"customer_id", UUID).uuid(),
    ) {
        raise(
            Kind::InvalidTransition,
            "a subscription cannot move to another customer or organization",
            Some(format!("subscription_id: {}", id.shown())),
            Some("Cancel it and create a subscription for the other customer."),
        );
    }
    let old_status = old.col(c"status", TEXT).text();
    let old_status = old_status.as_deref();
    if status != old_status {
        // subscription_transition_allowed() is STRICT: with a NULL status it did not refuse.
        if let (Some(from), Some(to)) = (old_status, status) {
            // Enforcement for every path. Twins: the pre-checks in status_change (same wording)
            // and cancel_subscription_atomic (subscriptions/lifecycle/mod.rs).
            if !allowed(from, to) {
                let (message, hint) = refused_transition(from, to);
                raise(
                    Kind::InvalidTransition,
                    message,
                    Some(format!("subscription_id: {}", id.shown())),
                    Some(&hint),
                );
            }
        }
        // Twin: reactivate_subscription_atomic's pre-check (in_period of
        // sql/queries/lifecycle/lock.sql), which refuses first so this 09000 precedes its 23505.
        // Within the period it was canceled in (OLD: an UPDATE that also moves current_period_end
        // cannot revive one whose period is over), into a period that is not over either (NEW).
        if old_status == Some("canceled") {
            let period_end = old.col(c"current_period_end", TIMESTAMPTZ);
            let over = |end: Option<i64>| end.is_some_and(|end| end <= now);
            if over(period_end.int8()) || over(new.col(c"current_period_end", TIMESTAMPTZ).int8()) {
                let (message, hint) = REACTIVATION_TOO_LATE;
                raise(
                    Kind::InvalidTransition,
                    message,
                    Some(format!(
                        "subscription_id: {}, current_period_end: {}",
                        id.shown(),
                        period_end.shown()
                    )),
                    Some(hint),
                );
            }
        }
        if ending(status) {
            stamp(new, c"ended_at", now, &mut set);
            if status == Some("canceled") {
                stamp(new, c"canceled_at", now, &mut set);
            }
        } else if old_status == Some("canceled") {
            // Reactivated.
            set.push((new.col(c"canceled_at", TIMESTAMPTZ).attnum, None));
            set.push((new.col(c"ended_at", TIMESTAMPTZ).attnum, None));
            set.push((new.col(c"cancellation_reason", TEXT).attnum, None));
        }
    }
    if ending(status) {
        // Nothing left to cancel.
        set.push((
            new.col(c"cancel_at_period_end", BOOL).attnum,
            Some(false.into()),
        ));
    }
    set.push((
        new.col(c"updated_at", TIMESTAMPTZ).attnum,
        Some(pg_sys::Datum::from(now)),
    ));
    match f.op {
        // Fired on DELETE (not how sql/lifecycle.sql attaches it) PL/pgSQL returned a non-NULL NEW,
        // so the row was deleted: any row does that.
        Op::Delete => old.unchanged(),
        _ => new.with(&set),
    }
}

/// `NEW.<column> := coalesce(NEW.<column>, now())`.
fn stamp(
    new: &Row<'_>,
    column: &CStr,
    now: i64,
    set: &mut Vec<(NonZeroUsize, Option<pg_sys::Datum>)>,
) {
    let col = new.col(column, TIMESTAMPTZ);
    if col.is_null() {
        set.push((col.attnum, Some(pg_sys::Datum::from(now))));
    }
}

#[pg_trigger(sql = "
CREATE FUNCTION checkout.audit_subscription_change() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';")]
fn audit_subscription_change<'a>(trigger: &'a PgTrigger<'a>) -> Returned<'a> {
    let f = fired(
        trigger,
        "audit_subscription_change",
        c"subscriptions",
        When::After,
    );
    Spi::connect_mut(|client| audit(client, &f));
    Ok(None)
}

// The audit row. `to_jsonb` of the rows is computed by PostgreSQL, from the rows passed as
// `record`: the same values PL/pgSQL's to_jsonb(OLD) and to_jsonb(NEW) gave.

/// $1 organization, $2 subscription, $3 change type, $4 OLD, $5 NEW, $6 actor (text), $7 changed_by_type,
/// $8 reason. clock_timestamp() orders several changes of one transaction.
const RECORD_SQL: &str = "
INSERT INTO checkout.subscription_changes
  (organization_id, subscription_id, change_type, old_values, new_values, changed_by, changed_by_type, reason, created_at)
VALUES ($1, $2, $3, pg_catalog.to_jsonb($4), pg_catalog.to_jsonb($5), $6::pg_catalog.uuid, $7, $8,
        pg_catalog.clock_timestamp())";

/// A deletion, recorded unless the organization is gone: deleting the organization deletes its
/// audit trail too. Arguments as RECORD_SQL's.
const DELETED_SQL: &str = "
INSERT INTO checkout.subscription_changes
  (organization_id, subscription_id, change_type, old_values, new_values, changed_by, changed_by_type, reason, created_at)
SELECT $1, $2, $3, pg_catalog.to_jsonb($4), pg_catalog.to_jsonb($5), $6::pg_catalog.uuid, $7, $8,
       pg_catalog.clock_timestamp()
WHERE EXISTS (SELECT FROM checkout.organizations o WHERE o.id OPERATOR(pg_catalog.=) $1)";

/// An update, with the whole old row and the columns whose value changed; nothing when none did.
/// Each row's jsonb is computed once (`OFFSET 0` keeps the planner from copying the expression
/// into the per-key comparison). `IS DISTINCT FROM` has no schema-qualified form: `(a = b) IS NOT
/// TRUE` is the same here, the values of jsonb_each being non-NULL. Arguments as RECORD_SQL's.
const UPDATED_SQL: &str = "
INSERT INTO checkout.subscription_changes
  (organization_id, subscription_id, change_type, old_values, new_values, changed_by, changed_by_type, reason, created_at)
SELECT $1, $2, $3, r.old_values, d.new_values, $6::pg_catalog.uuid, $7, $8, pg_catalog.clock_timestamp()
FROM (SELECT pg_catalog.to_jsonb($4) AS old_values, pg_catalog.to_jsonb($5) AS new_row OFFSET 0) r,
     LATERAL (SELECT pg_catalog.jsonb_object_agg(n.key, n.value) AS new_values
              FROM pg_catalog.jsonb_each(r.new_row) n
              WHERE ((r.old_values OPERATOR(pg_catalog.->) n.key) OPERATOR(pg_catalog.=) n.value) IS NOT TRUE) d
WHERE d.new_values IS NOT NULL";

/// Whether an update changed a value ($1 OLD, $2 NEW), asked first when an argument may fail its
/// cast (see `record`).
const CHANGED_SQL: &str = "
SELECT
FROM (SELECT pg_catalog.to_jsonb($1) AS old_values, pg_catalog.to_jsonb($2) AS new_row OFFSET 0) r,
     pg_catalog.jsonb_each(r.new_row) n
WHERE ((r.old_values OPERATOR(pg_catalog.->) n.key) OPERATOR(pg_catalog.=) n.value) IS NOT TRUE
LIMIT 1";

const ORGANIZATION_SQL: &str =
    "SELECT FROM checkout.organizations o WHERE o.id OPERATOR(pg_catalog.=) $1";

/// subscription_changes.change_type is varchar(50).
const CHANGE_TYPE_LEN: usize = 50;

// The customer's counters: $1 organization, $2 customer.
const CUSTOMER_CREATED_SQL: &str = "
UPDATE checkout.customers c
SET subscription_count = c.subscription_count OPERATOR(pg_catalog.+) 1,
    has_active_subscription = c.has_active_subscription OR $3, updated_at = pg_catalog.now()
WHERE c.organization_id OPERATOR(pg_catalog.=) $1 AND c.id OPERATOR(pg_catalog.=) $2";
const CUSTOMER_DELETED_SQL: &str = "
UPDATE checkout.customers c
SET subscription_count = c.subscription_count OPERATOR(pg_catalog.-) 1, updated_at = pg_catalog.now()
WHERE c.organization_id OPERATOR(pg_catalog.=) $1 AND c.id OPERATOR(pg_catalog.=) $2";
const CUSTOMER_ACTIVE_SQL: &str = "
UPDATE checkout.customers c SET has_active_subscription = true, updated_at = pg_catalog.now()
WHERE c.organization_id OPERATOR(pg_catalog.=) $1 AND c.id OPERATOR(pg_catalog.=) $2";
const CUSTOMER_LOCK_SQL: &str = "
SELECT FROM checkout.customers c
WHERE c.organization_id OPERATOR(pg_catalog.=) $1 AND c.id OPERATOR(pg_catalog.=) $2 FOR NO KEY UPDATE";
const CUSTOMER_RECOUNT_SQL: &str = "
UPDATE checkout.customers c
SET has_active_subscription = EXISTS (
      -- $1 rather than c.organization_id: Citus routes the statement to one shard only when
      -- every table in it names the organization's value.
      SELECT FROM checkout.subscriptions s
      WHERE s.organization_id OPERATOR(pg_catalog.=) $1 AND s.customer_id OPERATOR(pg_catalog.=) c.id
        AND s.status OPERATOR(pg_catalog.=) ANY ('{active,trialing}'::pg_catalog.text[])),
    updated_at = pg_catalog.now()
WHERE c.organization_id OPERATOR(pg_catalog.=) $1 AND c.id OPERATOR(pg_catalog.=) $2";

/// $1 organization, $2 customer, $3 product, $4 subscription, $5 trial_start, $6 trial_end,
/// $7 current_period_end. No row: the customer already had a trial of the product. Twin:
/// sql/queries/lifecycle/trial_move.sql claims the same row with the same values before a plan
/// change (lock order); change both.
const TRIAL_RECORD_SQL: &str = "
INSERT INTO checkout.trial_history AS t (organization_id, customer_id, product_id, subscription_id, trial_start, trial_end)
VALUES ($1, $2, $3, $4, LEAST(COALESCE($5, pg_catalog.now()), COALESCE($6, $7)), COALESCE($6, $7))
ON CONFLICT (organization_id, customer_id, product_id) DO UPDATE
SET subscription_id = EXCLUDED.subscription_id, updated_at = EXCLUDED.updated_at
WHERE t.subscription_id IS NULL OR t.subscription_id OPERATOR(pg_catalog.=) EXCLUDED.subscription_id";

// Grants and trial of a subscription: $1 organization, $2 subscription.
const GRANTS_REVOKE_SQL: &str = "
UPDATE checkout.feature_grants g SET revoked_at = GREATEST(pg_catalog.now(), g.granted_at)
WHERE g.organization_id OPERATOR(pg_catalog.=) $1 AND g.subscription_id OPERATOR(pg_catalog.=) $2
  AND g.revoked_at IS NULL";
/// $3: when the subscription ended.
const GRANTS_RESTORE_SQL: &str = "
UPDATE checkout.feature_grants g SET revoked_at = NULL
WHERE g.organization_id OPERATOR(pg_catalog.=) $1 AND g.subscription_id OPERATOR(pg_catalog.=) $2
  AND g.revoked_at OPERATOR(pg_catalog.>=) $3";
/// $3: the product.
const TRIAL_CONVERT_SQL: &str = "
UPDATE checkout.trial_history t SET converted = true, conversion_date = pg_catalog.now(), updated_at = pg_catalog.now()
WHERE t.organization_id OPERATOR(pg_catalog.=) $1 AND t.subscription_id OPERATOR(pg_catalog.=) $2
  AND t.product_id OPERATOR(pg_catalog.=) $3";
/// $3: the product, $4: the cancellation reason.
const TRIAL_END_SQL: &str = "
UPDATE checkout.trial_history t SET cancellation_reason = $4, updated_at = pg_catalog.now()
WHERE t.organization_id OPERATOR(pg_catalog.=) $1 AND t.subscription_id OPERATOR(pg_catalog.=) $2
  AND t.product_id OPERATOR(pg_catalog.=) $3";

// The product's metrics cache: ($1 organization, $2 product), and ($3, $4) for a second product.
const PRODUCT_RESET_SQL: &str = "
UPDATE checkout.products p SET metrics_last_calculated_at = NULL
WHERE p.organization_id OPERATOR(pg_catalog.=) $1 AND p.id OPERATOR(pg_catalog.=) $2
  AND p.metrics_last_calculated_at IS NOT NULL";
const PRODUCTS_LOCK_SQL: &str = "
SELECT FROM checkout.products p
WHERE (p.organization_id OPERATOR(pg_catalog.=) $1 AND p.id OPERATOR(pg_catalog.=) $2)
   OR (p.organization_id OPERATOR(pg_catalog.=) $3 AND p.id OPERATOR(pg_catalog.=) $4)
ORDER BY p.id FOR NO KEY UPDATE";
const PRODUCTS_RESET_SQL: &str = "
UPDATE checkout.products p SET metrics_last_calculated_at = NULL
WHERE ((p.organization_id OPERATOR(pg_catalog.=) $1 AND p.id OPERATOR(pg_catalog.=) $2)
    OR (p.organization_id OPERATOR(pg_catalog.=) $3 AND p.id OPERATOR(pg_catalog.=) $4))
  AND p.metrics_last_calculated_at IS NOT NULL";

fn audit(client: &mut SpiClient<'_>, f: &Firing<'_>) {
    let (new, old) = (&f.new, &f.old);
    // The row as it is now, or as it was when deleted.
    let row = if f.op == Op::Delete { old } else { new };
    let org = row.col(c"organization_id", UUID);
    if !record(client, f, row, &org) {
        return;
    }
    let status = new.col(c"status", TEXT).text();
    let old_status = old.col(c"status", TEXT).text();
    let (status, old_status) = (status.as_deref(), old_status.as_deref());
    // An absent row (OLD of an insert, NEW of a delete) is not active.
    let (was_active, is_active) = (active_or_trialing(old_status), active_or_trialing(status));

    // Counters. Incremental where the new value follows from the locked row; a recount (after the
    // lock, so that it sees every committed change) where another subscription may keep the flag.
    let customer = row.col(c"customer_id", UUID);
    let key = [org.param(), customer.param()];
    match f.op {
        Op::Insert => {
            let args = [org.param(), customer.param(), is_active.into()];
            run(client, CUSTOMER_CREATED_SQL, &args);
        }
        Op::Delete => {
            run(client, CUSTOMER_DELETED_SQL, &key);
        }
        Op::Update if is_active && !was_active => {
            run(client, CUSTOMER_ACTIVE_SQL, &key);
        }
        Op::Update if was_active && !is_active => {
            run(client, CUSTOMER_LOCK_SQL, &key);
        }
        Op::Update => {}
    }
    if was_active && !is_active {
        run(client, CUSTOMER_RECOUNT_SQL, &key);
    }

    let product = row.col(c"product_id", UUID);
    let old_product = old.col(c"product_id", UUID);
    // NEW.product_id <> OLD.product_id (false when either is absent).
    let moved = differ(product.uuid(), old_product.uuid()) && f.op == Op::Update;
    // One trial per (organization, customer, product), whatever the path: entering trialing (or
    // moving to another product while trialing) records the trial, or takes over a trial whose
    // subscription was deleted; a second trial is refused.
    if f.op != Op::Delete
        && status == Some("trialing")
        && (f.op == Op::Insert || old_status.is_some_and(|s| s != "trialing") || moved)
    {
        record_trial(client, new, &org, &customer, &product);
    }

    if f.op == Op::Update && status != old_status {
        let id = new.col(c"id", UUID);
        let sub = [org.param(), id.param()];
        if ending(status) {
            run(client, GRANTS_REVOKE_SQL, &sub);
        } else if old_status == Some("canceled") {
            // Reactivated: the grants its cancellation revoked come back (not those a plan change
            // revoked).
            let args = [
                org.param(),
                id.param(),
                old.col(c"ended_at", TIMESTAMPTZ).param(),
            ];
            run(client, GRANTS_RESTORE_SQL, &args);
        }
        let trial = [org.param(), id.param(), product.param()];
        if old_status == Some("trialing") && status == Some("active") {
            run(client, TRIAL_CONVERT_SQL, &trial);
        } else if old_status == Some("trialing") && ending(status) {
            let reason = new
                .col(c"cancellation_reason", TEXT)
                .text()
                .or(status.map(str::to_owned));
            let args = [org.param(), id.param(), product.param(), reason.into()];
            run(client, TRIAL_END_SQL, &args);
        }
    }

    let amount_changed = differ(
        new.col(c"amount", INT8).int8(),
        old.col(c"amount", INT8).int8(),
    );
    if f.op != Op::Update || status != old_status || moved || amount_changed {
        reset_metrics(client, f, &org, &product, &old_product, moved);
    }
}

/// Writes the audit row. False when there is nothing to record, and then the trigger does nothing
/// else: an update that changed no value, or a delete by the deletion of its organization.
fn record(client: &mut SpiClient<'_>, f: &Firing<'_>, row: &Row<'_>, org: &Col) -> bool {
    let (change_type, changed_by, reason) = match audit::current_change() {
        Some((change_type, changed_by, reason)) => (Some(change_type), changed_by, reason),
        None => (None, None, None),
    };
    let actor = changed_by
        .map(|u| u.to_string())
        .or_else(|| setting(c"checkout.actor"));
    let reason = reason.or_else(|| setting(c"checkout.change_reason"));
    let changed_by_type = if actor.is_some() { "user" } else { "system" };
    let id = row.col(c"id", UUID);
    let change_type = match f.op {
        Op::Insert => "created".to_owned(),
        Op::Delete => "deleted".to_owned(),
        Op::Update => change_type
            .map(str::to_owned)
            .or_else(|| setting(c"checkout.change_type"))
            .unwrap_or_else(|| "updated".to_owned()),
    };
    // A statement whose argument fails its cast (a checkout.actor that is not a uuid, a
    // checkout.change_type too long for the column) fails when planned with that argument, even
    // if it would insert nothing. PL/pgSQL ran the INSERT only once it knew there was a change to
    // record, so with such an argument this asks first, as it did.
    let castable =
        actor.as_deref().is_none_or(is_uuid) && change_type.chars().count() <= CHANGE_TYPE_LEN;
    let args = |old: DatumWithOid<'static>, new: DatumWithOid<'static>| {
        [
            org.param(),
            id.param(),
            change_type.as_str().into(),
            old,
            new,
            actor.clone().into(),
            changed_by_type.into(),
            reason.clone().into(),
        ]
    };
    let absent = || DatumWithOid::null_oid(RECORD.value());
    match f.op {
        Op::Insert => {
            run(client, RECORD_SQL, &args(absent(), f.new.composite()));
            true
        }
        Op::Delete if castable => {
            let args = args(f.old.composite(), absent());
            !run(client, DELETED_SQL, &args).is_empty()
        }
        Op::Delete => {
            if run(client, ORGANIZATION_SQL, &[org.param()]).is_empty() {
                return false;
            }
            run(client, RECORD_SQL, &args(f.old.composite(), absent()));
            true
        }
        Op::Update => {
            if !castable {
                let rows = [f.old.composite(), f.new.composite()];
                if run(client, CHANGED_SQL, &rows).is_empty() {
                    return false;
                }
            }
            let args = args(f.old.composite(), f.new.composite());
            !run(client, UPDATED_SQL, &args).is_empty()
        }
    }
}

/// The canonical text form of a uuid (8-4-4-4-12 hex digits), which uuid_in always accepts. Other
/// forms it may accept too take the careful path in `record`.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn record_trial(
    client: &mut SpiClient<'_>,
    new: &Row<'_>,
    org: &Col,
    customer: &Col,
    product: &Col,
) {
    let id = new.col(c"id", UUID);
    let args = [
        org.param(),
        customer.param(),
        product.param(),
        id.param(),
        new.col(c"trial_start", TIMESTAMPTZ).param(),
        new.col(c"trial_end", TIMESTAMPTZ).param(),
        new.col(c"current_period_end", TIMESTAMPTZ).param(),
    ];
    if run(client, TRIAL_RECORD_SQL, &args).is_empty() {
        raise(
            Kind::InvalidTransition,
            "the customer already had a trial of this product",
            Some(format!(
                "subscription_id: {}, customer_id: {}, product_id: {}",
                id.shown(),
                customer.shown(),
                product.shown()
            )),
            Some("Use check_trial_eligibility() before granting a trial; create_subscription_atomic does."),
        );
    }
}

/// Clears the metrics cache of the row's product and, on an update, OLD's product (in OLD's
/// organization: the same one, as the guard refuses a move, unless the guard was disabled).
fn reset_metrics(
    client: &mut SpiClient<'_>,
    f: &Firing<'_>,
    org: &Col,
    product: &Col,
    old_product: &Col,
    moved: bool,
) {
    let old_org = f.old.col(c"organization_id", UUID);
    let same = !f.old.is_present()
        || (org.uuid() == old_org.uuid() && product.uuid() == old_product.uuid());
    if same {
        let args = [org.param(), product.param()];
        run(client, PRODUCT_RESET_SQL, &args);
        return;
    }
    let args = [
        org.param(),
        product.param(),
        old_org.param(),
        old_product.param(),
    ];
    // A plan change touches two products: both are locked in id order first (as
    // end_subscription_periods does), so two plan changes between the same products in opposite
    // directions cannot deadlock.
    if moved {
        run(client, PRODUCTS_LOCK_SQL, &args);
    }
    run(client, PRODUCTS_RESET_SQL, &args);
}
