//! Every error checkout raises, with its SQLSTATE. docs/api.md's error table lists the same kinds.
//! Postgres only carries its own SQLSTATEs through pgrx, so each kind maps to the standard code
//! whose meaning fits it; the message says which checkout rule was broken.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub enum Kind {
    /// 22023 invalid_parameter_value: an argument or a field of one is malformed or out of range.
    InvalidParameter,
    /// 22004 null_value_not_allowed: a required argument is NULL.
    NullArgument,
    /// P0002 no_data_found: the organization, or a referenced customer, product or feature in it,
    /// does not exist (or is deleted). Another tenant's row is reported exactly like a missing one.
    NotFound,
    /// 55000 object_not_in_prerequisite_state: an idempotency key was already used for another
    /// operation or with different parameters (Stripe's rule). Nothing was written.
    KeyReused,
    /// 23505 unique_violation: the request conflicts with another row, e.g. the external_id
    /// matches one customer while the email belongs to another.
    Conflict,
    /// 09000 triggered_action_exception: the subscription's rules forbid the change (a status
    /// transition outside the state machine, reactivating after the period, renewing a
    /// subscription set to end). The same code the subscriptions trigger raises for direct SQL.
    InvalidTransition,
    /// 54001 statement_too_complex: a jsonb argument nested deeper than checkout reads (PostgreSQL's
    /// own code for input nested too deeply).
    TooDeep,
    /// 39P01 trigger_protocol_violated: a trigger function of checkout fired other than as its own
    /// trigger (on another table, for each statement, or at the wrong time). Nothing was written.
    TriggerProtocol,
    /// 23514 check_violation: a write would break a bound the triggers hold like a CHECK: refunds
    /// above their payment or in another currency, a payment's amount or currency under its refunds.
    CheckViolation,
    /// 3F000 invalid_schema_name: `import_seed`'s source schema does not exist.
    NoSuchSchema,
    /// 0A000 feature_not_supported: on a Citus cluster, a call that cannot run whole on its
    /// tenant's node (the seed form of check_trial_eligibility, which names no organization).
    NotOnThisCluster,
    /// XX000 internal_error: a bug in checkout (never expected; please report it).
    Internal,
}

