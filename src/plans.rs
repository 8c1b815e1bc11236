//! SPI plans prepared once per backend and kept (`SPI_keepplan`): plain string queries are
//! re-planned on every call. Postgres' plan cache re-validates kept plans after DDL, so a plan
//! survives `ALTER EXTENSION ... UPDATE` or a re-created extension.
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    // Keyed by the address of the &'static SQL text. Leaked on purpose: plans live as long as the
    // backend, and freeing them from a thread-local destructor at process exit is not safe.
    static PLANS: RefCell<HashMap<usize, &'static OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// The kept plan of `sql`, prepared on first use with the parameter types `args` carry (a
/// `DatumWithOid` knows its type, NULLs included, so no statement lists its types apart from its
/// values). `mutating` plans may write and lock rows (`FOR NO KEY UPDATE`).
#[track_caller]
fn kept(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    mutating: bool,
) -> &'static OwnedPreparedStatement {
    let key = sql.as_ptr() as usize;
    if let Some(plan) = PLANS.with(|p| p.borrow().get(&key).copied()) {
        return plan;
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    let prepared = if mutating {
        client.prepare_mut(sql, &types)
    } else {
        client.prepare(sql, &types)
    };
    let plan: &'static OwnedPreparedStatement = Box::leak(Box::new(ok(prepared).keep()));
    PLANS.with(|p| p.borrow_mut().insert(key, plan));
    plan
}

/// Runs the kept read-only plan of `sql` with `args`, at most `limit` rows.
#[track_caller]
pub fn select<'conn>(
    client: &SpiClient<'conn>,
    sql: &'static str,
    limit: Option<i64>,
    args: &[DatumWithOid<'_>],
) -> SpiTupleTable<'conn> {
    ok(client.select(kept(client, sql, args, false), limit, args))
}

/// Runs the kept plan of `sql` that writes or locks rows, with `args`.
#[track_caller]
pub fn update<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    limit: Option<i64>,
    args: &[DatumWithOid<'_>],
) -> SpiTupleTable<'conn> {
    let plan = kept(client, sql, args, true);
    ok(client.update(plan, limit, args))
}

/// SPI-level failures (not SQL errors, which Postgres raises itself) mean a bug in checkout.
#[track_caller]
pub fn ok<T>(result: SpiResult<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => crate::errors::raise(
            crate::errors::Kind::Internal,
            format!("checkout: SPI failure: {e}"),
            None,
            None,
        ),
    }
}

/// The first row of a result, positioned for `get`, or None when there is no row.
pub fn first_row(table: SpiTupleTable<'_>) -> Option<SpiTupleTable<'_>> {
    if table.is_empty() {
        None
    } else {
        Some(table.first())
    }
}

/// A column that cannot be NULL (a NOT NULL column, a key): NULL would be a bug, reported as such.
#[track_caller]
pub fn not_null<T>(value: SpiResult<Option<T>>, column: &str) -> T {
    match ok(value) {
        Some(v) => v,
        None => crate::errors::raise(
            crate::errors::Kind::Internal,
            format!("checkout: unexpected NULL in {column}"),
            None,
            None,
        ),
    }
}

/// `now()`: the start of the transaction, for statements that take it as a parameter (Citus
/// refuses functions in some places of an UPDATE on a distributed table).
pub fn transaction_start() -> pgrx::datum::TimestampWithTimeZone {
    // SAFETY: reads the transaction's start time, always set inside a transaction.
    let now = unsafe { pgrx::pg_sys::GetCurrentTransactionStartTimestamp() };
    pgrx::datum::TimestampWithTimeZone::try_from(now).unwrap_or_else(|_| {
        crate::errors::raise(
            crate::errors::Kind::Internal,
            "checkout: transaction start out of range",
            None,
            None,
        )
    })
}

/// A statement of `sql/queries/` as a `&'static str` (kept plans are keyed by its address), built
/// once per backend with each `{name}` placeholder replaced: `query!("file.sql", "name" => text)`.
macro_rules! query {
    ($file:literal $(, $name:literal => $value:expr)* $(,)?) => {{
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let sql = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $file));
            $(let sql = sql.replace(concat!("{", $name, "}"), $value);)*
            sql.to_owned()
        });
        SQL.as_str()
    }};
}
pub(crate) use query;
