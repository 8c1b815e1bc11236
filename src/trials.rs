//! Trial eligibility (seed migration 003): one trial per (organization, customer, product), and no
//! second trial through a variant of an address that already had one.
use crate::email::{canonical, rules};
use crate::errors::{raise, required, Kind};
use crate::plans::{first_row, kept, not_null, ok};
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::json;

const UUID: PgOid = PgOid::BuiltIn(PgBuiltInOids::UUIDOID);
const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);

/// One statement, all index lookups: the customer, whether the product is in its organization,
/// whether it had this trial, and another customer of the organization who had this trial and holds
/// one of the canonical forms: `$3` (the checked email's) or any this customer has had. Stored forms
/// are used; after a rules change `renormalize_email_variants()` refreshes them.
pub const ELIGIBILITY_SQL: &str = "
SELECT c.email,
       EXISTS (SELECT 1 FROM checkout.products p WHERE p.organization_id = c.organization_id AND p.id = $2),
       EXISTS (SELECT 1 FROM checkout.trial_history th
               WHERE th.organization_id = c.organization_id AND th.customer_id = c.id AND th.product_id = $2),
       m.customer_id, m.email_normalized, c.organization_id
FROM checkout.customers c
LEFT JOIN LATERAL (
  SELECT th.customer_id, v.email_normalized
  FROM checkout.customer_email_variants v
  JOIN checkout.trial_history th
    ON th.organization_id = v.organization_id AND th.customer_id = v.customer_id AND th.product_id = $2
  WHERE v.organization_id = c.organization_id AND v.customer_id <> c.id
    AND v.email_normalized = ANY (ARRAY[$3] || ARRAY(
          SELECT o.email_normalized FROM checkout.customer_email_variants o
          WHERE o.organization_id = c.organization_id AND o.customer_id = c.id))
  LIMIT 1
) m ON true
WHERE c.id = $1 AND c.deleted_at IS NULL";

/// The verdict of [`eligibility`].
pub struct Eligibility {
    pub eligible: bool,
    pub result: serde_json::Value,
}

/// Whether `customer` may start a trial of `product`. `email` defaults to the customer's own.
/// Unknown (or deleted) customer, or a product of another organization: ERROR P0002.
pub fn eligibility(
    client: &pgrx::spi::SpiClient<'_>,
    customer: Uuid,
    product: Uuid,
    email: Option<&str>,
) -> Eligibility {
    let checked_form = email.map(canonical);
    let plan = kept(client, ELIGIBILITY_SQL, &[UUID, UUID, TEXT], false);
    let row = ok(client.select(
        plan,
        Some(1),
        &[
            customer.into(),
            product.into(),
            checked_form.as_deref().into(),
        ],
    ));
    let Some(row) = first_row(row) else {
        raise(
            Kind::NotFound,
            "customer not found",
            Some(format!("customer_id: {customer}")),
            Some("The customer does not exist or is deleted."),
        );
    };
    let own_email: String = not_null(row.get(1), "customers.email");
    if !ok(row.get::<bool>(2)).unwrap_or(false) {
        let organization: Option<Uuid> = ok(row.get(6));
        raise(
            Kind::NotFound,
            "product not found in the customer's organization",
            Some(format!(
                "product_id: {product}, organization_id: {}",
                organization.map(|o| o.to_string()).unwrap_or_default()
            )),
            None,
        );
    }
    if ok(row.get::<bool>(3)).unwrap_or(false) {
        return Eligibility {
            eligible: false,
            result: json!({"eligible": false, "reason": "already_had_trial", "customer_id": customer.to_string()}),
        };
    }
    let normalized =
        checked_form.unwrap_or_else(|| rules::normalize(&own_email).unwrap_or(own_email));
    if let Some(other) = ok(row.get::<Uuid>(4)) {
        let form: Option<String> = ok(row.get(5));
        return Eligibility {
            eligible: false,
            result: json!({
                "eligible": false,
                "reason": "email_variation_detected",
                "normalized_email": form.unwrap_or(normalized),
                "matched_customer_id": other.to_string(),
            }),
        };
    }
    Eligibility {
        eligible: true,
        result: json!({"eligible": true, "reason": "no_previous_trial", "normalized_email": normalized}),
    }
}

