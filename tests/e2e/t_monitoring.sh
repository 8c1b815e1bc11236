# Every monitoring query of docs/monitoring.sql runs. Where this PostgreSQL has pg_stat_statements
# (its control file and library: PostgreSQL 15 and 18 here; run.sh then preloads it), its query must
# run and list a slow checkout call made just before; only where the module is not installed (the
# PostgreSQL 16 wheel ships no contrib modules) is that query skipped, and the test says so.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_monitoring
psql_db e2e_monitoring -c "CREATE EXTENSION checkout" >/dev/null
libdir=$("$E2E_BIN/pg_config" --pkglibdir)
control=$(psql_db e2e_monitoring -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
if [ "$control" = 1 ] && [ -f "$libdir/pg_stat_statements.so" ]; then
  psql_db e2e_monitoring -c "SHOW shared_preload_libraries" | grep -q pg_stat_statements \
    || fail "pg_stat_statements is installed for PostgreSQL $E2E_VERSION but not in shared_preload_libraries (run.sh preloads it when $libdir/pg_stat_statements.so exists)"
  psql_db e2e_monitoring -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
  # A checkout call slower than the query's 1 ms threshold, marked so its line can be found. The
  # statistics are the server's, full of the earlier tests' slow calls: reset first, so the probe
  # is among the query's 20 slowest.
  psql_db e2e_monitoring -c "SELECT pg_stat_statements_reset()" >/dev/null
  psql_db e2e_monitoring -c "SELECT checkout.normalize_email('a@b.com') AS monitoring_probe, pg_sleep(0.005)" >/dev/null
  out=$(psql_db e2e_monitoring -f "$(dirname "$0")/../../docs/monitoring.sql")
  grep -q 'monitoring_probe' <<<"$out" \
    || fail "docs/monitoring.sql: the pg_stat_statements query did not run or did not list the slow checkout call; output:
$out"
else
  what=$([ "$control" = 1 ] && echo "no $libdir/pg_stat_statements.so" || echo "no pg_stat_statements.control")
  echo "skipped: the pg_stat_statements query of docs/monitoring.sql on PostgreSQL $E2E_VERSION: the module is not installed ($what)"
  psql_db e2e_monitoring -f "$(dirname "$0")/../../docs/monitoring.sql" >/dev/null
fi
