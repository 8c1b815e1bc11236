#!/usr/bin/env bash
# examples/python as an application team runs it: psycopg 3 from its requirements.txt, connected as
# an application role with exactly the grants of docs/operations.md (the webhook worker as a role
# of its own), running the demo scenario and the retry tests (55P03 and 40P01 retried whole, other
# errors not).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
example=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../examples/python" && pwd)
db=e2e_python app=e2e_python_app worker=e2e_python_webhooks holder=e2e_python_holder
venv=/var/tmp/checkout-pyenv # kept between runs; rebuilt when requirements.txt changes

python3 -c 'import ensurepip, venv' 2>/dev/null || skip "python3 with venv and ensurepip is not installed"
# (&& chains: set -e does not act inside a command followed by ||)
(
  flock 9 && { cmp -s "$example/requirements.txt" "$venv/requirements.txt" || {
    rm -rf "$venv" && python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q --disable-pip-version-check -r "$example/requirements.txt" &&
      cp "$example/requirements.txt" "$venv/requirements.txt"; }; }
) 9>"$venv.lock" || fail "installing examples/python/requirements.txt into $venv"

fresh_db $db
psql_db postgres -c "DROP ROLE IF EXISTS $app" -c "CREATE ROLE $app LOGIN" \
  -c "DROP ROLE IF EXISTS $worker" -c "CREATE ROLE $worker LOGIN" \
  -c "DROP ROLE IF EXISTS $holder" -c "CREATE ROLE $holder LOGIN" \
  -c "ALTER ROLE $holder SET deadlock_timeout = '1min'" # test_retries: the service is the deadlock's victim
psql_db $db <<SQL
CREATE EXTENSION checkout;
$(readme_app_grants $app)
$(readme_app_grants $holder)
$(docs_webhook_grants $worker)
SQL
psql_db $db -f "$example/setup.sql"

export CHECKOUT_DSN="host=127.0.0.1 port=$E2E_PORT dbname=$db user=$app"
export CHECKOUT_WEBHOOK_DSN="host=127.0.0.1 port=$E2E_PORT dbname=$db user=$worker"
export CHECKOUT_HOLDER_DSN="host=127.0.0.1 port=$E2E_PORT dbname=$db user=$holder"
cd "$example"
"$venv/bin/python" demo.py || fail "demo.py"
"$venv/bin/python" -m unittest -v test_retries || fail "test_retries.py"
"$venv/bin/python" webhook_worker.py --once || fail "webhook_worker.py --once"
# What the demo wrote, as the tables hold it (the roles cannot read them).
# One subscription (the replay wrote nothing), one trial (the alias got none), one webhook event
# processed at its second attempt (the first failed in the handler and was deferred).
assert_eq "1 1 processed:2" "$(psql_db $db -c "SELECT (SELECT count(*) FROM checkout.subscriptions) || ' ' ||
  (SELECT count(*) FROM checkout.trial_history) || ' ' ||
  (SELECT string_agg(status || ':' || attempts, ',') FROM checkout.webhook_events)")" "subscriptions, trials, webhook events"
assert_eq "" "$(violations $db)" "check_invariants() after the example"
