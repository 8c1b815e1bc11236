//! Helpers shared by the `#[pg_test]`s of every module (test builds only).
use pgrx::prelude::*;

extension_sql_file!(
    "../tests/sql/fixtures.sql",
    name = "test_fixtures",
    requires = ["schema"]
);

/// Runs `sql` in a subtransaction and returns its SQLSTATE ("00000" when it succeeded).
pub fn sqlstate_of(sql: &str) -> String {
    Spi::get_one_with_args::<String>("SELECT checkout_test.sqlstate_of($1)", &[sql.into()])
        .expect("sqlstate_of failed")
        .expect("sqlstate_of returned NULL")
}

/// The ids of the fixture's rows (tests/sql/fixtures.sql), the one place tests name them;
/// `fixture_ids_are_the_fixtures` checks the two files agree. Suffix a1/a2: organization A's.
pub const ORG_A: &str = "a0000000-0000-0000-0000-000000000001";
pub const ORG_B: &str = "a0000000-0000-0000-0000-000000000002";
pub const CUSTOMER_A1: &str = "c0000000-0000-0000-0000-0000000000a1"; // alice@example.com
pub const CUSTOMER_A2: &str = "c0000000-0000-0000-0000-0000000000a2"; // bob@example.com
pub const CUSTOMER_B1: &str = "c0000000-0000-0000-0000-0000000000b1"; // alice@example.com
pub const PRODUCT_A1: &str = "b0000000-0000-0000-0000-0000000000a1"; // Pro
pub const PRODUCT_A2: &str = "b0000000-0000-0000-0000-0000000000a2"; // Team
pub const PRODUCT_B1: &str = "b0000000-0000-0000-0000-0000000000b1"; // Pro
pub const FEATURE_A1: &str = "f0000000-0000-0000-0000-0000000000a1"; // sso
pub const FEATURE_A2: &str = "f0000000-0000-0000-0000-0000000000a2"; // audit_log
pub const FEATURE_B1: &str = "f0000000-0000-0000-0000-0000000000b1"; // sso
/// Active, customer a1, product a1, 1000 usd a month, with a grant of feature a1.
pub const SUBSCRIPTION_A1: &str = "d0000000-0000-0000-0000-0000000000a1";

/// Two organizations (A ...0001, B ...0002) with known ids; see tests/sql/fixtures.sql.
pub fn fixture() {
    Spi::run("SELECT checkout_test.fixture()").expect("fixture failed");
}

/// The one non-NULL value a query returns.
pub fn value<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .expect("query failed")
        .expect("NULL result")
}

pub fn text(sql: &str) -> String {
    value(sql)
}

pub fn count(sql: &str) -> i64 {
    value(sql)
}

pub fn json(sql: &str) -> serde_json::Value {
    value::<pgrx::JsonB>(sql).0
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    #[pg_test]
    fn fixture_ids_are_the_fixtures() {
        fixture();
        let rows = |sql: String| text(&sql);
        assert_eq!(
            rows(format!("SELECT string_agg(name, ', ' ORDER BY id) FROM checkout.organizations WHERE id IN ('{ORG_A}', '{ORG_B}')")),
            "Org A, Org B"
        );
        assert_eq!(
            rows(format!("SELECT string_agg(email || '@' || right(organization_id::text, 1), ' ' ORDER BY id) FROM checkout.customers WHERE id IN ('{CUSTOMER_A1}', '{CUSTOMER_A2}', '{CUSTOMER_B1}')")),
            "alice@example.com@1 bob@example.com@1 alice@example.com@2"
        );
        assert_eq!(
            rows(format!("SELECT string_agg(name || '@' || right(organization_id::text, 1), ' ' ORDER BY id) FROM checkout.products WHERE id IN ('{PRODUCT_A1}', '{PRODUCT_A2}', '{PRODUCT_B1}')")),
            "Pro@1 Team@1 Pro@2"
        );
        assert_eq!(
            rows(format!("SELECT string_agg(key || '@' || right(organization_id::text, 1), ' ' ORDER BY id) FROM checkout.features WHERE id IN ('{FEATURE_A1}', '{FEATURE_A2}', '{FEATURE_B1}')")),
            "sso@1 audit_log@1 sso@2"
        );
        assert_eq!(
            rows(format!("SELECT customer_id || ' ' || product_id FROM checkout.subscriptions WHERE id = '{SUBSCRIPTION_A1}'")),
            format!("{CUSTOMER_A1} {PRODUCT_A1}")
        );
    }
}
