//! Trial eligibility (seed migration 003): one trial per (organization, customer, product), and no
//! second trial through a variant of an address that already had one.
use crate::email::{canonical, rules};
use crate::errors::{raise, required, Kind};
use crate::lookups::{Key, Lookups, Snapshot};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::json;

/// The verdict of [`eligibility`].
pub struct Eligibility {
    pub eligible: bool,
    pub result: serde_json::Value,
}

/// Whether `customer` may start a trial of `product`. `email` defaults to the customer's own.
/// Unknown (or deleted) customer, a customer of another organization than `organization` (when
/// given), or a product of another organization: ERROR P0002, the same for each.
///
/// Every step is a key lookup through an index (the customer; the product in its organization;
/// its own trial; its email history; customers of the organization holding one of the canonical
/// forms `email`'s or any this customer has had, and their trial). Stored forms are used; after a
/// rules change `renormalize_email_variants()` refreshes them. The lookups bypass the executor
/// (see `lookups`): as one SQL statement they cost twice the seed's whole function.
pub fn eligibility(
    organization: Option<Uuid>,
    customer: Uuid,
    product: Uuid,
    email: Option<&str>,
    snapshot: Snapshot,
) -> Eligibility {
    let checked_form = email.map(canonical);
    let lookups = if crate::citus::distributed() {
        // The tenant's shards, on the node its calls are delegated to. The seed form names no
        // organization, so neither its shards nor its node are known.
        let Some(organization) = organization else {
            raise(
                Kind::NotOnThisCluster,
                "check_trial_eligibility without p_organization_id is not available on a distributed install",
                Some(format!("customer_id: {customer}")),
                Some("Call check_trial_eligibility(p_organization_id, p_customer_id, p_product_id, p_email)."),
            )
        };
        let tables = [
            c"customers",
            c"products",
            c"trial_history",
            c"customer_email_variants",
        ];
        Lookups::begin_on_shards(
            snapshot,
            crate::citus::tenant_shards("check_trial_eligibility", &organization, &tables),
        )
    } else {
        Lookups::begin(snapshot)
    };
    let customers = lookups.table(c"customers");
    let mut found: Option<(Uuid, String)> = None;
    // Tenant-first: with the organization, the primary key; the seed form, which has none,
    // finds the customer by id alone (customers_id_idx). Under 0.5.0's keys (the library updated,
    // the extension not yet), customers_pkey is (id).
    let tenant_first = lookups.leads_with(customers, c"customers_pkey", "organization_id");
    let (index, keys) = match (&organization, tenant_first) {
        (Some(org), true) => (
            c"customers_pkey",
            vec![
                Key::Uuid("organization_id", org),
                Key::Uuid("id", &customer),
            ],
        ),
        (None, true) => (c"customers_id_idx", vec![Key::Uuid("id", &customer)]),
        (_, false) => (c"customers_pkey", vec![Key::Uuid("id", &customer)]),
    };
    lookups.scan(customers, index, &keys, |row| {
        if !row.is_null("deleted_at") {
            return false;
        }
        // The email only when none was passed: it is not in the index, so reading it costs
        // the heap fetch the other columns avoid.
        let own_email = match email {
            Some(_) => Some(String::new()),
            None => row.text("email"),
        };
        found = row.uuid("organization_id").zip(own_email);
        false
    });
    let (organization, own_email) = match (found, organization) {
        (Some((found_in, email)), Some(wanted)) if found_in == wanted => (found_in, email),
        // Another tenant's customer is reported exactly like a missing one.
        (_, Some(wanted)) => raise(
            Kind::NotFound,
            "customer not found in organization",
            Some(format!(
                "customer_id: {customer}, organization_id: {wanted}"
            )),
            Some("The customer does not exist, is deleted, or belongs to another organization."),
        ),
        (Some(found), None) => found,
        (None, None) => raise(
            Kind::NotFound,
            "customer not found",
            Some(format!("customer_id: {customer}")),
            Some("The customer does not exist or is deleted."),
        ),
    };
    let products = lookups.table(c"products");
    let mut product_found = false;
    let in_organization = [
        Key::Uuid("organization_id", &organization),
        Key::Uuid("id", &product),
    ];
    let products_key = if tenant_first {
        c"products_pkey"
    } else {
        c"products_org_id_key"
    };
    lookups.scan(products, products_key, &in_organization, |_| {
        product_found = true;
        false
    });
    if !product_found {
        raise(
            Kind::NotFound,
            "product not found in the customer's organization",
            Some(format!(
                "product_id: {product}, organization_id: {organization}"
            )),
            None,
        );
    }
    let trials = lookups.table(c"trial_history");
    let had_trial = |who: &Uuid| {
        let mut had = false;
        let keys = [
            Key::Uuid("organization_id", &organization),
            Key::Uuid("customer_id", who),
            Key::Uuid("product_id", &product),
        ];
        lookups.scan(trials, c"trial_history_one_per_product", &keys, |_| {
            had = true;
            false
        });
        had
    };
    if had_trial(&customer) {
        return Eligibility {
            eligible: false,
            result: json!({"eligible": false, "reason": "already_had_trial", "customer_id": customer.to_string()}),
        };
    }
    // The canonical forms to look for: the checked email's, then every one this customer has had.
    let variants = lookups.table(c"customer_email_variants");
    let mut forms: Vec<String> = checked_form.iter().cloned().collect();
    let own = [
        Key::Uuid("organization_id", &organization),
        Key::Uuid("customer_id", &customer),
    ];
    lookups.scan(variants, c"customer_email_variants_key", &own, |row| {
        if let Some(form) = row.text("email_normalized") {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
        true
    });
    for form in &forms {
        let mut matched: Option<Uuid> = None;
        let holders = [
            Key::Uuid("organization_id", &organization),
            Key::Text("email_normalized", form),
        ];
        lookups.scan(
            variants,
            c"idx_email_variants_normalized",
            &holders,
            |row| match row.uuid("customer_id") {
                Some(other) if other != customer && had_trial(&other) => {
                    matched = Some(other);
                    false
                }
                _ => true,
            },
        );
        if let Some(other) = matched {
            return Eligibility {
                eligible: false,
                result: json!({
                    "eligible": false,
                    "reason": "email_variation_detected",
                    "normalized_email": form,
                    "matched_customer_id": other.to_string(),
                }),
            };
        }
    }
    let normalized =
        checked_form.unwrap_or_else(|| rules::normalize(&own_email).unwrap_or(own_email));
    Eligibility {
        eligible: true,
        result: json!({"eligible": true, "reason": "no_previous_trial", "normalized_email": normalized}),
    }
}

/// The seed's `check_trial_eligibility`, tenant-aware and case-proof. `p_email` NULL (the
/// default): the customer's own email. Kept for the seed's callers; applications are granted the
/// organization-scoped form below.
///
/// Not SECURITY DEFINER: it resolves no name through `search_path` (its lookups name schema
/// checkout and read through the indexes, with no privilege check; on a Citus cluster it also runs
/// two fully qualified statements, operators pinned, on Citus catalogs PUBLIC may read), so it
/// needs neither the owner's rights nor a pinned search_path. Who may call it is decided by EXECUTE alone (revoked
/// from PUBLIC).
#[pg_extern(stable)]
fn check_trial_eligibility(
    p_customer_id: Option<Uuid>,
    p_product_id: Option<Uuid>,
    p_email: default!(Option<&str>, "NULL"),
) -> JsonB {
    let customer = required(p_customer_id, "p_customer_id");
    let product = required(p_product_id, "p_product_id");
    JsonB(eligibility(None, customer, product, p_email, Snapshot::Statement).result)
}

/// `check_trial_eligibility(p_organization_id, p_customer_id, p_product_id, p_email)`: the same
/// answer, for a customer of that organization only. Another organization's customer is P0002,
/// exactly like a missing one, so a caller learns nothing about other tenants.
#[pg_extern(stable, name = "check_trial_eligibility")]
fn check_trial_eligibility_in_organization(
    p_organization_id: Option<Uuid>,
    p_customer_id: Option<Uuid>,
    p_product_id: Option<Uuid>,
    p_email: default!(Option<&str>, "NULL"),
) -> JsonB {
    let organization = required(p_organization_id, "p_organization_id");
    let customer = required(p_customer_id, "p_customer_id");
    let product = required(p_product_id, "p_product_id");
    let verdict = eligibility(
        Some(organization),
        customer,
        product,
        p_email,
        Snapshot::Statement,
    );
    JsonB(verdict.result)
}

extension_sql_file!(
    "../sql/trials.sql",
    name = "trials",
    requires = [
        "email",
        check_trial_eligibility,
        check_trial_eligibility_in_organization
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{fixture, json, sqlstate_of, text};
    use crate::test_support::{
        CUSTOMER_A1, CUSTOMER_A2, CUSTOMER_B1, ORG_A, ORG_B, PRODUCT_A1, PRODUCT_B1,
    };
    use pgrx::prelude::*;

    fn eligibility(customer: &str, email: Option<&str>) -> serde_json::Value {
        Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT checkout.check_trial_eligibility($1::uuid, $2::uuid, $3)",
            &[customer.into(), PRODUCT_A1.into(), email.into()],
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
            &[ORG_A.into(), customer.into(), PRODUCT_A1.into()],
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
        Spi::run(&format!("INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
                  VALUES ('{ORG_B}', '{CUSTOMER_B1}',
                          '{PRODUCT_B1}', now(), now())")).unwrap();
        assert_eq!(
            eligibility("c0000000-0000-0000-0000-0000000000a1", None)["eligible"],
            true
        );
    }

    #[pg_test]
    fn the_organization_scoped_form_answers_only_for_its_own_customers() {
        fixture();
        let scoped = |org: &str, customer: &str| {
            format!("SELECT checkout.check_trial_eligibility('{org}'::uuid, '{customer}'::uuid, '{PRODUCT_A1}'::uuid)")
        };
        let alice = "c0000000-0000-0000-0000-0000000000a1";
        give_trial(alice);
        // The same answer as the seed form for the organization's own customer...
        assert_eq!(
            json(&scoped(ORG_A, alice)),
            eligibility(alice, None),
            "same verdict as the seed form"
        );
        assert_eq!(json(&scoped(ORG_A, alice))["reason"], "already_had_trial");
        // ...and another organization's customer is reported exactly like a missing one.
        let org_b = ORG_B;
        let other = text(&format!(
            "SELECT checkout_test.error_of($$ {} $$)",
            scoped(org_b, alice)
        ));
        let missing = text(&format!(
            "SELECT checkout_test.error_of($$ {} $$)",
            scoped(org_b, "c0000000-0000-0000-0000-000000000999")
        ));
        assert!(
            other.starts_with("P0002: customer not found in organization"),
            "{other}"
        );
        assert_eq!(other, missing);
        assert_eq!(
            sqlstate_of(&format!("SELECT checkout.check_trial_eligibility(NULL::uuid, '{alice}'::uuid, '{PRODUCT_A1}'::uuid)")),
            "22004"
        );
        // The seed form's p_email has the default docs/api.md promises.
        assert_eq!(
            json(&format!(
                "SELECT checkout.check_trial_eligibility('{alice}'::uuid, '{PRODUCT_A1}'::uuid)"
            ))["reason"],
            "already_had_trial"
        );
    }

    #[pg_test]
    fn unknown_customer_product_and_null_arguments_are_errors() {
        fixture();
        assert_eq!(sqlstate_of(&format!("SELECT checkout.check_trial_eligibility('c0000000-0000-0000-0000-000000000999', '{PRODUCT_A1}', NULL)")), "P0002");
        // Org B's product for org A's customer.
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.check_trial_eligibility('{CUSTOMER_A1}', '{PRODUCT_B1}', NULL)"
            )),
            "P0002"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.check_trial_eligibility(NULL, '{PRODUCT_A1}', NULL)"
            )),
            "22004"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.check_trial_eligibility('{CUSTOMER_A1}', NULL, NULL)"
            )),
            "22004"
        );
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.check_trial_eligibility('{CUSTOMER_A1}', '{PRODUCT_A1}', 'bad')"
            )),
            "22023"
        );
        Spi::run(&format!(
            "UPDATE checkout.customers SET deleted_at = now() WHERE id = '{CUSTOMER_A1}'"
        ))
        .unwrap();
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.check_trial_eligibility('{CUSTOMER_A1}', '{PRODUCT_A1}', NULL)"
            )),
            "P0002"
        );
    }

    #[pg_test]
    fn one_trial_per_customer_and_product() {
        fixture();
        give_trial("c0000000-0000-0000-0000-0000000000a1");
        let again = &format!("INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end) VALUES ('{ORG_A}', '{CUSTOMER_A1}', '{PRODUCT_A1}', now(), now())");
        assert_eq!(sqlstate_of(again), "23505");
    }

    /// EXECUTE alone decides who may call it (it reads without privilege checks), and what a
    /// caller plants in its search_path changes nothing (it resolves no names through it).
    #[pg_test]
    fn only_granted_roles_call_it_and_search_path_changes_nothing() {
        fixture();
        give_trial("c0000000-0000-0000-0000-0000000000a1");
        let call = &format!("SELECT checkout.check_trial_eligibility('{CUSTOMER_A2}', '{PRODUCT_A1}', 'ALICE@example.com')");
        let expected = json(call);
        assert_eq!(expected["reason"], "email_variation_detected");
        Spi::run("CREATE ROLE ck_trial_nobody; CREATE ROLE ck_trial_app;
                  GRANT USAGE ON SCHEMA checkout, checkout_test TO ck_trial_nobody, ck_trial_app;
                  GRANT EXECUTE ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) TO ck_trial_app;
                  SET LOCAL ROLE ck_trial_nobody").unwrap();
        assert_eq!(sqlstate_of(call), "42501");
        Spi::run("RESET ROLE; SET LOCAL ROLE ck_trial_app").unwrap();
        assert_eq!(json(call), expected);
        assert_eq!(sqlstate_of("SELECT 1 FROM checkout.trial_history"), "42501");
        Spi::run("RESET ROLE;
                  CREATE SCHEMA evil_trials;
                  CREATE TABLE evil_trials.customers (LIKE checkout.customers);
                  CREATE TABLE evil_trials.trial_history (LIKE checkout.trial_history);
                  CREATE FUNCTION evil_trials.lower(text) RETURNS text LANGUAGE sql AS 'SELECT ''hijacked''';
                  CREATE FUNCTION evil_trials.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
                  SET LOCAL search_path = evil_trials, pg_catalog, checkout").unwrap();
        assert_eq!(json(call), expected);
        Spi::run("RESET search_path").unwrap();
    }

    /// Lookups follow the catalog: an index dropped and re-created under its name is found again
    /// (the cached OID is forgotten), and one that would miss rows (partial) is refused, not used.
    #[pg_test]
    fn a_replaced_index_is_followed_or_refused() {
        fixture();
        give_trial("c0000000-0000-0000-0000-0000000000a1");
        let call = &format!("SELECT checkout.check_trial_eligibility('{CUSTOMER_A2}', '{PRODUCT_A1}', 'alice@example.com')");
        let expected = json(call);
        assert_eq!(expected["reason"], "email_variation_detected");
        Spi::run("DROP INDEX checkout.idx_email_variants_normalized;
                  CREATE INDEX idx_email_variants_normalized ON checkout.customer_email_variants (organization_id, email_normalized)
                    WHERE email_domain <> 'example.com'").unwrap();
        assert_eq!(
            text(&format!("SELECT checkout_test.error_of($q${call}$q$)")),
            "XX000: checkout: index checkout.idx_email_variants_normalized is not usable",
            "a partial index would miss the match"
        );
        Spi::run("DROP INDEX checkout.idx_email_variants_normalized;
                  CREATE INDEX idx_email_variants_normalized ON checkout.customer_email_variants (organization_id, email_normalized)").unwrap();
        assert_eq!(json(call), expected);
    }

    /// Every lookup is an index scan, over 100k generated customers with variants and trials: the
    /// transaction's own scan counters (pg_stat_xact_*) around calls that take every path.
    #[pg_test]
    fn lookups_use_indexes_at_100k_customers() {
        fixture();
        Spi::run(
            &format!("INSERT INTO checkout.customers (organization_id, email)
             SELECT '{ORG_A}', 'user' || g || '@example.com' FROM generate_series(1, 100000) g;
             INSERT INTO checkout.products (organization_id, name)
             SELECT '{ORG_A}', 'product ' || g FROM generate_series(1, 1000) g;
             INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
             SELECT organization_id, id, '{PRODUCT_A1}', now(), now() FROM checkout.customers
             WHERE email LIKE 'user%0@example.com';
             -- a customer whose earlier address is a variant of user10's (who had the trial)
             UPDATE checkout.customers SET email = 'User10+old@Example.com' WHERE id = '{CUSTOMER_A1}';
             UPDATE checkout.customers SET email = 'alice@example.com' WHERE id = '{CUSTOMER_A1}';
             ANALYZE checkout.customers, checkout.customer_email_variants, checkout.trial_history, checkout.products;"),
        )
        .unwrap();
        let scans = || {
            Spi::get_one::<String>(
                "SELECT string_agg(format('%s:%s', relname, seq_scan), ' ' ORDER BY relname)
                 FROM pg_stat_xact_user_tables WHERE schemaname = 'checkout'",
            )
            .unwrap()
            .unwrap()
        };
        let index_scans = |index: &str| {
            Spi::get_one::<i64>(&format!(
                "SELECT pg_stat_get_xact_numscans('checkout.{index}'::regclass)"
            ))
            .unwrap()
            .unwrap()
        };
        let indexes = [
            "customers_pkey",
            "customers_id_idx",
            "products_pkey",
            "trial_history_one_per_product",
            "customer_email_variants_key",
            "idx_email_variants_normalized",
        ];
        let seq_before = scans();
        let idx_before: Vec<i64> = indexes.iter().map(|i| index_scans(i)).collect();
        // The history path (matched through an earlier address), the checked-email path, and a
        // customer with no match at all.
        assert_eq!(
            eligibility("c0000000-0000-0000-0000-0000000000a1", None)["reason"],
            "email_variation_detected"
        );
        assert_eq!(
            eligibility(
                "c0000000-0000-0000-0000-0000000000a1",
                Some("USER20@example.com")
            )["reason"],
            "email_variation_detected"
        );
        assert_eq!(
            eligibility(
                "c0000000-0000-0000-0000-0000000000a2",
                Some("nobody@example.com")
            )["eligible"],
            true
        );
        // The organization's form finds the customer through the primary key.
        let in_org = Spi::get_one::<pgrx::JsonB>(&format!(
            "SELECT checkout.check_trial_eligibility('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A1}', NULL)"
        ))
        .expect("query failed")
        .expect("NULL result")
        .0;
        assert_eq!(
            in_org,
            eligibility("c0000000-0000-0000-0000-0000000000a2", None)
        );
        assert_eq!(scans(), seq_before, "a lookup did a sequential scan");
        for (index, before) in indexes.iter().zip(idx_before) {
            assert!(index_scans(index) > before, "{index} was not used");
        }
        // The counters do see a sequential scan.
        Spi::run(&format!("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; SELECT count(*) FROM checkout.trial_history WHERE customer_id = '{CUSTOMER_A2}'")).unwrap();
        assert_ne!(scans(), seq_before);
    }
}
