# ALTER EXTENSION checkout UPDATE from every archived release to this version (PostgreSQL chains the
# scripts where there is no direct one), and back: the result
# equals a fresh install of the target version (extension members from pg_depend, and pg_dump
# --schema-only of the schema with the members detached), and every row is still there; on the way
# down to 0.1.0, rows that release cannot hold are loaded first and must come out converted or
# deleted exactly as sql/checkout--0.2.0--0.1.0.sql says, and nothing else changed. Also: every
# C symbol any archived release or upgrade script names exists in this build's library, so sessions
# on an old version keep working after the library is replaced.
source "$(dirname "$0")/lib.sh"
here=$(dirname "$0")
root=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
extdir="$("$E2E_BIN/pg_config" --sharedir)/extension"
lib="$("$E2E_BIN/pg_config" --pkglibdir)/checkout.so"

# Linkable symbols.
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort -u)
for script in "$root"/sql/releases/checkout--*.sql "$root"/sql/checkout--*--*.sql; do
  for sym in $(grep -o "'MODULE_PATHNAME', '[A-Za-z0-9_]*'" "$script" | sed "s/.*, '\(.*\)'/\1/" | sort -u); do
    grep -qx "$sym" <<<"$exported" || fail "$(basename "$script") needs symbol $sym, missing from checkout.so"
  done
done

members() { # DB: the extension's objects, one per line; the test build's own schemas (tests,
  # checkout_test: cargo pgrx test installs them) left out
  psql_db "$1" -c "SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d, pg_identify_object(d.classid, d.objid, d.objsubid) o
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
      AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'checkout')
      AND coalesce(o.schema, o.identity) NOT IN ('tests', 'checkout_test') ORDER BY 1"
}
ddl() { # DB: pg_dump --schema-only of schema checkout, taken from a copy whose members are detached
  # (pg_dump leaves extension members out)
  local copy=$1_ddl
  psql_db postgres -c "DROP DATABASE IF EXISTS $copy" -c "CREATE DATABASE $copy TEMPLATE $1"
  psql_db "$copy" <<'SQL'
SELECT format('ALTER EXTENSION checkout DROP %s %s', o.type, o.identity)
FROM pg_depend d, pg_identify_object(d.classid, d.objid, d.objsubid) o
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'checkout')
  AND o.type <> 'type' -- row and array types of tables (members on PostgreSQL 18) go with their table
\gexec
SQL
  "$E2E_BIN/pg_dump" -h 127.0.0.1 -p "$E2E_PORT" -U postgres --schema-only -n checkout "$copy" | grep -v -e '^--' -e '^$' -e '^\\restrict ' -e '^\\unrestrict '
  psql_db postgres -c "DROP DATABASE $copy"
}
snapshot() { # DB: a copy of every checkout table in schema before_step
  psql_db "$1" -c "DROP SCHEMA IF EXISTS before_step CASCADE" -c "CREATE SCHEMA before_step"
  psql_db "$1" <<'SQL'
SELECT format('CREATE TABLE before_step.%I AS SELECT * FROM checkout.%I', relname, relname)
FROM pg_class WHERE relnamespace = 'checkout'::regnamespace AND relkind = 'r' AND relname <> 'maintenance_runs'
  AND relname <> 'import_report' -- empty here: nothing is imported (t_import checks its downgrade)
\gexec
SQL
}
lost_rows() { # DB COLUMNS: per table, rows of the snapshot that are gone or changed, apart from
  # COLUMNS (a text[] literal) that the step may set; prints nothing when every row is still there
  psql_db "$1" -v columns="$2" <<'SQL'
SELECT format('SELECT %L || '' '' || count(*) FROM before_step.%I b WHERE NOT EXISTS (SELECT 1 FROM checkout.%I t WHERE t.id = b.id AND (to_jsonb(t) - %L::text[]) = (to_jsonb(b) - %L::text[])) HAVING count(*) > 0',
              relname, relname, relname, :'columns', :'columns')
FROM pg_class WHERE relnamespace = 'before_step'::regnamespace AND relkind = 'r' ORDER BY relname
\gexec
SQL
}
same_catalog() { # DB_A DB_B WHAT (one after the other: the copies must not race)
  local a b
  a=$(members "$1"); b=$(members "$2")
  diff <(echo "$a") <(echo "$b") >&2 || fail "$3: extension members differ"
  a=$(ddl "$1"); b=$(ddl "$2")
  [ "$(echo "$a" | grep -c 'CREATE TABLE')" -ge 16 ] || fail "$3: the DDL dump is incomplete"
  diff <(echo "$a") <(echo "$b") >&2 || fail "$3: schema DDL differs"
}

