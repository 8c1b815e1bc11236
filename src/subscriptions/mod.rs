//! `create_subscription_atomic` (seed migration 006): validated, tenant-safe, exactly once.
//!
//! A call runs few statements: the idempotency key (when given: look up, claim), one tenant check
//! of customer, product and features, one trial lookup, claim and link (when a trial is granted),
//! one data-modifying statement for every other write, and the key's answer. Races on one pair are decided
//! by the partial unique index on active/trialing subscriptions (`ON CONFLICT DO NOTHING` waits
//! for an in-flight insert), so racers get the winner's id.
use crate::audit::{self, Change};
use crate::errors::{raise, required, Kind};
use crate::idempotency::{self, Claim};
use crate::json_arg::JsonText;
use crate::lookups::Snapshot;
use crate::plans::{first_row, ok, query, select, update};
use crate::trials;
use pgrx::datum::DatumWithOid;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};

pub mod input;
pub mod lifecycle;
pub mod states;
pub mod triggers;

const OPERATION: &str = "create_subscription_atomic";

/// The tenant check alone, before a trial is looked up and claimed (a create without a trial checks
/// inside create_subscription.sql, one statement fewer).
fn tenant_sql() -> &'static str {
    query!("tenant_check.sql", "features" => "$4")
}

/// Every write of a creation in one statement (sql/queries/create_subscription.sql), with the
/// audit row, counters and metrics the triggers would write.
fn create_sql() -> &'static str {
    query!("create_subscription.sql", "tenant" => &tenant_in_create())
}

fn tenant_in_create() -> String {
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql/queries/tenant_check.sql"
    ))
    .replace("{features}", "$19")
}

/// A granted trial is claimed on the unique (organization, customer, product) before the
/// subscription is written: a concurrent claim of the same trial waits here, and a trial that
/// another call granted meanwhile (its subscription already canceled, so the pair is free) is
/// refused instead of failing the call with a unique violation.
const TRIAL_CLAIM_SQL: &str = "
INSERT INTO checkout.trial_history (organization_id, customer_id, product_id, trial_start, trial_end)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (organization_id, customer_id, product_id) DO NOTHING
RETURNING id";

/// The trial this call claimed now names its subscription. A statement of its own, run only when a
/// trial was granted: in create_subscription.sql it would open trial_history and its indexes on every create.
const TRIAL_LINK_SQL: &str =
    "UPDATE checkout.trial_history SET subscription_id = $3 WHERE organization_id = $1 AND id = $2";

/// The claim of a call that wrote no subscription after all (the pair already has one).
const TRIAL_RELEASE_SQL: &str =
    "DELETE FROM checkout.trial_history WHERE organization_id = $1 AND id = $2";

/// The active/trialing subscription of a (customer, product) pair, other than `$4` (NULL: any).
/// create_subscription_atomic names it when the pair is taken; a reactivation or plan change
/// refuses when another one holds the pair.
const ACTIVE_SQL: &str = "
SELECT id FROM checkout.subscriptions
WHERE organization_id = $1 AND customer_id = $2 AND product_id = $3 AND status IN ('active', 'trialing')
  AND id IS DISTINCT FROM $4";

#[track_caller]
fn invalid(message: String) -> ! {
    raise(
        Kind::InvalidParameter,
        message,
        None,
        Some("See docs/api.md, create_subscription_atomic: the p_subscription fields."),
    )
}

fn parse_uuid(s: &str) -> Uuid {
    match uuid::Uuid::parse_str(s) {
        Ok(u) => Uuid::from_bytes(*u.as_bytes()),
        Err(_) => invalid(format!("not a UUID: {}", input::shown(s))),
    }
}

