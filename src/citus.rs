//! What checkout does differently when Citus distributes its tables (issue 17). On a worker, a
//! table such as `checkout.customers` is an empty shell; a tenant's rows live in its shard,
//! `checkout.customers_<shard id>`, on the node that holds the tenant. SQL is routed there by
//! Citus; the index lookups (`lookups`), which bypass the executor, read the shard themselves.
use crate::errors::{raise, Kind};
use crate::plans::{ok, select};
use pgrx::pg_sys;
use pgrx::spi::Spi;
use pgrx::Uuid;
use std::cell::Cell;
use std::ffi::CStr;

pgrx::extension_sql_file!(
    "../sql/distribute.sql",
    name = "distribute",
    requires = ["schema", routed_here]
);

/// Whether Citus distributes checkout's tables in this database. The answer is kept until a
/// relation cache invalidation arrives (CREATE EXTENSION citus, distributing a table and DROP
/// EXTENSION each send one), so a call asks the catalogs at most once per change; on PostgreSQL 15
/// and 16 even the extension lookup is an index scan of pg_extension.
pub fn distributed() -> bool {
    state().1
}

/// (Citus installed here, checkout distributed), kept as [`distributed`] says.
fn state() -> (bool, bool) {
    let generation = crate::lookups::generation();
    let (seen, citus, distributed) = STATE.get();
    if seen == generation {
        return (citus, distributed);
    }
    // SAFETY: a catalog lookup by a NUL-terminated name; missing_ok.
    let citus = unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) } != pg_sys::InvalidOid;
    let distributed = citus && customers_distributed();
    STATE.set((generation, citus, distributed));
    (citus, distributed)
}

thread_local! {
    // (relation cache generation, Citus installed, distributed) of `state`.
    static STATE: Cell<(u64, bool, bool)> = const { Cell::new((0, false, false)) };
}

/// Whether pg_dist_partition has checkout.customers, read with the catalog snapshot: what is
/// committed now, whatever the transaction's snapshot. A query under an older snapshot (a
/// REPEATABLE READ transaction, or a statement that waited for distribute() to commit) would
/// answer "not distributed", and that answer would be kept until the next invalidation.
fn customers_distributed() -> bool {
    // SAFETY: catalog lookups of NUL-terminated names (InvalidOid when missing); the scan key
    // compares pg_dist_partition's first column, logicalrelid (an oid), with oideq; the relation
    // is open and locked for the scan, closed after it.
    unsafe {
        let partition = pg_sys::get_relname_relid(
            c"pg_dist_partition".as_ptr(),
            pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE),
        );
        let Some(customers) = crate::lookups::table_oid(c"customers") else {
            return false;
        };
        if partition == pg_sys::InvalidOid {
            return false;
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(partition, lock);
        let mut key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_OIDEQ),
            pg_sys::Datum::from(customers),
        );
        let scan = pg_sys::systable_beginscan(
            rel,
            pg_sys::InvalidOid,
            false,
            std::ptr::null_mut(),
            1,
            &mut key,
        );
        let found = !pg_sys::systable_getnext(scan).is_null();
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, lock);
        found
    }
}

const SHARDS_SQL: &str =
    "SELECT c.relname::pg_catalog.text, s.shardid FROM pg_catalog.pg_dist_shard s
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid
  WHERE c.relnamespace OPERATOR(pg_catalog.=) 'checkout'::pg_catalog.regnamespace
    AND c.relname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.name[])
    AND pg_catalog.uuid_hash($1) OPERATOR(pg_catalog.>=) s.shardminvalue::pg_catalog.int4
    AND pg_catalog.uuid_hash($1) OPERATOR(pg_catalog.<=) s.shardmaxvalue::pg_catalog.int4
    -- placed on this node: after a move, the old copy lingers until Citus's deferred delete
    AND EXISTS (SELECT FROM pg_catalog.pg_dist_placement pl
                WHERE pl.shardid OPERATOR(pg_catalog.=) s.shardid
                  AND pl.groupid OPERATOR(pg_catalog.=) (SELECT groupid FROM pg_catalog.pg_dist_local_group))";