for old in $(ls "$root/sql/releases" | sed -n 's/^checkout--\([0-9.]*\)\.sql$/\1/p' | sort -V); do
  [ "$old" != "$version" ] || continue
  cp "$root/sql/releases/checkout--$old.sql" "$extdir/"
  # Up: old release + data, updated, against a fresh install.
  fresh_db e2e_up
  psql_db e2e_up -c "CREATE EXTENSION checkout VERSION '$old'" -f "$here/upgrade_data.sql" >/dev/null
  # 0.1.0 let direct SQL bypass counters and audit; the update to 0.2.0 repairs what it left.
  [ "$old" != 0.1.0 ] || psql_db e2e_up -f "$here/upgrade_data_unaudited.sql" >/dev/null
  snapshot e2e_up
  psql_db e2e_up -c "ALTER EXTENSION checkout UPDATE TO '$version'"
  assert_eq "$version" "$(psql_db e2e_up -c "SELECT extversion FROM pg_extension WHERE extname = 'checkout'")" "version after update"
  # Every row is still there; the update only recounts counters, revokes grants of ended
  # subscriptions, clears their pending cancellations, adds what 0.1.0 did not record, and stamps
  # ended subscriptions that lack ended_at/canceled_at (0.6.0's CHECKs; 0.1.0 left them NULL).
  lost=$(lost_rows e2e_up '{subscription_count,has_active_subscription,revoked_at,cancel_at_period_end,changed_by_role,ended_at,canceled_at}')
  [ -z "$lost" ] || fail "rows lost or changed by the update $old -> $version: $lost"
  if [ "$old" = 0.1.0 ]; then counters="2 true|1 false" recorded="updated past_due|created canceled"
  else counters="1 true|1 true" recorded=""; fi
  assert_eq "$counters" "$(psql_db e2e_up -c "SELECT string_agg(subscription_count || ' ' || has_active_subscription, '|' ORDER BY external_id) FROM checkout.customers")" "counters after update"
  assert_eq "$recorded" "$(psql_db e2e_up -c "SELECT string_agg(change_type || ' ' || (new_values->>'status'), '|' ORDER BY change_type DESC) FROM checkout.subscription_changes WHERE reason = 'recorded by the update to 0.2.0'")" "audit rows the update recorded"
  assert_eq "" "$(violations e2e_up)" "invariants after update"
  assert_eq 0 "$(psql_db e2e_up -c "SELECT count(*) FROM checkout.verify() WHERE NOT ok")" "verify() after update"
  fresh_db e2e_fresh
  psql_db e2e_fresh -c "CREATE EXTENSION checkout"
  same_catalog e2e_up e2e_fresh "$old -> $version"
  # The updated database works as the new version: a cancel through the new function, audited.
  psql_db e2e_up -c "SELECT checkout.cancel_subscription_atomic(s.id, s.organization_id) FROM checkout.subscriptions s WHERE s.status = 'active'" >/dev/null
  assert_eq "" "$(violations e2e_up)" "invariants after a call on the updated version"
  # Down: back to the old release equals a fresh old install; rows stay, except what the downgrade
  # script says the old version cannot hold. Before it, rows of that kind, written through this
  # version's functions (upgrade_data_lifecycle.sql): a renewal, a past-due mark, a converted trial
  # and a deleted subscription. Downgrades that can hold them must keep them unchanged.
  psql_db e2e_up -f "$here/upgrade_data_lifecycle.sql" >/dev/null
  assert_eq "" "$(violations e2e_up)" "invariants after the lifecycle data"
  snapshot e2e_up
  if [ "$old" = 0.1.0 ]; then
    # What sql/checkout--0.2.0--0.1.0.sql has to convert: one row of each change type 0.1.0 lacks,
    # and the two-row trail of the deleted subscription (0.1.0's trail has a foreign key to it).
    assert_eq "converted 1|deleted 1|past_due 1|renewed 1" "$(psql_db e2e_up -c "SELECT string_agg(change_type || ' ' || n, '|' ORDER BY change_type)
      FROM (SELECT change_type, count(*) AS n FROM before_step.subscription_changes
            WHERE change_type NOT IN ('created', 'updated', 'cancelled', 'reactivated', 'expired', 'upgraded', 'downgraded')
            GROUP BY change_type) t")" "audit rows 0.1.0 cannot hold, before the downgrade"
    orphans="SELECT c.id FROM before_step.subscription_changes c
      WHERE NOT EXISTS (SELECT 1 FROM before_step.subscriptions s WHERE s.organization_id = c.organization_id AND s.id = c.subscription_id)"
    assert_eq "created|deleted" "$(psql_db e2e_up -c "SELECT string_agg(change_type, '|' ORDER BY change_type) FROM before_step.subscription_changes WHERE id IN ($orphans)")" "trail of the deleted subscription, before the downgrade"
  fi
  psql_db e2e_up -c "ALTER EXTENSION checkout UPDATE TO '$old'"
  assert_eq "$old" "$(psql_db e2e_up -c "SELECT extversion FROM pg_extension WHERE extname = 'checkout'")" "version after downgrade"
  if [ "$old" = 0.1.0 ]; then
    # The conversions happened, exactly: the three rows are 'updated' with their 0.2.0 type kept...
    assert_eq "updated converted|updated past_due|updated renewed" "$(psql_db e2e_up -c "SELECT string_agg(change_type || ' ' || (metadata->>'change_type_0_2_0'), '|' ORDER BY metadata->>'change_type_0_2_0')
      FROM checkout.subscription_changes WHERE metadata ? 'change_type_0_2_0'")" "audit rows converted by the downgrade"
    # ...the deleted subscription's trail is gone...
    assert_eq 0 "$(psql_db e2e_up -c "SELECT count(*) FROM checkout.subscription_changes WHERE id IN ($orphans)")" "trail of the deleted subscription after the downgrade"
    # ...and these five rows are all the downgrade changed or removed.
    assert_eq "subscription_changes 5" "$(lost_rows e2e_up '{changed_by_role}')" "rows the downgrade converted or deleted"
    # The snapshot as 0.1.0 must hold it (the script's documented conversion, applied to the copy);
    # every row, converted ones included, must then be there unchanged.
    psql_db e2e_up >/dev/null <<SQL
