//! `normalize_email`, `email_rules_version` and the stored canonical forms (sql/email.sql: the
//! trigger that records every email a customer has had in customer_email_variants).
use crate::errors::{raise, Kind};
use pgrx::prelude::*;

pub mod rules;

/// Canonical form of an email address (see rules.rs); invalid input raises 22023.
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_email(email: &str) -> String {
    canonical(email)
}

/// The canonical form, or ERROR 22023 naming what is wrong.
pub fn canonical(email: &str) -> String {
    match rules::normalize(email) {
        Ok(normalized) => normalized,
        Err(e) => raise(
            Kind::InvalidParameter,
            e.to_string(),
            Some(format!("email: {}", truncated(email))),
            Some("Pass a single address such as name@example.com."),
        ),
    }
}

/// The version of the normalization rules; stored beside every normalized form.
#[pg_extern(immutable, parallel_safe)]
fn email_rules_version() -> i32 {
    rules::RULES_VERSION
}

/// Keep DETAIL readable when the input is huge.
fn truncated(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_owned()
    } else {
        format!(
            "{}... ({} characters)",
            s.chars().take(80).collect::<String>(),
            s.chars().count()
        )
    }
}

extension_sql_file!(
    "../../sql/email.sql",
    name = "email",
    requires = ["schema", normalize_email, email_rules_version]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{fixture, sqlstate_of};
    use pgrx::prelude::*;

    fn one(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).expect("query failed")
    }

    #[pg_test]
    fn normalize_email_in_sql() {
        assert_eq!(
            one("SELECT checkout.normalize_email('John.Doe+tag@GMAIL.COM')").as_deref(),
            Some("johndoe@gmail.com")
        );
        assert_eq!(one("SELECT checkout.normalize_email(NULL)"), None);
        assert_eq!(
            one("SELECT checkout.normalize_email('  x.y@GoogleMail.com '::varchar)").as_deref(),
            Some("xy@gmail.com")
        );
        for bad in [
            "no-at-sign",
            "",
            "a@b@c.com",
            "+x@gmail.com",
            "alice@",
            "alice@localhost",
            "a\u{1}b@example.com",
        ] {
            let sql = format!("SELECT checkout.normalize_email('{bad}')");
            assert_eq!(sqlstate_of(&sql), "22023", "{bad:?}");
        }
        let long = format!(
            "SELECT checkout.normalize_email('{}@example.com')",
            "a".repeat(300)
        );
        assert_eq!(sqlstate_of(&long), "22023");
    }

    #[pg_test]
    fn normalize_email_is_fit_for_an_expression_index() {
        let volatility = one("SELECT provolatile::text || proisstrict::text || proparallel::text FROM pg_proc WHERE oid = 'checkout.normalize_email(text)'::regprocedure");
        assert_eq!(volatility.as_deref(), Some("itrues"));
        Spi::run("CREATE TEMP TABLE emails (e text); CREATE INDEX ON emails (checkout.normalize_email(e))").unwrap();
    }

    #[pg_test]
    fn variants_are_recorded_by_trigger_for_every_email_ever_held() {
        fixture();
        Spi::run("UPDATE checkout.customers SET email = 'A.Lice+x@GMail.com' WHERE id = 'c0000000-0000-0000-0000-0000000000a1'").unwrap();
        Spi::run("UPDATE checkout.customers SET name = 'Alice' WHERE id = 'c0000000-0000-0000-0000-0000000000a1'").unwrap();
        let rows = one("SELECT string_agg(email || '>' || email_normalized || '>' || email_domain || '>' || rules_version, ' ' ORDER BY created_at, email) FROM checkout.customer_email_variants WHERE customer_id = 'c0000000-0000-0000-0000-0000000000a1'");
        assert_eq!(rows.as_deref(), Some("A.Lice+x@GMail.com>alice@gmail.com>gmail.com>1 alice@example.com>alice@example.com>example.com>1"));
        // Invalid emails are refused at the table, whatever path writes them.
        assert_eq!(sqlstate_of("INSERT INTO checkout.customers (organization_id, email) VALUES ('a0000000-0000-0000-0000-000000000001', 'not-an-email')"), "22023");
        // The same address in two organizations: both recorded (the seed's global UNIQUE(email) dropped one).
        let n = Spi::get_one::<i64>("SELECT count(*) FROM checkout.customer_email_variants WHERE lower(email) = 'alice@example.com'").unwrap();
        assert_eq!(n, Some(2));
    }

    #[pg_test]
    fn renormalize_recomputes_stale_forms() {
        fixture();
        Spi::run("UPDATE checkout.customer_email_variants SET email_normalized = 'stale', rules_version = 0 WHERE customer_id = 'c0000000-0000-0000-0000-0000000000a1'").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT checkout.renormalize_email_variants()").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT checkout.renormalize_email_variants()").unwrap(),
            Some(0)
        );
        assert_eq!(one("SELECT email_normalized FROM checkout.customer_email_variants WHERE customer_id = 'c0000000-0000-0000-0000-0000000000a1'").as_deref(), Some("alice@example.com"));
    }
}
