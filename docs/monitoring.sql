-- Monitoring queries for checkout (docs/operations.md, "Health and monitoring"). tests/e2e/t_monitoring.sh runs
-- this file, so every query here actually runs (the seed's used columns that do not exist).
\set ON_ERROR_STOP on

-- Health: failing install checks and broken invariants (both empty when healthy).
SELECT "check", detail FROM checkout.verify() WHERE NOT ok;
SELECT invariant, detail FROM checkout.check_invariants();

-- Maintenance: last run and last error of each job.
SELECT job, last_run_at, last_error, last_error_at, next_run_at FROM checkout.maintenance_status();

-- Reconciliation queue depth, and items waiting for a human.
SELECT status, count(*), min(created_at) AS oldest FROM checkout.reconciliation_queue GROUP BY status ORDER BY status;

-- Idempotency keys by status (a growing 'processing' count would mean an external writer left keys half-done).
SELECT status, count(*) FROM checkout.idempotency_keys GROUP BY status ORDER BY status;

-- Row counts and dead tuples per table (the seed's version selected a column, tablename, that
-- pg_stat_user_tables does not have).
SELECT relname AS table_name, n_live_tup AS rows, n_dead_tup AS dead_rows, last_autovacuum
FROM pg_stat_user_tables WHERE schemaname = 'checkout' ORDER BY n_live_tup DESC;

-- Constraint violations are not counted by Postgres (the seed queried pg_stat_database_conflicts,
-- which counts recovery conflicts on standbys, with a column it does not have). Errors, deadlocks
-- and rollbacks of this database instead:
SELECT xact_commit, xact_rollback, deadlocks, conflicts FROM pg_stat_database WHERE datname = current_database();

-- Slow checkout calls, where pg_stat_statements is installed (shared_preload_libraries =
-- 'pg_stat_statements' and CREATE EXTENSION pg_stat_statements); the column is mean_exec_time
-- since PostgreSQL 13.
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS has_pg_stat_statements \gset
\if :has_pg_stat_statements
SELECT query, calls, round(mean_exec_time::numeric, 3) AS mean_ms, round(total_exec_time::numeric, 1) AS total_ms
FROM pg_stat_statements
WHERE query ILIKE '%checkout.%' AND mean_exec_time > 1 -- ms
ORDER BY mean_exec_time DESC LIMIT 20;
\endif
