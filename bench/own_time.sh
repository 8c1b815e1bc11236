#!/usr/bin/env bash
# A function's own time: its call's mean time minus the mean time of the statements it runs itself
# (pg_stat_statements with track = all), for checkout and the seed's PL/pgSQL side by side.
# Statements nested deeper (foreign-key checks "FROM ONLY", what triggers run) are inside their
# parent statement's time already and are not subtracted again. PostgreSQL 15 (Debian's build has
# pg_stat_statements; the PostgreSQL 16 wheel has not). Usage: bench/own_time.sh [customers] [seconds]
# Prints a markdown table; scripts/bench appends it to its results.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
source "$root/scripts/env.sh"
N=${1:-100000} SECS=${2:-10}
PORT=$((${CHECKOUT_BENCH_PORT:-54417} + 2))
DATA="$SERVER_BASE/bench15"
BIN=$(pg_bindir 15)
(cd "$root" && cargo pgrx install --release --sudo --pg-config "$PG15_CONFIG" >/dev/null)
stop_cluster 15 "$DATA"; rm -rf "$DATA"
start_cluster 15 "$DATA" "$PORT" "shared_buffers = '512MB'" "max_wal_size = '4GB'" \
  "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = all" "pg_stat_statements.max = 1000"
PSQL=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE own"
"${PSQL[@]}" -d own -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION checkout" -f "$root/bench/reference.sql" >/dev/null
"${PSQL[@]}" -d own -v customers="$N" -v with_ref=true -f "$root/bench/data.sql" >/dev/null
work=$(mktemp -d /tmp/checkout-own.XXXXXX); chmod 755 "$work"
echo "| operation | implementation | call µs | its statements µs | own µs |"
echo "|---|---|---|---|---|"
for op in create_subscription_atomic upsert_customer_atomic; do
  for impl in checkout ref; do
    sed "s/@S@/$impl/g" "$root/bench/scripts/$op.sql" > "$work/$op.sql"
    path="search_path=public"; [ "$impl" = ref ] && path="search_path=ref,public"
    "${PSQL[@]}" -d own -c "SELECT pg_stat_statements_reset()" >/dev/null
    PGOPTIONS="-c synchronous_commit=off -c $path" "$BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PORT" -U postgres \
      -c 1 -j 1 -T "$SECS" -D N="$N" -f "$work/$op.sql" own >/dev/null 2>&1
    "${PSQL[@]}" -d own -At -F ' ' -c "
      WITH calls AS (SELECT sum(calls) AS calls, sum(total_exec_time) AS total_exec_time FROM pg_stat_statements
                     WHERE toplevel AND query ~ '${impl}\.${op}\('),
           own AS (SELECT sum(total_exec_time) AS t FROM pg_stat_statements
                   WHERE NOT toplevel AND query !~ 'FROM ONLY' AND query !~ 'pg_stat_statements'
                     -- what checkout's email trigger runs (nested in the statement that fired it;
                     -- the seed's function inserts its variant itself, unqualified)
                     AND query !~ '^\s*INSERT INTO checkout\.customer_email_variants'
                     AND query !~ '^\s*SELECT \(lpad')
      SELECT round((c.total_exec_time / c.calls)::numeric * 1000, 1), round((o.t / c.calls)::numeric * 1000, 1),
             round(((c.total_exec_time - o.t) / c.calls)::numeric * 1000, 1)
      FROM calls c, own o" | { read -r call stmts own; echo "| $op | $impl | $call | $stmts | **$own** |"; }
  done
done
rm -rf "$work"
stop_cluster 15 "$DATA"; rm -rf "$DATA"
