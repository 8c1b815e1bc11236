//! The refund rules, kept by two triggers whoever writes the rows (sql/refunds.sql creates them),
//! native:
//!  * `guard_refund_status` (BEFORE INSERT OR UPDATE ON refunds): status moves pending ->
//!    succeeded | failed | canceled only; succeeded stamps completed_at; a refund that counts
//!    (pending or succeeded) stays within its payment, in the payment's currency.
//!  * `guard_payment_refunded` (BEFORE UPDATE OF amount, currency ON payment_intents): a payment's
//!    amount never drops below its pending and succeeded refunds, and its currency never changes
//!    under them.
//!
//! The bound at every isolation level: a refund that counts first UPDATEs its payment's row (to the
//! same values), then sums the payment's other refunds. Writers of one payment queue on that row;
//! under READ COMMITTED the sum then sees every committed refund (it is a later statement, with a
//! new snapshot), and under REPEATABLE READ or SERIALIZABLE a writer whose snapshot predates
//! another's committed refund gets 40001 on the row (a lock alone would not: only an update
//! conflicts with an older snapshot).
use crate::audit::trigger::types::{INT8, TEXT, TIMESTAMPTZ, UUID};
use crate::audit::trigger::{differ, fired, formatted, now, raised, run, Op, Returned, When};
use crate::errors::{raise, Kind};
use crate::plans::{first_row, not_null, ok};
use pgrx::prelude::*;

/// Counts against the payment.
fn counts(status: Option<&str>) -> bool {
    matches!(status, Some("pending" | "succeeded"))
}

/// `updated_at = updated_at`: a real row version (what conflicts with an older snapshot) that
/// changes no value (a restore reproduces the rows exactly). $1 organization, $2 payment's
/// provider id. No row: the foreign key reports the missing payment (23503).
const PAYMENT_SQL: &str = "
UPDATE checkout.payment_intents p SET updated_at = p.updated_at
WHERE p.organization_id OPERATOR(pg_catalog.=) $1 AND p.stripe_payment_intent_id OPERATOR(pg_catalog.=) $2
RETURNING p.amount, p.currency";

/// The payment's other refunds that count, and whether this one ($4) would exceed the payment
/// ($5): $1 organization, $2 payment's provider id, $3 this refund's id. The sum is read as
/// PL/pgSQL assigned it to a bigint, and added in SQL (the same errors out of range).
const REFUNDED_SQL: &str = "
SELECT v.refunded, (v.refunded OPERATOR(pg_catalog.+) $4) OPERATOR(pg_catalog.>) $5
FROM (SELECT COALESCE(pg_catalog.sum(r.amount), 0)::pg_catalog.int8 AS refunded
      FROM checkout.refunds r
      WHERE r.organization_id OPERATOR(pg_catalog.=) $1 AND r.payment_intent_id OPERATOR(pg_catalog.=) $2
        AND r.status OPERATOR(pg_catalog.=) ANY ('{pending,succeeded}'::pg_catalog.text[])
        AND r.id OPERATOR(pg_catalog.<>) $3) v";

