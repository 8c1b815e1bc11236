# search_path hijack (issue 8). 1: every SECURITY DEFINER function of the extension pins
# search_path = pg_catalog, pg_temp (pg_proc.proconfig, found through pg_depend). 2: objects planted
# where a caller's search_path finds them first (schema evil ahead of pg_catalog: tables with the
# checkout names holding other data, now(), clock_timestamp(), lower(), length(), to_jsonb(),
# jsonb_build_object(), jsonb_typeof(), current_setting(), the aggregates sum() and count(*), and
# the text = operator; plus same-named temporary tables) change nothing: the same calls of
# record_refund, update_refund_status, record_webhook_event, claim/complete/fail_webhook_event,
# run_maintenance, maintenance_status, check_invariants, cancel_subscription_atomic and
# upsert_customer_atomic, made in two identical databases, one plain and one hijacked, give the
# same answers and leave the same rows in every checkout table (ids the calls generate and times
# they stamp are masked; a planted now() would show as 2000-01-01 and differ), and the planted
# objects are untouched.
source "$(dirname "$0")/lib.sh"
ORG=a0000000-0000-0000-0000-000000000001

# 1. The catalog.
fresh_db e2e_sp_plain
psql_db e2e_sp_plain -c "CREATE EXTENSION checkout" >/dev/null
definers="FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
  WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'checkout')
    AND p.prosecdef AND p.pronamespace::regnamespace::text NOT IN ('tests', 'checkout_test')"
n=$(psql_db e2e_sp_plain -c "SELECT count(*) $definers")
[ "$n" -ge 30 ] || fail "only $n SECURITY DEFINER functions found: the catalog query misses some"
assert_eq "" "$(or_die psql_db e2e_sp_plain -c "SELECT string_agg(p.oid::regprocedure::text || ' ' || coalesce(p.proconfig::text, '(no SET)'), '; ' ORDER BY p.oid::regprocedure::text)
  $definers AND p.prorettype <> 'trigger'::regtype AND NOT ('search_path=pg_catalog, pg_temp' = ANY (coalesce(p.proconfig, '{}')))")" \
  "SECURITY DEFINER functions without search_path=pg_catalog, pg_temp"
# The trigger functions are native and set nothing (no GUC save and restore per row): every name
# in their SQL is qualified and every operator pinned, which part 2 exercises (its calls fire them
# under the planted search_path).
assert_eq "6 c" "$(psql_db e2e_sp_plain -c "SELECT count(*) || ' ' || string_agg(DISTINCT (SELECT l.lanname FROM pg_language l WHERE l.oid = p.prolang), ',')
  $definers AND p.prorettype = 'trigger'::regtype AND p.proconfig IS NULL")" "native trigger functions without a SET clause"

# 2. The same data in two databases.
fresh_db e2e_sp_evil
setup() { # DB: the extension, a small tenant (fixed ids, times far from now), and the test's helpers
  psql_db "$1" >/dev/null <<SQL
$( [ "$1" = e2e_sp_plain ] || echo "CREATE EXTENSION checkout;" )
INSERT INTO checkout.organizations (id, name) VALUES ('$ORG', 'A');
INSERT INTO checkout.products (id, organization_id, name) VALUES
  ('b0000000-0000-0000-0000-000000000001', '$ORG', 'Pro'), ('b0000000-0000-0000-0000-000000000002', '$ORG', 'Team');
INSERT INTO checkout.features (id, organization_id, key) VALUES ('f0000000-0000-0000-0000-000000000001', '$ORG', 'sso');
INSERT INTO checkout.customers (id, organization_id, email) VALUES
  ('c0000000-0000-0000-0000-000000000001', '$ORG', 'Alice@Example.com'),
  ('c0000000-0000-0000-0000-000000000002', '$ORG', 'bob@example.com');
-- d1: set to cancel at the end of a period long over (run_maintenance ends it); d2: active.
INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount, currency, interval,
    current_period_start, current_period_end, cancel_at_period_end) VALUES
  ('d0000000-0000-0000-0000-000000000001', '$ORG', 'c0000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-000000000001',
   'active', 1000, 'usd', 'month', '2001-01-01 00:00:00+00', '2001-02-01 00:00:00+00', true),
  ('d0000000-0000-0000-0000-000000000002', '$ORG', 'c0000000-0000-0000-0000-000000000002', 'b0000000-0000-0000-0000-000000000002',
   'active', 2000, 'usd', 'month', '2001-01-01 00:00:00+00', '2099-01-01 00:00:00+00', false);