/// The seed's `check_trial_eligibility`, tenant-aware and case-proof. `p_email` NULL: the
/// customer's own email.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn check_trial_eligibility(
    p_customer_id: Option<Uuid>,
    p_product_id: Option<Uuid>,
    p_email: Option<&str>,
) -> JsonB {
    let customer = required(p_customer_id, "p_customer_id");
    let product = required(p_product_id, "p_product_id");
    Spi::connect(|client| JsonB(eligibility(&client, customer, product, p_email).result))
}

extension_sql_file!(
    "../sql/trials.sql",
    name = "trials",
    requires = ["email", check_trial_eligibility]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{fixture, sqlstate_of};
    use pgrx::prelude::*;

    const ORG_A: &str = "a0000000-0000-0000-0000-000000000001";
    const PRO_A: &str = "b0000000-0000-0000-0000-0000000000a1";

    fn eligibility(customer: &str, email: Option<&str>) -> serde_json::Value {
        Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT checkout.check_trial_eligibility($1::uuid, $2::uuid, $3)",
            &[customer.into(), PRO_A.into(), email.into()],
        )
        .expect("query failed")
        .expect("NULL result")
        .0
    }

    fn new_customer(email: &str) -> String {
        Spi::get_one_with_args::<String>(
            "INSERT INTO checkout.customers (organization_id, email) VALUES ($1::uuid, $2) RETURNING id::text",
            &[ORG_A.into(), email.into()],
        )
        .unwrap()
        .unwrap()
    }

    fn give_trial(customer: &str) {
        Spi::run_with_args(
            "INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
             VALUES ($1::uuid, $2::uuid, $3::uuid, now(), now() + interval '14 days')",
            &[ORG_A.into(), customer.into(), PRO_A.into()],
        )
        .unwrap();
    }

    #[pg_test]
    fn eligible_then_already_had_trial() {
        fixture();
        let c = new_customer("fresh@example.com");
        let r = eligibility(&c, None);
        assert_eq!(r["eligible"], true);
        assert_eq!(r["reason"], "no_previous_trial");
        give_trial(&c);
        let r = eligibility(&c, None);
        assert_eq!(
            (r["eligible"].clone(), r["reason"].clone()),
            (false.into(), "already_had_trial".into())
        );
        assert_eq!(r["customer_id"], c.as_str());
    }

    #[pg_test]
    fn variants_of_an_address_that_had_a_trial_are_caught() {
        fixture();
        let first = new_customer("john.doe@gmail.com");
        give_trial(&first);
        // The seed let all of these through.
        for variant in [
            "X.John.Doe+3@GMail.com",
            "J.O.H.N.D.O.E@googlemail.com",
            "johndoe+trial2@GMAIL.COM",
        ] {
            let variant = variant.replace("X.", "");
            let second = new_customer(&variant);
            let r = eligibility(&second, None);
            assert_eq!(r["eligible"], false, "{variant}");
            assert_eq!(r["reason"], "email_variation_detected");
            assert_eq!(r["normalized_email"], "johndoe@gmail.com");
            assert_eq!(r["matched_customer_id"], first.as_str());
            Spi::run_with_args(
                "DELETE FROM checkout.customers WHERE id = $1::uuid",
                &[second.as_str().into()],
            )
            .unwrap();
        }
        // A customer who once had that address and changed it is caught through its history.
        let changer = new_customer("JohnDoe@gmail.com.");
        Spi::run_with_args(
            "UPDATE checkout.customers SET email = 'brand.new@example.com' WHERE id = $1::uuid",
            &[changer.as_str().into()],
        )
        .unwrap();
        assert_eq!(
            eligibility(&changer, None)["reason"],
            "email_variation_detected"
        );
        // An explicit p_email is checked as well.
        let other = new_customer("someone@example.com");
        assert_eq!(
            eligibility(&other, Some("John.Doe@GoogleMail.com"))["eligible"],
            false
        );
        assert_eq!(eligibility(&other, None)["eligible"], true);
    }

    #[pg_test]
    fn other_organizations_history_never_counts() {
        fixture();
        // Org B's alice had a trial of org B's product; org A's alice is still eligible for org A's.
        Spi::run("INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
                  VALUES ('a0000000-0000-0000-0000-000000000002', 'c0000000-0000-0000-0000-0000000000b1',
                          'b0000000-0000-0000-0000-0000000000b1', now(), now())").unwrap();
        assert_eq!(
            eligibility("c0000000-0000-0000-0000-0000000000a1", None)["eligible"],
            true
        );
    }

    #[pg_test]
    fn unknown_customer_product_and_null_arguments_are_errors() {
        fixture();
        assert_eq!(sqlstate_of("SELECT checkout.check_trial_eligibility('c0000000-0000-0000-0000-000000000999', 'b0000000-0000-0000-0000-0000000000a1', NULL)"), "P0002");
        // Org B's product for org A's customer.
        assert_eq!(sqlstate_of("SELECT checkout.check_trial_eligibility('c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000b1', NULL)"), "P0002");
        assert_eq!(sqlstate_of("SELECT checkout.check_trial_eligibility(NULL, 'b0000000-0000-0000-0000-0000000000a1', NULL)"), "22004");
        assert_eq!(sqlstate_of("SELECT checkout.check_trial_eligibility('c0000000-0000-0000-0000-0000000000a1', NULL, NULL)"), "22004");
        assert_eq!(sqlstate_of("SELECT checkout.check_trial_eligibility('c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', 'bad')"), "22023");
        Spi::run("UPDATE checkout.customers SET deleted_at = now() WHERE id = 'c0000000-0000-0000-0000-0000000000a1'").unwrap();
        assert_eq!(sqlstate_of("SELECT checkout.check_trial_eligibility('c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', NULL)"), "P0002");
    }

    #[pg_test]
    fn one_trial_per_customer_and_product() {
        fixture();
        give_trial("c0000000-0000-0000-0000-0000000000a1");
        let again = "INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end) VALUES ('a0000000-0000-0000-0000-000000000001', 'c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', now(), now())";
        assert_eq!(sqlstate_of(again), "23505");
    }

    /// Every lookup is an index scan, over 100k generated customers with variants and trials.
    #[pg_test]
    fn lookups_use_indexes_at_100k_customers() {
        fixture();
        Spi::run(
            "INSERT INTO checkout.customers (organization_id, email)
             SELECT 'a0000000-0000-0000-0000-000000000001', 'user' || g || '@example.com' FROM generate_series(1, 100000) g;
             INSERT INTO checkout.products (organization_id, name)
             SELECT 'a0000000-0000-0000-0000-000000000001', 'product ' || g FROM generate_series(1, 1000) g;
             INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
             SELECT organization_id, id, 'b0000000-0000-0000-0000-0000000000a1', now(), now() FROM checkout.customers
             WHERE email LIKE 'user%0@example.com';
             ANALYZE checkout.customers, checkout.customer_email_variants, checkout.trial_history, checkout.products;
             SET LOCAL plan_cache_mode = force_generic_plan; -- what the function runs",
        )
        .unwrap();
        let args = "('c0000000-0000-0000-0000-0000000000a1', 'b0000000-0000-0000-0000-0000000000a1', 'user10@example.com')";
        Spi::run(&format!(
            "PREPARE ck_eligibility AS {}",
            super::ELIGIBILITY_SQL
        ))
        .unwrap();
        let text = Spi::get_one::<String>(&format!(
            "SELECT string_agg(line, E'\\n') FROM checkout_test.explain_lines($q$EXECUTE ck_eligibility{args}$q$) line"
        ))
        .unwrap()
        .unwrap();
        assert!(
            !text.contains("Seq Scan"),
            "eligibility lookup does a sequential scan:\n{text}"
        );
        assert!(text.matches("Index").count() >= 5, "{text}");
    }
}
