#!/usr/bin/env bash
# End-to-end tests against a throwaway cluster of one PostgreSQL version, with the extension build
# that `cargo pgrx test` just installed. Each t_*.sh is one test; it exits non-zero on failure.
# Usage: tests/e2e/run.sh VERSION [t_name ...]
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../../scripts/env.sh"
v=$1; shift
export E2E_VERSION=$v E2E_BIN; E2E_BIN=$(pg_bindir "$v")
# Below 32768, out of the kernel's ephemeral range: a port in it can be taken by a client
# connection's local end at the moment a server (here, t_worker's standby on E2E_PORT + 100) binds.
export E2E_PORT=$((25400 + v)) E2E_DATA="$PGDATA_BASE/e2e-$v" E2E_LOG="$PGDATA_BASE/e2e-$v/server.log"
stop_cluster "$v" "$E2E_DATA"; rm -rf "$E2E_DATA"
# checkout preloaded: its maintenance worker runs in database e2e_worker (t_worker). On PostgreSQL 15
# also pg_cron (Debian's postgresql-15-cron) for the scheduling test.
preload=checkout
extra=("checkout.maintenance_databases = 'e2e_worker'" "checkout.maintenance_interval = '1s'")
# pg_stat_statements where the build has it (Debian 15, the PostgreSQL 18 wheel), for t_monitoring.
[ -f "$("$E2E_BIN/pg_config" --pkglibdir)/pg_stat_statements.so" ] && preload+=,pg_stat_statements
if [ "$v" = 15 ] && [ -f /usr/lib/postgresql/15/lib/pg_cron.so ]; then
  preload+=,pg_cron
  extra+=("cron.database_name = 'e2e_cron'" "cron.use_background_workers = on")
fi
extra+=("shared_preload_libraries = '$preload'")
start_cluster "$v" "$E2E_DATA" "$E2E_PORT" "max_connections = 100" "fsync = off" "${extra[@]}"
tests=("$@"); [ ${#tests[@]} -gt 0 ] || tests=($(cd "$here" && ls t_*.sh))
passed=0; failed=0
for t in "${tests[@]}"; do
  t=${t%.sh}
  out=$(bash "$here/$t.sh" 2>&1); rc=$?
  # A test that could not run part of itself says so on a line starting "skipped:"; shown on success too.
  if [ $rc -eq 0 ]; then passed=$((passed + 1)); echo "ok   pg$v $t"; echo "$out" | grep '^skipped:' | sed 's/^/    /'
  else failed=$((failed + 1)); echo "FAIL pg$v $t"; echo "$out" | sed 's/^/    /' | tail -40; fi
done
stop_cluster "$v" "$E2E_DATA"; rm -rf "$E2E_DATA"
echo "e2e pg$v: $passed passed, $failed failed"
[ $failed -eq 0 ]
