//! Maintenance without pg_cron (seed migration 007). The jobs are SQL functions
//! (sql/maintenance.sql); with `shared_preload_libraries = 'checkout'`, one background worker per
//! database of `checkout.maintenance_databases` runs `checkout.run_maintenance()` every
//! `checkout.maintenance_interval`. Workers start only once recovery has finished, so a standby
//! runs nothing; a database without the extension is skipped.
use crate::gucs;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::JsonB;
use std::time::Duration;

extension_sql_file!(
    "../sql/maintenance.sql",
    name = "maintenance",
    requires = [
        "schema",
        gucs::setting_seconds,
        gucs::setting_integer,
        citus::routed_here
    ]
);

/// Registers the workers; only possible while the postmaster loads shared_preload_libraries.
pub fn register_workers() {
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    for database in gucs::maintenance_databases() {
        BackgroundWorkerBuilder::new(&format!("checkout maintenance {database}"))
            .set_type("checkout maintenance")
            .set_library("checkout")
            .set_function("checkout_maintenance_main")
            .set_extra(&database)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            // After an error outside the jobs (e.g. the database does not exist yet).
            .set_restart_time(Some(Duration::from_secs(10)))
            .load();
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn checkout_maintenance_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_owned();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("checkout maintenance worker started for database {database}");
    while BackgroundWorker::wait_latch(Some(interval())) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        run_once(&database);
    }
    log!("checkout maintenance worker for database {database} stopped");
}

fn interval() -> Duration {
    Duration::from_secs(gucs::MAINTENANCE_INTERVAL.get().max(1) as u64)
}

