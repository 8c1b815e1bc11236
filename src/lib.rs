//! checkout: a billing/checkout layer for PostgreSQL.
//!
//! This file only wires modules. Each module owns one concept of the design: its SQL (in `sql/`),
//! its Rust functions, and its tests.
::pgrx::pg_module_magic!(name, version);

mod audit;
mod check_rules;
mod citus;
mod customers;
mod email;
mod errors;
mod gucs;
mod idempotency;
mod import_seed;
mod json_arg;
mod lookups;
mod maintenance;
mod plans;
mod refunds;
mod schema;
mod subscriptions;
mod trials;
mod webhooks;

/// Called when the library loads: registers the settings, the lookup cache's invalidation callback
/// and, when preloaded, the workers.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    lookups::init();
    maintenance::register_workers();
}

#[cfg(any(test, feature = "pg_test"))]
mod hardening_tests;
#[cfg(any(test, feature = "pg_test"))]
mod test_support;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The maintenance worker runs in the test database (src/maintenance.rs tests).
        vec![
            "shared_preload_libraries = 'checkout'",
            "checkout.maintenance_databases = 'pgrx_tests'",
            "checkout.maintenance_interval = '1s'",
        ]
    }
}
