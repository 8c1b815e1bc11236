//! `normalize_email`, `email_rules_version` and the stored canonical forms (triggers.rs, created
//! in sql/email.sql: every email a customer has had, recorded in customer_email_variants).
use crate::errors::{raise, Kind};
use pgrx::pg_sys::VARHDRSZ;
use pgrx::prelude::*;
use pgrx::varlena::{set_varsize_4b, varatt_is_1b_e, varatt_is_4b_c, varlena_to_byte_slice};

pub mod rules;
mod triggers;

// Canonical form of an email address (see rules.rs); invalid input raises 22023. Written against
// the fmgr interface rather than with #[pg_extern]: it runs once per row in bulk checks and
// expression indexes, and an ASCII address then costs no Rust allocation and no UTF-8 pass (the
// generic wrapper's String return and &str argument took half the time). The symbol and SQL are
// the ones #[pg_extern] generated in earlier releases.
extension_sql!(
    "CREATE FUNCTION checkout.normalize_email(email text) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'normalize_email_wrapper';",
    name = "normalize_email",
    requires = ["schema"]
);

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_normalize_email_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// # Safety
/// Called by Postgres through fmgr with one non-NULL text argument (the function is STRICT).
#[unsafe(no_mangle)]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn normalize_email_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let arg = unsafe { (*fcinfo).args.as_slice(1)[0].value };
    let mut text: *mut pg_sys::varlena = arg.cast_mut_ptr();
    // What pg_detoast_datum_packed does, without the call for the usual inline, uncompressed value.
    if unsafe { varatt_is_1b_e(text) || varatt_is_4b_c(text) } {
        text = unsafe { pg_sys::pg_detoast_datum_packed(text) };
    }
    let bytes = unsafe { varlena_to_byte_slice(text) };
    if bytes.is_ascii() {
        // ASCII is valid UTF-8, and the same bytes in every server encoding.
        let email = unsafe { std::str::from_utf8_unchecked(bytes) };
        // The result is written straight into a text value sized for the longest answer this
        // input can give (zeroed: a slice must not cover uninitialized bytes); the caller's
        // per-row memory context frees it.
        let trimmed = email.trim().as_bytes();
        let room = trimmed.len().min(rules::MAX_LEN) + rules::ASCII_GROWTH;
        let result = unsafe { pg_sys::palloc0(VARHDRSZ + room) }.cast::<u8>();
        let out = unsafe { std::slice::from_raw_parts_mut(result.add(VARHDRSZ), room) };
        match rules::normalize_ascii(trimmed, out) {
            Some(Ok(n)) => {
                // n <= MAX_LEN: the length fits.
                unsafe { set_varsize_4b(result.cast(), (VARHDRSZ + n) as i32) };
                return pg_sys::Datum::from(result);
            }
            Some(Err(e)) => invalid(email, e),
            None => {}
        }
    }
    // Anything else as &str (the database is UTF8: schema.sql refuses other encodings).
    let detoasted = pg_sys::Datum::from(text);
    let email =
        unsafe { <&str as FromDatum>::from_polymorphic_datum(detoasted, false, pg_sys::TEXTOID) };
    text_datum(canonical(email.unwrap_or_default()).as_bytes())
}

/// A text datum (palloc'd in the caller's context) holding `bytes`.
fn text_datum(bytes: &[u8]) -> pg_sys::Datum {
    // Canonical forms are at most rules::MAX_LEN bytes: the length fits.
    let text =
        unsafe { pg_sys::cstring_to_text_with_len(bytes.as_ptr().cast(), bytes.len() as i32) };
    pg_sys::Datum::from(text)
}

/// The canonical form, or ERROR 22023 naming what is wrong.
pub fn canonical(email: &str) -> String {
    rules::normalize(email).unwrap_or_else(|e| invalid(email, e))
}