/// One tick, in its own transaction. Failing jobs are caught and recorded by run_maintenance().
fn run_once(database: &str) {
    let summary = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'checkout')",
        );
        match installed {
            Ok(Some(true)) => Spi::get_one::<JsonB>("SELECT checkout.run_maintenance()")
                .ok()
                .flatten()
                .map(|j| j.0),
            _ => None,
        }
    });
    let Some(summary) = summary else { return };
    debug1!("checkout maintenance in {database}: {summary}");
    if let Some(jobs) = summary.as_object() {
        for (job, result) in jobs {
            if let Some(error) = result.get("error") {
                warning!("checkout maintenance job {job} failed in database {database}: {error}");
            }
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{fixture, json, sqlstate_of, text};
    use crate::test_support::{CUSTOMER_A2, ORG_A, PRODUCT_A1, PRODUCT_A2, PRODUCT_B1};
    use pgrx::prelude::*;
    use serde_json::json;

    #[pg_test]
    fn sessions_expire_then_go() {
        fixture();
        Spi::run(
            &format!("INSERT INTO checkout.checkout_sessions (organization_id, status, expires_at, stripe_session_id) VALUES
               ('{ORG_A}', 'pending', now() - interval '1 minute', 'due'),
               ('{ORG_A}', 'pending', now() + interval '1 hour', 'fresh'),
               ('{ORG_A}', 'expired', now() - interval '2 days', 'old'),
               ('{ORG_A}', 'expired', now() - interval '2 hours', 'recent'),
               ('{ORG_A}', 'completed', now() - interval '9 days', 'done')"),
        )
        .unwrap();
        assert_eq!(
            json("SELECT checkout.expire_checkout_sessions()"),
            json!({"expired": 1, "deleted": 1})
        );
        assert_eq!(
            text("SELECT string_agg(stripe_session_id || '=' || status, ' ' ORDER BY stripe_session_id) FROM checkout.checkout_sessions"),
            "done=completed due=expired fresh=pending recent=expired"
        );
        Spi::run("SET LOCAL checkout.session_retention = '1h'").unwrap();
        assert_eq!(
            json("SELECT checkout.expire_checkout_sessions()"),
            json!({"expired": 0, "deleted": 1})
        );
    }

    #[pg_test]
    fn expired_keys_are_deleted_even_when_referenced() {
        fixture();
        Spi::run(
            &format!("INSERT INTO checkout.idempotency_keys (organization_id, key, status, response, expires_at) VALUES
               ('{ORG_A}', 'old', 'completed', '{{}}', now() - interval '1 hour'),
               ('{ORG_A}', 'busy', 'processing', NULL, now() - interval '1 hour'),
               ('{ORG_A}', 'new', 'completed', '{{}}', now() + interval '1 hour');
             UPDATE checkout.subscriptions SET idempotency_key = 'old';"),
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT checkout.cleanup_expired_idempotency_keys()").unwrap(),
            Some(1)
        );
        assert_eq!(
            text("SELECT string_agg(key, ' ' ORDER BY key) FROM checkout.idempotency_keys"),
            "busy new"
        );
    }

    #[pg_test]
    fn reconciliation_claim_fail_backoff_manual_review() {
        let a = text(
            "SELECT checkout.enqueue_reconciliation('payment', 'pi_1', '{\"a\": 1}', 5)::text",
        );
        let again = text(
            "SELECT checkout.enqueue_reconciliation('payment', 'pi_1', '{\"b\": 2}', 3)::text",
        );
        assert_eq!(a, again, "one open item per (type, reference_id)");
        assert_eq!(
            text("SELECT details::text || ' ' || priority FROM checkout.reconciliation_queue"),
            r#"{"a": 1, "b": 2} 3"#
        );
        Spi::run("SET LOCAL checkout.reconciliation_max_attempts = 3").unwrap();
        for attempt in 1..=3 {
            let claimed = text("SELECT string_agg(id::text || ' ' || locked_by, ',') FROM checkout.claim_reconciliation(10, 'w1')");
            assert_eq!(claimed, format!("{a} w1"), "attempt {attempt}");
            assert_eq!(
                Spi::get_one::<i64>("SELECT count(*) FROM checkout.claim_reconciliation(10, 'w2')")
                    .unwrap(),
                Some(0),
                "claimed items are not handed out twice"
            );
            let row = text(&format!("SELECT status || ' ' || error_count || ' ' || coalesce(extract(epoch FROM next_retry_at - now())::int::text, '-') FROM checkout.fail_reconciliation('{a}', 'boom')"));
            if attempt < 3 {
                let parts: Vec<&str> = row.split(' ').collect();
                assert_eq!(
                    (parts[0], parts[1]),
                    ("failed", attempt.to_string().as_str())
                );
                // 15 s + attempt^4 s, +-10 % jitter
                let delay: f64 = parts[2].parse().unwrap();
                let base = 15.0 + f64::from(attempt).powi(4);
                assert!(
                    delay >= (base * 0.9).floor() && delay <= (base * 1.1).ceil(),
                    "attempt {attempt}: {delay}s"
                );
                assert_eq!(
                    Spi::get_one::<i64>(
                        "SELECT count(*) FROM checkout.claim_reconciliation(10, 'w1')"
                    )
                    .unwrap(),
                    Some(0),
                    "not due yet"
                );
                Spi::run("UPDATE checkout.reconciliation_queue SET next_retry_at = now() - interval '1 second'").unwrap();
            } else {
                assert_eq!(row, "manual_review 3 -");
            }
        }
        // Closed: enqueueing the same problem opens a new item.
        let b = text("SELECT checkout.enqueue_reconciliation('payment', 'pi_1')::text");
        assert_ne!(a, b);
        // A lease that ran out: claimable by another worker; maintenance counts it as an attempt.
        assert_eq!(
            text("SELECT string_agg(locked_by, ',') FROM checkout.claim_reconciliation(1, 'w1')"),
            "w1"
        );
        Spi::run("UPDATE checkout.reconciliation_queue SET locked_until = now() - interval '1 second' WHERE status = 'processing'").unwrap();
        assert_eq!(
            text("SELECT string_agg(locked_by, ',') FROM checkout.claim_reconciliation(1, 'w2')"),
            "w2"
        );
        Spi::run("UPDATE checkout.reconciliation_queue SET locked_until = now() - interval '1 second' WHERE status = 'processing'").unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT checkout.expire_reconciliation_leases()").unwrap(),
            Some(1)
        );
        assert_eq!(text(&format!("SELECT status || ' ' || error_count || ' ' || error_message FROM checkout.reconciliation_queue WHERE id = '{b}'")), "failed 1 lease expired");
        assert!(
            text(&format!(
                "SELECT checkout.complete_reconciliation('{b}')::text"
            )) == "false",
            "only a processing item completes"
        );
    }

    #[pg_test]
    fn metrics_refresh_null_and_stale_products_only() {
        fixture();
        Spi::run(
            &format!("INSERT INTO checkout.subscriptions (organization_id, customer_id, product_id, status, amount, currency, interval, interval_count, current_period_start, current_period_end) VALUES
               ('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A1}', 'active', 12000, 'usd', 'year', 1, now(), now()),
               ('{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A2}', 'trialing', 500, 'eur', 'week', 2, now(), now());
             UPDATE checkout.products SET metrics_last_calculated_at = NULL WHERE id = '{PRODUCT_A1}';
             UPDATE checkout.products SET metrics_last_calculated_at = now() - interval '2 days' WHERE id = '{PRODUCT_A2}';
             UPDATE checkout.products SET metrics_last_calculated_at = now() - interval '1 hour' WHERE id = '{PRODUCT_B1}';"),
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT checkout.refresh_product_metrics()").unwrap(),
            Some(2)
        );
        // Pro: the fixture's 1000/month plus 12000/year = 1000 + 1000.
        assert_eq!(
            text("SELECT string_agg(name || ' ' || coalesce(metrics_active_subscriptions::text, '-') || ' ' || coalesce(metrics_trialing_subscriptions::text, '-') || ' ' || coalesce(metrics_mrr::text, '-'), '; ' ORDER BY id) FROM checkout.products"),
            r#"Pro 2 0 {"usd": 2000}; Team 0 1 {}; Pro - - -"#
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT checkout.refresh_product_metrics()").unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn run_maintenance_survives_a_failing_job() {
        let summary = json("SELECT checkout.run_maintenance()");
        assert_eq!(summary.as_object().map(|o| o.len()), Some(5), "{summary}");
        Spi::run("ALTER TABLE checkout.checkout_sessions RENAME TO checkout_sessions_gone")
            .unwrap();
        let summary = json("SELECT checkout.run_maintenance()");
        assert!(
            summary["expire_checkout_sessions"]["error"].is_string(),
            "{summary}"
        );
        assert!(summary["refresh_product_metrics"].is_number(), "{summary}");
        let status = text("SELECT string_agg(job || ':' || (last_error IS NOT NULL), ' ' ORDER BY job) FROM checkout.maintenance_status()");
        assert!(
            status.contains("expire_checkout_sessions:true")
                && status.contains("refresh_product_metrics:false"),
            "{status}"
        );
    }

    #[pg_test]
    fn pg_cron_scheduling_needs_pg_cron() {
        assert_eq!(
            sqlstate_of("SELECT checkout.schedule_with_pg_cron()"),
            "0A000"
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT checkout.unschedule_pg_cron()").unwrap(),
            Some(false)
        );
    }

    /// The test cluster preloads checkout with a 1 s interval in pgrx_tests (lib.rs, pg_test).
    #[pg_test]
    fn background_worker_runs_the_jobs() {
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..120 {
            let last = Spi::get_one::<String>(
                "SELECT max(last_run_at)::text FROM checkout.maintenance_runs",
            )
            .unwrap();
            if let Some(last) = last {
                if !seen.contains(&last) {
                    seen.push(last);
                }
            }
            if seen.len() >= 2 {
                break;
            }
            Spi::run("SELECT pg_sleep(0.25)").unwrap();
        }
        assert!(seen.len() >= 2, "the worker ran {} times", seen.len());
        let workers = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'checkout maintenance'",
        )
        .unwrap();
        assert_eq!(workers, Some(1));
        let next = Spi::get_one::<bool>(
            "SELECT bool_and(next_run_at IS NOT NULL) FROM checkout.maintenance_status()",
        )
        .unwrap();
        assert_eq!(next, Some(true));
    }
}