/// The elements of `p_features`, each read as JSON (ERROR naming the element it cannot read). The
/// count is checked before any is read, and a long array can be canceled.
pub fn feature_elements(p_features: Option<Array<JsonText>>) -> Result<Vec<Option<Value>>, String> {
    let Some(array) = p_features else {
        return Ok(Vec::new());
    };
    input::feature_count(array.len())?;
    Ok(array
        .iter()
        .enumerate()
        .map(|(i, element)| {
            pg_sys::check_for_interrupts!();
            element.map(|e| e.parse(&format!("p_features[{}]", i + 1)))
        })
        .collect())
}

/// What a create's tenant check is about.
struct Tenant<'a> {
    organization: Uuid,
    customer: Uuid,
    product: Uuid,
    features: &'a [input::Feature],
}

impl Tenant<'_> {
    /// Runs the tenant check on its own (tenant_check.sql) and raises as `require` does.
    fn check(&self, client: &SpiClient<'_>, feature_ids: &[Uuid]) {
        let args = [
            self.organization.into(),
            self.customer.into(),
            self.product.into(),
            feature_ids.to_vec().into(),
        ];
        let row = select(client, tenant_sql(), Some(1), &args);
        let row = row.first();
        self.require(
            ok(row.get::<bool>(1)).unwrap_or(false),
            ok(row.get::<bool>(2)).unwrap_or(false),
            ok(row.get::<i64>(3)).unwrap_or(0),
        );
    }

    /// Raises P0002 unless the check found the customer (not deleted), the product and every
    /// feature in the organization.
    fn require(&self, customer_found: bool, product_found: bool, features_found: i64) {
        if !customer_found {
            raise(
                Kind::NotFound,
                "customer not found in organization",
                Some(format!(
                    "customer_id: {}, organization_id: {}",
                    self.customer, self.organization
                )),
                Some(
                    "The customer does not exist, is deleted, or belongs to another organization.",
                ),
            );
        }
        require_product_and_features(
            self.organization,
            self.product,
            product_found,
            features_found,
            self.features,
        );
    }
}

/// Raises P0002 unless a tenant check found the product and every feature in the organization.
fn require_product_and_features(
    organization: Uuid,
    product: Uuid,
    product_found: bool,
    features_found: i64,
    features: &[input::Feature],
) {
    if !product_found {
        raise(
            Kind::NotFound,
            "product not found in organization",
            Some(format!(
                "product_id: {product}, organization_id: {organization}"
            )),
            None,
        );
    }
    if features_found != features.len() as i64 {
        // The first ids only: a DETAIL is written to the server log, and p_features may be long.
        const SHOWN: usize = 10;
        let ids: Vec<&str> = features
            .iter()
            .take(SHOWN)
            .map(|f| f.feature_id.as_str())
            .collect();
        let more = match features.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        raise(
            Kind::NotFound,
            "feature not found in organization",
            Some(format!(
                "one of feature_ids: [{}]{more}, organization_id: {organization}",
                ids.join(", ")
            )),
            None,
        );
    }
}

fn timestamptz(micros: i64) -> TimestampWithTimeZone {
    match TimestampWithTimeZone::try_from(micros) {
        Ok(t) => t,
        Err(_) => invalid(format!("time out of range: {micros}")),
    }
}

