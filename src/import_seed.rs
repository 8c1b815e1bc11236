//! `checkout.import_seed(p_source_schema, p_dry_run)`: moves a database built by the seed's
//! migrations into checkout, accounting for every row (docs/operations.md, "Moving an existing
//! database to checkout").
//!
//! Three phases, all set-based SQL in one transaction:
//!  1. stage: each source table is copied into `pg_temp.import_<table>` with every column checkout
//!     reads (NULL where the source lacks the column or the table). Columns checkout does not know
//!     go into the row's jsonb (`extra`), kept in its metadata, or reported.
//!  2. classify (sql/import/classify.sql): each staged row is imported, merged or refused.
//!  3. write (sql/import/write.sql, a real run only): the imported rows and what checkout derives.
//!
//! The report of the run is `pg_temp.import_report` (also after a dry run), and a real run keeps it
//! in `checkout.import_report`.
use crate::audit::{self, Change};
use crate::errors::{raise, required, Kind};
use crate::plans::ok;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::ffi::{CStr, CString};

const CLASSIFY: &str = include_str!("../sql/import/classify.sql");
const WRITE: &str = include_str!("../sql/import/write.sql");

extension_sql_file!(
    "../sql/import.sql",
    name = "import",
    requires = ["schema", import_seed, email_is_valid]
);

/// A source table of the seed and the columns checkout reads from it, with their types.
struct Source {
    table: &'static str,
    columns: &'static [(&'static str, &'static str)],
    /// Columns classify.sql fills in (the organization, where a row reaches its rows through).
    derived: &'static [(&'static str, &'static str)],
    /// Whether unknown source columns have a jsonb home in checkout (metadata, request_params).
    keeps_extra: bool,
}

const CUSTOMER_LINK: &[(&str, &str)] = &[
    ("customer_target", "uuid"),
    ("customer_outcome", "text"),
    ("customer_reason", "text"),
    ("customer_organization_id", "uuid"),
];

