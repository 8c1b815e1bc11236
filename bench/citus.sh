#!/usr/bin/env bash
# create_subscription_atomic through a Citus coordinator (delegated to the tenant's worker) against
# the same call on a single server, PostgreSQL 15, 1, 4 and 8 clients (issue 17). All four servers
# run on this one machine: the figures show what routing costs per call, not what a cluster of
# machines gains. Needs the Citus that scripts/setup builds. Usage: bench/citus.sh [seconds]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/env.sh"
SECS=${1:-10} TENANTS=8 CUSTOMERS=20000 # per tenant
BIN=$(pg_bindir 15)
[ -f "$("$PG15_CONFIG" --pkglibdir)/citus.so" ] || { echo "Citus is not installed for PostgreSQL 15" >&2; exit 1; }
(cd "$root" && cargo pgrx install --release --sudo --pg-config "$PG15_CONFIG" >/dev/null 2>&1) \
  || { echo "cargo pgrx install --release failed" >&2; exit 1; }
base=$((${CHECKOUT_BENCH_PORT:-54417} + 10)) # single server; coordinator + 1, workers + 2, + 3
ports=($base $((base + 1)) $((base + 2)) $((base + 3)))
dir() { echo "$SERVER_BASE/citus-bench-$1"; }
cleanup() { for p in "${ports[@]}"; do stop_cluster 15 "$(dir "$p")"; rm -rf "$(dir "$p")"; done; }
trap cleanup EXIT
cleanup
for p in "${ports[@]}"; do
  start_cluster 15 "$(dir "$p")" "$p" "shared_preload_libraries = 'citus'" "citus.enable_unsafe_triggers = on" \
    "max_connections = 100" "shared_buffers = '256MB'" "synchronous_commit = off" >/dev/null
done
at() { local p=$1; shift; PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" -U postgres -d postgres "$@"; }
single=$base coord=$((base + 1))
at $single -c "CREATE EXTENSION checkout" >/dev/null
for p in "${ports[@]:1}"; do at "$p" -c "CREATE EXTENSION citus" >/dev/null; done
at $coord -c "SELECT citus_set_coordinator_host('127.0.0.1', $coord)" -c "SELECT citus_add_node('127.0.0.1', $((base + 2)))" \
  -c "SELECT citus_add_node('127.0.0.1', $((base + 3)))" -c "CREATE EXTENSION checkout" -c "SELECT checkout.distribute()" >/dev/null
# The same tenants on both: organizations t1..t8, a product each, 20,000 customers each.
data="
INSERT INTO checkout.organizations (id, name)
  SELECT ('a0000000-0000-0000-0000-' || lpad(t::text, 12, '0'))::uuid, 't' || t FROM generate_series(1, $TENANTS) t;
INSERT INTO checkout.products (id, organization_id, name)
  SELECT ('b0000000-0000-0000-0000-' || lpad(t::text, 12, '0'))::uuid, ('a0000000-0000-0000-0000-' || lpad(t::text, 12, '0'))::uuid, 'p'
  FROM generate_series(1, $TENANTS) t;
INSERT INTO checkout.customers (id, organization_id, email)
  SELECT ('c0000000-0000-' || lpad(t::text, 4, '0') || '-0000-' || lpad(c::text, 12, '0'))::uuid,
         ('a0000000-0000-0000-0000-' || lpad(t::text, 12, '0'))::uuid, 'c' || c || '@t' || t || '.example.com'
  FROM generate_series(1, $TENANTS) t, generate_series(1, $CUSTOMERS) c;"
at $single -c "$data" -c "VACUUM ANALYZE" >/dev/null
at $coord <<<"$data" >/dev/null
at $coord -c "VACUUM ANALYZE" >/dev/null
script=$(mktemp /tmp/checkout-citus-bench.XXXXXX.sql); chmod 644 "$script"
cat > "$script" <<SQL
\set t random(1, $TENANTS)
\set c random(1, $CUSTOMERS)
SELECT checkout.create_subscription_atomic('{"status": "active", "amount": 1000, "currency": "usd", "interval": "month", "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2099-01-01T00:00:00Z"}', NULL, ('c0000000-0000-' || lpad(:t::text, 4, '0') || '-0000-' || lpad(:c::text, 12, '0'))::uuid, ('b0000000-0000-0000-0000-' || lpad(:t::text, 12, '0'))::uuid, ('a0000000-0000-0000-0000-' || lpad(:t::text, 12, '0'))::uuid);
SQL
run() { # PORT CLIENTS -> "tps latency_ms"
  "$BIN/pgbench" -n -h 127.0.0.1 -p "$1" -U postgres -f "$script" -c "$2" -j "$2" -T "$SECS" postgres 2>/dev/null \
    | awk '/^latency average/ { lat = $4 } /^tps/ { tps = $3 } END { printf "%.0f %.3f", tps, lat }'
}
echo "| clients | single server TPS | latency ms | through the coordinator TPS | latency ms | ratio |"
echo "|---|---|---|---|---|---|"
for clients in 1 4 8; do
  read -r s_tps s_lat <<<"$(run $single $clients)"
  read -r c_tps c_lat <<<"$(run $coord $clients)"
  echo "| $clients | $s_tps | $s_lat | $c_tps | $c_lat | **$(echo "scale=2; $c_tps / $s_tps" | bc)x** |"
  [ "$clients" = 1 ] && routing=$(echo "scale=3; $c_lat - $s_lat" | bc)
done
echo
echo "Routing cost per call (1 client, latency through the coordinator minus on one server): ${routing} ms."
echo "All four servers run on this one 2-core machine: this shows overhead, not scale."
assert_clean() { [ "$(at "$1" -c "SELECT count(*) FROM checkout.check_invariants()")" = 0 ] || { echo "invariants broken on port $1" >&2; exit 1; }; }
assert_clean $single; assert_clean $coord
rm -f "$script"