/// The seed's signature. Returns `{"success": true, "subscription_id", "status", "trial_eligible"}`
/// or `{"success": false, "error": "subscription_exists", "existing_subscription_id"}`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn create_subscription_atomic(
    p_subscription: Option<JsonText>,
    p_features: Option<Array<JsonText>>,
    p_customer_id: Option<Uuid>,
    p_product_id: Option<Uuid>,
    p_organization_id: Option<Uuid>,
    p_idempotency_key: default!(Option<&str>, "NULL"),
) -> JsonB {
    let raw = required(p_subscription, "p_subscription").parse("p_subscription");
    let customer = required(p_customer_id, "p_customer_id");
    let product = required(p_product_id, "p_product_id");
    let organization = required(p_organization_id, "p_organization_id");
    let sub = input::subscription(&raw).unwrap_or_else(|e| invalid(e));
    let elements = feature_elements(p_features).unwrap_or_else(|e| invalid(e));
    let features = input::features(&elements).unwrap_or_else(|e| invalid(e));

    let _routed = crate::citus::require_tenant_node(OPERATION, &organization);
    Spi::connect_mut(|client| {
        let key = match p_idempotency_key {
            None => None,
            Some(key) => {
                let request = json!({
                    "subscription": raw,
                    "features": features.iter().map(|f| json!([f.feature_id, f.metadata])).collect::<Vec<_>>(),
                    "customer_id": customer.to_string(),
                    "product_id": product.to_string(),
                })
                .to_string();
                match idempotency::claim(client, organization, key, OPERATION, &request) {
                    Claim::Replay(response) => return JsonB(response),
                    Claim::Owned(id) => Some((id, key)),
                }
            }
        };

        let feature_ids: Vec<Uuid> = features.iter().map(|f| parse_uuid(&f.feature_id)).collect();
        let tenant = Tenant {
            organization,
            customer,
            product,
            features: &features,
        };
        if sub.trial_end.is_some() {
            // Before the trial is looked up and claimed: its errors are the tenant check's.
            tenant.check(client, &feature_ids);
        }

        let mut trial_claim: Option<Uuid> = None;
        let (status, trial_eligible, trial_reason, trial_start, trial_end) = match sub.trial_end {
            None => (sub.status.clone(), None, None, None, None),
            Some(end) => {
                let mut verdict = trials::eligibility(
                    Some(organization),
                    customer,
                    product,
                    None,
                    Snapshot::Latest,
                );
                if verdict.eligible {
                    let start = sub.trial_start.unwrap_or(sub.current_period_start);
                    let claimed = update(
                        client,
                        TRIAL_CLAIM_SQL,
                        None,
                        &[
                            organization.into(),
                            customer.into(),
                            product.into(),
                            timestamptz(start).into(),
                            timestamptz(end).into(),
                        ],
                    );
                    trial_claim = first_row(claimed).and_then(|row| ok(row.get::<Uuid>(1)));
                    if trial_claim.is_none() {
                        verdict.eligible = false;
                        verdict.result["reason"] = "already_had_trial".into();
                    }
                }
                if verdict.eligible {
                    (
                        sub.status.clone(),
                        Some(true),
                        None,
                        sub.trial_start,
                        Some(end),
                    )
                } else {
                    // A refused trial becomes a paid subscription, and the result says so.
                    (
                        "active".to_owned(),
                        Some(false),
                        verdict.result.get("reason").cloned(),
                        None,
                        None,
                    )
                }
            }
        };

        let (feature_uuids, feature_metadata): (Vec<Uuid>, Vec<JsonB>) = feature_ids
            .into_iter()
            .zip(features.iter().map(|f| JsonB(f.metadata.clone())))
            .unzip();
        let version = |v: &Option<String>| v.as_deref().map(parse_uuid);
        // This statement writes its own audit row and counters, and the audit trigger stays out;
        // on a Citus cluster the trigger writes them (create_subscription_values.sql).
        let distributed = crate::citus::distributed();
        let _audit = audit::begin(Change {
            change_type: "created",
            changed_by: None,
            reason: distributed.then(|| OPERATION.to_owned()),
            self_audited: !distributed,
        });
        // The Citus path writes the grants in a statement of their own.
        let (ids, metadata): (Vec<Uuid>, Vec<JsonB>) = if distributed {
            let metadata = feature_metadata
                .iter()
                .map(|m| JsonB(m.0.clone()))
                .collect();
            (feature_uuids.clone(), metadata)
        } else {
            (Vec::new(), Vec::new())
        };
        let args: &[DatumWithOid; 20] = &[
            organization.into(),
            customer.into(),
            product.into(),
            status.as_str().into(),
            sub.stripe_subscription_id.as_deref().into(),
            sub.stripe_price_id.as_deref().into(),
            sub.amount.into(),
            sub.currency.as_str().into(),
            sub.interval.as_str().into(),
            sub.interval_count.into(),
            trial_start.map(timestamptz).into(),
            trial_end.map(timestamptz).into(),
            timestamptz(sub.current_period_start).into(),
            timestamptz(sub.current_period_end).into(),
            JsonB(sub.metadata.clone()).into(),
            key.as_ref().map(|(_, k)| *k).into(),
            version(&sub.product_version_id).into(),
            version(&sub.price_version_id).into(),
            feature_uuids.into(),
            feature_metadata.into(),
        ];
        let created_id = if distributed {
            // Citus: the tenant check, the insert and the grants as statements it routes to the
            // tenant's shard (create_subscription_values.sql says why).
            if sub.trial_end.is_none() {
                tenant.check(client, &ids); // a trial's create checked before the trial
            }
            let inserted = update(
                client,
                query!("create_subscription_values.sql"),
                None,
                &args[..18],
            );
            let id = first_row(inserted).and_then(|row| ok(row.get::<Uuid>(1)));
            if let (Some(id), false) = (id, features.is_empty()) {
                let grants = [
                    organization.into(),
                    customer.into(),
                    id.into(),
                    ids.into(),
                    metadata.into(),
                ];
                update(
                    client,
                    query!("create_subscription_grants.sql"),
                    None,
                    &grants,
                );
            }
            id
        } else {
            let created = update(client, create_sql(), None, args);
            // One row: the subscription's id (NULL when nothing was written) and the tenant check.
            let Some(row) = first_row(created) else {
                raise(
                    Kind::Internal,
                    "checkout: create_subscription_atomic's statement returned no row",
                    None,
                    None,
                )
            };
            let created_id = ok(row.get::<Uuid>(1));
            if created_id.is_none() {
                tenant.require(
                    ok(row.get::<bool>(2)).unwrap_or(false),
                    ok(row.get::<bool>(3)).unwrap_or(false),
                    ok(row.get::<i64>(4)).unwrap_or(0),
                );
            }
            created_id
        };
        let response = match created_id {
            Some(id) => {
                if let Some(claim) = trial_claim {
                    update(
                        client,
                        TRIAL_LINK_SQL,
                        None,
                        &[organization.into(), claim.into(), id.into()],
                    );
                }
                let mut r = json!({"success": true, "subscription_id": id.to_string(), "status": status, "trial_eligible": trial_eligible});
                if let Some(reason) = trial_reason {
                    r["trial_reason"] = reason;
                }
                r
            }
            None => {
                if let Some(claim) = trial_claim {
                    update(
                        client,
                        TRIAL_RELEASE_SQL,
                        None,
                        &[organization.into(), claim.into()],
                    );
                }
                let existing = select(
                    client,
                    ACTIVE_SQL,
                    Some(1),
                    &[
                        organization.into(),
                        customer.into(),
                        product.into(),
                        Option::<Uuid>::None.into(),
                    ],
                );
                let existing: Option<Uuid> = first_row(existing).and_then(|row| ok(row.get(1)));
                json!({"success": false, "error": "subscription_exists", "existing_subscription_id": existing.map(|u| u.to_string())})
            }
        };
        if let Some((id, _)) = key {
            idempotency::complete(client, &id, &response);
        }
        JsonB(response)
    })
}

