//! What checkout does differently when Citus distributes its tables (issue 17). On a worker, a
//! table such as `checkout.customers` is an empty shell; a tenant's rows live in its shard,
//! `checkout.customers_<shard id>`, on the node that holds the tenant. SQL is routed there by
//! Citus; the index lookups (`lookups`), which bypass the executor, read the shard themselves.
use crate::errors::{raise, Kind};
use crate::plans::{first_row, ok, select};
use pgrx::pg_sys;
use pgrx::spi::Spi;
use pgrx::Uuid;
use std::cell::Cell;
use std::ffi::CStr;

pgrx::extension_sql_file!(
    "../sql/distribute.sql",
    name = "distribute",
    requires = ["schema"]
);

/// Whether Citus distributes checkout's tables in this database. The answer is kept until a
/// relation cache invalidation arrives (CREATE EXTENSION citus, distributing a table and DROP
/// EXTENSION each send one), so a call asks the catalogs at most once per change; on PostgreSQL 15
/// and 16 even the extension lookup is an index scan of pg_extension.
pub fn distributed() -> bool {
    let generation = crate::lookups::generation();
    let (seen, answer) = DISTRIBUTED.get();
    if seen == generation {
        return answer;
    }
    // SAFETY: a catalog lookup by a NUL-terminated name; missing_ok.
    let citus = unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) } != pg_sys::InvalidOid;
    let found = citus
        && Spi::connect(|client| {
            first_row(select(client, DISTRIBUTED_SQL, Some(1), &[]))
                .and_then(|row| ok(row.get::<bool>(1)))
                .unwrap_or(false)
        });
    DISTRIBUTED.set((generation, found));
    found
}

thread_local! {
    // (relation cache generation, answer) of `distributed`.
    static DISTRIBUTED: Cell<(u64, bool)> = const { Cell::new((0, false)) };
}

const DISTRIBUTED_SQL: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
  WHERE p.logicalrelid OPERATOR(pg_catalog.=) 'checkout.customers'::pg_catalog.regclass)";

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
/// its own outside a transaction block.
pub fn require_tenant_node(function: &str, organization: &Uuid) {
    if distributed() {
        tenant_shards(function, organization, &[c"subscriptions"]);
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
        // Only its owner may distribute.
        assert_eq!(
            text(
                "SELECT has_function_privilege('public', 'checkout.distribute()', 'EXECUTE')::text"
            ),
            "false"
        );
    }
}
