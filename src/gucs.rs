//! Every setting (GUC) of checkout, registered when the library loads.
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `checkout.idempotency_key_ttl`: seconds after its creation during which an idempotency key is
/// honoured; older keys count as absent (and maintenance may delete them).
pub static IDEMPOTENCY_KEY_TTL: GucSetting<i32> = GucSetting::<i32>::new(24 * 60 * 60);
/// `checkout.maintenance_interval`: seconds between two runs of the maintenance worker.
pub static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// `checkout.maintenance_databases`: comma-separated databases the worker maintains.
pub static MAINTENANCE_DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// The jobs' settings; the SQL jobs read them through setting_seconds()/setting_integer().
static SESSION_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(24 * 60 * 60);
static RECONCILIATION_LEASE: GucSetting<i32> = GucSetting::<i32>::new(5 * 60);
static WEBHOOK_LEASE: GucSetting<i32> = GucSetting::<i32>::new(5 * 60);
static RECONCILIATION_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);
/// Attribution of direct subscription changes; the audit trigger reads them with current_setting()
/// (sql/lifecycle.sql). Defined here so that SHOW and pg_settings document them.
static ACTOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CHANGE_REASON: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CHANGE_TYPE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `checkout.setting_seconds(name)`: a time setting of checkout, in seconds, read by the SQL jobs.
/// Native on purpose: calling it loads the library, so the value is always the setting's own,
/// defaults included (they live here only: the SQL passes none), and defining its settings makes
/// PostgreSQL drop a value that a role without the right to set it gave before the load (a
/// placeholder, which `current_setting()` alone would have returned). Other names: 22023.
#[pgrx::pg_extern(stable, parallel_safe)]
fn setting_seconds(name: &str) -> i32 {
    match name {
        "checkout.idempotency_key_ttl" => IDEMPOTENCY_KEY_TTL.get(),
        "checkout.maintenance_interval" => MAINTENANCE_INTERVAL.get(),
        "checkout.session_retention" => SESSION_RETENTION.get(),
        "checkout.reconciliation_lease" => RECONCILIATION_LEASE.get(),
        "checkout.webhook_lease" => WEBHOOK_LEASE.get(),
        _ => not_a_setting(name, "time"),
    }
}

/// `checkout.setting_integer(name)`: an integer setting of checkout, as [`setting_seconds`].
#[pgrx::pg_extern(stable, parallel_safe)]
fn setting_integer(name: &str) -> i32 {
    match name {
        "checkout.reconciliation_max_attempts" => RECONCILIATION_MAX_ATTEMPTS.get(),
        _ => not_a_setting(name, "integer"),
    }
}

#[track_caller]
fn not_a_setting(name: &str, kind: &str) -> ! {
    crate::errors::raise(
        crate::errors::Kind::InvalidParameter,
        format!("not a {kind} setting of checkout: {}", name.escape_debug()),
        None,
        Some("See docs/operations.md, Settings."),
    )
}

/// The databases of `checkout.maintenance_databases`, trimmed, empty entries dropped.
pub fn maintenance_databases() -> Vec<String> {
    MAINTENANCE_DATABASES
        .get()
        .map(|s| {
            s.to_string_lossy()
                .split(',')
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

pub fn init() {
    let seconds = |name, short, long, setting, context| {
        GucRegistry::define_int_guc(
            name,
            short,
            long,
            setting,
            1,
            i32::MAX,
            context,
            GucFlags::UNIT_S,
        )
    };
    seconds(
        c"checkout.idempotency_key_ttl",
        c"How long an idempotency key is honoured after its first use.",
        c"Older keys count as absent: a call with one does the work again. Accepts units, e.g. '24h'. Superuser only: a caller's own value would decide how long every client's keys live.",
        &IDEMPOTENCY_KEY_TTL,
        GucContext::Suset,
    );
    seconds(
        c"checkout.maintenance_interval",
        c"Time between two runs of the maintenance background worker.",
        c"The worker runs checkout.run_maintenance() this often in each database of checkout.maintenance_databases.",
        &MAINTENANCE_INTERVAL,
        GucContext::Sighup,
    );
    seconds(
        c"checkout.session_retention",
        c"How long expired checkout sessions are kept before maintenance deletes them.",
        c"Measured from the session's expires_at. Superuser only, like every lifetime.",
        &SESSION_RETENTION,
        GucContext::Suset,
    );
    seconds(
        c"checkout.reconciliation_lease",
        c"How long a claimed reconciliation item stays leased to its worker.",
        c"Past it, the item can be claimed again, and maintenance counts a failed attempt. Superuser only, like every lifetime.",
        &RECONCILIATION_LEASE,
        GucContext::Suset,
    );
    seconds(
        c"checkout.webhook_lease",
        c"How long a claimed webhook event stays leased to its worker.",
        c"Past it, an event still processing (its worker died) is handed out again. Superuser only: a claimer's own value would decide the lease of every worker's claims.",
        &WEBHOOK_LEASE,
        GucContext::Suset,
    );
    GucRegistry::define_int_guc(
        c"checkout.reconciliation_max_attempts",
        c"Failed attempts after which a reconciliation item goes to manual_review.",
        c"Superuser only: a worker's own value would decide when every item gives up.",
        &RECONCILIATION_MAX_ATTEMPTS,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    let attribution = |name, short, setting| {
        GucRegistry::define_string_guc(
            name,
            short,
            c"Read by the subscriptions audit trigger for changes made by direct SQL; checkout's functions set their own.",
            setting,
            GucContext::Userset,
            GucFlags::default(),
        )
    };
    attribution(
        c"checkout.actor",
        c"users.id recorded as changed_by of direct subscription changes.",
        &ACTOR,
    );
    attribution(
        c"checkout.change_reason",
        c"Reason recorded for direct subscription changes.",
        &CHANGE_REASON,
    );
    attribution(
        c"checkout.change_type",
        c"change_type recorded for direct subscription updates (default: updated).",
        &CHANGE_TYPE,
    );
    // A server-start setting can only be defined while the postmaster preloads the library; loaded
    // later (CREATE EXTENSION, a first call), it would be a FATAL error. Without preloading there
    // is no worker, so there is nothing to configure.
    if unsafe { !pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    GucRegistry::define_string_guc(
        c"checkout.maintenance_databases",
        c"Databases in which the maintenance background worker runs (comma-separated).",
        c"Read at server start; needs shared_preload_libraries = 'checkout'. Empty: no worker.",
        &MAINTENANCE_DATABASES,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}