extension_sql!(
    "REVOKE ALL ON FUNCTION checkout.create_subscription_atomic(jsonb, jsonb[], uuid, uuid, uuid, text) FROM PUBLIC;\n     ALTER FUNCTION checkout.create_subscription_atomic(jsonb, jsonb[], uuid, uuid, uuid, text) SET plan_cache_mode = force_generic_plan; -- see sql/trials.sql",
    name = "create_subscription_atomic_grants",
    requires = [create_subscription_atomic]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, json, sqlstate_of, text};
    use crate::test_support::{
        CUSTOMER_A1, CUSTOMER_A2, CUSTOMER_B1, ORG_A, ORG_B, PRODUCT_A1, PRODUCT_A2, PRODUCT_B1,
    };
    use pgrx::prelude::*;
    use serde_json::Value;

    // Customer a2 of org A has no subscription; product a1 of org A; features a1, a2 of org A.
    const CALL: &str = "checkout.create_subscription_atomic(checkout_test.sub(), ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a1\"}'::jsonb], 'c0000000-0000-0000-0000-0000000000a2', 'b0000000-0000-0000-0000-0000000000a1'";

    fn counts() -> String {
        text("SELECT checkout_test.row_counts()")
    }

    #[pg_test]
    fn creates_everything_the_seed_did() {
        fixture();
        let features = "ARRAY['{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a1\", \"metadata\": {\"seats\": 5}}'::jsonb, '{\"feature_id\": \"F0000000-0000-0000-0000-0000000000A2\"}', '{\"feature_id\": \"f0000000-0000-0000-0000-0000000000a1\", \"metadata\": {\"sso\": true}}']";
        Spi::run("UPDATE checkout.products SET metrics_last_calculated_at = now()").unwrap();
        let r = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), {features}, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(r["success"], true);
        assert_eq!(r["status"], "active");
        assert_eq!(r["trial_eligible"], Value::Null);
        let id = r["subscription_id"].as_str().unwrap().to_owned();
        let row = text(&format!("SELECT status || ' ' || amount || ' ' || currency || ' ' || interval || ' ' || interval_count || ' ' || (current_period_end - current_period_start) FROM checkout.subscriptions WHERE id = '{id}'"));
        assert_eq!(row, "active 1999 usd month 1 31 days");
        assert_eq!(text(&format!("SELECT change_type || ' ' || (new_values->>'id') FROM checkout.subscription_changes WHERE subscription_id = '{id}'")), format!("created {id}"));
        // Exactly one: the statement writes it and the audit trigger stays out (get_one above would
        // read the first of two).
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM checkout.subscription_changes WHERE subscription_id = '{id}'"
            )),
            1
        );
        assert_eq!(count("SELECT count(*) FROM checkout.check_invariants()"), 0);
        // Duplicates merged: two grants, metadata combined.
        assert_eq!(text(&format!("SELECT string_agg(metadata::text, ' ' ORDER BY feature_id) FROM checkout.feature_grants WHERE subscription_id = '{id}'")), r#"{"sso": true, "seats": 5} {}"#);
        assert_eq!(text(&format!("SELECT has_active_subscription || ' ' || subscription_count FROM checkout.customers WHERE id = '{CUSTOMER_A2}'")), "true 1");
        assert_eq!(text(&format!("SELECT (metrics_last_calculated_at IS NULL)::text FROM checkout.products WHERE id = '{PRODUCT_A1}'")), "true");
    }

    #[pg_test]
    fn duplicate_active_subscription_returns_the_seed_shape_and_writes_nothing() {
        fixture();
        let before = counts();
        let r = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, '{CUSTOMER_A1}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(
            r,
            serde_json::json!({"success": false, "error": "subscription_exists", "existing_subscription_id": "d0000000-0000-0000-0000-0000000000a1"})
        );
        assert_eq!(counts(), before);
        // A trialing request for the same pair is refused too (the seed allowed active + trialing).
        let r = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub('trialing', '{{\"trial_end\": \"2026-01-15T00:00:00Z\"}}'), NULL, '{CUSTOMER_A1}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(r["error"], "subscription_exists");
        assert_eq!(counts(), before);
    }

    #[pg_test]
    fn every_validation_error_is_22023_and_writes_nothing() {
        fixture();
        let before = counts();
        let bad_subscriptions = [
            r#"checkout_test.sub('bogus_status')"#,
            r#"checkout_test.sub() - 'current_period_end'"#,
            r#"checkout_test.sub('active', '{"curency": "usd"}')"#,
            r#"checkout_test.sub('active', '{"amount": -5}')"#,
            r#"checkout_test.sub('active', '{"amount": "12"}')"#,
            r#"checkout_test.sub('active', '{"currency": "dollars"}')"#,
            r#"checkout_test.sub('active', '{"interval": "decade"}')"#,
            r#"checkout_test.sub('active', '{"interval_count": 0}')"#,
            r#"checkout_test.sub('active', '{"current_period_end": "2025-01-01T00:00:00Z"}')"#,
            r#"checkout_test.sub('active', '{"current_period_end": "soon"}')"#,
            r#"checkout_test.sub('trialing')"#,
            r#"checkout_test.sub('trialing', '{"trial_start": "2026-01-20T00:00:00Z", "trial_end": "2026-01-10T00:00:00Z"}')"#,
            r#"checkout_test.sub('active', '{"metadata": "x"}')"#,
            r#"'[]'::jsonb"#,
        ];
        for sub in bad_subscriptions {
            let sql = format!("SELECT checkout.create_subscription_atomic({sub}, NULL, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')");
            assert_eq!(sqlstate_of(&sql), "22023", "{sub}");
        }
        for features in [
            r#"ARRAY['{"feature_id": "nope"}'::jsonb]"#,
            r#"ARRAY[NULL::jsonb]"#,
            r#"ARRAY['{"feature_id": "f0000000-0000-0000-0000-0000000000a1", "x": 1}'::jsonb]"#,
        ] {
            let sql = format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), {features}, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')");
            assert_eq!(sqlstate_of(&sql), "22023", "{features}");
        }
        for (i, arg) in [
            "p_subscription",
            "p_customer_id",
            "p_product_id",
            "p_organization_id",
        ]
        .iter()
        .enumerate()
        {
            let (customer, product, org) = (
                format!("'{CUSTOMER_A2}'"),
                format!("'{PRODUCT_A1}'"),
                format!("'{ORG_A}'"),
            );
            let mut args = ["checkout_test.sub()", "NULL", &customer, &product, &org];
            args[if i == 0 { 0 } else { i + 1 }] = "NULL";
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.create_subscription_atomic({})",
                    args.join(", ")
                )),
                "22004",
                "{arg}"
            );
        }
        assert_eq!(
            sqlstate_of(&format!("SELECT {CALL}, '{ORG_A}', '')")),
            "22023",
            "empty key"
        );
        assert_eq!(
            sqlstate_of(&format!("SELECT {CALL}, '{ORG_A}', repeat('k', 256))")),
            "22023",
            "long key"
        );
        assert_eq!(counts(), before);
    }

    #[pg_test]
    fn tenant_violations_are_refused() {
        fixture();
        let before = counts();
        let cases = [
            // org B's customer, org A's product, called as org A (and as org C)
            &format!("checkout_test.sub(), NULL, '{CUSTOMER_B1}', '{PRODUCT_A1}', '{ORG_A}'"),
            &format!("checkout_test.sub(), NULL, '{CUSTOMER_A2}', '{PRODUCT_B1}', '{ORG_A}'"),
            &format!("checkout_test.sub(), NULL, '{CUSTOMER_A2}', '{PRODUCT_A1}', 'a0000000-0000-0000-0000-000000000003'"),
            &format!("checkout_test.sub(), ARRAY['{{\"feature_id\": \"f0000000-0000-0000-0000-0000000000b1\"}}'::jsonb], '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}'"),
            &format!("checkout_test.sub(), NULL, 'c0000000-0000-0000-0000-000000000999', '{PRODUCT_A1}', '{ORG_A}'"),
        ];
        for args in cases {
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT checkout.create_subscription_atomic({args})"
                )),
                "P0002",
                "{args}"
            );
        }
        Spi::run(&format!(
            "UPDATE checkout.customers SET deleted_at = now() WHERE id = '{CUSTOMER_A2}'"
        ))
        .unwrap();
        assert_eq!(
            sqlstate_of(&format!("SELECT {CALL}, '{ORG_A}')")),
            "P0002",
            "deleted customer"
        );
        Spi::run(&format!(
            "UPDATE checkout.customers SET deleted_at = NULL WHERE id = '{CUSTOMER_A2}'"
        ))
        .unwrap();
        assert_eq!(counts(), before);
    }

    #[pg_test]
    fn trial_granted_then_refused_for_a_variant() {
        fixture();
        let trial = "checkout_test.sub('trialing', '{\"trial_end\": \"2026-01-15T00:00:00Z\"}')";
        let r = json(&format!("SELECT checkout.create_subscription_atomic({trial}, NULL, '{CUSTOMER_A2}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(
            (r["status"].as_str(), r["trial_eligible"].as_bool()),
            (Some("trialing"), Some(true))
        );
        assert_eq!(text(&format!("SELECT count(*)::text FROM checkout.trial_history WHERE customer_id = '{CUSTOMER_A2}'")), "1");
        // bob@example.com had the trial; B.o.b+x@Example.com is a variant only on Gmail-like rules,
        // so use the sub-address rule: bob+again@example.com.
        let variant = text(&format!("INSERT INTO checkout.customers (organization_id, email) VALUES ('{ORG_A}', 'Bob+again@Example.com') RETURNING id::text"));
        let r = json(&format!("SELECT checkout.create_subscription_atomic({trial}, NULL, '{variant}', '{PRODUCT_A1}', '{ORG_A}')"));
        assert_eq!(r["status"], "active", "{r}");
        assert_eq!(r["trial_eligible"], false);
        assert_eq!(r["trial_reason"], "email_variation_detected");
        let id = r["subscription_id"].as_str().unwrap();
        assert_eq!(text(&format!("SELECT status || ' ' || (trial_end IS NULL) FROM checkout.subscriptions WHERE id = '{id}'")), "active true");
        assert_eq!(
            text(&format!(
                "SELECT count(*)::text FROM checkout.trial_history WHERE customer_id = '{variant}'"
            )),
            "0"
        );
    }

    #[pg_test]
    fn idempotency_replay_mismatch_expiry_rollback_and_pending() {
        fixture();
        let first = json(&format!("SELECT {CALL}, '{ORG_A}', 'key-1')"));
        assert_eq!(first["success"], true);
        let after_first = counts();
        let replay = json(&format!("SELECT {CALL}, '{ORG_A}', 'key-1')"));
        let mut expected = first.clone();
        expected["replayed"] = true.into();
        assert_eq!(replay, expected);
        assert_eq!(counts(), after_first, "a replay writes nothing");
        assert_eq!(text("SELECT idempotency_key FROM checkout.subscriptions WHERE idempotency_key IS NOT NULL"), "key-1");

        // Same key, other parameters or operation: 55000, nothing written.
        let other = &format!("checkout.create_subscription_atomic(checkout_test.sub('active', '{{\"amount\": 5}}'), NULL, '{CUSTOMER_A2}', '{PRODUCT_A2}', '{ORG_A}', 'key-1')");
        assert_eq!(sqlstate_of(&format!("SELECT {other}")), "55000");
        Spi::run("UPDATE checkout.idempotency_keys SET operation = 'refund' WHERE key = 'key-1'")
            .unwrap();
        assert_eq!(
            sqlstate_of(&format!("SELECT {CALL}, '{ORG_A}', 'key-1')")),
            "55000"
        );
        assert_eq!(counts(), after_first);

        // The same key string in another organization is another key.
        let org_b = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, '{CUSTOMER_B1}', '{PRODUCT_B1}', '{ORG_B}', 'key-1')"));
        assert_eq!(org_b["success"], true);
        assert_ne!(org_b["subscription_id"], first["subscription_id"]);

        // An expired key counts as absent: the call runs again (here: the pair now has a subscription).
        Spi::run(&format!("UPDATE checkout.idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'key-1' AND organization_id = '{ORG_A}'")).unwrap();
        let again = json(&format!("SELECT {CALL}, '{ORG_A}', 'key-1')"));
        assert_eq!(again["error"], "subscription_exists");
        Spi::run("SET LOCAL checkout.idempotency_key_ttl = '1h'").unwrap();
        assert_eq!(
            json(&format!("SELECT {CALL}, '{ORG_A}', 'key-1')"))["replayed"],
            true
        );

        // A failing call rolls its key back: a retry with the key does the work.
        assert_eq!(sqlstate_of(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, 'c0000000-0000-0000-0000-000000000999', '{PRODUCT_A2}', '{ORG_A}', 'key-2')")), "P0002");
        assert_eq!(
            text("SELECT count(*)::text FROM checkout.idempotency_keys WHERE key = 'key-2'"),
            "0"
        );

        // A key registered beforehand as 'pending' (the seed's flow) is claimed the same way.
        Spi::run(&format!("INSERT INTO checkout.idempotency_keys (organization_id, key, request_hash) VALUES ('{ORG_A}', 'key-3', 'app-hash')")).unwrap();
        let r = json(&format!("SELECT checkout.create_subscription_atomic(checkout_test.sub(), NULL, '{CUSTOMER_A2}', '{PRODUCT_A2}', '{ORG_A}', 'key-3')"));
        assert_eq!(r["success"], true);
        assert_eq!(text("SELECT status || ' ' || operation FROM checkout.idempotency_keys WHERE key = 'key-3'"), "completed create_subscription_atomic");

        // Expired keys can be deleted although subscriptions recorded them.
        Spi::run("DELETE FROM checkout.idempotency_keys").unwrap();
        assert_eq!(text("SELECT count(*)::text FROM checkout.subscriptions WHERE idempotency_key IS NOT NULL"), "3");
    }

    #[pg_test]
    fn privileges_app_role_can_call_but_not_write_tables() {
        fixture();
        Spi::run("CREATE ROLE ck_nobody; CREATE ROLE ck_app;
                  GRANT USAGE ON SCHEMA checkout, checkout_test TO ck_nobody, ck_app;
                  GRANT EXECUTE ON FUNCTION checkout.create_subscription_atomic(jsonb, jsonb[], uuid, uuid, uuid, text),
                                            checkout.upsert_customer_atomic(uuid, text, text, text, text, jsonb) TO ck_app;").unwrap();
        Spi::run("SET LOCAL ROLE ck_nobody").unwrap();
        assert_eq!(sqlstate_of(&format!("SELECT {CALL}, '{ORG_A}')")), "42501");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.upsert_customer_atomic('{ORG_A}', 'x@example.com')"
            )),
            "42501"
        );
        Spi::run("RESET ROLE; SET LOCAL ROLE ck_app").unwrap();
        assert_eq!(sqlstate_of(&format!("SELECT {CALL}, '{ORG_A}')")), "00000");
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.upsert_customer_atomic('{ORG_A}', 'x@example.com')"
            )),
            "00000"
        );
        assert_eq!(sqlstate_of(&format!("INSERT INTO checkout.customers (organization_id, email) VALUES ('{ORG_A}', 'y@example.com')")), "42501");
        assert_eq!(
            sqlstate_of("UPDATE checkout.subscriptions SET status = 'canceled'"),
            "42501"
        );
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn search_path_hijack_changes_nothing() {
        fixture();
        // A caller plants look-alikes of pg_catalog functions and of checkout's tables.
        Spi::run("CREATE SCHEMA evil;
                  CREATE TABLE evil.subscriptions (LIKE checkout.subscriptions);
                  CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE sql AS 'SELECT ''hijacked''';
                  CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT ''2000-01-01''::timestamptz';
                  SET LOCAL search_path = evil, checkout, public;").unwrap();
        let r = json(&format!("SELECT {CALL}, '{ORG_A}')"));
        assert_eq!(r["success"], true);
        assert_eq!(text("SELECT count(*)::text FROM evil.subscriptions"), "0");
        let c = json(&format!(
            "SELECT checkout.upsert_customer_atomic('{ORG_A}', 'BOB@example.com')"
        ));
        assert_eq!(c["customer_id"], "c0000000-0000-0000-0000-0000000000a2");
    }
}
