//! `upsert_customer_atomic` (seed migration 006): one customer per (organization, email), matched
//! by external_id first, race-free through `INSERT ... ON CONFLICT` on the unique index.
use crate::email::canonical;
use crate::errors::{raise, required, Kind};
use crate::json_arg::JsonText;
use crate::plans::{first_row, not_null, ok, update};

use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::json;

/// The customer holding external_id (locked), and the other customer holding the email, if any.
const BY_EXTERNAL_ID_SQL: &str = "
SELECT c.id,
       (SELECT o.id FROM checkout.customers o
        WHERE o.organization_id = $1 AND pg_catalog.lower(o.email) = pg_catalog.lower($3)
          AND o.deleted_at IS NULL AND o.id <> c.id)
FROM checkout.customers c
WHERE c.organization_id = $1 AND c.external_id = $2 AND c.deleted_at IS NULL
FOR NO KEY UPDATE OF c";

const UPDATE_SQL: &str = "
UPDATE checkout.customers
SET email = $2, name = COALESCE($3, name), stripe_customer_id = COALESCE($4, stripe_customer_id),
    metadata = metadata || $5, updated_at = pg_catalog.now()
WHERE organization_id = $6 AND id = $1";

/// Insert, or merge into the customer holding the email. `xmax = 0` only on a fresh insert.
/// Nothing is inserted for an unknown organization (P0002, like every missing tenant row).
const UPSERT_SQL: &str = "
INSERT INTO checkout.customers AS c (organization_id, email, external_id, name, stripe_customer_id, metadata)
SELECT $1, $2, $3, $4, $5, $6
WHERE EXISTS (SELECT 1 FROM checkout.organizations o WHERE o.id = $1)
ON CONFLICT (organization_id, pg_catalog.lower(email)) WHERE deleted_at IS NULL DO UPDATE
SET external_id = COALESCE(EXCLUDED.external_id, c.external_id), name = COALESCE(EXCLUDED.name, c.name),
    stripe_customer_id = COALESCE(EXCLUDED.stripe_customer_id, c.stripe_customer_id),
    metadata = c.metadata || EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
RETURNING c.id, c.xmax = 0";

/// The same on a Citus cluster, from VALUES after `citus::organization_exists`: Citus runs an `INSERT ...
/// SELECT` that reads no distributed table as a task for every shard (measured: 3 ms a call).
const UPSERT_VALUES_SQL: &str = "
INSERT INTO checkout.customers AS c (organization_id, email, external_id, name, stripe_customer_id, metadata)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (organization_id, pg_catalog.lower(email)) WHERE deleted_at IS NULL DO UPDATE
SET external_id = COALESCE(EXCLUDED.external_id, c.external_id), name = COALESCE(EXCLUDED.name, c.name),
    stripe_customer_id = COALESCE(EXCLUDED.stripe_customer_id, c.stripe_customer_id),
    metadata = c.metadata || EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
RETURNING c.id, c.xmax = 0";

/// The seed's signature. Returns `{"customer_id", "created"}`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_customer_atomic(
    p_organization_id: Option<Uuid>,
    p_email: Option<&str>,
    p_external_id: default!(Option<&str>, "NULL"),
    p_name: default!(Option<&str>, "NULL"),
    p_stripe_customer_id: default!(Option<&str>, "NULL"),
    p_metadata: default!(Option<JsonText>, "'{}'"),
) -> JsonB {
    let organization = required(p_organization_id, "p_organization_id");
    let email = required(p_email, "p_email").trim();
    canonical(email); // validates: 22023 on an invalid address
    let metadata = p_metadata
        .map(|m| m.parse("p_metadata"))
        .unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        raise(
            Kind::InvalidParameter,
            "p_metadata must be a JSON object",
            None,
            None,
        );
    }
    if p_external_id.is_some_and(str::is_empty) {
        raise(
            Kind::InvalidParameter,
            "p_external_id must not be empty",
            None,
            Some("Pass NULL when there is none."),
        );
    }

    let _routed = crate::citus::routed();
    Spi::connect_mut(|client| {
        if let Some(external_id) = p_external_id {
            let found = update(
                client,
                BY_EXTERNAL_ID_SQL,
                Some(1),
                &[organization.into(), external_id.into(), email.into()],
            );
            if let Some(found) = first_row(found) {
                let id: Uuid = not_null(found.get(1), "customers.id");
                if let Some(other) = ok(found.get::<Uuid>(2)) {
                    raise(
                        Kind::Conflict,
                        "external_id and email belong to different customers",
                        Some(format!("external_id matches customer_id {id}; email belongs to customer_id {other}")),
                        Some("Merge or delete one of the two customers, or pass the email of the external_id's customer."),
                    );
                }
                update(
                    client,
                    UPDATE_SQL,
                    None,
                    &[
                        id.into(),
                        email.into(),
                        p_name.into(),
                        p_stripe_customer_id.into(),
                        JsonB(metadata).into(),
                        organization.into(),
                    ],
                );
                return JsonB(json!({"customer_id": id.to_string(), "created": false}));
            }
        }
        let missing = || -> ! {
            raise(
                Kind::NotFound,
                "organization not found",
                Some(format!("organization_id: {organization}")),
                None,
            )
        };
        let upsert = if crate::citus::distributed() {
            if !crate::citus::organization_exists(client, organization) {
                missing();
            }
            UPSERT_VALUES_SQL
        } else {
            UPSERT_SQL
        };
        let row = update(
            client,
            upsert,
            None,
            &[
                organization.into(),
                email.into(),
                p_external_id.into(),
                p_name.into(),
                p_stripe_customer_id.into(),
                JsonB(metadata).into(),
            ],
        );
        let Some(row) = first_row(row) else { missing() };
        let id: Uuid = not_null(row.get(1), "customers.id");
        let created: bool = ok(row.get(2)).unwrap_or(false);
        JsonB(json!({"customer_id": id.to_string(), "created": created}))
    })
}