/// The shard of each of `tables` (names in schema checkout) holding `organization`'s rows, as
/// Citus places them (by the hash of the distribution column, `uuid_hash`, within a shard's
/// range), when this node holds it; 0A000 when it does not.
pub fn tenant_shards(
    function: &str,
    organization: &Uuid,
    tables: &[&'static CStr],
) -> Vec<(&'static CStr, i64)> {
    let names: Vec<String> = tables
        .iter()
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    let found: Vec<(String, i64)> = Spi::connect(|client| {
        let args = [(*organization).into(), names.into()];
        select(client, SHARDS_SQL, None, &args)
            .map(|row| {
                (
                    ok(row.get::<String>(1)).unwrap_or_default(),
                    ok(row.get::<i64>(2)).unwrap_or_default(),
                )
            })
            .collect()
    });
    tables
        .iter()
        .map(|table| {
            let name = table.to_string_lossy();
            match found.iter().find(|(n, _)| *n == name) {
                Some((_, shard)) => (*table, *shard),
                None => not_here(function, organization),
            }
        })
        .collect()
}

/// On a Citus cluster, refuses (0A000) to run a call of `function` anywhere but on the node that
/// holds `organization`'s shards. Elsewhere its writes would run in other backends, where the
/// triggers do not see what the call tells them (change type, actor, reason), and its audit rows
/// and counters would be wrong. Citus runs a call on its tenant's node when it is a statement of
/// its own outside a transaction block. Returns the [`Routed`] settings for the call.
pub fn require_tenant_node(function: &str, organization: &Uuid) -> Routed {
    if distributed() {
        tenant_shards(function, organization, &[c"subscriptions"]);
    }
    routed()
}

/// What the statements of a call or of a trigger firing need on a Citus node, for as long as the
/// guard lives:
/// - custom plans: Citus routes a statement by the organization value it names, which a generic
///   plan leaves a parameter;
/// - nested execution: they touch only the tenant's colocated shards on this node, which Citus
///   cannot tell by itself;
/// - and to keep that true, an error for any statement Citus would split over several shards
///   (`citus.multi_task_query_log_level`): run nested, it would open a distributed transaction of
///   its own inside the caller's, which Citus does not support (a node crashed committing one);
/// - SET LOCAL sent on to the nodes a statement runs on (a maintenance job's audit context,
///   sql/lifecycle.sql).
///
/// The code sets them, not the functions' SET clauses: Citus does not replay an extension's ALTER
/// FUNCTION on a node added later, and on one server they would cost every call a settings save
/// and restore.
#[must_use = "the settings last as long as the guard"]
pub struct Routed {
    level: Option<std::ffi::c_int>,
}

/// [`Routed`] settings when Citus distributes checkout here; nothing otherwise.
pub fn routed() -> Routed {
    if distributed() {
        Routed::enter()
    } else {
        Routed { level: None }
    }
}

impl Routed {
    /// The settings, unconditionally: for a trigger firing on a shard (only Citus creates those).
    pub fn enter() -> Routed {
        // SAFETY: what fmgr_security_definer does around a call with a SET clause: a GUC nest
        // level whose settings are restored when it is popped (by Drop, or by an error's abort).
        let level = unsafe { pg_sys::NewGUCNestLevel() };
        set_routing_settings(true);
        Routed { level: Some(level) }
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        // While an error unwinds, the (sub)transaction abort pops the level itself.
        if let (Some(level), false) = (self.level, std::thread::panicking()) {
            // SAFETY: the level pushed by enter, popped once.
            unsafe { pg_sys::AtEOXact_GUC(true, level) };
        }
    }
}

fn set_routing_settings(one_tenant: bool) {
    let split = if one_tenant { c"error" } else { c"off" };
    for (name, value) in [
        (c"plan_cache_mode", c"force_custom_plan"),
        (c"citus.allow_nested_distributed_execution", c"on"),
        (c"citus.multi_task_query_log_level", split),
        (c"citus.propagate_set_commands", c"local"),
    ] {
        // SAFETY: NUL-terminated names and values of user-settable settings; a failure raises.
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0, // elevel: ERROR, for a session source
                false,
            )
        };
    }
}

