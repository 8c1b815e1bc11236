# pg_cron scheduling (PostgreSQL 15, where Debian ships postgresql-15-cron and run.sh preloads it):
# schedule_with_pg_cron() registers a job that runs run_maintenance(); unschedule_pg_cron() removes it.
source "$(dirname "$0")/lib.sh"
if [ "$E2E_VERSION" != 15 ]; then
  echo "pg_cron is tested on PostgreSQL 15 only"; exit 0
fi
[ -f /usr/lib/postgresql/15/lib/pg_cron.so ] || fail "postgresql-15-cron is not installed (scripts/setup installs it)"
fresh_db e2e_cron
psql_db e2e_cron -c "CREATE EXTENSION pg_cron" -c "CREATE EXTENSION checkout"
# Debian's pg_cron 1.4 has minute granularity: the first run comes within a minute.
psql_db e2e_cron -c "SELECT checkout.schedule_with_pg_cron()" >/dev/null
assert_eq "SELECT checkout.run_maintenance()" "$(psql_db e2e_cron -c "SELECT command FROM cron.job WHERE jobname = 'checkout-maintenance'")" "scheduled command"
jobs=$(psql_db e2e_cron -c "SELECT count(*) FROM checkout.maintenance_status()")
for i in $(seq 1 150); do
  runs=$(psql_db e2e_cron -c "SELECT count(*) FROM checkout.maintenance_runs")
  [ "$runs" = "$jobs" ] && break
  sleep 0.5
done
assert_eq "$jobs" "$runs" "jobs recorded by runs from pg_cron"
assert_eq t "$(psql_db e2e_cron -c "SELECT checkout.unschedule_pg_cron()")" "unschedule"
assert_eq 0 "$(psql_db e2e_cron -c "SELECT count(*) FROM cron.job")" "jobs left"