#[track_caller]
fn invalid(email: &str, e: rules::EmailError) -> ! {
    raise(
        Kind::InvalidParameter,
        e.to_string(),
        Some(format!("email: {}", truncated(email))),
        Some("Pass a single address such as name@example.com."),
    )
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
    requires = [
        "schema",
        "normalize_email",
        email_rules_version,
        email::triggers::track_customer_email,
        email::triggers::merge_duplicate_email_variant
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{fixture, sqlstate_of};
    use crate::test_support::{CUSTOMER_A1, ORG_A};
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

    /// The entry point reads the argument itself: compressed and out-of-line (TOAST) values, the
    /// ASCII path and the general one, and a value of a table row all give the same answers.
    #[pg_test]
    fn normalize_email_reads_stored_and_toasted_values() {
        Spi::run(
            "CREATE TEMP TABLE stored (k int, e text);
             ALTER TABLE stored ALTER COLUMN e SET STORAGE EXTERNAL; -- out of line, uncompressed
             INSERT INTO stored VALUES
               (1, ' Ex.Ample+x@GMail.COM '),
               (2, 'ÄBC@Exämple.com'),
               (3, repeat('ab', 3000) || '@example.com'),
               (4, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g) || '@example.com');
             CREATE TEMP TABLE packed (e text); -- compressed inline
             INSERT INTO packed VALUES (repeat('a', 5000) || '@example.com');",
        )
        .unwrap();
        assert_eq!(
            one("SELECT checkout.normalize_email(e) FROM stored WHERE k = 1").as_deref(),
            Some("example@gmail.com")
        );
        assert_eq!(
            one("SELECT checkout.normalize_email(e) FROM stored WHERE k = 2").as_deref(),
            Some("äbc@xn--exmple-cua.com")
        );
        for k in [3, 4] {
            let sql = format!("SELECT checkout.normalize_email(e) FROM stored WHERE k = {k}");
            assert_eq!(sqlstate_of(&sql), "22023", "row {k}");
        }
        assert_eq!(
            sqlstate_of("SELECT checkout.normalize_email(e) FROM packed"),
            "22023"
        );
        let toasted =
            Spi::get_one::<bool>("SELECT pg_column_size(e) < octet_length(e) FROM packed").unwrap();
        assert_eq!(toasted, Some(true), "the packed value is compressed");
        let external = Spi::get_one::<bool>(
            "SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE oid = 'stored'::regclass",
        )
        .unwrap();
        assert_eq!(
            external,
            Some(true),
            "the long values are in the TOAST table"
        );
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
        Spi::run(&format!(
            "UPDATE checkout.customers SET email = 'A.Lice+x@GMail.com' WHERE id = '{CUSTOMER_A1}'"
        ))
        .unwrap();
        Spi::run(&format!(
            "UPDATE checkout.customers SET name = 'Alice' WHERE id = '{CUSTOMER_A1}'"
        ))
        .unwrap();
        let rows = one(&format!("SELECT string_agg(email || '>' || email_normalized || '>' || email_domain || '>' || rules_version, ' ' ORDER BY created_at, email) FROM checkout.customer_email_variants WHERE customer_id = '{CUSTOMER_A1}'"));
        let v = crate::email::rules::RULES_VERSION;
        assert_eq!(rows, Some(format!("A.Lice+x@GMail.com>alice@gmail.com>gmail.com>{v} alice@example.com>alice@example.com>example.com>{v}")));
        // Invalid emails are refused at the table, whatever path writes them.
        assert_eq!(sqlstate_of(&format!("INSERT INTO checkout.customers (organization_id, email) VALUES ('{ORG_A}', 'not-an-email')")), "22023");
        // The same address in two organizations: both recorded (the seed's global UNIQUE(email) dropped one).
        let n = Spi::get_one::<i64>("SELECT count(*) FROM checkout.customer_email_variants WHERE lower(email) = 'alice@example.com'").unwrap();
        assert_eq!(n, Some(2));
    }

    #[pg_test]
    fn renormalize_recomputes_stale_forms() {
        fixture();
        Spi::run(&format!("UPDATE checkout.customer_email_variants SET email_normalized = 'stale', rules_version = 0 WHERE customer_id = '{CUSTOMER_A1}'")).unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT checkout.renormalize_email_variants()").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT checkout.renormalize_email_variants()").unwrap(),
            Some(0)
        );
        assert_eq!(one(&format!("SELECT email_normalized FROM checkout.customer_email_variants WHERE customer_id = '{CUSTOMER_A1}'")).as_deref(), Some("alice@example.com"));
    }
}
