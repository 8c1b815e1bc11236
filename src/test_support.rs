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