/// For checkout's SQL functions that run on a tenant's node (or per tenant): whether Citus
/// distributes checkout here and, when it does, the [`Routed`] settings for the rest of the calling
/// function. They are saved at its level, so they are restored when it returns: every caller has
/// a SET clause, which gives it a level of its own. A maintenance job passes `false` while it
/// looks for the organizations with due rows, over every shard, then calls it again.
#[pgrx::pg_extern(volatile, parallel_unsafe)]
pub fn routed_here(p_one_tenant: pgrx::default!(bool, "true")) -> bool {
    if !p_one_tenant {
        after_distribute();
    }
    let distributed = distributed();
    if distributed {
        set_routing_settings(p_one_tenant);
    }
    distributed
}

/// A job or a claim decides once whether it runs on a cluster, then acts on every organization.
/// Deciding while `distribute()` runs, it would act as on one server on tables that are distributed
/// by the time its statements run (a maintenance tick failed so: "could not run distributed query
/// with FOR UPDATE/SHARE commands"). distribute() holds SHARE on checkout.maintenance_runs; this
/// lock waits for it to commit, and taking it reads the invalidations that commit sent.
/// Without Citus there is nothing to wait for, and no lock.
fn after_distribute() {
    if !state().0 {
        return;
    }
    if let Some(runs) = crate::lookups::table_oid(c"maintenance_runs") {
        // SAFETY: a table's OID; the lock is held until the transaction ends, as a statement's.
        unsafe { pg_sys::LockRelationOid(runs, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
    }
}

#[track_caller]
fn not_here(function: &str, organization: &Uuid) -> ! {
    raise(
        Kind::NotOnThisCluster,
        format!("checkout.{function}() must run on its organization's node"),
        Some(format!("organization_id: {organization}")),
        Some(&format!("Call it through the coordinator as a statement of its own (SELECT checkout.{function}(...)), outside a transaction block: Citus then runs it on the organization's node.")),
    )
}

/// Whether `organization` exists (organizations is a reference table on a cluster).
pub fn organization_exists(client: &pgrx::spi::SpiClient<'_>, organization: Uuid) -> bool {
    !select(client, ORGANIZATION_SQL, Some(1), &[organization.into()]).is_empty()
}

const ORGANIZATION_SQL: &str =
    "SELECT FROM checkout.organizations o WHERE o.id OPERATOR(pg_catalog.=) $1";

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{fixture, json, sqlstate_of, text, CUSTOMER_A1, ORG_A, PRODUCT_A2};
    use pgrx::prelude::*;

    #[pg_test]
    fn without_citus_distribute_is_0a000_and_calls_run_here() {
        fixture();
        assert_eq!(sqlstate_of("SELECT checkout.distribute()"), "0A000");
        assert_eq!(
            text("SELECT state || ' ' || ok FROM checkout.distribution_state()"),
            "single server true"
        );
        assert_eq!(
            text("SELECT ok::text FROM checkout.verify() WHERE \"check\" = 'distribution: single server'"),
            "true"
        );
        // Not distributed: every call runs where it is called, the seed form included.
        let seed = json(&format!(
            "SELECT checkout.check_trial_eligibility('{CUSTOMER_A1}'::uuid, '{PRODUCT_A2}'::uuid)"
        ));
        assert_eq!(seed["eligible"], true);
        assert_eq!(
            sqlstate_of(&format!(
                "SELECT checkout.cancel_subscription_atomic(gen_random_uuid(), '{ORG_A}')"
            )),
            "P0002"
        );
        assert!(!super::distributed());
        // Nor does a function's call change a setting for Citus.
        assert_eq!(
            text(
                "SELECT checkout.routed_here()::text || ' ' || current_setting('plan_cache_mode')"
            ),
            "false auto"
        );
        // routed_here() saves its settings at its caller's level: every caller has one of its own
        // (a SET clause), so they end with the caller.
        assert_eq!(
            text("SELECT coalesce(string_agg(proname, ', '), 'none') FROM pg_proc WHERE pronamespace = 'checkout'::regnamespace
                    AND prosrc LIKE '%checkout.routed_here(%' AND proconfig IS NULL"),
            "none"
        );
        // Only its owner may distribute.
        assert_eq!(
            text(
                "SELECT has_function_privilege('public', 'checkout.distribute()', 'EXECUTE')::text"
            ),
            "false"
        );
    }
}
