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

/// The organizations of the fixture (tests/sql/fixtures.sql), the one place tests name them;
/// `fixture_ids_are_the_fixtures` checks the two files agree.
pub const ORG_A: &str = "a0000000-0000-0000-0000-000000000001";
pub const ORG_B: &str = "a0000000-0000-0000-0000-000000000002";

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
    use super::{fixture, text, ORG_A, ORG_B};
    use pgrx::prelude::*;

    #[pg_test]
    fn fixture_ids_are_the_fixtures() {
        fixture();
        let names = text(&format!(
            "SELECT string_agg(name, ', ' ORDER BY id) FROM checkout.organizations WHERE id IN ('{ORG_A}', '{ORG_B}')"
        ));
        assert_eq!(names, "Org A, Org B");
    }
}