DELETE FROM before_step.subscription_changes WHERE id IN ($orphans);
UPDATE before_step.subscription_changes
SET change_type = 'updated', metadata = metadata || jsonb_build_object('change_type_0_2_0', change_type)
WHERE change_type IN ('renewed', 'past_due', 'converted');
SQL
  fi
  lost=$(lost_rows e2e_up '{changed_by_role}')
  [ -z "$lost" ] || fail "rows lost or changed by the downgrade $version -> $old: $lost"
  # lost_rows sees what went missing; nor may rows appear.
  assert_eq "$(psql_db e2e_up -c "SELECT count(*) FROM before_step.subscription_changes")" \
    "$(psql_db e2e_up -c "SELECT count(*) FROM checkout.subscription_changes")" "audit rows after the downgrade"
  fresh_db e2e_fresh
  psql_db e2e_fresh -c "CREATE EXTENSION checkout VERSION '$old'"
  same_catalog e2e_up e2e_fresh "$version -> $old"
  # The old version's functions run on this library; and up again works.
  psql_db e2e_up -c "SELECT checkout.upsert_customer_atomic('a0000000-0000-0000-0000-000000000001', 'three@example.com')" >/dev/null
  psql_db e2e_up -c "ALTER EXTENSION checkout UPDATE TO '$version'"
  rm -f "$extdir/checkout--$old.sql"
done
psql_db postgres -c "DROP DATABASE IF EXISTS e2e_up" -c "DROP DATABASE IF EXISTS e2e_fresh"