INSERT INTO checkout.feature_grants (organization_id, customer_id, feature_id, subscription_id) VALUES
  ('$ORG', 'c0000000-0000-0000-0000-000000000001', 'f0000000-0000-0000-0000-000000000001', 'd0000000-0000-0000-0000-000000000001');
INSERT INTO checkout.payment_intents (organization_id, customer_id, subscription_id, stripe_payment_intent_id, amount, currency, status)
VALUES ('$ORG', 'c0000000-0000-0000-0000-000000000001', 'd0000000-0000-0000-0000-000000000001', 'pi_1', 1000, 'usd', 'succeeded');
-- A violation for check_invariants() to report (its test compares lower() of emails with =).
DELETE FROM checkout.customer_email_variants WHERE customer_id = 'c0000000-0000-0000-0000-000000000002';

CREATE TABLE public.sp_results (step int, result text);
CREATE TABLE public.sp_claimed (n int, id uuid);
-- Runs one call (SQL returning one text value) and records its answer or its error. No SET
-- search_path: the call runs under the caller's.
CREATE FUNCTION public.sp_call(p_step int, p_sql text) RETURNS void LANGUAGE plpgsql AS \$f\$
DECLARE
  v text;
BEGIN
  EXECUTE p_sql INTO v;
  INSERT INTO public.sp_results VALUES (p_step, v);
EXCEPTION WHEN OTHERS THEN
  INSERT INTO public.sp_results VALUES (p_step, 'ERROR ' || SQLSTATE || ' ' || SQLERRM);
END \$f\$;
-- Masks what differs between two identical runs: uuids the calls generated (the fixture's are
-- x0000000-0000-0000-0000-…) and times within a day of now (the fixture's are 2001 and 2099).
CREATE FUNCTION public.sp_mask(t text) RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog AS \$f\$
  SELECT regexp_replace(
    regexp_replace(t, '(?![a-f]0000000-0000-0000-0000-)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g'),
    '(' || to_char(now() - interval '1 day', 'YYYY-MM-DD') || '|' || to_char(now(), 'YYYY-MM-DD') || '|'
        || to_char(now() + interval '1 day', 'YYYY-MM-DD') || ')[ T][0-9:.]+([+-][0-9]{2}(:[0-9]{2})?)?', '<now>', 'g')
\$f\$;
SQL
}
setup e2e_sp_plain
setup e2e_sp_evil

# The plants, in e2e_sp_evil only: same-named tables holding other data (a payment of 1, a failed
# refund re_1, a processed evt_2, expired subscriptions), and functions, aggregates and an operator
# that answer differently.
psql_db e2e_sp_evil >/dev/null <<SQL
CREATE SCHEMA evil;
SELECT format('CREATE TABLE evil.%I AS SELECT * FROM checkout.%I', relname, relname)
FROM pg_class WHERE relnamespace = 'checkout'::regnamespace AND relkind = 'r'
\gexec
UPDATE evil.payment_intents SET amount = 1;
UPDATE evil.subscriptions SET status = 'expired';
INSERT INTO evil.refunds (id, organization_id, payment_intent_id, stripe_refund_id, amount, currency, status)
VALUES (gen_random_uuid(), '$ORG', 'pi_1', 're_1', 999, 'usd', 'failed');
INSERT INTO evil.webhook_events (id, organization_id, provider, provider_event_id, type, object_id, status, payload, event_created_at)
VALUES (gen_random_uuid(), '$ORG', 'stripe', 'evt_2', 'invoice.paid', 'in_1', 'processed', '{}', '2001-01-01 00:00:09+00');
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS \$\$SELECT timestamptz '2000-01-01 00:00:00+00'\$\$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS \$\$SELECT timestamptz '2000-01-01 00:00:00+00'\$\$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE sql AS \$\$SELECT 'hijacked'\$\$;
CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE sql AS \$\$SELECT 0\$\$;
CREATE FUNCTION evil.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql AS \$\$SELECT '{"hijacked": true}'::jsonb\$\$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS \$\$SELECT 'object'\$\$;
CREATE FUNCTION evil.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE sql AS \$\$SELECT '{"hijacked": true}'::jsonb\$\$;
CREATE FUNCTION evil.jsonb_build_object(text, integer) RETURNS jsonb LANGUAGE sql AS \$\$SELECT '{"hijacked": true}'::jsonb\$\$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS \$\$SELECT 'hijacked'\$\$;
CREATE AGGREGATE evil.sum(bigint) (SFUNC = int8larger, STYPE = bigint);
CREATE AGGREGATE evil.count(*) (SFUNC = int8inc, STYPE = bigint, INITCOND = '100');
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE sql AS \$\$SELECT true\$\$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
-- What the planted tables hold, to check afterwards that nothing wrote to them.
CREATE FUNCTION public.sp_evil_digest() RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS \$f\$
DECLARE
  v_table text;
  v_digest text;
  v_all text := '';
