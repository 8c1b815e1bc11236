//! checkout: a billing/checkout layer for PostgreSQL.
//!
//! This file only wires modules. Each module owns one concept of the design: its SQL (in `sql/`),
//! its Rust functions, and its tests.
::pgrx::pg_module_magic!(name, version);

mod customers;
mod email;
mod errors;
mod gucs;
mod idempotency;
mod plans;
mod schema;
mod subscriptions;
mod trials;

/// Called when the library loads: registers the settings.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod test_support;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
