# The interleaving tests: PostgreSQL's isolation tester runs the specs in tests/isolation/specs step
# by step across real sessions (no sleeps: a step that blocks is seen waiting in the server) and
# compares each output with tests/isolation/expected.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/../isolation" && pwd)
regress="$(dirname "$(dirname "$("$E2E_BIN/pg_config" --pgxs)")")/test/isolation/pg_isolation_regress"
[ -x "$regress" ] || skip "no pg_isolation_regress in this PostgreSQL ($regress)"
fresh_db e2e_isolation
out=$(mktemp -d /tmp/checkout-isolation.XXXXXX)
specs=$(cd "$here/specs" && ls *.spec | sed 's/\.spec$//')
if ! "$regress" --use-existing --host=127.0.0.1 --port="$E2E_PORT" --user=postgres --dbname=e2e_isolation \
     --inputdir="$here" --outputdir="$out" $specs; then
  head -c 6000 "$out/regression.diffs" >&2 || true
  fail "isolation specs differ from tests/isolation/expected (diffs above; outputs in $out/results)"
fi
rm -rf "$out"
psql_db postgres -c "DROP DATABASE e2e_isolation"