#[pg_trigger(sql = "
CREATE FUNCTION checkout.guard_refund_status() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';")]
fn guard_refund_status<'a>(trigger: &'a PgTrigger<'a>) -> Returned<'a> {
    let f = fired(trigger, "guard_refund_status", c"refunds", When::Before);
    let (new, old) = (&f.new, &f.old);
    let status = new.col(c"status", TEXT).text();
    let old_status = old.col(c"status", TEXT).text();
    let (status, old_status) = (status.as_deref(), old_status.as_deref());
    // NOT (OLD.status = 'pending' AND NEW.status IN (...)) is true when either side is known false.
    let onward = matches!(status, Some("succeeded" | "failed" | "canceled"));
    if f.op == Op::Update
        && status != old_status
        && (old_status.is_some_and(|s| s != "pending") || (status.is_some() && !onward))
    {
        raise(
            Kind::InvalidTransition,
            format!(
                "refund status cannot change from {} to {}",
                raised(old_status),
                raised(status)
            ),
            Some(format!(
                "refund_id: {}, stripe_refund_id: {}",
                old.col(c"id", UUID).shown(),
                old.col(c"stripe_refund_id", TEXT).shown()
            )),
            Some("A refund moves from pending to succeeded, failed or canceled, once."),
        );
    }
    let mut set = Vec::new();
    if status == Some("succeeded")
        && (f.op == Op::Insert || old_status.is_some_and(|s| s != "succeeded"))
    {
        let completed = new.col(c"completed_at", TIMESTAMPTZ);
        if completed.is_null() {
            set.push((completed.attnum, Some(pg_sys::Datum::from(now()))));
        }
    }
    // Only a change that can raise the payment's refunded total is checked (a status moving from
    // pending to succeeded cannot).
    let org = new.col(c"organization_id", UUID);
    let payment = new.col(c"payment_intent_id", TEXT);
    let amount = new.col(c"amount", INT8);
    let currency = new.col(c"currency", TEXT);
    if counts(status)
        && (f.op == Op::Insert
            || old_status.is_some_and(|s| !counts(Some(s)))
            || matches!((amount.int8(), old.col(c"amount", INT8).int8()), (Some(a), Some(b)) if a > b)
            || differ(currency.text(), old.col(c"currency", TEXT).text())
            || differ(org.uuid(), old.col(c"organization_id", UUID).uuid())
            || differ(payment.text(), old.col(c"payment_intent_id", TEXT).text()))
    {
        // This refund's id (OLD's on an update), left out of the sum.
        let this = if f.op == Op::Update { old } else { new };
        let id = this.col(c"id", UUID);
        Spi::connect_mut(|client| {
            let args = [org.param(), payment.param()];
            let found = first_row(run(client, PAYMENT_SQL, &args));
            let Some(found) = found else {
                return; // a missing payment is the foreign key's to report (23503)
            };
            let payment_amount: i64 = not_null(found.get(1), "payment_intents.amount");
            let payment_currency: String = not_null(found.get(2), "payment_intents.currency");
            // Twins: record_refund checks currency (22023) and bound first, to answer a call with
            // its totals.
            if differ(currency.text().as_deref(), Some(payment_currency.as_str())) {
                raise(
                    Kind::CheckViolation,
                    "refund currency differs from the payment's",
                    Some(format!(
                        "refund: {}, payment {}: {payment_currency}",
                        currency.shown(),
                        payment.shown()
                    )),
                    None,
                );
            }
            let args = [
                org.param(),
                payment.param(),
                id.param(),
                amount.param(),
                payment_amount.into(),
            ];
            let sum = first_row(run(client, REFUNDED_SQL, &args));
            let Some(sum) = sum else {
                return; // an aggregate returns one row
            };
            let refunded: i64 = not_null(sum.get(1), "the refunded sum");
            if ok(sum.get::<bool>(2)) == Some(true) {
                raise(
                    Kind::CheckViolation,
                    "refunds would exceed the payment",
                    Some(format!(
                        "payment {}: {payment_amount}, already refunded or pending: {refunded}, this refund: {}",
                        payment.shown(),
                        amount.shown()
                    )),
                    Some("Refund at most the remaining amount."),
                );
            }
        });
    }
    // Fired on DELETE (not how sql/refunds.sql attaches it) NEW is absent: NULL, the row stays,
    // as PL/pgSQL's RETURN NEW did.
    Ok(new.with(&set))
}

/// The payment's refunds that count: $1 organization, $2 payment's provider id.
const PAYMENT_REFUNDED_SQL: &str = "
SELECT COALESCE(pg_catalog.sum(r.amount), 0)::pg_catalog.int8, pg_catalog.string_agg(DISTINCT r.currency, ', ')
FROM checkout.refunds r
WHERE r.organization_id OPERATOR(pg_catalog.=) $1 AND r.payment_intent_id OPERATOR(pg_catalog.=) $2
  AND r.status OPERATOR(pg_catalog.=) ANY ('{pending,succeeded}'::pg_catalog.text[])";

// The UPDATE holds the payment's row, which every refund writer updates first, so the sum sees
// what they committed (an older snapshot gets 40001 on the row instead).
#[pg_trigger(sql = "
CREATE FUNCTION checkout.guard_payment_refunded() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';")]
fn guard_payment_refunded<'a>(trigger: &'a PgTrigger<'a>) -> Returned<'a> {
    let f = fired(
        trigger,
        "guard_payment_refunded",
        c"payment_intents",
        When::Before,
    );
    let (new, old) = (&f.new, &f.old);
    let payment = old.col(c"stripe_payment_intent_id", TEXT);
    let args = [old.col(c"organization_id", UUID).param(), payment.param()];
    let (refunded, currencies) = Spi::connect_mut(|client| {
        let sum = first_row(run(client, PAYMENT_REFUNDED_SQL, &args));
        match sum {
            Some(sum) => (
                not_null::<i64>(sum.get(1), "the refunded sum"),
                ok(sum.get::<String>(2)),
            ),
            None => (0, None), // an aggregate returns one row
        }
    });
    let amount = new.col(c"amount", INT8);
    let currency = new.col(c"currency", TEXT);
    if amount.int8().is_some_and(|a| refunded > a)
        || (refunded > 0 && differ(currency.text(), old.col(c"currency", TEXT).text()))
    {
        raise(
            Kind::CheckViolation,
            "a payment's amount and currency must cover its refunds",
            Some(format!(
                "payment {}: amount {} {}, refunded or pending: {refunded} {}",
                payment.shown(),
                amount.shown(),
                currency.shown(),
                formatted(currencies)
            )),
            Some("Cancel or fail refunds first."),
        );
    }
    // Fired on DELETE NEW is absent: NULL, as PL/pgSQL's RETURN NEW.
    Ok(new.unchanged())
}