/// In dependency order: the order classify.sql and the result take them.
const SOURCES: &[Source] = &[
    Source {
        table: "organizations",
        columns: &[
            ("id", "uuid"),
            ("name", "text"),
            ("slug", "text"),
            ("stripe_account_id", "text"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: &[],
        keeps_extra: true,
    },
    Source {
        table: "users",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("email", "text"),
            ("name", "text"),
            ("role", "text"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: &[],
        keeps_extra: false,
    },
    Source {
        table: "customers",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("email", "text"),
            ("external_id", "text"),
            ("name", "text"),
            ("stripe_customer_id", "text"),
            ("metadata", "jsonb"),
            ("has_active_subscription", "boolean"),
            ("subscription_count", "integer"),
            ("deleted_at", "timestamptz"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: &[],
        keeps_extra: true,
    },
    Source {
        table: "products",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("name", "text"),
            ("description", "text"),
            ("active", "boolean"),
            ("stripe_product_id", "text"),
            ("metadata", "jsonb"),
            ("metrics_last_calculated_at", "timestamptz"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: &[],
        keeps_extra: true,
    },
    Source {
        table: "features",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("key", "text"),
            ("name", "text"),
            ("description", "text"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
        ],
        derived: &[],
        keeps_extra: true,
    },
    Source {
        table: "subscriptions",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("customer_id", "uuid"),
            ("product_id", "uuid"),
            ("status", "text"),
            ("stripe_subscription_id", "text"),
            ("stripe_price_id", "text"),
            ("amount", "bigint"),
            ("currency", "text"),
            ("interval", "text"),
            ("interval_count", "integer"),
            ("trial_start", "timestamptz"),
            ("trial_end", "timestamptz"),
            ("current_period_start", "timestamptz"),
            ("current_period_end", "timestamptz"),
            ("cancel_at_period_end", "boolean"),
            ("canceled_at", "timestamptz"),
            ("ended_at", "timestamptz"),
            ("cancellation_reason", "text"),
            ("metadata", "jsonb"),
            ("idempotency_key", "text"),
            ("product_version_id", "uuid"),
            ("price_version_id", "uuid"),
            ("original_created_at", "timestamptz"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: CUSTOMER_LINK,
        keeps_extra: true,
    },
    Source {
        table: "checkout_sessions",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("customer_id", "uuid"),
            ("product_id", "uuid"),
            ("status", "text"),
            ("stripe_session_id", "text"),
            ("amount", "bigint"),
            ("currency", "text"),
            ("success_url", "text"),
            ("cancel_url", "text"),
            ("metadata", "jsonb"),
            ("idempotency_key", "text"),
            ("expires_at", "timestamptz"),
            ("completed_at", "timestamptz"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: CUSTOMER_LINK,
        keeps_extra: true,
    },
    Source {
        table: "payment_intents",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("customer_id", "uuid"),
            ("subscription_id", "uuid"),
            ("checkout_session_id", "uuid"),
            ("stripe_payment_intent_id", "text"),
            ("amount", "bigint"),
            ("currency", "text"),
            ("status", "text"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: CUSTOMER_LINK,
        keeps_extra: true,
    },
    Source {
        table: "refunds",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("payment_intent_id", "text"),
            ("stripe_refund_id", "text"),
            ("subscription_id", "uuid"),
            ("amount", "bigint"),
            ("currency", "text"),
            ("reason", "text"),
            ("status", "text"),
            ("initiated_by", "text"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
            ("completed_at", "timestamptz"),
        ],
        derived: &[
            ("payment_amount", "bigint"),
            ("payment_currency", "text"),
            ("payment_matches", "bigint"),
        ],
        keeps_extra: true,
    },
    Source {
        table: "feature_grants",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("customer_id", "uuid"),
            ("feature_id", "uuid"),
            ("subscription_id", "uuid"),
            ("granted_at", "timestamptz"),
            ("revoked_at", "timestamptz"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
        ],
        derived: CUSTOMER_LINK,
        keeps_extra: true,
    },
    Source {
        table: "subscription_changes",
        columns: &[
            ("id", "uuid"),
            ("subscription_id", "uuid"),
            ("change_type", "text"),
            ("old_values", "jsonb"),
            ("new_values", "jsonb"),
            ("changed_by", "uuid"),
            ("changed_by_type", "text"),
            ("reason", "text"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
        ],
        derived: &[
            ("organization_id", "uuid"),
            ("subscription_outcome", "text"),
            ("subscription_reason", "text"),
            ("changed_by_target", "uuid"),
        ],
        keeps_extra: true,
    },
    Source {
        table: "trial_history",
        columns: &[
            ("id", "uuid"),
            ("customer_id", "uuid"),
            ("product_id", "uuid"),
            ("subscription_id", "uuid"),
            ("trial_start", "timestamptz"),
            ("trial_end", "timestamptz"),
            ("converted", "boolean"),
            ("conversion_date", "timestamptz"),
            ("cancellation_reason", "text"),
            ("metadata", "jsonb"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: &[
            ("organization_id", "uuid"),
            ("customer_target", "uuid"),
            ("customer_outcome", "text"),
            ("customer_reason", "text"),
        ],
        keeps_extra: true,
    },
    Source {
        table: "customer_email_variants",
        columns: &[
            ("id", "uuid"),
            ("customer_id", "uuid"),
            ("email", "text"),
            ("created_at", "timestamptz"),
        ],
        derived: &[
            ("organization_id", "uuid"),
            ("customer_target", "uuid"),
            ("customer_outcome", "text"),
            ("customer_reason", "text"),
            ("customer_email", "text"),
        ],
        // The seed's email_normalized and email_domain are recomputed (its normalizer was wrong).
        keeps_extra: false,
    },
    Source {
        table: "idempotency_keys",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("key", "text"),
            ("request_hash", "text"),
            ("request_params", "jsonb"),
            ("response", "jsonb"),
            ("status", "text"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
            ("expires_at", "timestamptz"),
            ("error_message", "text"),
            ("retry_count", "integer"),
        ],
        derived: &[],
        keeps_extra: true,
    },
    Source {
        table: "webhook_events",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("provider", "text"),
            ("provider_event_id", "text"),
            ("type", "text"),
            ("object_id", "text"),
            ("status", "text"),
            ("payload", "jsonb"),
            ("event_created_at", "timestamptz"),
            ("attempts", "integer"),
            ("error_message", "text"),
            ("processed_at", "timestamptz"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        ],
        derived: &[],
        // payload is the provider's event: other columns are reported, not mixed into it.
        keeps_extra: false,
    },
    Source {
        table: "reconciliation_queue",
        columns: &[
            ("id", "uuid"),
            ("organization_id", "uuid"),
            ("type", "text"),
            ("reference_id", "text"),
            ("status", "text"),
            ("priority", "integer"),
            ("error_message", "text"),
            ("error_count", "integer"),
            ("details", "jsonb"),
            ("created_at", "timestamptz"),
            ("updated_at", "timestamptz"),
            ("processed_at", "timestamptz"),
            ("next_retry_at", "timestamptz"),
        ],
        derived: &[],
        keeps_extra: true,
    },
];

/// Source columns staged under another name: the staged tables' own outcome, reason, detail and
/// into_id columns take theirs.
const STAGED_AS: &[(&str, &str, &str)] = &[
    ("subscription_changes", "reason", "change_reason"),
    ("refunds", "reason", "refund_reason"),
];

/// Source columns that checkout recomputes rather than reads: not reported as unknown.
const RECOMPUTED: &[(&str, &str)] = &[
    ("customer_email_variants", "email_normalized"),
    ("customer_email_variants", "email_domain"),
];

/// The statements of a sql/import file, split at its `-- step` lines (the rest of such a line is
/// a label); comments alone are not a statement.
fn steps(file: &'static str) -> impl Iterator<Item = &'static str> {
    file.split("\n-- step").skip(1).filter_map(|chunk| {
        let body = chunk
            .split_once('\n')
            .map_or("", |(_label, body)| body)
            .trim();
        body.lines()
            .any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with("--")
            })
            .then_some(body)
    })
}

fn quoted(identifier: &str) -> String {
    let c = CString::new(identifier).unwrap_or_else(|_| {
        raise(
            Kind::InvalidParameter,
            "p_source_schema must not contain a NUL character",
            None,
            None,
        )
    });
    // SAFETY: quote_identifier reads a NUL-terminated string and returns it or a palloc'd copy.
    unsafe {
        CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr()))
            .to_string_lossy()
            .into_owned()
    }
}

/// The columns of `schema.table`, or None when there is none. Tables only (plain, partitioned or
/// foreign): reading a view would run its owner's functions as the DBA running the import.
///
/// Every column must be of a type of pg_catalog (an array of one included): staging casts the
/// columns and turns unknown ones into jsonb, and a cast or a to-json cast from a type its owner
/// made can call that owner's function, which would run as the DBA running the import.
fn source_columns(client: &SpiClient<'_>, schema: &str, table: &str) -> Option<Vec<String>> {
    let rows = ok(client.select(
        "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                a.attname IS NULL OR tn.nspname = 'pg_catalog' OR coalesce(en.nspname = 'pg_catalog', false)
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
         LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
         LEFT JOIN pg_catalog.pg_namespace en ON en.oid = e.typnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'f')",
        None,
        &[schema.into(), table.into()],
    ));
    if rows.is_empty() {
        return None;
    }
    let mut columns = Vec::new();
    for row in rows {
        let Some(name) = ok(row.get::<String>(1)) else {
            continue; // a table without columns
        };
        if !ok(row.get::<bool>(3)).unwrap_or(false) {
            raise(
                Kind::InvalidParameter,
                "a source column has a type import_seed does not read",
                Some(format!(
                    "column {schema}.{table}.{name}, type {}",
                    ok(row.get::<String>(2)).unwrap_or_default()
                )),
                Some("Change the column to a built-in type (ALTER TABLE ... ALTER COLUMN ... TYPE text, for example), then run the import again."),
            );
        }
        columns.push(name);
    }
    Some(columns)
}

/// Drops `pg_temp.<table>` when an earlier run in this session left it (no NOTICE when not).
fn drop_temp(client: &mut SpiClient<'_>, table: &str) {
    let name = format!("pg_temp.{table}");
    let exists = ok(client.select(
        "SELECT 1 WHERE pg_catalog.to_regclass($1) IS NOT NULL",
        None,
        &[name.as_str().into()],
    ));
    if !exists.is_empty() {
        ok(client.update(&format!("DROP TABLE {name}"), None, &[]));
    }
}

/// Stages one source table; returns the source columns checkout does not know.
fn stage(client: &mut SpiClient<'_>, schema: &str, source: &Source) -> Vec<String> {
    let present = source_columns(client, schema, source.table);
    let have = |name: &str| {
        present
            .as_ref()
            .is_some_and(|p| p.iter().any(|c| c == name))
    };
    let mut select: Vec<String> = source
        .columns
        .iter()
        .map(|(name, typ)| {
            let staged = STAGED_AS
                .iter()
                .find(|(t, c, _)| *t == source.table && c == name)
                .map_or(*name, |(_, _, as_)| *as_);
            let q = quoted(staged);
            if have(name) {
                format!("src.{}::{typ} AS {q}", quoted(name))
            } else {
                format!("NULL::{typ} AS {q}")
            }
        })
        .collect();
    select.extend(
        source
            .derived
            .iter()
            .filter(|(name, _)| !source.columns.iter().any(|(c, _)| c == name))
            .map(|(name, typ)| format!("NULL::{typ} AS {}", quoted(name))),
    );
    let unknown: Vec<String> = present
        .iter()
        .flatten()
        .filter(|c| !source.columns.iter().any(|(name, _)| name == c))
        .filter(|c| !RECOMPUTED.contains(&(source.table, c.as_str())))
        .cloned()
        .collect();
    let extra = if unknown.is_empty() || !source.keeps_extra {
        "'{}'::jsonb".to_owned()
    } else {
        // Everything but the columns staged above: only the unknown ones stay.
        let known: Vec<String> = source
            .columns
            .iter()
            .map(|(c, _)| format!("'{c}'"))
            .collect();
        format!(
            "jsonb_build_object('seed_columns', to_jsonb(src.*) - ARRAY[{}]::text[])",
            known.join(", ")
        )
    };
    let from = match present {
        Some(_) => format!("FROM {}.{} src", quoted(schema), quoted(source.table)),
        None => "WHERE false".to_owned(),
    };
    let staged = format!("import_{}", source.table);
    drop_temp(client, &staged);
    ok(client.update(
        &format!(
            "CREATE TEMP TABLE {staged} ON COMMIT DROP AS SELECT {}, {extra} AS extra, NULL::text AS outcome, \
             NULL::text AS reason, NULL::jsonb AS detail, NULL::uuid AS into_id {from}",
            select.join(", ")
        ),
        None,
        &[],
    ));
    ok(client.update(&format!("CREATE INDEX ON pg_temp.{staged} (id)"), None, &[]));
    ok(client.update(&format!("ANALYZE pg_temp.{staged}"), None, &[]));
    if source.keeps_extra {
        Vec::new()
    } else {
        unknown
    }
}

/// The run's report: every merge and refusal, every imported row the import changed (a second
/// active subscription imported ended), and every source column left out.
fn report(client: &mut SpiClient<'_>, dropped: &[(&str, Vec<String>)]) {
    drop_temp(client, "import_report");
    let rows: Vec<String> = SOURCES
        .iter()
        .map(|s| {
            format!(
                "SELECT '{t}'::text, id::text, outcome, reason, coalesce(detail, '{{}}') FROM pg_temp.import_{t} WHERE reason IS NOT NULL",
                t = s.table
            )
        })
        .collect();
    ok(client.update(
        &format!(
            "CREATE TEMP TABLE import_report (source_table text, source_id text, outcome text, reason text, detail jsonb); \
             INSERT INTO pg_temp.import_report {}",
            rows.join(" UNION ALL ")
        ),
        None,
        &[],
    ));
    for (table, columns) in dropped {
        for column in columns {
            ok(client.update(
                "INSERT INTO pg_temp.import_report VALUES ($1, NULL, 'not_imported', 'unknown_column', jsonb_build_object('column', $2))",
                None,
                &[(*table).into(), column.as_str().into()],
            ));
        }
    }
}

/// Imports the seed's tables from `p_source_schema`. A dry run (the default) classifies every row
/// and writes nothing to checkout's tables; `pg_temp.import_report` shows what a real run would
/// report. A real run writes everything in the caller's transaction and keeps the report in
/// `checkout.import_report` (the last run's).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn import_seed(
    p_source_schema: Option<&str>,
    p_dry_run: default!(Option<bool>, "true"),
) -> TableIterator<
    'static,
    (
        name!(source_table, String),
        name!(read, i64),
        name!(imported, i64),
        name!(merged, i64),
        name!(refused, i64),
    ),
> {
    let schema = required(p_source_schema, "p_source_schema");
    let dry_run = required(p_dry_run, "p_dry_run");
    // Neither the audit trigger (the import writes each subscription's 'imported' row) nor a
    // concurrent import: the second waits, then finds every row already in checkout.
    let _audit = audit::begin(Change {
        change_type: "imported",
        changed_by: None,
        reason: None,
        self_audited: true,
    });
    let counts = Spi::connect_mut(|client| {
        let exists = ok(client.select(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
            None,
            &[schema.into()],
        ));
        if exists.is_empty() {
            raise(
                Kind::NoSuchSchema,
                "source schema does not exist",
                Some(format!("p_source_schema: {schema}")),
                Some("Name the schema that holds the seed's tables, e.g. 'public'."),
            );
        }
        if schema == "checkout" || schema == "pg_catalog" {
            raise(
                Kind::InvalidParameter,
                "the source schema cannot be checkout's own",
                Some(format!("p_source_schema: {schema}")),
                None,
            );
        }
        ok(client.update(
            "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('checkout.import_seed'))",
            None,
            &[],
        ));
        let mut dropped = Vec::new();
        for source in SOURCES {
            dropped.push((source.table, stage(client, schema, source)));
        }
        // classify.sql's own tables, left by an earlier run in this transaction.
        for helper in [
            "import_tenants",
            "import_customer_target",
            "import_catalog",
            "import_subscription_target",
        ] {
            drop_temp(client, helper);
        }
        for step in steps(CLASSIFY) {
            ok(client.update(step, None, &[]));
        }
        report(client, &dropped);
        if !dry_run {
            for step in steps(WRITE) {
                ok(client.update(step, None, &[schema.into()]));
            }
            ok(client.update("DELETE FROM checkout.import_report", None, &[]));
            ok(client.update(
                "INSERT INTO checkout.import_report (source_table, source_id, outcome, reason, detail) \
                 SELECT * FROM pg_temp.import_report",
                None,
                &[],
            ));
        }
        let query: Vec<String> = SOURCES
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "SELECT {i} AS n, '{t}'::text AS t, count(*) AS r, count(*) FILTER (WHERE outcome = 'imported') AS i, \
                     count(*) FILTER (WHERE outcome = 'merged') AS m, count(*) FILTER (WHERE outcome = 'refused') AS f \
                     FROM pg_temp.import_{t}",
                    t = s.table
                )
            })
            .collect();
        let rows = ok(client.select(
            &format!(
                "SELECT t, r, i, m, f FROM ({}) x ORDER BY n",
                query.join(" UNION ALL ")
            ),
            None,
            &[],
        ));
        rows.map(|row| {
            (
                ok(row.get::<String>(1)).unwrap_or_default(),
                ok(row.get::<i64>(2)).unwrap_or(0),
                ok(row.get::<i64>(3)).unwrap_or(0),
                ok(row.get::<i64>(4)).unwrap_or(0),
                ok(row.get::<i64>(5)).unwrap_or(0),
            )
        })
        .collect::<Vec<_>>()
    });
    TableIterator::new(counts)
}

/// Whether `email` is an address checkout stores as it is: normalize_email accepts it, nothing
/// is left to trim (what upsert_customer_atomic trims), and it fits the customers column (254
/// characters). For set-based checks, where normalize_email's error would end the statement.
#[pg_extern(immutable, strict, parallel_safe)]
fn email_is_valid(email: &str) -> bool {
    email.trim() == email
        && email.chars().count() <= 254
        && crate::email::rules::normalize(email).is_ok()
}
