# Every monitoring query of docs/monitoring.sql runs (with pg_stat_statements where the server has
# it: PostgreSQL 15 and 18 here; the PostgreSQL 16 wheel ships no contrib modules).
source "$(dirname "$0")/lib.sh"
fresh_db e2e_monitoring
psql_db e2e_monitoring -c "CREATE EXTENSION checkout" >/dev/null
if psql_db e2e_monitoring -c "SHOW shared_preload_libraries" | grep -q pg_stat_statements; then
  psql_db e2e_monitoring -c "CREATE EXTENSION pg_stat_statements" >/dev/null
  psql_db e2e_monitoring -c "SELECT checkout.normalize_email('a@b.com'), pg_sleep(0.002)" >/dev/null
fi
psql_db e2e_monitoring -f "$(dirname "$0")/../../docs/monitoring.sql" >/dev/null
