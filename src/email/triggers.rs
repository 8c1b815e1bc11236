//! The two trigger functions that keep customer_email_variants (sql/email.sql creates the
//! triggers), native:
//!  * `track_customer_email` (AFTER INSERT OR UPDATE OF email ON customers) records NEW.email with
//!    its canonical form. SECURITY DEFINER: the caller may write customers without any privilege
//!    on customer_email_variants. Invalid emails raise 22023 (normalize_email's error), so
//!    customers only ever hold valid ones.
//!  * `merge_duplicate_email_variant` (BEFORE INSERT ON customer_email_variants, for rows written
//!    at top level: pg_restore's COPY, direct inserts) merges a duplicate instead of failing.
use crate::audit::trigger::types::{INT4, TEXT, TIMESTAMPTZ, UUID};
use crate::audit::trigger::{fired, run, Op, Returned, When};
use crate::email::{canonical, rules::RULES_VERSION};
use pgrx::prelude::*;

/// $1 organization, $2 customer, $3 email, $4 its canonical form, $5 the rules' version.
const TRACK_SQL: &str = "
INSERT INTO checkout.customer_email_variants
  (organization_id, customer_id, email, email_normalized, email_domain, rules_version)
VALUES ($1, $2, $3, $4, pg_catalog.split_part($4, '@', 2), $5)
ON CONFLICT (organization_id, customer_id, pg_catalog.lower(email)) DO NOTHING";

#[pg_trigger(sql = "
CREATE FUNCTION checkout.track_customer_email() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';")]
fn track_customer_email<'a>(trigger: &'a PgTrigger<'a>) -> Returned<'a> {
    let f = fired(trigger, "track_customer_email", c"customers", When::After);
    let email = f.new.col(c"email", TEXT);
    let address = email.text();
    // UPDATE OF email fires also when the value stays the same.
    if f.op == Op::Update && address == f.old.col(c"email", TEXT).text() {
        return Ok(None);
    }
    // normalize_email() is STRICT: a NULL email has no canonical form.
    let normalized = address.as_deref().map(canonical);
    let args = [
        f.new.col(c"organization_id", UUID).param(),
        f.new.col(c"id", UUID).param(),
        email.param(),
        normalized.into(),
        RULES_VERSION.into(),
    ];
    Spi::connect_mut(|client| {
        run(client, TRACK_SQL, &args);
    });
    Ok(None)
}

/// A restore's older row replaces the trigger's copy of it: $1 id, $2 email, $3 email_normalized,
/// $4 email_domain, $5 rules_version, $6 created_at of the incoming row; $7 organization,
/// $8 customer.
const MERGE_SQL: &str = "
UPDATE checkout.customer_email_variants v
SET id = $1, email = $2, email_normalized = $3, email_domain = $4, rules_version = $5, created_at = $6
WHERE v.organization_id OPERATOR(pg_catalog.=) $7 AND v.customer_id OPERATOR(pg_catalog.=) $8
  AND pg_catalog.lower(v.email) OPERATOR(pg_catalog.=) pg_catalog.lower($2)
  AND v.created_at OPERATOR(pg_catalog.>) $6";

/// Whether the customer already has the email: $1 organization, $2 customer, $3 email.
const HELD_SQL: &str = "
SELECT FROM checkout.customer_email_variants v
WHERE v.organization_id OPERATOR(pg_catalog.=) $1 AND v.customer_id OPERATOR(pg_catalog.=) $2
  AND pg_catalog.lower(v.email) OPERATOR(pg_catalog.=) pg_catalog.lower($3)
LIMIT 1";

// pg_restore reloads customers (whose trigger records each current email, stamped now()) before
// customer_email_variants. A duplicate incoming row is merged instead of failing the COPY: when it
// is older it is the original and replaces the trigger's copy, so a restore reproduces every row
// exactly. (Rows the customers trigger inserts are written at depth 1 and skip this: it handles
// duplicates with ON CONFLICT.)
#[pg_trigger(sql = "
CREATE FUNCTION checkout.merge_duplicate_email_variant() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';")]
fn merge_duplicate_email_variant<'a>(trigger: &'a PgTrigger<'a>) -> Returned<'a> {
    let f = fired(
        trigger,
        "merge_duplicate_email_variant",
        c"customer_email_variants",
        When::Before,
    );
    let new = &f.new;
    let org = new.col(c"organization_id", UUID);
    let customer = new.col(c"customer_id", UUID);
    let email = new.col(c"email", TEXT);
    let merge = [
        new.col(c"id", UUID).param(),
        email.param(),
        new.col(c"email_normalized", TEXT).param(),
        new.col(c"email_domain", TEXT).param(),
        new.col(c"rules_version", INT4).param(),
        new.col(c"created_at", TIMESTAMPTZ).param(),
        org.param(),
        customer.param(),
    ];
    let held = [org.param(), customer.param(), email.param()];
    let duplicate = Spi::connect_mut(|client| {
        // The second question only when the first found nothing (FOUND OR EXISTS (...)); after
        // it, with a new snapshot.
        !run(client, MERGE_SQL, &merge).is_empty() || !run(client, HELD_SQL, &held).is_empty()
    });
    // The row goes in unless it was merged or is held already.
    Ok(if duplicate { None } else { new.unchanged() })
}
