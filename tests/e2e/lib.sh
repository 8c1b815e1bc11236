# Sourced by each e2e test: psql helpers and assertions against the run.sh cluster.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
psql_db() { # DB [psql args...]: quiet, unaligned, stop on error
  local db=$1; shift
  "$E2E_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$E2E_PORT" -U postgres -d "$db" "$@"
}
fresh_db() { # DB: drop and create
  psql_db postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
}
fail() { echo "FAILED: $*" >&2; exit 1; }
skip() { # REASON: a test that cannot run here says so in one line; in CI (CI=true), where setup
  # installs everything, that is a failure instead
  [ "${CI:-}" = true ] && fail "cannot run in CI: $*"
  echo "skipped: $*"; exit 0
}
or_die() { # COMMAND...: its output. When it fails, the test fails, also from inside $(...), where
  # an empty answer must mean "nothing found", never "the query failed".
  local out
  if ! out=$("$@"); then echo "FAILED: $*" >&2; kill -TERM $$; exit 1; fi
  printf '%s\n' "$out"
}
violations() { # DB: what check_invariants() finds, on one line; empty when the data is consistent
  or_die psql_db "$1" -c "SELECT string_agg(invariant || ': ' || detail, '; ') FROM checkout.check_invariants()"
}
over_refunded() { # DB: payments whose pending and succeeded refunds add up beyond their amount
  or_die psql_db "$1" -c "SELECT string_agg(p.stripe_payment_intent_id, ' ') FROM checkout.payment_intents p
    WHERE p.amount < (SELECT coalesce(sum(r.amount), 0) FROM checkout.refunds r
                      WHERE r.organization_id = p.organization_id AND r.payment_intent_id = p.stripe_payment_intent_id
                        AND r.status IN ('pending', 'succeeded'))"
}
deadlocks() { # DB: the deadlocks PostgreSQL has counted in that database
  psql_db postgres -c "SELECT deadlocks FROM pg_stat_database WHERE datname = '$1'"
}
assert_eq() { # EXPECTED ACTUAL MESSAGE
  [ "$1" = "$2" ] || fail "$3: expected [$1], got [$2]"
}
# One line per checkout table: name, row count, digest of all rows.
fingerprint() { # DB
  psql_db "$1" <<'SQL'
SELECT format('SELECT %L || '' '' || count(*) || '' '' || coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), ''-'') FROM checkout.%I t',
              c.relname, c.relname)
FROM pg_class c WHERE c.relnamespace = 'checkout'::regnamespace AND c.relkind = 'r'
  AND c.relname <> 'maintenance_runs' -- operational state, deliberately not dumped
ORDER BY c.relname
\gexec
SQL
}
docs_webhook_grants() { # ROLE: the grants docs/operations.md gives a webhook worker role, for ROLE
  local doc; doc="$(dirname "${BASH_SOURCE[0]}")/../../docs/operations.md"
  sed -n '/^GRANT USAGE ON SCHEMA checkout TO webhooks;$/,/^TO webhooks;$/p' "$doc" | sed -E "s/(^| )TO webhooks;\$/\1TO $1;/"
}
readme_app_grants() { # ROLE: the grants docs/operations.md's "Using it" gives an application role,
  # for ROLE (read from that file, so the tests run with exactly what users are told to grant)
  local readme; readme="$(dirname "${BASH_SOURCE[0]}")/../../docs/operations.md"
  sed -n '/^GRANT USAGE ON SCHEMA checkout TO app;$/,/^TO app;$/p' "$readme" | sed -E "s/(^| )TO app;\$/\1TO $1;/"
}
# Cases run in subshells after a shared setup, so that one failing case does not hide the others.
failed_cases=()
report_case() { # LABEL STATUS ERRFILE: the line of a case that just ran (its stderr in ERRFILE):
  # "LABEL: ok", or "LABEL: FAILED: <message>" with what it wrote before failing on stderr
  local label=$1 rc=$2 err=$3 msg
  if [ "$rc" -eq 0 ]; then cat "$err" >&2; echo "$label: ok"; return; fi
  failed_cases+=("$label")
  sed '/^FAILED: /,$d' "$err" | sed 's/^/    /' >&2
  msg=$(sed -n '/^FAILED: /,$p' "$err" | sed '1s/^FAILED: //' | awk 'NF { printf "%s%s", s, $0; s = " | " }')
  [ -n "$msg" ] || msg="exit status $rc: $(awk 'NF { printf "%s%s", s, $0; s = " | " }' "$err" | tail -c 2000)"
  echo "$label: FAILED: $msg"
}
cases_passed() { # exit status 1 when a reported case failed
  [ ${#failed_cases[@]} -eq 0 ] || { echo "failed: ${failed_cases[*]}"; return 1; }
}