BEGIN
  FOR v_table IN SELECT relname FROM pg_class WHERE relnamespace = 'evil'::regnamespace AND relkind = 'r' ORDER BY relname LOOP
    EXECUTE format('SELECT md5(coalesce(string_agg(t::text, ''|'' ORDER BY t::text), '''')) FROM evil.%I t', v_table) INTO v_digest;
    v_all := v_all || v_table || ' ' || v_digest || ' ';
  END LOOP;
  RETURN v_all;
END \$f\$;
SQL
evil_before=$(psql_db e2e_sp_evil -c "SELECT public.sp_evil_digest()")

# The calls, the same text for both databases. The calls' own SQL avoids what is planted (text =,
# count, now) so that only checkout's functions could be misled.
CALLS=$(cat <<SQL
SELECT public.sp_call(1, \$q\$SELECT checkout.record_refund('$ORG', 'pi_1', 're_1', 300, 'USD', 'requested_by_customer', 'customer_request', 'd0000000-0000-0000-0000-000000000001')::text\$q\$);
SELECT public.sp_call(2, \$q\$SELECT checkout.record_refund('$ORG', 'pi_1', 're_1', 300, 'USD', 'requested_by_customer', 'customer_request', 'd0000000-0000-0000-0000-000000000001')::text\$q\$);
SELECT public.sp_call(3, \$q\$SELECT checkout.record_refund('$ORG', 'pi_1', 're_4', 200, 'usd')::text\$q\$);
SELECT public.sp_call(4, \$q\$SELECT checkout.record_refund('$ORG', 'pi_1', 're_2', 600, 'usd')::text\$q\$);
SELECT public.sp_call(5, \$q\$SELECT checkout.record_refund('$ORG', 'pi_1', 're_3', 100, 'usd', repeat('x', 101))::text\$q\$);
SELECT public.sp_call(6, \$q\$SELECT checkout.update_refund_status('$ORG', 're_1', 'succeeded')::text\$q\$);
SELECT public.sp_call(7, \$q\$SELECT checkout.update_refund_status('$ORG', 're_1', 'failed')::text\$q\$);
SELECT public.sp_call(8, \$q\$SELECT checkout.record_webhook_event('$ORG', 'evt_2', 'invoice.paid', '{"data": {"object": {"id": "in_1"}}}', '2001-01-01 00:00:02+00')::text\$q\$);
SELECT public.sp_call(9, \$q\$SELECT checkout.record_webhook_event('$ORG', 'evt_1', 'invoice.created', '{"data": {"object": {"id": "in_1"}}}', '2001-01-01 00:00:01+00')::text\$q\$);
SELECT public.sp_call(10, \$q\$SELECT checkout.record_webhook_event('$ORG', 'evt_2', 'invoice.paid', '{"data": {"object": {"id": "in_1"}}}', '2001-01-01 00:00:02+00')::text\$q\$);
SELECT public.sp_call(11, \$q\$SELECT checkout.record_webhook_event('$ORG', 'evt_3', 'customer.updated', '{"object_id": "cus_1"}', '2001-01-01 00:00:03+00')::text\$q\$);
SELECT public.sp_call(12, \$q\$SELECT checkout.record_webhook_event('$ORG', 'evt_4', 'invoice.paid', '[1]', '2001-01-01 00:00:04+00')::text\$q\$);
SELECT public.sp_call(13, \$q\$WITH c AS (SELECT * FROM checkout.claim_webhook_events(10)),
  kept AS (INSERT INTO public.sp_claimed SELECT row_number() OVER (ORDER BY event_created_at), id FROM c)
  SELECT string_agg(provider_event_id || ' ' || status || ' ' || attempts, ', ' ORDER BY event_created_at) FROM c\$q\$);
SELECT public.sp_call(14, \$q\$SELECT checkout.complete_webhook_event((SELECT id FROM public.sp_claimed WHERE n = 1))::text\$q\$);
SELECT public.sp_call(15, \$q\$SELECT checkout.fail_webhook_event((SELECT id FROM public.sp_claimed WHERE n = 2), 'boom')\$q\$);
SELECT public.sp_call(16, \$q\$SELECT string_agg(provider_event_id || ' ' || status || ' ' || attempts, ', ' ORDER BY event_created_at) FROM checkout.claim_webhook_events(10)\$q\$);
SELECT public.sp_call(17, \$q\$SELECT checkout.record_webhook_event('$ORG', 'evt_0', 'invoice.draft', '{"data": {"object": {"id": "in_1"}}}', '2001-01-01 00:00:00+00')::text\$q\$);
SELECT public.sp_call(18, \$q\$SELECT checkout.run_maintenance()::text\$q\$);
SELECT public.sp_call(19, \$q\$SELECT string_agg(job || ' ' || coalesce(last_result::text, '-') || ' ' || coalesce(last_error, '-') || ' ' || coalesce(next_run_at::text, '-'), '; ' ORDER BY job) FROM checkout.maintenance_status()\$q\$);
SELECT public.sp_call(20, \$q\$SELECT string_agg(invariant || ': ' || detail, '; ' ORDER BY invariant, detail) FROM checkout.check_invariants()\$q\$);
SELECT public.sp_call(21, \$q\$SELECT checkout.cancel_subscription_atomic('d0000000-0000-0000-0000-000000000002', '$ORG', false, 'hijack test', NULL, 'sp-key')::text\$q\$);
SELECT public.sp_call(22, \$q\$SELECT checkout.upsert_customer_atomic('$ORG', ' Carol@Example.COM ', 'ext-3')::text\$q\$);
SELECT public.sp_call(23, \$q\$SELECT string_agg(invariant || ': ' || detail, '; ' ORDER BY invariant, detail) FROM checkout.check_invariants()\$q\$);
SQL
)
psql_db e2e_sp_plain >/dev/null <<SQL
SET TimeZone = 'UTC';
$CALLS
SQL
# The hijacked caller: same-named temporary tables too (pg_temp is on every pinned path, last).
psql_db e2e_sp_evil >/dev/null <<SQL
SET TimeZone = 'UTC';
CREATE TEMP TABLE customers (LIKE checkout.customers);
CREATE TEMP TABLE subscriptions (LIKE checkout.subscriptions);
CREATE TEMP TABLE payment_intents (LIKE checkout.payment_intents);
CREATE TEMP TABLE refunds (LIKE checkout.refunds);
CREATE TEMP TABLE webhook_events (LIKE checkout.webhook_events);
CREATE TEMP TABLE subscription_changes (LIKE checkout.subscription_changes);
CREATE TEMP TABLE customer_email_variants (LIKE checkout.customer_email_variants);
SET search_path = evil, pg_catalog, checkout, public;
-- The plants work for the caller: this is what an unpinned function would get.
SELECT public.sp_call(0, \$q\$SELECT now()::text || ' ' || lower('ABC') || ' ' || ('a'::text = 'b'::text)::text || ' '
  || to_jsonb(1)::text || ' ' || current_setting('checkout.actor', true) || ' ' || (SELECT count(*) FROM (VALUES (1)) v)::text\$q\$);
$CALLS
SELECT public.sp_call(99, \$q\$SELECT ((SELECT pg_catalog.count(*) FROM pg_temp.customers) + (SELECT pg_catalog.count(*) FROM pg_temp.subscriptions)
  + (SELECT pg_catalog.count(*) FROM pg_temp.payment_intents) + (SELECT pg_catalog.count(*) FROM pg_temp.refunds)
  + (SELECT pg_catalog.count(*) FROM pg_temp.webhook_events) + (SELECT pg_catalog.count(*) FROM pg_temp.subscription_changes)
  + (SELECT pg_catalog.count(*) FROM pg_temp.customer_email_variants))::text\$q\$);
SQL
assert_eq '2000-01-01 00:00:00+00 hijacked true {"hijacked": true} hijacked 101' \
  "$(psql_db e2e_sp_evil -c "SELECT result FROM public.sp_results WHERE step = 0")" "the plants, as the hijacked caller sees them"
assert_eq 0 "$(psql_db e2e_sp_evil -c "SELECT result FROM public.sp_results WHERE step = 99")" "rows written to the caller's temporary tables"
assert_eq "$evil_before" "$(psql_db e2e_sp_evil -c "SELECT public.sp_evil_digest()")" "the planted tables after the calls"

state() { # DB: every call's answer, then every checkout table's rows, masked and sorted
  psql_db "$1" <<'SQL'
SET TimeZone = 'UTC';
SELECT step || ' ' || public.sp_mask(coalesce(result, '(null)')) FROM public.sp_results WHERE step BETWEEN 1 AND 98 ORDER BY step;
SELECT format('SELECT %L || E'':\n'' || coalesce(string_agg(public.sp_mask(t::text), E''\n'' ORDER BY public.sp_mask(t::text)), ''(empty)'') FROM checkout.%I t',
              c.relname, c.relname)
FROM pg_class c WHERE c.relnamespace = 'checkout'::regnamespace AND c.relkind = 'r' ORDER BY c.relname
\gexec
SQL
}
plain=$(state e2e_sp_plain)
evil=$(state e2e_sp_evil)
diff <(echo "$plain") <(echo "$evil") >&2 || fail "the hijacked run differs from the plain one (< plain, > hijacked)"
# The plain run is what the functions are documented to do, so the comparison means something.
expect() { # STEP PATTERN (grep -E) WHAT
  grep -qE "^$1 $2" <<<"$plain" || fail "step $1 ($3): $(grep "^$1 " <<<"$plain")"
}
expect 1 '\{"status": "pending", "duplicate": false, "refund_id": "<uuid>", "payment_amount": 1000, "refunded_total": 300\}$' "refund recorded, currency lowercased"
expect 2 '\{"status": "pending", "duplicate": true, "refund_id": "<uuid>"\}$' "refund redelivered"
expect 3 '\{"status": "pending", "duplicate": false, .*"refunded_total": 500\}$' "second refund (the total is a sum)"
expect 4 'ERROR 23514 ' "refund beyond the payment (500 + 600 > 1000)"
expect 5 'ERROR 22023 ' "reason longer than 100 characters"
expect 6 '\{"status": "succeeded", "refund_id": "<uuid>", "completed_at": "<now>"\}$' "refund verdict"
expect 7 'ERROR 09000 ' "refund verdict changed"
expect 8 '\{"status": "pending", "event_id": "<uuid>", "duplicate": false\}$' "webhook event recorded"
expect 10 '\{"status": "pending", "event_id": "<uuid>", "duplicate": true\}$' "webhook event redelivered"
expect 12 'ERROR 22023 ' "webhook payload not an object"
expect 13 'evt_1 processing 1, evt_3 processing 1$' "claim: the oldest event of each object"
expect 14 'true$' "complete"
expect 15 'deferred$' "fail"
expect 16 'evt_2 processing 1, evt_3 processing 2$' "claim again: the next event of in_1, and the deferred one"
expect 17 '\{"status": "stale", "event_id": "<uuid>", "duplicate": false\}$' "an event older than one applied"
expect 18 '.*"end_subscription_periods": 1[,}]' "maintenance ended the due subscription"
expect 20 'customer email not recorded in customer_email_variants: c0000000-0000-0000-0000-000000000002$' "check_invariants"
expect 21 '.*"status": "canceled"' "cancel"
expect 23 'customer email not recorded in customer_email_variants: c0000000-0000-0000-0000-000000000002$' "check_invariants after the upsert"
