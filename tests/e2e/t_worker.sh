# The maintenance worker on a server that preloads checkout (run.sh): it waits while the extension
# is missing, runs the jobs every checkout.maintenance_interval, rereads the interval on reload,
# and stops cleanly on SIGTERM.
source "$(dirname "$0")/lib.sh"
fresh_db e2e_worker
last_runs() { psql_db e2e_worker -c "SELECT count(*) FROM checkout.maintenance_runs" 2>/dev/null || echo 0; }
psql_db e2e_worker -c "CREATE EXTENSION checkout"
jobs=$(psql_db e2e_worker -c "SELECT count(*) FROM checkout.maintenance_status()")
for i in $(seq 1 60); do [ "$(last_runs)" = "$jobs" ] && break; sleep 0.5; done
assert_eq "$jobs" "$(last_runs)" "jobs run by the worker (within 30 s; it restarts 10 s after failing on a missing database)"
pid=$(psql_db e2e_worker -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkout maintenance' AND datname = 'e2e_worker'")
[ -n "$pid" ] || fail "no worker in pg_stat_activity"
# A 1 s interval: two runs within 4 s. Then 3 s after a reload.
gap() {
  local a b
  a=$(psql_db e2e_worker -c "SELECT max(last_run_at) FROM checkout.maintenance_runs")
  for i in $(seq 1 80); do
    b=$(psql_db e2e_worker -c "SELECT max(last_run_at) FROM checkout.maintenance_runs")
    [ "$a" != "$b" ] && break; sleep 0.1
  done
  a=$b
  for i in $(seq 1 80); do
    b=$(psql_db e2e_worker -c "SELECT max(last_run_at) FROM checkout.maintenance_runs")
    [ "$a" != "$b" ] && break; sleep 0.1
  done
  psql_db e2e_worker -c "SELECT extract(epoch FROM '$b'::timestamptz - '$a'::timestamptz)"
}
g=$(gap); awk -v g="$g" 'BEGIN { exit !(g > 0.5 && g < 2.5) }' || fail "interval 1 s: runs $g s apart"
psql_db e2e_worker -c "ALTER SYSTEM SET checkout.maintenance_interval = '3s'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1.5
g=$(gap); awk -v g="$g" 'BEGIN { exit !(g > 2.5 && g < 5) }' || fail "after reload to 3 s: runs $g s apart"
psql_db e2e_worker -c "ALTER SYSTEM RESET checkout.maintenance_interval" -c "SELECT pg_reload_conf()" >/dev/null
# A standby (streaming replica of this server, with the same settings) runs no worker: workers start
# only when recovery has finished.
standby="$E2E_DATA-standby"; sport=$((E2E_PORT + 100))
rm -rf "$standby"
sudo -u postgres "$E2E_BIN/pg_basebackup" -h 127.0.0.1 -p "$E2E_PORT" -U postgres -D "$standby" -R -X stream --checkpoint=fast
printf "port = %s\nunix_socket_directories = '%s'\n" "$sport" "$standby" | sudo -u postgres tee -a "$standby/postgresql.conf" >/dev/null
sudo -u postgres env -u RUST_BACKTRACE "$E2E_BIN/pg_ctl" -D "$standby" -l "$standby/server.log" -w start >/dev/null
sq() { "$E2E_BIN/psql" -X -q -At -h 127.0.0.1 -p "$sport" -U postgres -d e2e_worker -c "$1"; }
assert_eq t "$(sq "SELECT pg_is_in_recovery()")" "standby in recovery"
sleep 3
assert_eq 0 "$(sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'checkout maintenance'")" "workers on the standby"
assert_eq "$jobs" "$(sq "SELECT count(*) FROM checkout.maintenance_runs")" "the primary's runs replicated"
sudo -u postgres "$E2E_BIN/pg_ctl" -D "$standby" -m fast -w stop >/dev/null
rm -rf "$standby"
# SIGTERM: the worker logs its stop and exits 0 (not restarted).
psql_db e2e_worker -c "SELECT pg_terminate_backend($pid)" >/dev/null
for i in $(seq 1 50); do grep -q "checkout maintenance worker for database e2e_worker stopped" "$E2E_LOG" && break; sleep 0.1; done
grep -q "checkout maintenance worker for database e2e_worker stopped" "$E2E_LOG" || fail "no clean stop in the log"
