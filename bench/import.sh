#!/usr/bin/env bash
# Times checkout.import_seed() on a database built by the seed's migrations: bench/reference.sql
# filled by bench/import_data.sql (N customers, 2N subscriptions), on PostgreSQL 16 with fsync on.
# Usage: bench/import.sh [CUSTOMERS]   (default 1000000). Prints the dry run's and the real run's
# time and counts, and how long check_invariants() and verify() take after it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/env.sh"
N=${1:-1000000}
PORT=${CHECKOUT_IMPORT_PORT:-54420}
DATA="$SERVER_BASE/import16"
BIN=$(pg_bindir 16r)
(cd "$root" && cargo pgrx install --release --pg-config "$PG16R_CONFIG" >/dev/null)
stop_cluster 16r "$DATA"; rm -rf "$DATA"
start_cluster 16r "$DATA" "$PORT" "shared_buffers = '512MB'" "max_wal_size = '8GB'" "work_mem = '64MB'" "maintenance_work_mem = '512MB'"
PSQL=("$BIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -q -d postgres -c "CREATE DATABASE import_bench"
"${PSQL[@]}" -q -d import_bench -c "CREATE EXTENSION checkout" -f "$root/bench/reference.sql" >/dev/null
t0=$(date +%s)
"${PSQL[@]}" -q -d import_bench -v customers="$N" -f "$root/bench/import_data.sql" >/dev/null
echo "source loaded: $N customers, $((2 * N)) subscriptions, $(( $(date +%s) - t0 )) s"
"${PSQL[@]}" -d import_bench <<'SQL'
\timing on
\echo dry run
SELECT * FROM checkout.import_seed('ref');
\echo real run
SELECT * FROM checkout.import_seed('ref', false);
SELECT count(*) AS invariant_violations FROM checkout.check_invariants();
SELECT count(*) FILTER (WHERE NOT ok) AS verify_failures FROM checkout.verify();
SQL
stop_cluster 16r "$DATA"; rm -rf "$DATA"