impl Kind {
    fn code(&self) -> PgSqlErrorCode {
        match self {
            Kind::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Kind::NullArgument => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Kind::NotFound => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            Kind::KeyReused => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Kind::Conflict => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            Kind::InvalidTransition => PgSqlErrorCode::ERRCODE_TRIGGERED_ACTION_EXCEPTION,
            Kind::TooDeep => PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
            Kind::TriggerProtocol => PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            Kind::CheckViolation => PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            Kind::NoSuchSchema => PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            Kind::NotOnThisCluster => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            Kind::Internal => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }
}

/// Raises an ERROR: a one-line message, DETAIL with the ids involved, HINT where the caller can act.
/// The transaction (or subtransaction) aborts, so nothing the call wrote survives.
#[track_caller]
pub fn raise(
    kind: Kind,
    message: impl Into<String>,
    detail: Option<String>,
    hint: Option<&str>,
) -> ! {
    let mut report = ErrorReport::new(kind.code(), message.into(), "checkout");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Unwraps a required argument, raising 22004 naming it when it is NULL.
#[track_caller]
pub fn required<T>(value: Option<T>, name: &str) -> T {
    match value {
        Some(v) => v,
        None => raise(
            Kind::NullArgument,
            format!("argument {name} must not be NULL"),
            None,
            None,
        ),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::pg_sys::panic::CaughtError;
    use pgrx::prelude::*;

    /// Where the error of `sql` says it was raised: (file name, line). Postgres keeps the file's
    /// last path component.
    fn raised_at(sql: &str) -> (String, u32) {
        PgTryBuilder::new(|| {
            Spi::run(sql).ok();
            (String::from("(no error)"), 0)
        })
        .catch_others(|e| match e {
            CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. } => (r.file().to_owned(), r.line_number()),
        })
        .execute()
    }

    /// The line of `needle` in `source` (1-based).
    fn line_of(source: &str, needle: &str) -> u32 {
        let i = source.find(needle).expect("needle in source");
        source[..i].matches('\n').count() as u32 + 1
    }

    #[pg_test]
    fn errors_name_the_call_site_not_the_helper() {
        // 22004 through required(): the line that calls it.
        let create = include_str!("subscriptions/mod.rs");
        assert_eq!(
            raised_at("SELECT checkout.create_subscription_atomic(NULL, NULL, NULL, NULL, NULL)"),
            (
                "mod.rs".to_owned(),
                line_of(create, "required(p_subscription, \"p_subscription\")")
            )
        );
        // 22023 through the email module's helper, P0002 raised in place: never errors.rs.
        for (sql, file) in [
            ("SELECT checkout.normalize_email('no-at-sign')", "mod.rs"),
            (
                "SELECT checkout.check_trial_eligibility('a0000000-0000-0000-0000-0000000000ff'::uuid, \
                 'c0000000-0000-0000-0000-0000000000ff'::uuid, 'b0000000-0000-0000-0000-0000000000ff'::uuid)",
                "trials.rs",
            ),
        ] {
            assert_eq!(raised_at(sql).0, file, "{sql}");
        }
    }
}

/// The SQLSTATEs checkout raises and the docs' error table (docs/api.md), kept equal: every code
/// a Kind documents or a SQL file raises has its row, and every row is raised by checkout or is
/// one of PostgreSQL's own the docs explain.
#[cfg(test)]
mod documented {
    use std::collections::BTreeMap;

    /// Raised by PostgreSQL itself, never by checkout's code, and explained in the docs' table.
    const POSTGRES_OWN: &[&str] = &[
        "23503", "42501", "40001", "54000", "55P03", "57014", "40P01", "22P02",
    ];

    fn read(path: &str) -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The docs' error table (docs/api.md): code -> condition name.
    fn table() -> BTreeMap<String, String> {
        read("docs/api.md")
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = *cells.get(1)?;
                let name = *cells.get(2)?;
                (code.len() == 5
                    && code
                        .chars()
                        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .then(|| (code.to_owned(), name.to_owned()))
            })
            .collect()
    }

    /// The codes the Kind variants document ("/// 22023 invalid_parameter_value: ...").
    fn kinds() -> Vec<(String, String)> {
        read("src/errors.rs")
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix("/// "))
            .filter_map(|l| {
                let (code, rest) = l.split_once(' ')?;
                let (name, _) = rest.split_once(':')?;
                (code.len() == 5 && !name.contains(' ')).then(|| (code.to_owned(), name.to_owned()))
            })
            .collect()
    }

    /// The condition names or codes `USING ERRCODE = '...'` raises in the extension's SQL files.
    fn sql_raised() -> Vec<(String, String)> {
        let dir = format!("{}/sql", env!("CARGO_MANIFEST_DIR"));
        let mut raised = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("sql/") {
            let path = entry.expect("entry").path();
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            // Release scripts are frozen history; the install files are what a database runs.
            if !file.ends_with(".sql") || file.starts_with("checkout--") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for part in text.split("ERRCODE = '").skip(1) {
                if let Some((what, _)) = part.split_once('\'') {
                    raised.push((file.clone(), what.to_owned()));
                }
            }
        }
        raised
    }

    #[test]
    fn every_raised_sqlstate_has_its_row_and_every_row_is_raised() {
        let table = table();
        assert!(
            table.len() >= 15,
            "error table not found in docs/api.md: {table:?}"
        );
        let by_name: BTreeMap<&str, &str> = table
            .iter()
            .map(|(c, n)| (n.as_str(), c.as_str()))
            .collect();
        let mut raised = Vec::new();
        for (code, name) in kinds() {
            assert_eq!(
                table.get(&code),
                Some(&name),
                "Kind documents {code} {name}: docs/api.md row"
            );
            raised.push(code);
        }
        for (file, what) in sql_raised() {
            let code = if table.contains_key(&what) {
                what.clone()
            } else {
                match by_name.get(what.as_str()) {
                    Some(code) => (*code).to_owned(),
                    None => panic!("sql/{file} raises {what}, which docs/api.md's table lacks"),
                }
            };
            raised.push(code);
        }
        for code in table.keys() {
            assert!(
                raised.contains(code) || POSTGRES_OWN.contains(&code.as_str()),
                "docs/api.md lists {code}, which checkout never raises"
            );
        }
        for code in POSTGRES_OWN {
            assert!(
                table.contains_key(*code),
                "{code} (PostgreSQL's own) has no row in docs/api.md"
            );
        }
    }
}