extension_sql!(
    "REVOKE ALL ON FUNCTION checkout.upsert_customer_atomic(uuid, text, text, text, text, jsonb) FROM PUBLIC;\n     ALTER FUNCTION checkout.upsert_customer_atomic(uuid, text, text, text, text, jsonb) SET plan_cache_mode = force_generic_plan; -- see sql/trials.sql",
    name = "upsert_customer_atomic_grants",
    requires = [upsert_customer_atomic]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{fixture, sqlstate_of, text};
    use crate::test_support::{CUSTOMER_A1, ORG_A};
    use pgrx::prelude::*;
    use serde_json::Value;

    fn upsert(args: &str) -> Value {
        Spi::get_one::<pgrx::JsonB>(&format!(
            "SELECT checkout.upsert_customer_atomic('{ORG_A}', {args})"
        ))
        .expect("query failed")
        .expect("NULL")
        .0
    }

    #[pg_test]
    fn creates_then_matches_by_email_case_insensitively() {
        fixture();
        let r = upsert("'new@example.com', p_name => 'New', p_metadata => '{\"a\": 1}'");
        assert_eq!(r["created"], true);
        let id = r["customer_id"].as_str().unwrap().to_owned();
        let again = upsert(
            "'NEW@Example.com', p_stripe_customer_id => 'cus_1', p_metadata => '{\"b\": 2}'",
        );
        assert_eq!(
            (again["created"].as_bool(), again["customer_id"].as_str()),
            (Some(false), Some(id.as_str()))
        );
        assert_eq!(text(&format!("SELECT name || ' ' || stripe_customer_id || ' ' || metadata::text FROM checkout.customers WHERE id = '{id}'")), r#"New cus_1 {"a": 1, "b": 2}"#);
        // Variants are recorded by the trigger.
        assert_eq!(text(&format!("SELECT count(*)::text FROM checkout.customer_email_variants WHERE customer_id = '{id}'")), "1");
    }

    #[pg_test]
    fn matches_by_external_id_first_and_refuses_a_conflict() {
        fixture();
        // ext-a1 is alice: her email changes.
        let r = upsert("'alice.new@example.com', p_external_id => 'ext-a1'");
        assert_eq!(
            (r["created"].as_bool(), r["customer_id"].as_str()),
            (Some(false), Some("c0000000-0000-0000-0000-0000000000a1"))
        );
        assert_eq!(
            text(&format!(
                "SELECT email FROM checkout.customers WHERE id = '{CUSTOMER_A1}'"
            )),
            "alice.new@example.com"
        );
        // ext-a1 (alice) with bob's email: an error naming both, nothing written.
        let before = text("SELECT checkout_test.row_counts() || (SELECT string_agg(email, ',' ORDER BY email) FROM checkout.customers)");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.upsert_customer_atomic('{ORG_A}', 'bob@example.com', 'ext-a1')"
            )),
            "23505"
        );
        assert_eq!(text("SELECT checkout_test.row_counts() || (SELECT string_agg(email, ',' ORDER BY email) FROM checkout.customers)"), before);
        // A new external_id with an existing email attaches the id to that customer.
        let r = upsert("'bob@example.com', p_external_id => 'ext-bob'");
        assert_eq!(r["customer_id"], "c0000000-0000-0000-0000-0000000000a2");
    }

    #[pg_test]
    fn invalid_arguments() {
        fixture();
        for (args, state) in [
            ("'not-an-email'", "22023"),
            ("NULL", "22004"),
            ("'a@example.com', p_metadata => '[1]'", "22023"),
            ("'a@example.com', p_external_id => ''", "22023"),
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.upsert_customer_atomic('{ORG_A}', {args})"
                )),
                state,
                "{args}"
            );
        }
        assert_eq!(
            sqlstate_of("SELECT checkout.upsert_customer_atomic(NULL, 'a@example.com')"),
            "22004"
        );
        assert_eq!(sqlstate_of("SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000009', 'a@example.com')"), "P0002", "unknown organization");
    }
}
